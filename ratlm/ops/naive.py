"""Slow, obviously-correct references: explicit per-token loops that follow the spec line by line.

Every fast function in `ratlm.ops` is tested against these. Nothing here is meant to be fast.
Shapes: batch B, length T, width D, heads H of width dh. All math in float32 (float64 when given float64).
"""
from __future__ import annotations

import math

import torch

from .rope import apply_rope, rope_cos_sin


def _f(t):
    """At least float32; float64 stays float64 (tests use it as ground truth)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def naive_gated_scan(x: torch.Tensor, gate_logits: torch.Tensor, chunk_size: int | None = None, start: int = 0,
                     initial: torch.Tensor | None = None) -> torch.Tensor:
    """h_t = g_t * h_(t-1) + (1 - g_t) * x_t, with g = sigmoid(gate_logits), one token at a time.

    The state restarts (h_(t-1) = 0) at every token whose absolute position `start + t` is a
    multiple of `chunk_size` (never, if chunk_size is None). `initial` is the state before x_0.
    x: (B, T, *F); gate_logits broadcastable to x. Returns (B, T, *F) in float32 or float64.
    """
    x = _f(x)
    u = _f(gate_logits).expand_as(x)
    B, T = x.shape[:2]
    h = torch.zeros_like(x[:, 0]) if initial is None else _f(initial).clone()
    out = []
    for t in range(T):
        if chunk_size is not None and (start + t) % chunk_size == 0:
            h = torch.zeros_like(h)
        g = torch.sigmoid(u[:, t])
        h = g * h + (1 - g) * x[:, t]
        out.append(h)
    return torch.stack(out, 1) if out else x.new_zeros(x.shape)


def tile_groups(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Widen (..., G*dh) to (..., D) by repeating the whole G*dh vector: head h uses group h mod G."""
    return t.repeat(*([1] * (t.dim() - 1)), dim // t.shape[-1])


def naive_rat(z: torch.Tensor, v: torch.Tensor, gate_logits: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
              num_heads: int, chunk_size: int, rope: bool = True, rope_theta: float = 10000.0) -> torch.Tensor:
    """The RAT mixer of the spec, steps 2-6, token by token. Returns z * y, float32 (B, T, D).

    z, v, gate_logits: (B, T, D) (gate_logits already include the bias); q, k: (B, T, G*dh).
    """
    B, T, D = v.shape
    dh = D // num_heads
    L = chunk_size
    z = torch.sigmoid(_f(z))
    q = tile_groups(_f(q), D)
    k = tile_groups(_f(k), D)
    v = _f(v)
    ys = []
    ends_k, ends_v = [], []  # final (rotated) key and value of every completed chunk
    vt = kt = None
    for t in range(T):
        c, l = divmod(t, L)
        g = torch.sigmoid(_f(gate_logits[:, t]))
        if l == 0:
            vt = v.new_zeros(B, D)
            kt = v.new_zeros(B, D)
        vt = g * vt + (1 - g) * v[:, t]
        kt = g * kt + (1 - g) * k[:, t]
        qt = q[:, t].view(B, num_heads, dh)
        kh = kt.view(B, num_heads, dh)
        if rope:
            cos, sin = rope_cos_sin(torch.tensor([c]), dh, rope_theta, dtype=v.dtype)
            qt = apply_rope(qt, cos, sin)
            kh = apply_rope(kh, cos, sin)
        keys = torch.stack(ends_k + [kh], 2)  # (B, H, c+1, dh)
        vals = torch.stack(ends_v + [vt.view(B, num_heads, dh)], 2)
        scores = torch.einsum("bhd,bhnd->bhn", qt, keys) / math.sqrt(dh)
        y = torch.einsum("bhn,bhnd->bhd", scores.softmax(-1), vals)
        ys.append(y.reshape(B, D))
        if l == L - 1:
            ends_k.append(kh)
            ends_v.append(vt.view(B, num_heads, dh))
    return z * torch.stack(ys, 1)


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, rope: bool = True,
                    rope_theta: float = 10000.0, window: int | None = None) -> torch.Tensor:
    """Causal softmax attention token by token; with `window` W, query t sees keys t-W..t.

    q, k, v: (B, T, D). Returns float32 (B, T, D).
    """
    B, T, D = q.shape
    dh = D // num_heads
    q, k, v = (_f(a).view(B, T, num_heads, dh) for a in (q, k, v))
    if rope:
        cos, sin = rope_cos_sin(torch.arange(T), dh, rope_theta, dtype=v.dtype)
        q = apply_rope(q, cos[:, None], sin[:, None])
        k = apply_rope(k, cos[:, None], sin[:, None])
    ys = []
    for t in range(T):
        lo = 0 if window is None else max(0, t - window)
        scores = torch.einsum("bhd,bshd->bhs", q[:, t], k[:, lo : t + 1]) / math.sqrt(dh)
        ys.append(torch.einsum("bhs,bshd->bhd", scores.softmax(-1), v[:, lo : t + 1]).reshape(B, D))
    return torch.stack(ys, 1)


def naive_rnn(z: torch.Tensor, v: torch.Tensor, gate_logits: torch.Tensor) -> torch.Tensor:
    """The gated RNN mixer: z * v~ with v~ the gated recurrence over the whole sequence."""
    return torch.sigmoid(_f(z)) * naive_gated_scan(v, gate_logits)
