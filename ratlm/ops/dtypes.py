"""Accumulation precision."""
from __future__ import annotations

import torch


def acc_dtype(dtype):
    """float32 for float32/bf16/fp16, float64 for float64: where states and softmax are computed."""
    return torch.promote_types(dtype, torch.float32)


def up(t):
    """t in its accumulation dtype: float32 for float32/bf16/fp16 inputs, float64 stays float64."""
    return t if t.dtype in _ACC else t.to(torch.float32)


_ACC = (torch.float32, torch.float64)
