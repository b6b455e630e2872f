"""CUDA attention paths through `flex_attention` (compiled on CUDA, eager elsewhere).

RAT: keys are [final keys of the C complete chunks ; every token's running key], with the mask
"chunk end j < chunk of the query, or the query's own running key". The own-key block is the
diagonal, which the block mask keeps sparse. Used for the parallel (training) path only; caches and
padding go through the plain PyTorch path.
"""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .rat import RAT


@functools.lru_cache(maxsize=2)
def _flex(cuda):
    """flex_attention, compiled on CUDA (where it is fast); eager elsewhere (forward only, slow)."""
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False) if cuda else flex_attention


@functools.lru_cache(maxsize=32)
def _rat_block_mask(T, C, L, device):
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, qi, ki):
        return ((ki < C) & (ki < qi // L)) | ((ki >= C) & (ki - C == qi))

    return create_block_mask(mask_mod, None, None, T, C + T, device=device)


@functools.lru_cache(maxsize=32)
def _window_block_mask(T, W, device):
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, qi, ki):
        return (ki <= qi) & (ki >= qi - W)

    return create_block_mask(mask_mod, None, None, T, T, device=device)


def rat_flex_attention(layer: RAT, q: torch.Tensor, kt: torch.Tensor, vt: torch.Tensor) -> torch.Tensor:
    """Same result as `RAT._attend(q, kt, vt, 0)[0]`: (B, T, D) float32."""
    B, T = kt.shape[:2]
    H, dh, L = layer.num_heads, layer.head_dim, layer.chunk_size
    dtype = q.dtype
    kt = kt.view(B, T, H, dh).to(dtype)
    vt = vt.view(B, T, H, dh).to(dtype)
    dev = kt.device
    C = T // L
    ar = torch.arange(T, device=dev)
    chunk = (ar // L)[None]
    ends = layer._rotate(kt[:, L - 1 :: L], torch.arange(C, device=dev)[None])
    keys = torch.cat([ends, layer._rotate(kt, chunk)], 1).transpose(1, 2)
    values = torch.cat([vt[:, L - 1 :: L], vt], 1).transpose(1, 2)
    qr = layer._rotate(layer._tile(q).view(B, T, H, dh), chunk).transpose(1, 2)
    mask = _rat_block_mask(T, C, L, str(dev))
    y = _flex(qr.is_cuda)(qr, keys.contiguous(), values.contiguous(), block_mask=mask, scale=1.0 / math.sqrt(dh))
    return y.transpose(1, 2).reshape(B, T, H * dh).float()


def window_flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Sliding-window causal attention, (B, H, T, dh)."""
    mask = _window_block_mask(q.shape[2], window, str(q.device))
    return _flex(q.is_cuda)(q, k, v, block_mask=mask)
