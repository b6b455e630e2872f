"""How much decode state a model holds per batch row: what bounds the batch a memory budget can serve."""
from __future__ import annotations

import torch

from ..layers.cache import row_state_bytes


def decode_state_bytes(config, context_len: int, dtype: torch.dtype | str = torch.float32) -> int:
    """Bytes of decode state (the model cache's `nbytes()`) for ONE batch row after `context_len` tokens,
    for a model of this RATConfig whose cache holds `dtype` (the model's dtype; running pairs and RNN
    states are kept in float32 for float32/bf16/fp16). Per layer: RAT, the final (k~, v~) of the
    completed chunks + the running pair; attention, every key and value; sliding window, W + 1 slots;
    RNN, the state. A budget of M bytes fits M // decode_state_bytes(...) rows."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if context_len < 0:
        raise ValueError(f"context_len must be >= 0, got {context_len}")
    return sum(row_state_bytes(kind, config.hidden_size, context_len, dtype,
                               chunk_size=config.per_layer("chunk_size", i), window=config.sliding_window)
               for i, kind in enumerate(config.layer_types))
