"""Per-layer decode caches. Each holds only what its mixer's definition needs, per batch row.

Rows may have seen different numbers of tokens (left-padded batches): `seen` counts real tokens per
row. Buffers grow by doubling unless the cache was made with `max_length`, which fixes its capacity:
feeding more tokens than that raises a ValueError.
"""
from __future__ import annotations

import torch


def needs_graph(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def scatter_tokens(buf: torch.Tensor, start: int | torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """buf[b, :, start[b] + j] = src[b, :, j] (dim 2), start an int or (B,) tensor.
    In place, unless autograd must see it."""
    B, H, n, dh = src.shape
    if isinstance(start, int):
        if needs_graph(buf, src):
            return torch.cat([buf[:, :, :start], src.to(buf.dtype), buf[:, :, start + n :]], 2)
        buf[:, :, start : start + n] = src
        return buf
    idx = (start[:, None] + torch.arange(n, device=src.device)).view(B, 1, n, 1).expand(B, H, n, dh)
    if needs_graph(buf, src):
        return buf.scatter(2, idx, src.to(buf.dtype))
    return buf.scatter_(2, idx, src.to(buf.dtype))


class LayerCache:
    """Base: token counts, capacity checks, byte accounting and batch reordering."""

    def __init__(self, batch_size: int, max_length: int | None = None,
                 device: torch.device | str | None = None) -> None:
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.seen = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.max_length = max_length
        self.max_seen = 0  # python-side upper bound of seen.max(), avoids device syncs
        self.uniform = True  # every row has seen the same number of tokens

    @property
    def batch_size(self) -> int:
        return self.seen.shape[0]

    def check_batch(self, B: int) -> None:
        if B != self.batch_size:
            raise ValueError(f"input has batch size {B} but the cache was made for {self.batch_size}; "
                             "make a new cache for this batch")

    def reserve(self, n_new: int) -> int:
        """Raise if n_new more tokens would not fit; returns the new upper bound of tokens seen."""
        total = self.max_seen + n_new
        if self.max_length is not None and total > self.max_length:
            raise ValueError(f"cache capacity exceeded: it holds at most {self.max_length} tokens and "
                             f"{total} were fed; create it with a larger max_length (or none)")
        return total

    def advance(self, lengths: torch.Tensor | None, n_new: int) -> None:
        """Count the tokens of one call: lengths (B,) real tokens per row, or None for all n_new."""
        if lengths is None:
            self.seen = self.seen + n_new
        else:
            self.seen = self.seen + lengths
            self.uniform = False
        self.max_seen += n_new

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def nbytes(self) -> int:
        """Bytes of live state (what the definition needs for the tokens seen so far)."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    _buffers = ()  # names of the per-row state tensors (batch first)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index`, in that order (beam search)."""
        for name in self._buffers:
            setattr(self, name, getattr(self, name).index_select(0, index))
        self.seen = self.seen.index_select(0, index)
        self.uniform = bool((self.seen == self.seen[0]).all()) if len(self.seen) else True
        self.max_seen = int(self.seen.max()) if len(self.seen) else 0

    # rows joining and leaving (continuous batching) ----------------------------------------------
    _growable = ()  # buffers that grow along dim 2 with the tokens seen (trimmed when rows leave)

    def keep_rows(self, index: torch.Tensor) -> None:
        """Keep rows `index` (a (N,) long tensor), in that order, and give back the capacity that
        only the dropped rows needed."""
        self.reorder(index)
        need = self._needed_capacity()
        for name in self._growable if self.max_length is None else ():
            buf = getattr(self, name)
            if buf.shape[2] > max(2 * need, 16):
                setattr(self, name, buf[:, :, :need].clone())

    def append_rows(self, other: LayerCache) -> None:
        """Add the rows of `other` (a cache of the same kind and shape, any positions) after ours."""
        if type(other) is not type(self):
            raise ValueError(f"cannot append the rows of a {type(other).__name__} to a {type(self).__name__}")
        for name in self._buffers:
            a, b = getattr(self, name), getattr(other, name)
            if name in self._growable and a.shape[2] != b.shape[2]:
                cap = max(a.shape[2], b.shape[2])
                a, b = self._grow_exact(a, cap), self._grow_exact(b, cap)
            setattr(self, name, torch.cat([a, b.to(device=a.device, dtype=a.dtype)], 0))
        self.seen = torch.cat([self.seen, other.seen.to(self.seen.device)])
        self.max_seen = max(self.max_seen, other.max_seen)
        self.uniform = bool((self.seen == self.seen[0]).all()) if len(self.seen) else True

    def _needed_capacity(self):
        return 0

    @staticmethod
    def _grow_exact(buf, cap):
        if buf.shape[2] >= cap:
            return buf
        out = buf.new_zeros(*buf.shape[:2], cap, *buf.shape[3:])
        out[:, :, : buf.shape[2]] = buf
        return out

    # the per-layer protocol of transformers' Cache (so a model-level cache can hold these directly)
    is_compileable = False
    is_croppable = False
    is_sliding = False
    supports_early_init = False

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        self.reorder(beam_idx.long().to(self.seen.device))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.reorder(torch.arange(self.batch_size, device=self.seen.device)[indices])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.reorder(torch.arange(self.batch_size, device=self.seen.device).repeat_interleave(repeats))

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove:
            raise ValueError("a recurrent cache cannot be cropped (tokens cannot be taken back)")

    def reset(self) -> None:
        for name in self._buffers:
            getattr(self, name).zero_()
        self.seen.zero_()
        self.max_seen = 0
        self.uniform = True

    def offload(self) -> None:
        self._move("cpu")

    def prefetch(self) -> None:
        pass

    def _move(self, device):
        for name in self._buffers:
            setattr(self, name, getattr(self, name).to(device))
        self.seen = self.seen.to(device)

    def get_max_length(self) -> int:
        return -1 if self.max_length is None else self.max_length

    @staticmethod
    def _grow(buf, needed):
        """Buffer with at least `needed` slots along dim 2 (doubling), old content kept."""
        cap = buf.shape[2]
        if needed <= cap:
            return buf
        new_cap = max(needed, 2 * cap, 16)
        out = buf.new_zeros(*buf.shape[:2], new_cap, *buf.shape[3:])
        out[:, :, :cap] = buf
        return out


class ChunkCache(LayerCache):
    """Final (k~, v~) of every completed chunk (keys already rotated) + the running pair (float32).

    During decoding, slot `chunks` (the chunk in progress) also holds the running pair in the cache's
    dtype, its key rotated, for the step's attention; only the slots of completed chunks are state."""

    _buffers = ("keys", "values", "running")
    _growable = ("keys", "values")

    def __init__(self, batch_size: int, num_heads: int, head_dim: int, chunk_size: int,
                 max_length: int | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32, state_dtype: torch.dtype = torch.float32) -> None:
        super().__init__(batch_size, max_length, device)
        self.chunk_size = chunk_size
        cap = 0 if max_length is None else -(-max_length // chunk_size) + 1
        self.keys = torch.zeros(batch_size, num_heads, cap, head_dim, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        self.running = torch.zeros(batch_size, 2, num_heads * head_dim, device=device, dtype=state_dtype)

    @property
    def chunks(self) -> torch.Tensor:
        return self.seen // self.chunk_size

    @property
    def max_chunks(self) -> int:
        return self.max_seen // self.chunk_size

    def ensure(self, n_chunks: int) -> None:
        self.keys = self._grow(self.keys, n_chunks)
        self.values = self._grow(self.values, n_chunks)

    def _needed_capacity(self):
        return self.max_chunks + 1

    def tensors(self) -> dict[str, torch.Tensor]:
        c = self.max_chunks
        return {"keys": self.keys[:, :, :c], "values": self.values[:, :, :c], "running": self.running}


class KVCache(LayerCache):
    """Keys (rotated) and values of every token seen."""

    _buffers = ("keys", "values")
    _growable = ("keys", "values")

    def __init__(self, batch_size: int, num_heads: int, head_dim: int, max_length: int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__(batch_size, max_length, device)
        cap = max_length + 1 if max_length else 0
        self.keys = torch.zeros(batch_size, num_heads, cap, head_dim, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)

    def ensure(self, n: int) -> None:
        self.keys = self._grow(self.keys, n)
        self.values = self._grow(self.values, n)

    def _needed_capacity(self):
        return self.max_seen + 1

    def tensors(self) -> dict[str, torch.Tensor]:
        n = self.max_seen
        return {"keys": self.keys[:, :, :n], "values": self.values[:, :, :n]}


class WindowCache(KVCache):
    """Ring of the last window + 1 keys/values (the spec's window cache): the token at position p
    sits in slot p mod (window + 1), so a decode step writes its own key and reads the whole ring."""

    _growable = ()  # a fixed ring

    def __init__(self, batch_size: int, num_heads: int, head_dim: int, window: int, max_length: int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        LayerCache.__init__(self, batch_size, max_length, device)
        self.window = window
        self.keys = torch.zeros(batch_size, num_heads, window + 1, head_dim, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)

    def slot_positions(self, seen: torch.Tensor | None = None) -> torch.Tensor:
        """(B, window + 1) absolute position held by each slot after `seen` tokens (default: the
        tokens seen so far), or -1 if the slot is empty."""
        n = self.window + 1
        s = torch.arange(n, device=self.seen.device)
        last = (self.seen if seen is None else seen)[:, None] - 1
        pos = last - torch.remainder(last - s, n)
        return torch.where(pos >= 0, pos, torch.full_like(pos, -1))

    def tensors(self) -> dict[str, torch.Tensor]:
        n = min(self.max_seen, self.window + 1)
        return {"keys": self.keys[:, :, :n], "values": self.values[:, :, :n]}


class RNNCache(LayerCache):
    """The recurrent state (float32)."""

    _buffers = ("state",)

    def __init__(self, batch_size: int, hidden_size: int, max_length: int | None = None,
                 device: torch.device | str | None = None, state_dtype: torch.dtype = torch.float32) -> None:
        super().__init__(batch_size, max_length, device)
        self.state = torch.zeros(batch_size, hidden_size, device=device, dtype=state_dtype)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"state": self.state}


def row_state_bytes(kind: str, hidden_size: int, context_len: int, dtype: torch.dtype = torch.float32,
                    chunk_size: int | None = None, window: int | None = None) -> int:
    """Bytes of one row's decode state in one layer after `context_len` tokens, as the caches above hold
    it (their `nbytes()` per row): kind "rat": the final (k~, v~) of the context_len // chunk_size
    completed chunks in `dtype` plus the running pair in its accumulation dtype; "attention": every
    token's key and value; "sliding_attention": min(context_len, window + 1) slots; "rnn": the state
    (accumulation dtype). The token counters (8 bytes per row and layer) are not counted."""
    item = torch.empty(0, dtype=dtype).element_size()
    acc = torch.empty(0, dtype=torch.promote_types(dtype, torch.float32)).element_size()
    pair = 2 * hidden_size
    if kind == "rat":
        return (context_len // chunk_size) * pair * item + pair * acc
    if kind == "attention":
        return context_len * pair * item
    if kind == "sliding_attention":
        return min(context_len, window + 1) * pair * item
    if kind == "rnn":
        return hidden_size * acc
    raise ValueError(f"unknown layer kind {kind!r}: use rat, attention, sliding_attention or rnn")
