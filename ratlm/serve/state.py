"""Decode-state bytes of one sequence: what each mixer's cache must hold after n tokens.

RAT: the final (k~, v~) pair of every completed chunk + the running pair (float32); attention: the
keys and values of every token; sliding window: W + 1 of them; RNN: the state (float32).
"""
from __future__ import annotations

import torch

from ..layers import RAT, RNN, Attention, SlidingWindowAttention
from ..ops.dtypes import acc_dtype


def _size(dtype):
    return torch.empty((), dtype=dtype).element_size()


def mixer_state_bytes(mixer, n_tokens: int, dtype: torch.dtype) -> int:
    """Bytes of `mixer`'s decode state for one row after `n_tokens` tokens, cache in `dtype`."""
    D, e, a = mixer.hidden_size, _size(dtype), _size(acc_dtype(dtype))
    if isinstance(mixer, RAT):
        return 2 * D * (n_tokens // mixer.chunk_size) * e + 2 * D * a
    if isinstance(mixer, SlidingWindowAttention):
        return 2 * D * min(n_tokens, mixer.window + 1) * e
    if isinstance(mixer, Attention):
        return 2 * D * n_tokens * e
    if isinstance(mixer, RNN):
        return D * a
    raise TypeError(f"unknown mixer {type(mixer).__name__}")


def decode_state_bytes(model, n_tokens: int, dtype: torch.dtype | None = None) -> int:
    """Bytes of a whole model's decode state for one row after `n_tokens` tokens (a RATForCausalLM
    or RATModel; dtype: the cache's, default the model's)."""
    base = getattr(model, "model", model)
    dtype = dtype or base.embed_tokens.weight.dtype
    return sum(mixer_state_bytes(blk.mixer, n_tokens, dtype) for blk in base.layers)
