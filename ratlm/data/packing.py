"""Rows for training: `seq_len` input tokens, the targets they predict, and document-aware positions.

A row never lets one document see another: `position_ids` restart at 0 where a document begins inside
the row (the model then resets the recurrence and masks attention there), and the target of each
document's last token (EOS) is -100, so no token learns to predict the start of an unrelated document.

Two kinds of rows:
- `StreamRows`: row i is the token window [i*T, i*T + T] of a stream of documents (pretraining);
- `PackedRows`: whole examples (SFT: loss only on responses) packed greedily, the rest padded.
"""
from __future__ import annotations

import numpy as np
import torch

IGNORE = -100


def document_positions(inputs, eos):
    """Position of each token inside its document: 0 at the row start and right after each EOS."""
    T = len(inputs)
    idx = np.arange(T)
    start = np.zeros(T, np.int64)
    start[1:] = np.where(inputs[:-1] == eos, idx[1:], 0)
    return idx - np.maximum.accumulate(start)


def stream_row(window, eos):
    """A row from T + 1 consecutive tokens of a stream."""
    inputs, targets = window[:-1].copy(), window[1:].copy()
    targets[inputs == eos] = IGNORE
    return {"input_ids": inputs, "labels": targets, "position_ids": document_positions(inputs, eos)}


class StreamRows:
    """Non-overlapping rows of a token stream (row i reads tokens [i*T, i*T + T])."""

    def __init__(self, stream, seq_len, eos):
        self.stream, self.seq_len, self.eos = stream, seq_len, eos

    def __len__(self):
        return max(0, (len(self.stream) - 1) // self.seq_len)

    def __getitem__(self, i):
        return stream_row(self.stream.window(i * self.seq_len, self.seq_len + 1), self.eos)


def example_arrays(prompt_ids, response_ids, eos, seq_len):
    """(inputs, targets) of one SFT example: prompt + response + EOS, loss only where the target is a
    response token or the final EOS. Truncated to seq_len inputs; None when nothing is left to learn."""
    x = np.array([*prompt_ids, *response_ids, eos], np.int64)
    inputs, targets = x[:-1], x[1:].copy()
    targets[: max(0, len(prompt_ids) - 1)] = IGNORE
    inputs, targets = inputs[:seq_len], targets[:seq_len]
    if not (targets != IGNORE).any():
        return None
    return inputs, targets


class PackedRows:
    """Examples (inputs, targets) packed whole, in the given order, into rows of `seq_len` tokens.
    Each example is its own document; the tail of a row is padding (attention_mask 0, no loss)."""

    def __init__(self, examples, seq_len, pad):
        self.seq_len, self.pad = seq_len, pad
        self.examples = examples
        self.rows, row, used = [], [], 0
        for i, (inp, _) in enumerate(examples):
            if used + len(inp) > seq_len and row:
                self.rows.append(row)
                row, used = [], 0
            row.append(i)
            used += len(inp)
        if row:
            self.rows.append(row)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, r):
        T = self.seq_len
        inputs = np.full(T, self.pad, np.int64)
        targets = np.full(T, IGNORE, np.int64)
        positions = np.zeros(T, np.int64)
        mask = np.zeros(T, np.int64)
        at = 0
        for i in self.rows[r]:
            inp, tgt = self.examples[i]
            n = len(inp)
            inputs[at:at + n], targets[at:at + n] = inp, tgt
            positions[at:at + n] = np.arange(n)
            mask[at:at + n] = 1
            at += n
        row = {"input_ids": inputs, "labels": targets, "position_ids": positions}
        if at < T:
            row["attention_mask"] = mask
        return row


def collate(rows):
    """A list of rows to a batch of tensors (attention_mask only when some row has padding)."""
    batch = {k: torch.from_numpy(np.stack([r[k] for r in rows])) for k in ("input_ids", "labels", "position_ids")}
    if any("attention_mask" in r for r in rows):
        T = len(rows[0]["input_ids"])
        batch["attention_mask"] = torch.from_numpy(
            np.stack([r.get("attention_mask", np.ones(T, np.int64)) for r in rows]))
    return batch
