"""Tokenizers: a byte-level one that needs no files (token id = byte value), or any local HF one."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
BYTE_VOCAB = 259  # 256 bytes + pad (256), bos (257), eos (258)


@functools.lru_cache(maxsize=1)
def _byte_symbols():
    """The printable stand-in ByteLevel uses for each byte value (GPT-2's byte-to-unicode table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A PreTrainedTokenizerFast over raw UTF-8 bytes: ids 0-255 are bytes, then <pad>, <bos>, <eos>.
    Left padding, as decoder-only generation wants."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {sym: i for i, sym in enumerate(_byte_symbols())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([PAD, BOS, EOS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   padding_side="left", model_max_length=1 << 30)


def load_tokenizer(name_or_path: str | None) -> PreTrainedTokenizerBase:
    """'byte' for the byte-level tokenizer, else a local tokenizer directory (AutoTokenizer)."""
    if name_or_path in (None, "byte", "bytes"):
        return byte_tokenizer()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok
