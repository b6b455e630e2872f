"""A byte-level BPE tokenizer trained locally with `tokenizers` (`--tokenizer bpe:VOCAB`)."""
from __future__ import annotations

from .tokenizer import BOS, EOS, PAD


def parse_bpe(spec):
    """The vocabulary size of a "bpe:N" spec, or None when spec is something else."""
    if not isinstance(spec, str) or not spec.startswith("bpe:"):
        return None
    try:
        n = int(spec[4:])
    except ValueError:
        raise ValueError(f"--tokenizer {spec}: expected bpe:VOCAB_SIZE, e.g. bpe:4096") from None
    if n < 260 or n > 1 << 20:
        raise ValueError(f"--tokenizer {spec}: the vocabulary size must be between 260 and {1 << 20}")
    return n


def train_bpe(texts, vocab_size, show_progress=False):
    """A PreTrainedTokenizerFast: byte-level BPE over `texts` (any iterable of strings), with <pad>,
    <bos>, <eos> as ids 0, 1, 2. Decoding gives back the exact text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS], show_progress=show_progress,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   padding_side="left", model_max_length=1 << 30)
