"""Accumulation precision."""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float32/bf16/fp16, float64 for float64: where states and softmax are computed."""
    return torch.promote_types(dtype, torch.float32)


def up(t: torch.Tensor) -> torch.Tensor:
    """t in its accumulation dtype: float32 for float32/bf16/fp16 inputs, float64 stays float64."""
    return t if t.dtype in _ACC else t.to(torch.float32)


_ACC = (torch.float32, torch.float64)


def autocast_off(fn: Callable) -> Callable:
    """Decorator for a custom autograd Function's forward/backward: run it with autocast disabled on the
    device of its first tensor argument. These kernels choose their own dtypes (accumulation in
    float32); autocast would otherwise turn some of their matmuls into bf16 and mix dtypes (the
    backward runs under the autocast state of the forward)."""

    @functools.wraps(fn)
    def wrapped(ctx, *args):
        dev = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        if not torch.is_autocast_enabled(dev):
            return fn(ctx, *args)
        with torch.autocast(dev, enabled=False):
            return fn(ctx, *args)

    return wrapped
