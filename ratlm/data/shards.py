"""Pre-tokenised token shards (`ratlm prepare`): flat numpy files read back as memmaps.

A prepared folder holds
    meta.json                     format, dtype, eos id, vocab size, token/document/byte counts per split
    train-00000.bin, ...          raw token ids (uint16, or uint32 for vocabularies over 65536)
    val-00000.bin, ...
    tokenizer/                    the tokenizer that made them (training uses it)
Each document is followed by EOS. Files are written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import json
import os

import numpy as np

from .tokens import TokenStream

FORMAT = "ratlm-tokens-v1"


def is_prepared(path):
    return os.path.isfile(os.path.join(path, "meta.json"))


class ShardWriter:
    """Appends documents to `<prefix>-NNNNN.bin` files of at most `shard_tokens` tokens each."""

    def __init__(self, folder, prefix, dtype, shard_tokens):
        self.folder, self.prefix, self.dtype, self.shard_tokens = folder, prefix, np.dtype(dtype), shard_tokens
        self.files, self.fh, self.in_shard, self.tokens, self.docs = [], None, 0, 0, 0
        self.file_tokens = []  # tokens in each file

    def _open(self):
        name = f"{self.prefix}-{len(self.files):05d}.bin"
        self.files.append(name)
        self.fh = open(os.path.join(self.folder, name + ".tmp"), "wb")
        self.in_shard = 0
        self.file_tokens.append(0)

    def _close(self):
        if self.fh is not None:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
            os.replace(os.path.join(self.folder, self.files[-1] + ".tmp"), os.path.join(self.folder, self.files[-1]))
            self.fh = None

    def add(self, doc):
        """Write one document's tokens (its EOS included); documents may span two shards."""
        doc = np.asarray(doc, self.dtype)
        self.docs += 1
        at = 0
        while at < len(doc):
            if self.fh is None or self.in_shard >= self.shard_tokens:
                self._close()
                self._open()
            take = min(len(doc) - at, self.shard_tokens - self.in_shard)
            doc[at:at + take].tofile(self.fh)
            self.in_shard += take
            self.file_tokens[-1] += take
            self.tokens += take
            at += take

    def close(self):
        self._close()
        return self.files


def prepare(folder, splits, encoder, shard_tokens=1 << 28, progress=None, source=""):
    """Tokenise each split ({"train": texts, "val": texts}) into shards in `folder` and save the tokenizer.
    `progress(n_tokens)` is called as documents are written. Returns the meta dict."""
    os.makedirs(folder, exist_ok=True)
    if is_prepared(folder):
        raise FileExistsError(f"{folder} already holds prepared tokens (meta.json); choose another --out")
    meta = {"format": FORMAT, "dtype": np.dtype(encoder.dtype).name, "eos_token_id": encoder.eos,
            "vocab_size": encoder.vocab, "source": source, "splits": {}}
    for split, texts in splits.items():
        writer = ShardWriter(folder, split, encoder.dtype, shard_tokens)
        nbytes = 0

        def counted(texts=texts):
            nonlocal nbytes
            for t in texts:
                nbytes += len(t.encode("utf-8"))
                yield t

        for doc in encoder.documents(counted()):
            writer.add(doc)
            if progress is not None:
                progress(len(doc))
        files = writer.close()
        meta["splits"][split] = {"files": files, "file_tokens": writer.file_tokens, "tokens": writer.tokens,
                                 "documents": writer.docs, "bytes": nbytes}
    if not meta["splits"].get("train", {}).get("tokens"):
        for info in meta["splits"].values():
            for name in info["files"]:
                os.remove(os.path.join(folder, name))
        raise ValueError(f"{source or 'the data'}: no text to tokenise in the training split")
    encoder.tokenizer.save_pretrained(os.path.join(folder, "tokenizer"))
    tmp = os.path.join(folder, "meta.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(meta, fh, indent=2)
    os.replace(tmp, os.path.join(folder, "meta.json"))
    return meta


def load_meta(folder):
    with open(os.path.join(folder, "meta.json")) as fh:
        meta = json.load(fh)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{folder}/meta.json is not a ratlm token folder (format {meta.get('format')!r})")
    return meta


SCAN_TOKENS = 1 << 30  # shards up to this many tokens are scanned for ids outside the vocabulary when opened


def open_split(folder, split, meta=None):
    """A TokenStream over a prepared split (memmapped), or None when the split is absent or empty.
    Checks each shard against meta.json (its size, and for splits up to SCAN_TOKENS tokens its ids
    against the vocabulary), naming the file that does not match."""
    meta = meta or load_meta(folder)
    info = meta["splits"].get(split)
    if not info or not info["tokens"]:
        return None
    itemsize = np.dtype(meta["dtype"]).itemsize
    counts = info.get("file_tokens")  # absent in folders of older versions: the total is checked instead
    arrays, found = [], 0
    for k, name in enumerate(info["files"]):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"prepared shard {path} is missing; prepare the data again")
        size = os.path.getsize(path)
        n = size // itemsize
        if size % itemsize or (counts is not None and n != counts[k]):
            want = f"{counts[k]:,} tokens" if counts is not None else f"a multiple of {itemsize} bytes"
            raise ValueError(f"prepared shard {path} holds {size:,} bytes ({n:,} tokens) but meta.json says {want}: "
                             "the file is truncated or was changed; prepare the data again")
        found += n
        if size:
            arrays.append(np.memmap(path, dtype=meta["dtype"], mode="r"))
    if found != info["tokens"]:
        raise ValueError(f"the {split} shards in {folder} hold {found:,} tokens but meta.json says {info['tokens']:,}: "
                         "a file is truncated or was changed; prepare the data again")
    if found <= SCAN_TOKENS:
        vocab = meta["vocab_size"]
        for name, a in zip([f for f in info["files"] if os.path.getsize(os.path.join(folder, f))], arrays):
            top = int(a.max())
            if top >= vocab:
                raise ValueError(f"prepared shard {os.path.join(folder, name)} holds token id {top}, outside the "
                                 f"vocabulary of its tokenizer ({vocab} tokens): the file is corrupt or was not made "
                                 "with that tokenizer; prepare the data again")
    bpt = info["bytes"] / max(1, info["tokens"])
    return TokenStream(arrays, bytes_per_token=bpt)
