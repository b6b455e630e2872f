"""Linear layers for CPU inference through oneDNN, with the weight packed once.

PyTorch's CPU `nn.Linear` calls MKL's GEMM, which rearranges ("packs") the whole weight on every call.
For the few rows of a batched decode step (2 to a few dozen tokens) that rearrangement costs as much as
the product: on an AMD EPYC (AVX2, 2 threads) a 512 x 1792 weight took 300-350 us at 8 rows through MKL
and 150-210 us with the weight packed once for oneDNN (`docs/PERFORMANCE.md`). A single row goes
through MKL's matrix-vector product, which does not repack, and gains nothing. The packed copy is a second
copy of the weight, so it is made only for models that ask (`ratlm.layers.common.pack_linears`), and
used only without gradients, on the CPU, outside autocast, in a dtype this CPU's oneDNN packs (float32
everywhere; bfloat16 only where oneDNN has the kernels: AVX512-BW/VL/DQ or AVX-NE-CONVERT).

`RATLM_PACK_WEIGHTS=0` turns packing off everywhere.
"""
from __future__ import annotations

import functools
import os

import torch


def packing_enabled() -> bool:
    return os.environ.get("RATLM_PACK_WEIGHTS", "1").strip().lower() not in ("0", "false", "no", "off")


@functools.cache
def can_pack(dtype: torch.dtype) -> bool:
    """Whether this torch build and CPU pack `dtype` weights for oneDNN (tried once on a small weight)."""
    try:
        w = torch.randn(8, 4, dtype=dtype)
        x = torch.randn(2, 4, dtype=dtype)
        y = packed_linear(x, pack_weight(w), None)
        return bool(torch.allclose(y.float(), (x.float() @ w.float().t()), atol=1e-2, rtol=1e-2))
    except Exception:  # noqa: BLE001 - no oneDNN, or no kernel for this dtype on this CPU
        return False


def pack_weight(weight: torch.Tensor, batch_hint: int = 64) -> torch.Tensor:
    """`weight` (out, in) rearranged for oneDNN's GEMM (an opaque tensor, for `packed_linear` only).
    The layout is chosen for about `batch_hint` rows; any number of rows works."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), batch_hint)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T + bias with the packed weight (x: (..., in), any number of leading dimensions)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
