"""Retrieval accuracy (passkey, needle in a haystack, MQAR) as a length x depth table.

The records come from ratlm.data.synthetic, the same generator training uses. Scoring is by teacher
forcing: an answer counts as right when every one of its tokens is the model's argmax given the prompt
and the response before it. That is exactly the condition for greedy decoding to produce it, so the
accuracy is greedy exact match, from one forward pass per example.

Cells: passkey and niah examples are made for each (length, depth) of the grid (depth = where the
needle goes); mqar has no depth option, so each answer goes to the depth column nearest to where its
key:value pair sits among the pairs. Lengths are characters (tokens for byte-level models).
"""
from __future__ import annotations

import torch

from ..data import synthetic
from .common import encode, pad_left, pyplot, token_scores


def prepare(tok, rec, bos=None):
    """Token ids of prompt + response (up to the last answer) and, per answer, the (start, end) range
    of its token indices. The response is tokenized piece by piece, so each answer is whole tokens."""
    ids = ([bos] if bos is not None else []) + encode(tok, rec["prompt"])
    resp, pos, ranges = rec["response"], 0, []
    for start, end, _ in rec["meta"]["answers"]:
        if start > pos:
            ids += encode(tok, resp[pos:start])
        a = len(ids)
        ids += encode(tok, resp[start:end])
        ranges.append((a, len(ids)))
        pos = end
    return ids, ranges


def score(model, tok, recs, batch_size=8, bos=None):
    """Per record, a list of booleans: is each answer greedy-correct."""
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    prepared = [prepare(tok, r, bos) for r in recs]
    order = sorted(range(len(recs)), key=lambda i: len(prepared[i][0]))
    out = [None] * len(recs)
    for a in range(0, len(order), batch_size):
        idx = order[a:a + batch_size]
        rows = [prepared[i][0] for i in idx]
        ids, mask = pad_left(rows, pad)
        T = ids.shape[1]
        targets = [[t for s, e in prepared[i][1] for t in range(s, e)] for i in idx]
        K = max(len(t) for t in targets)
        pos = torch.zeros(len(idx), K, dtype=torch.long)
        for r, (row, tg) in enumerate(zip(rows, targets)):
            off = T - len(row)
            pos[r, : len(tg)] = torch.tensor([off + t - 1 for t in tg])  # position t-1 predicts token t
        _, correct = token_scores(model, ids.to(device), None if bool(mask.all()) else mask.to(device), pos.to(device))
        correct = correct.cpu()
        for r, i in enumerate(idx):
            k, res = 0, []
            for s, e in prepared[i][1]:
                res.append(bool(correct[r, k:k + e - s].all()))
                k += e - s
            out[i] = res
    return out


def nearest(depths, d):
    return min(range(len(depths)), key=lambda j: (abs(depths[j] - d), j))


def evaluate(model, tok, task, lengths, depths, n=20, seed=0, options=None, batch_size=8, bos=None,
             progress=None):
    """Accuracy per (length, depth) cell, exact match per length (every answer of an example right),
    and the mean number of tokens per length. Returns a JSON-ready dict."""
    options = dict(options or {})
    for fixed in ("length", "depth"):
        if fixed in options:
            raise ValueError(f"give {fixed} through the lengths / depths grid, not as a task option")
    has_depth = "depth" in synthetic.options(task)
    right = [[0] * len(depths) for _ in lengths]
    total = [[0] * len(depths) for _ in lengths]
    exact, tokens = [], []
    jobs = []  # all records first: a bad option or length fails before any model work
    for i in range(len(lengths)):
        for j in (range(len(depths)) if has_depth else [None]):
            opts = dict(options, length=lengths[i], **({"depth": depths[j]} if j is not None else {}))
            jobs.append((i, j, list(synthetic.records(task, n, seed, **opts))))
    bar = progress(total=len(jobs) * n, desc=task, unit="example") if progress else None
    per_length = {i: [0, 0, 0] for i in range(len(lengths))}  # exact, examples, tokens
    for i, j, recs in jobs:
        results = score(model, tok, recs, batch_size, bos)
        for rec, res in zip(recs, results):
            for (_, _, d), ok in zip(rec["meta"]["answers"], res):
                col = j if j is not None else nearest(depths, d)
                right[i][col] += ok
                total[i][col] += 1
            stats = per_length[i]
            stats[0] += all(res)
            stats[1] += 1
            stats[2] += len(prepare(tok, rec, bos)[0])
        if bar:
            bar.update(len(recs))
    if bar:
        bar.close()
    for i in range(len(lengths)):
        e, m, t = per_length[i]
        exact.append(e / m)
        tokens.append(t / m)
    acc = [[r / t if t else None for r, t in zip(rr, tt)] for rr, tt in zip(right, total)]
    return {"task": task, "options": options, "n": n, "seed": seed, "lengths": lengths, "depths": depths,
            "accuracy": acc, "answers": total, "exact": exact, "mean_tokens": tokens}


def mean_accuracy(result, i):
    """Answer accuracy at length index i over all depths (weighted by answers)."""
    r = sum((a or 0) * t for a, t in zip(result["accuracy"][i], result["answers"][i]))
    t = sum(result["answers"][i])
    return r / t if t else None


def heatmap(results, png, title):
    """One panel per model: accuracy by length (rows) and depth (columns)."""
    plt = pyplot()
    import numpy as np

    k = len(results)
    fig, axes = plt.subplots(1, k, figsize=(1.0 + 0.75 * len(results[0]["depths"]) * k + 1.2 * k,
                                            1.6 + 0.45 * len(results[0]["lengths"])), squeeze=False,
                             layout="constrained")
    for ax, r in zip(axes[0], results):
        acc = np.array([[np.nan if a is None else a for a in row] for row in r["accuracy"]], dtype=float)
        im = ax.imshow(acc, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(r["depths"])), [f"{d:g}" for d in r["depths"]])
        ax.set_yticks(range(len(r["lengths"])), [str(x) for x in r["lengths"]])
        for (y, x), v in np.ndenumerate(acc):
            if not np.isnan(v):
                ax.text(x, y, f"{v:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xlabel("depth")
        ax.set_ylabel("length")
        ax.set_title(r["name"])
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="accuracy")
    fig.suptitle(title)
    fig.savefig(png, dpi=120)
    plt.close(fig)
