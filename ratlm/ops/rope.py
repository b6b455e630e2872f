"""Rotary position embedding, rotate-half convention over the whole head width."""
from __future__ import annotations

import torch


def rope_cos_sin(positions, head_dim, theta=10000.0, dtype=torch.float32):
    """cos and sin tables for integer `positions` (any shape): (*positions.shape, head_dim)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head width, got {head_dim}; use position_encoding='nope'")
    inv_freq = theta ** -(torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device) / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq
    angles = torch.cat([angles, angles], -1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, -1)
    return torch.cat([-x2, x1], -1)


def apply_rope(x, cos, sin):
    """x * cos + rotate_half(x) * sin; cos/sin broadcast against x."""
    return x * cos + rotate_half(x) * sin
