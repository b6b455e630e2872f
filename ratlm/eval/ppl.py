"""Perplexity in windows with a stride, and bits per UTF-8 byte.

Each document is read in windows of `context` tokens, the window moving `stride` tokens at a time; a
window scores only the tokens no earlier window scored, so every token is scored once: those of the
first window with the history they have, later ones with at least context - stride tokens before them
in the window. stride = context - 1 (the default) is the cheapest: windows share one token.
The first token of a document has no history and is not scored (unless `bos` puts a BOS before it).
"""
from __future__ import annotations

import math

import torch

from .common import encode, token_scores


def windows(n, context, stride):
    """[(begin, end, first)] over n tokens: window begin .. end-1 scores the targets first .. end-1
    (target t is predicted at t-1, which the window holds). The first window scores all it can; each
    later one scores the next `stride` tokens, each with at least context - stride tokens before it."""
    if context < 2:
        raise ValueError(f"context must be at least 2 tokens, got {context}")
    if not 1 <= stride < context:
        raise ValueError(f"stride must be between 1 and context - 1 ({context - 1}), got {stride}")
    out, done = [], 1  # targets before `done` are scored
    while done < n:
        end = min(context if done == 1 else done + stride, n)
        out.append((max(0, end - context), end, done))
        done = end
    return out


def perplexity(model, tok, docs, context, stride=None, batch_size=8, bos=False, max_tokens=None, progress=None):
    """Mean negative log-likelihood over all scored tokens of `docs` (strings).

    Returns a dict: tokens (scored), nll (nats/token), ppl, bytes (UTF-8 bytes of the scored text),
    bits_per_byte, context, stride."""
    stride = stride or context - 1
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    items, n_bytes, seen = [], 0, 0
    for d in docs:
        ids = encode(tok, d)
        if max_tokens is not None and seen + len(ids) > max_tokens:
            ids = ids[:max(max_tokens - seen, 0)]
        if not ids:
            break
        seen += len(ids)
        if bos:
            if tok.bos_token_id is None:
                raise ValueError("the tokenizer has no BOS token; leave out --bos")
            ids = [tok.bos_token_id] + ids
        n_bytes += len(tok.decode(ids[1:]).encode("utf-8"))  # the scored text
        for w in windows(len(ids), context, stride):
            items.append((ids, *w))
        if max_tokens is not None and seen >= max_tokens:
            break
    if not items:
        raise ValueError("nothing to score: the data has fewer than 2 tokens")
    items.sort(key=lambda it: it[2] - it[1])  # similar lengths together
    total, count = 0.0, 0
    bar = progress(total=len(items), desc="ppl", unit="window") if progress else None
    for a in range(0, len(items), batch_size):
        batch = items[a:a + batch_size]
        T = max(e - b for _, b, e, _ in batch)
        ids = torch.full((len(batch), T), pad, dtype=torch.long)
        mask = torch.zeros(len(batch), T, dtype=torch.long)
        keep = torch.zeros(len(batch), T - 1, dtype=torch.bool)
        for i, (doc, b, e, first) in enumerate(batch):
            ids[i, : e - b] = torch.tensor(doc[b:e])
            mask[i, : e - b] = 1
            keep[i, first - b - 1: e - b - 1] = True  # position t predicts token t+1
        nll, _ = token_scores(model, ids.to(device), mask.to(device) if not bool(mask.all()) else None)
        total += float(nll[keep.to(device)].double().sum())
        count += int(keep.sum())
        if bar:
            bar.update(len(batch))
    if bar:
        bar.close()
    nll = total / count
    return {"tokens": count, "nll": nll, "ppl": math.exp(min(nll, 700)), "bytes": n_bytes,
            "bits_per_byte": total / math.log(2) / max(n_bytes, 1), "context": context, "stride": stride}
