"""Named model presets: the paper's 1.3B "xl" models and small versions of each for CPU work.

A preset name is VARIANT-SIZE. VARIANT is attention, rat (L=16), ratN (L=N), rnn, attention-swa or
ratN-swa (hybrids: RAT or attention on even layers, sliding-window attention on odd layers); SIZE is
tiny, small or xl. Examples: "rat-xl", "rat64-tiny", "rat-swa-small", "attention-swa-xl".
"""
from __future__ import annotations

import re

SIZES = {
    # the paper's 1.3B models (Llama-2 tokenizer, training length 4096)
    "xl": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, vocab_size=32000,
               train_length=4096, sliding_window=1024),
    # a few million parameters: minutes of CPU training
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, vocab_size=512,
                 train_length=256, sliding_window=64),
    # about 20M parameters (6 x 512): CPU benchmarks and longer CPU runs
    "small": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, vocab_size=512,
                  train_length=1024, sliding_window=256),
}
VARIANTS = ("attention", "rat", "ratN", "rnn", "attention-swa", "rat-swa", "ratN-swa")

_NAME = re.compile(r"^(attention|rnn|rat(\d*))(-swa)?-(" + "|".join(SIZES) + r")$")


def preset_names() -> list[str]:
    return [f"{v}-{s}" for s in SIZES for v in ("attention", "rat", "rat64", "rnn", "attention-swa", "rat-swa")]


def preset_kwargs(name: str, **overrides) -> dict:
    """Config keyword arguments of a preset (see the module docstring for names), with `overrides`
    applied (layer_types follows an overridden num_hidden_layers)."""
    m = _NAME.match(name)
    if not m:
        raise ValueError(f"unknown preset {name!r}; use VARIANT-SIZE with VARIANT in attention, rat, ratN, rnn, "
                         f"attention-swa, rat-swa, ratN-swa and SIZE in {', '.join(SIZES)} (e.g. rat-tiny, rat-swa-xl)")
    kind, digits, swa, size = m.groups()
    if swa and kind == "rnn":
        raise ValueError("there is no rnn-swa preset; hybrids are attention-swa or rat-swa")
    kw = dict(SIZES[size])
    base = "rat" if kind.startswith("rat") else kind
    if digits:
        kw["chunk_size"] = int(digits)
    kw.update(overrides)
    n = kw["num_hidden_layers"]
    kw.setdefault("layer_types", [("sliding_attention" if swa and i % 2 else base) for i in range(n)])
    return kw
