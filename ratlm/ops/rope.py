"""Rotary position embedding, rotate-half convention over the whole head width."""
from __future__ import annotations

import torch


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float = 10000.0,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for integer `positions` (any shape): (*positions.shape, head_dim)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head width, got {head_dim}; use position_encoding='nope'")
    inv_freq = theta ** -(torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device) / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq
    angles = torch.cat([angles, angles], -1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, -1)
    return torch.cat([-x2, x1], -1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin; cos/sin broadcast against x."""
    return x * cos + rotate_half(x) * sin


_TABLES = {}


def _tables(n: int, head_dim: int, theta: float, device: torch.device | str,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared (cos, signed sin) tables, at least n rows."""
    key = (head_dim, float(theta), str(device), dtype)
    table = _TABLES.get(key)
    if table is None or table[0].shape[0] < n:
        size = max(n, 2 * table[0].shape[0] if table is not None else 1024)
        with torch.inference_mode(False), torch.no_grad():  # a shared table must be a normal tensor
            cos, sin = rope_cos_sin(torch.arange(size, device=device), head_dim, theta, dtype=dtype)
            half = head_dim // 2
            sin = torch.cat([-sin[:, :half], sin[:, half:]], -1)
        table = _TABLES[key] = (cos, sin)
    return table


def rope_table(n: int, head_dim: int, theta: float, device: torch.device | str,
               dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached (cos, signed sin) tables for positions 0..n-1, shape (n, head_dim), where
    apply_rope(x, cos, sin) == x * cos + x.roll(head_dim // 2, -1) * signed_sin. Grows by doubling."""
    cos, sin = _tables(n, head_dim, theta, device, dtype)
    return cos[:n], sin[:n]


def rotate(x: torch.Tensor, positions: int | torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """RoPE of x (..., N, H, dh) at integer positions: a python int (start of N consecutive
    positions) or a tensor broadcastable to x.shape[:-2]. Same numbers as `apply_rope`."""
    N, dh = x.shape[-3], x.shape[-1]
    if isinstance(positions, int):
        cos, sin = rope_table(positions + N, dh, theta, x.device, x.dtype)
        cos, sin = cos[positions:, None], sin[positions:, None]
        return torch.addcmul(x * cos, x.roll(dh // 2, -1), sin)
    return rotate_rows(x, positions[..., None], theta)  # one position for the H vectors of each (..., N)


def rotate_rows(x: torch.Tensor, position: int | torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """RoPE of vectors x (..., dh) all at one integer position (a python int), or at positions given by a
    tensor broadcastable to x.shape[:-1]. Same numbers as `rotate`, in fewer operators (decode steps)."""
    dh = x.shape[-1]
    if isinstance(position, int):
        n = position + 1
    else:
        n = int(position.max()) + 1 if position.numel() else 1
    cos, sin = _tables(n, dh, theta, x.device, x.dtype)
    return torch.addcmul(x * cos[position], x.roll(dh // 2, -1), sin[position])
