"""Supervised fine-tuning records: {"prompt": str, "response": str}, from JSONL files or from the
synthetic retrieval tasks of `ratlm.data.synthetic` (`--data synthetic:TASK`). Loss goes on the
response tokens (and the EOS that ends them) only."""
from __future__ import annotations

import importlib

from .corpus import jsonl_records
from .packing import example_arrays


def read_jsonl(files):
    """All {"prompt", "response"} records of the given JSONL files."""
    records = []
    for f in files:
        for n, rec in jsonl_records(f):
            if not (isinstance(rec, dict) and isinstance(rec.get("prompt"), str)
                    and isinstance(rec.get("response"), str)):
                raise ValueError(f"{f}:{n}: an SFT line needs string fields \"prompt\" and \"response\"")
            records.append(rec)
    return records


def synthetic_records(task, n, seed, **options):
    """n records of a synthetic task from `ratlm.data.synthetic.examples` (imported only when used)."""
    try:
        module = importlib.import_module("ratlm.data.synthetic")
    except ImportError as e:
        raise ValueError(f"--data synthetic:{task} needs ratlm.data.synthetic, which this install lacks "
                         f"({e})") from None
    try:
        records = list(module.examples(task, n, seed, **options))
    except (KeyError, TypeError) as e:
        raise ValueError(f"synthetic task {task!r} with options {options}: {e}") from None
    for r in records[:1]:
        if not (isinstance(r, dict) and "prompt" in r and "response" in r):
            raise ValueError(f"synthetic task {task!r} gave records without prompt/response")
    return records


def encode_records(records, encoder, seq_len):
    """(list of (inputs, targets) arrays, number truncated). Records with no response token left after
    truncation are dropped (counted as truncated)."""
    examples, truncated = [], 0
    for rec in records:
        p = encoder.encode(rec["prompt"], special=True)
        r = encoder.encode(rec["response"], special=False)
        ex = example_arrays(p, r, encoder.eos, seq_len)
        if ex is None or len(p) + len(r) > seq_len:
            truncated += 1
        if ex is not None:
            examples.append(ex)
    return examples, truncated
