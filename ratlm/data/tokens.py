"""Documents to token ids: one flat stream per split, each document followed by the EOS token.

`Encoder` wraps a tokenizer (byte-level ones take a fast path: ids are the UTF-8 bytes).
`TokenStream` reads windows out of one or more arrays (in memory or numpy memmaps) as one stream.
"""
from __future__ import annotations

import numpy as np

from .tokenizer import BYTE_VOCAB


def is_byte_tokenizer(tok):
    """The tokenizer of `ratlm.data.tokenizer.byte_tokenizer` (also after a save and load)."""
    try:
        return (len(tok) == BYTE_VOCAB and tok.eos_token_id == 258
                and tok.encode("é\x00~", add_special_tokens=False) == [195, 169, 0, 126])
    except Exception:
        return False


def token_dtype(vocab_size):
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


class Encoder:
    """Text to ids with the tokenizer's own special tokens (e.g. Llama's BOS), then EOS appended."""

    def __init__(self, tokenizer):
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; documents are separated by EOS, so give a tokenizer "
                             "with an eos_token")
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.vocab = len(tokenizer)
        self.byte = is_byte_tokenizer(tokenizer)
        self.dtype = token_dtype(self.vocab)

    def encode(self, text, special=True):
        """ids of `text` (a list), without EOS. special: add the tokenizer's own special tokens (BOS)."""
        if self.byte:
            return list(text.encode("utf-8"))
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def documents(self, texts, batch=64, keep_empty=False):
        """Yield one int array per document: its ids followed by EOS. Empty documents are skipped, or
        give an empty array with keep_empty (so that callers can count records)."""
        empty = np.zeros(0, self.dtype)
        if self.byte:
            for t in texts:
                if t:
                    b = np.frombuffer(t.encode("utf-8"), dtype=np.uint8)
                    yield np.concatenate([b.astype(self.dtype), np.array([self.eos], self.dtype)])
                elif keep_empty:
                    yield empty
            return
        buf = []
        for t in texts:
            buf.append(t)
            if len(buf) >= batch:
                yield from self._batch(buf, keep_empty)
                buf = []
        if buf:
            yield from self._batch(buf, keep_empty)

    def _batch(self, texts, keep_empty):
        nonempty = [t for t in texts if t]
        encoded = iter(self.tokenizer(nonempty, add_special_tokens=True)["input_ids"] if nonempty else [])
        for t in texts:
            if not t:
                if keep_empty:
                    yield np.zeros(0, self.dtype)
                continue
            ids = next(encoded)
            if ids and ids[-1] == self.eos:
                ids = ids[:-1]
            yield np.array([*ids, self.eos], dtype=self.dtype)

    def stream(self, texts, progress=None):
        """(one array of all documents' tokens, number of documents, number of UTF-8 bytes)."""
        parts, docs, nbytes = [], 0, 0

        def counted():
            nonlocal nbytes
            for t in texts:
                if not self.byte:  # byte-level: bytes = tokens - EOS tokens, counted below
                    nbytes += len(t.encode("utf-8"))
                yield t

        for arr in self.documents(counted()):
            parts.append(arr)
            docs += 1
            if progress is not None:
                progress(len(arr))
        tokens = np.concatenate(parts) if parts else np.zeros(0, self.dtype)
        if self.byte:
            nbytes = len(tokens) - docs
        return tokens, docs, nbytes


class TokenStream:
    """Several arrays read as one stream of tokens."""

    def __init__(self, arrays, bytes_per_token=None):
        self.arrays = [a for a in arrays if len(a)]
        self.starts = np.cumsum([0] + [len(a) for a in self.arrays])
        self.bytes_per_token = bytes_per_token

    def __len__(self):
        return int(self.starts[-1])

    def window(self, start, n):
        """Tokens [start, start + n) as int64."""
        if start < 0 or start + n > len(self):
            raise IndexError(f"window [{start}, {start + n}) outside a stream of {len(self)} tokens")
        out = np.empty(n, np.int64)
        i = int(np.searchsorted(self.starts, start, side="right") - 1)
        done = 0
        while done < n:
            a = self.arrays[i]
            lo = start + done - int(self.starts[i])
            take = min(n - done, len(a) - lo)
            out[done:done + take] = a[lo:lo + take]
            done += take
            i += 1
        return out

    def split_tail(self, fraction):
        """(head, tail) streams: the last `fraction` of the tokens (at least one token) become the tail."""
        n = len(self)
        cut = n - max(1, int(n * fraction))
        head, tail = [], []
        for a, start in zip(self.arrays, self.starts[:-1]):
            k = min(max(cut - int(start), 0), len(a))  # views, no copies (memmaps stay on disk)
            head.append(a[:k])
            tail.append(a[k:])
        return TokenStream(head, self.bytes_per_token), TokenStream(tail, self.bytes_per_token)
