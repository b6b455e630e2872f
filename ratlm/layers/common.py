"""What every mixer shares: argument checks, backend choice, padding masks, the three ways to run."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..ops import linear as packing
from ..ops.chunk_attention import needs_grad
from ..ops.dtypes import autocast_off, up

if TYPE_CHECKING:
    from .cache import LayerCache

BACKENDS = ("naive", "torch", "flex")


def resolve_backend(backend: str | None = None) -> str:
    """'naive' (per-token reference loops), 'torch' (fast plain PyTorch, any device) or 'flex'
    (flex_attention, used on CUDA). None reads RATLM_BACKEND, else picks 'flex' on CUDA when it
    is available at run time and 'torch' otherwise ('auto')."""
    backend = backend or os.environ.get("RATLM_BACKEND") or "auto"
    if backend not in BACKENDS + ("auto",):
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} or auto")
    return backend


def flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except Exception:  # pragma: no cover - old torch
        return False
    return True


class Linear(nn.Linear):
    """nn.Linear that, once `pack_linears` has marked it, runs calls of more than one row without gradients
    on the CPU through oneDNN with a packed copy of its weight (`ratlm.ops.linear`); everything else,
    training and single rows (MKL's matrix-vector product does not repack) included, is nn.Linear's. The
    copy is made at the first such call and made again when the weight changes (in place, moved, or
    converted)."""

    pack = False
    _packed: tuple | None = None  # (key of the weight it was made from, packed weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pack and x.device.type == "cpu" and not torch.is_grad_enabled() and x.dtype == self.weight.dtype \
                and x.numel() > x.shape[-1] and not torch.is_autocast_enabled("cpu") and packing.can_pack(x.dtype):
            w = self.weight
            key = (w.data_ptr(), w._version, w.dtype, tuple(w.shape))
            if self._packed is None or self._packed[0] != key:
                self._packed = (key, packing.pack_weight(w))
            return packing.packed_linear(x, self._packed[1], self.bias)
        return super().forward(x)

    def unpack(self) -> None:
        self.pack, self._packed = False, None


def pack_linears(model: nn.Module) -> int:
    """Mark every `Linear` of `model` for packed CPU inference (see `Linear`); returns how many were marked
    (0 when RATLM_PACK_WEIGHTS=0). Each keeps a second copy of its weight once used; `unpack_linears`
    drops them."""
    if not packing.packing_enabled():
        return 0
    n = 0
    for m in model.modules():
        if isinstance(m, Linear):
            m.pack = True
            n += 1
    return n


def unpack_linears(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, Linear):
            m.unpack()


def compact(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move each row's real tokens (mask True) to the front, keeping their order.

    Returns (x_compact (B, T', ...), lengths (B,), order (B, T)) with T' the longest row.
    """
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    lengths = mask.sum(1)
    Tc = int(lengths.max()) if mask.numel() else 0
    idx = order[:, :Tc].reshape(*order.shape[:1], Tc, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return x.gather(1, idx), lengths, order


def uncompact(y: torch.Tensor, lengths: torch.Tensor, order: torch.Tensor, T: int) -> torch.Tensor:
    """Inverse of `compact`: rows back to their places, zeros at padded positions."""
    B, Tc = y.shape[:2]
    valid = torch.arange(Tc, device=y.device)[None] < lengths[:, None]
    y = y * valid.reshape(B, Tc, *([1] * (y.dim() - 2))).to(y.dtype)
    if Tc < T:
        y = torch.cat([y, y.new_zeros(B, T - Tc, *y.shape[2:])], 1)
    idx = order.reshape(B, T, *([1] * (y.dim() - 2))).expand_as(y)
    return torch.zeros_like(y).scatter(1, idx, y)


def gated_output(out_proj: nn.Linear, z: torch.Tensor | None, y: torch.Tensor, dtype: torch.dtype,
                 gate: torch.Tensor | None = None) -> torch.Tensor:
    """out_proj((sigmoid(z) * y) in dtype), z and y in float32 (float64 for float64), the gate of RAT and
    the RNN; `gate`: sigmoid(z) taken already (then z is not needed). With gradients it keeps sigmoid(z)
    and y for the backward and recomputes their product there, instead of also keeping the product (one
    (B, T, D) tensor less per layer)."""
    s = torch.sigmoid(up(z)) if gate is None else gate
    w = out_proj.weight
    if out_proj.bias is not None or not needs_grad(s, y, w):
        return out_proj((s * y).to(dtype))
    dev = y.device.type
    mm = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else dtype  # what nn.Linear would use
    return _GatedProjection.apply(s, y, w, mm)


GATE_ROWS = 2048  # rows per block of the output gate's weight gradient


class _GatedProjection(torch.autograd.Function):
    """(s * y).to(mm) @ w.to(mm).T, keeping s and y (not their product) for the backward."""

    @staticmethod
    @autocast_off
    def forward(ctx, s, y, w, mm):
        ctx.save_for_backward(s, y, w)
        ctx.mm = mm
        return nn.functional.linear((s * y).to(mm), w.to(mm))

    @staticmethod
    @autocast_off
    def backward(ctx, dout):
        s, y, w = ctx.saved_tensors
        dout = dout.to(ctx.mm)
        d2, s2, y2 = dout.reshape(-1, dout.shape[-1]), s.reshape(-1, s.shape[-1]), y.reshape(-1, y.shape[-1])
        # the product recomputed a block of rows at a time: never a whole (B, T, D) tensor of it
        dw = torch.zeros(w.shape, dtype=torch.promote_types(ctx.mm, torch.float32), device=w.device)
        for i in range(0, d2.shape[0], GATE_ROWS):
            dw += d2[i : i + GATE_ROWS].T @ (s2[i : i + GATE_ROWS] * y2[i : i + GATE_ROWS]).to(ctx.mm)
        dp = (dout @ w.to(ctx.mm)).to(s.dtype)
        ds = dp * y
        return ds, dp.mul_(s), dw.to(w.dtype), None


def detach_projection(parts: list) -> torch.Tensor | None:
    """With gradients, make the in-projection's parts [z, *rest] stop viewing it: the rest are copied, z
    is replaced by the output gate sigmoid(z) (returned; then z is None), so that the projection is freed
    as soon as its parts have been used instead of living through the layer's forward. Without
    gradients nothing changes and None is returned."""
    if not needs_grad(*parts):
        return None
    gate = torch.sigmoid(up(parts[0]))
    parts[0] = None
    for i in range(1, len(parts)):
        if parts[i]._base is not None:
            parts[i] = parts[i].clone(memory_format=torch.contiguous_format)
    return gate


def init_gate_bias(bias: torch.Tensor, span: float) -> None:
    """b = log(u), u ~ Uniform(1, span - 1): gates start with time constants between 2 and span."""
    with torch.no_grad():
        if span > 2:
            bias.copy_(torch.empty_like(bias, dtype=torch.float32).uniform_(1, span - 1).log())
        else:
            bias.zero_()


class Mixer(nn.Module):
    """A sequence mixer (B, T, D) -> (B, T, D). Pre-norm and residual belong to the block.

    Three ways to run, giving the same numbers:
      mixer(x)                          parallel over the whole sequence (training);
      mixer(x, cache=c)                 prefill any length into the cache, then more prefill or
                                        single-token decode steps, with c = mixer.init_cache(B);
      mixer(x, attention_mask=m)        m: (B, T) with 0 at padding (left padding, typically);
                                        padded positions change nothing and output zeros.
    `lengths` (B,) instead of a mask says the rows are already packed to the left (right padding):
    row b's tokens are x[b, :lengths[b]] (a model packs once for all its layers).
    """

    def __init__(self, hidden_size: int, num_heads: int, backend: str | None = None) -> None:
        super().__init__()
        if not isinstance(hidden_size, int) or hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}")
        if not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads must be a positive integer, got {num_heads!r}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}; "
                             "choose num_heads that divides it")
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.backend = resolve_backend(backend)

    def set_position_encoding(self, position_encoding: str, rope_theta: float) -> None:
        """Checks and sets `rope` (bool) and `rope_theta` for a mixer with positions."""
        if position_encoding not in ("rope", "nope"):
            raise ValueError(f"position_encoding must be 'rope' or 'nope', got {position_encoding!r}")
        if position_encoding == "rope" and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head width, got {self.head_dim}; use position_encoding='nope'")
        self.rope = position_encoding == "rope"
        self.rope_theta = rope_theta

    def _backend_for(self, x):
        if self.backend != "auto":
            return self.backend
        return "flex" if x.is_cuda and flex_available() else "torch"

    def _check(self, x, cache, attention_mask):
        if not torch.is_tensor(x) or x.dim() != 3:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"expected input of shape (batch, length, {self.hidden_size}), got {shape}")
        if x.shape[-1] != self.hidden_size:
            raise ValueError(f"input width is {x.shape[-1]} but the mixer was built for {self.hidden_size}")
        if not x.is_floating_point():
            raise ValueError(f"input must be a floating-point tensor (float32 or bfloat16), got {x.dtype}; "
                             "embed token ids first")
        if x.shape[1] == 0:
            raise ValueError("input has length 0; feed at least one token")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"attention_mask must have shape (batch, length) = {tuple(x.shape[:2])}, "
                             f"got {tuple(attention_mask.shape)}")
        if cache is not None:
            cache.check_batch(x.shape[0])

    def forward(self, x: torch.Tensor, cache: LayerCache | None = None, attention_mask: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x, cache, attention_mask)
        if lengths is not None:
            return self._run(x, cache, lengths)
        mask = None if attention_mask is None else attention_mask.bool()
        if mask is not None and bool(mask.all()):
            mask = None
        if mask is None:
            return self._run(x, cache, None)
        T = x.shape[1]
        xc, lengths, order = compact(x, mask)
        if xc.shape[1] == 0:  # nothing but padding
            return torch.zeros_like(x)
        return uncompact(self._run(xc, cache, lengths), lengths, order, T)

    def _run(self, x, cache, lengths):
        """x: right-padded rows, `lengths` real tokens each (None: all)."""
        backend = self._backend_for(x)
        if cache is None:
            return self._naive(x) if backend == "naive" else self._parallel(x, backend)
        cache.reserve(x.shape[1])
        if backend == "naive":  # token by token through the decode step
            outs = []
            for t in range(x.shape[1]):
                active = None if lengths is None else t < lengths
                outs.append(self._step(x[:, t : t + 1], cache, active))
            return torch.cat(outs, 1)
        if x.shape[1] == 1 and lengths is None:
            return self._step(x, cache, None)
        return self._prefill(x, cache, lengths)

    # subclasses implement:
    def init_cache(self, batch_size: int, max_length: int | None = None, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> LayerCache:
        raise NotImplementedError

    def _naive(self, x):
        raise NotImplementedError

    def _parallel(self, x, backend):
        raise NotImplementedError

    def _prefill(self, x, cache, lengths):
        raise NotImplementedError

    def _step(self, x, cache, active):
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, num_heads={self.num_heads}, backend={self.backend}"


def gather_rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """t[b, index[b]] for t (B, T, ...) and index (B,) -> (B, ...)."""
    idx = index.view(-1, 1, *([1] * (t.dim() - 2))).expand(-1, 1, *t.shape[2:])
    return t.gather(1, idx)[:, 0]
