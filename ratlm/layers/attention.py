"""Softmax attention (the baseline) and sliding-window (local) attention.

    v, q, k = in_proj(x);  q, k rotated at token positions (RoPE) or not (NoPE)
    y = causal softmax attention, scale dh^-1/2 (window W: query t sees keys t-W .. t)
    out = out_proj(y)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.naive import naive_attention
from ..ops.rope import rotate
from .cache import KVCache, WindowCache, scatter_tokens
from .common import Linear, Mixer


class Attention(Mixer):
    window = None

    def __init__(self, hidden_size: int, num_heads: int, position_encoding: str = "rope", rope_theta: float = 10000.0,
                 backend: str | None = None) -> None:
        super().__init__(hidden_size, num_heads, backend)
        self.set_position_encoding(position_encoding, rope_theta)
        D = hidden_size
        self.in_proj = Linear(D, 3 * D, bias=False)
        self.out_proj = Linear(D, D, bias=False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, position_encoding={'rope' if self.rope else 'nope'}"

    def init_cache(self, batch_size: int, max_length: int | None = None, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> KVCache:
        p = self.out_proj.weight
        return KVCache(batch_size, self.num_heads, self.head_dim, max_length,
                       device=device or p.device, dtype=dtype or p.dtype)

    def _project(self, x):
        B, T, D = x.shape
        v, q, k = self.in_proj(x).view(B, T, 3, self.num_heads, self.head_dim).unbind(2)
        return v, q, k

    def _rotate(self, t, pos):
        """t: (B, T, H, dh) rotated at positions pos: (B or 1, T) tensor, or an int for T positions from it."""
        return rotate(t, pos, self.rope_theta) if self.rope else t

    def _out(self, y):
        B, H, T, dh = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(B, T, H * dh))

    def _naive(self, x):
        B, T, D = x.shape
        v, q, k = (t.reshape(B, T, D) for t in self._project(x))
        y = naive_attention(q, k, v, self.num_heads, self.rope, self.rope_theta, self.window)
        return self.out_proj(y.to(x.dtype))

    def _parallel(self, x, backend):
        B, T, _ = x.shape
        v, q, k = self._project(x)
        q, k = self._rotate(q, 0), self._rotate(k, 0)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        pos = torch.arange(T, device=x.device)
        if self.window is None or T <= self.window + 1:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif backend == "flex":
            from .flex import window_flex_attention
            y = window_flex_attention(q, k, v, self.window)
        else:
            y = banded_attention(q, k, v, pos, pos, self.window)
        return self._out(y)

    def _prefill(self, x, cache, lengths):
        B, T, _ = x.shape
        v, q, k = self._project(x)
        pos = self._positions(cache, T)
        at = cache.max_seen if cache.uniform else pos
        q, k = self._rotate(q, at), self._rotate(k, at)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        cache.ensure(cache.max_seen + T)
        start = cache.max_seen if cache.uniform else cache.seen
        cache.keys = scatter_tokens(cache.keys, start, k)
        cache.values = scatter_tokens(cache.values, start, v)
        N = cache.max_seen + T
        keys, values = cache.keys[:, :, :N], cache.values[:, :, :N]
        if T == 1 and cache.uniform:  # decode step: every stored key is visible
            y = F.scaled_dot_product_attention(q, keys, values)
        elif cache.uniform and cache.max_seen == 0:  # first prefill: plain causal attention
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            visible = torch.arange(N, device=x.device)[None, None] <= pos[:, :, None]  # (B or 1, T, N)
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible[:, None])
        cache.advance(lengths, T)
        return self._out(y)

    def _step(self, x, cache, active):
        return self._prefill(x, cache, None if active is None else active.long())

    @staticmethod
    def _positions(cache, T):
        ar = torch.arange(T, device=cache.seen.device)
        return (cache.max_seen + ar)[None] if cache.uniform else cache.seen[:, None] + ar


class SlidingWindowAttention(Attention):
    """Query t attends keys t - window .. t (window + 1 keys, itself included)."""

    def __init__(self, hidden_size: int, num_heads: int, window: int = 1024, position_encoding: str = "rope",
                 rope_theta: float = 10000.0, backend: str | None = None) -> None:
        super().__init__(hidden_size, num_heads, position_encoding, rope_theta, backend)
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        self.window = window

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window={self.window}"

    def init_cache(self, batch_size: int, max_length: int | None = None, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> WindowCache:
        p = self.out_proj.weight
        return WindowCache(batch_size, self.num_heads, self.head_dim, self.window, max_length,
                           device=device or p.device, dtype=dtype or p.dtype)

    def _prefill(self, x, cache, lengths):
        B, T, _ = x.shape
        W = self.window
        v, q, k = self._project(x)
        pos = self._positions(cache, T).expand(B, T)
        q, k = self._rotate(q, pos), self._rotate(k, pos)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cache.uniform and cache.max_seen == 0:  # first prefill: nothing in the ring yet
            ar = pos[0]
            y = (F.scaled_dot_product_attention(q, k, v, is_causal=True) if T <= W + 1
                 else banded_attention(q, k, v, ar, ar, W))
        else:
            y = banded_attention(q, k, v, pos, pos, W, cache.keys, cache.values, cache.slot_positions())
        # the new ring: each slot holds the latest position that maps to it, old or new
        p = cache.slot_positions(cache.seen + (T if lengths is None else lengths))  # (B, W + 1)
        new = p >= cache.seen[:, None]
        src = (p - cache.seen[:, None]).clamp(0, T - 1)
        idx = src[:, None, :, None].expand(B, self.num_heads, W + 1, self.head_dim)
        pick = new[:, None, :, None]
        cache.keys = torch.where(pick, k.gather(2, idx).to(cache.keys.dtype), cache.keys)
        cache.values = torch.where(pick, v.gather(2, idx).to(cache.values.dtype), cache.values)
        cache.advance(lengths, T)
        return self._out(y)

    def _step(self, x, cache, active):
        if active is not None:
            return self._prefill(x, cache, active.long())
        # each row at its position p: write the new pair into slot p mod (W + 1), then read the ring, whose
        # slots all hold positions p - W .. p once full; before that, slot j holds a token iff j <= p
        n = self.window + 1
        v, q, k = self._project(x)
        filled = min(cache.max_seen + 1, n)
        if cache.uniform:
            p, slot, mask = cache.max_seen, cache.max_seen % n, None
        else:
            p, slot = cache.seen[:, None], cache.seen % n  # (B, 1), (B,)
            mask = (torch.arange(filled, device=x.device) <= p)[:, None, None]  # (B, 1, 1, filled)
        q, k = self._rotate(q, p), self._rotate(k, p)
        cache.keys = scatter_tokens(cache.keys, slot, k.transpose(1, 2))
        cache.values = scatter_tokens(cache.values, slot, v.transpose(1, 2))
        y = F.scaled_dot_product_attention(q.transpose(1, 2), cache.keys[:, :, :filled], cache.values[:, :, :filled],
                                           attn_mask=mask)
        cache.advance(None, 1)
        return self._out(y)


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor,
                     window: int, ring_k: torch.Tensor | None = None, ring_v: torch.Tensor | None = None,
                     ring_pos: torch.Tensor | None = None, block: int | None = None) -> torch.Tensor:
    """Causal attention restricted to k_pos in [q_pos - window, q_pos], blocked over queries.

    q, k, v: (B, H, T, dh) with positions q_pos = k_pos (B or 1, T) (or (T,)), increasing along T;
    optional ring_* hold earlier keys (B, H, W, dh) at ring_pos (B, W), -1 for empty slots.
    Each query block reads only the keys within reach, so the cost is O(T * window).
    """
    B, T = q.shape[0], q.shape[2]
    if q_pos.dim() == 1:
        q_pos = q_pos[None]
        k_pos = k_pos[None]
    block = block or max(64, min(window, 1024))
    outs = []
    for i0 in range(0, T, block):
        i1 = min(T, i0 + block)
        j0 = max(0, i0 - window)
        kb, vb, kp = k[:, :, j0:i1], v[:, :, j0:i1], k_pos[:, j0:i1]
        if ring_k is not None and i0 < window:  # ring keys are older than every new token
            kb = torch.cat([ring_k.to(kb.dtype), kb], 2)
            vb = torch.cat([ring_v.to(vb.dtype), vb], 2)
            kp = torch.cat([ring_pos.expand(B, -1), kp.expand(B, -1)], 1)
        qp = q_pos[:, i0:i1, None]
        kpp = kp[:, None, :]
        visible = (kpp <= qp) & (kpp >= qp - window) & (kpp >= 0)
        outs.append(F.scaled_dot_product_attention(q[:, :, i0:i1], kb, vb, attn_mask=visible[:, None]))
    return torch.cat(outs, 2)
