"""The gated RNN mixer (baseline): the RAT recurrence over the whole sequence, no attention.

    z, v, g = in_proj(x);  v~_t = g_t v~_(t-1) + (1 - g_t) v_t  (g = sigmoid(g + b), float32)
    out = out_proj(sigmoid(z) * v~)
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops.dtypes import acc_dtype, up
from ..ops.naive import naive_rnn
from ..ops.scan import gated_scan
from .cache import RNNCache
from .common import Linear, Mixer, detach_projection, gated_output, gather_rows, init_gate_bias


class RNN(Mixer):
    def __init__(self, hidden_size: int, gate_span: int = 4096, backend: str | None = None) -> None:
        """gate_span: the gate bias starts at log(u), u ~ Uniform(1, gate_span - 1) (the spec uses the
        training length)."""
        super().__init__(hidden_size, 1, backend)
        D = hidden_size
        self.gate_span = gate_span
        self.in_proj = Linear(D, 3 * D, bias=False)
        self.gate_bias = nn.Parameter(torch.zeros(D))
        self.out_proj = Linear(D, D, bias=False)
        init_gate_bias(self.gate_bias, gate_span)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, backend={self.backend}"

    def init_cache(self, batch_size: int, max_length: int | None = None, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> RNNCache:
        p = self.out_proj.weight
        return RNNCache(batch_size, self.hidden_size, max_length, device=device or p.device,
                        state_dtype=acc_dtype(dtype or p.dtype))

    def _project(self, x):
        z, v, g = self.in_proj(x).chunk(3, -1)
        return z, v, up(g) + up(self.gate_bias)

    def _out(self, z, h, dtype, gate=None):
        return gated_output(self.out_proj, z, h, dtype, gate)

    def _naive(self, x):
        z, v, u = self._project(x)
        return self.out_proj(naive_rnn(z, v, u).to(x.dtype))

    def _parallel(self, x, backend):
        parts = list(self._project(x))
        gate = detach_projection(parts)  # with gradients: the projection is freed now (see RAT._parallel)
        z, v, u = parts
        return self._out(z, gated_scan(v, u), x.dtype, gate)

    def _prefill(self, x, cache, lengths):
        B, T, _ = x.shape
        z, v, u = self._project(x)
        h = gated_scan(v, u, initial=cache.state)
        last = (torch.full((B,), T, device=x.device) if lengths is None else lengths) - 1
        state = gather_rows(h, last.clamp(min=0))
        if lengths is not None:
            state = torch.where((lengths > 0)[:, None], state, cache.state)
        cache.state = state
        cache.advance(lengths, T)
        return self._out(z, h, x.dtype)

    def _step(self, x, cache, active):
        z, v, u = self._project(x[:, 0])
        h = torch.addcmul(torch.sigmoid(-u) * up(v), torch.sigmoid(u), cache.state)
        if active is not None:
            h = torch.where(active[:, None], h, cache.state)
        cache.state = h
        cache.advance(None if active is None else active.long(), 1)
        return self._out(z, h, x.dtype)[:, None]
