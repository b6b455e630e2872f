"""What the eval commands share: loading models and data, scoring tokens, tables."""
from __future__ import annotations

import json
import math
import os

import torch

from ..data.corpus import decode, jsonl_records


def labels(paths):
    """Short unique names for model directories (their base names, made unique)."""
    names = [os.path.basename(os.path.normpath(p)) or p for p in paths]
    if len(set(names)) < len(names):
        names = [os.path.normpath(p) for p in paths]
    return names


def read_documents(paths, text_field="text"):
    """Documents from text files (one document each), .jsonl files (one per line, `text_field`), or
    directories of such files."""
    docs = []
    for path in paths:
        if os.path.isdir(path):
            files = sorted(os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs
                           if f.endswith((".txt", ".jsonl", ".md")))
            if not files:
                raise FileNotFoundError(f"no .txt, .md or .jsonl files under {path}")
            docs += read_documents(files, text_field)
            continue
        if not os.path.exists(path):
            raise FileNotFoundError(f"data file {path} not found")
        if path.endswith(".jsonl"):
            for n, rec in jsonl_records(path, hint=""):
                if not isinstance(rec, dict) or text_field not in rec:
                    raise ValueError(f"{path}:{n}: no field {text_field!r}; use --text-field")
                docs.append(rec[text_field])
        else:
            with open(path, "rb") as f:
                docs.append(decode(f.read(), path, hint=""))  # refuses bytes that are not UTF-8 text, naming the offset
    docs = [d for d in docs if d]
    if not docs:
        raise ValueError("the data has no text")
    return docs


def encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def token_scores(model, ids, mask=None, positions=None, chunk=2048):
    """Next-token scores of a batch: for each (row, t) in `positions` (a (B, K) long tensor, default all
    t < T-1), the negative log-likelihood of ids[row, t+1] and whether it is the argmax.
    Returns (nll (B, K) float32, correct (B, K) bool). The vocabulary projection runs in chunks of
    positions to bound memory."""
    with torch.no_grad():
        h = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        head = model.get_output_embeddings()
        B, T = ids.shape
        if positions is None:
            positions = torch.arange(T - 1, device=ids.device)[None].expand(B, T - 1)
        nll, correct = [], []
        for a in range(0, positions.shape[1], chunk):
            pos = positions[:, a:a + chunk]
            hs = h.gather(1, pos[..., None].expand(-1, -1, h.shape[-1]))
            logits = head(hs).float()
            target = ids.gather(1, pos + 1)
            logp = torch.log_softmax(logits, -1)
            nll.append(-logp.gather(-1, target[..., None])[..., 0])
            correct.append(logits.argmax(-1) == target)
        return torch.cat(nll, 1), torch.cat(correct, 1)


def pad_left(rows, pad_id):
    """List of id lists -> (ids, mask) tensors, padded on the left."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, T - len(r):] = torch.tensor(r)
            mask[i, T - len(r):] = 1
    return ids, mask


def fmt(x, digits=3):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}" if abs(x) < 1e5 else f"{x:.3g}"
    return str(x)


def table(head, rows):
    """Plain-text table with right-aligned columns (the first left-aligned)."""
    cells = [[fmt(c) for c in r] for r in [head, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = []
    for k, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
