"""Length generalisation: the loss at each position, on sequences up to several times the training length.

The models are causal, so the loss at position p of a sequence does not depend on anything after p:
one pass over windows of the longest eval length gives the loss at every position, and the mean loss
at eval length L is the mean over positions below L. Windows are cut, without overlap, from the
documents joined by blank lines.
"""
from __future__ import annotations

import torch

from .common import encode, pyplot, token_scores


def position_losses(model, tok, docs, length, max_windows=16, batch_size=4, progress=None):
    """Mean NLL (nats) of the token at each position 1 .. length-1 over up to `max_windows` windows.
    Returns (losses: list of length-1 floats, windows used)."""
    ids = encode(tok, "\n\n".join(docs))
    n = min(len(ids) // length, max_windows)
    if n < 1:
        raise ValueError(f"the data has {len(ids)} tokens, fewer than one window of {length}; "
                         "give more text or smaller --factors")
    device = next(model.parameters()).device
    rows = torch.tensor(ids[: n * length]).view(n, length)
    total = torch.zeros(length - 1, dtype=torch.float64)
    bar = progress(total=n, desc=f"length {length}", unit="window") if progress else None
    for a in range(0, n, batch_size):
        nll, _ = token_scores(model, rows[a:a + batch_size].to(device))
        total += nll.double().sum(0).cpu()
        if bar:
            bar.update(len(nll))
    if bar:
        bar.close()
    return (total / n).tolist(), n


def buckets(losses, width):
    """[(first position, last position, mean loss)] over buckets of `width` positions
    (losses[i] is the loss at position i + 1)."""
    out = []
    for a in range(0, len(losses), width):
        part = losses[a:a + width]
        out.append((a + 1, a + len(part), sum(part) / len(part)))
    return out


def mean_upto(losses, length):
    """Mean loss over the positions of a sequence of `length` tokens."""
    part = losses[: length - 1]
    return sum(part) / len(part)


def plot(results, png, train_length, title="ratlm eval length"):
    """One line per model: loss against position (bucket middles); dashed line at the training length."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in results:
        xs = [(a + b) / 2 for a, b, _ in r["buckets"]]
        ax.plot(xs, [m for _, _, m in r["buckets"]], marker=".", label=r["name"])
    lengths = sorted({r["train_length"] for r in results} | {train_length})
    for t in lengths:
        ax.axvline(t, color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("position (tokens); dashed: training length")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
