"""Metrics: one JSON object per line in `metrics.jsonl`, and `loss.png` (train and validation loss)
drawn from it."""
from __future__ import annotations

import json
import math
import os


class Metrics:
    def __init__(self, folder, enabled=True):
        self.path = os.path.join(folder, "metrics.jsonl")
        self.png = os.path.join(folder, "loss.png")
        self.enabled = enabled

    def truncate_after(self, step):
        """Drop records past `step` (left by a run that crashed after its last checkpoint)."""
        if not self.enabled or not os.path.isfile(self.path):
            return
        keep = [r for r in read(self.path) if r.get("step", 0) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            for r in keep:
                fh.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)

    def write(self, **record):
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps({k: _plain(v) for k, v in record.items()}) + "\n")

    def plot(self, title=""):
        if self.enabled and os.path.isfile(self.path):
            plot(read(self.path), self.png, title)


def _plain(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return round(v, 6) if isinstance(v, float) else v


def read(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def plot(records, png, title=""):
    """Train loss (raw and smoothed) and validation loss against tokens seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["tokens"], r["loss"]) for r in records if r.get("loss") is not None and "tokens" in r]
    val = [(r["tokens"], r["val_loss"]) for r in records if r.get("val_loss") is not None and "tokens" in r]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    if train:
        x, y = zip(*train)
        ax.plot(x, y, color="tab:blue", alpha=0.3, lw=0.8)
        w = max(1, len(y) // 25)  # trailing mean over about 4% of the points
        c = [0.0]
        for v in y:
            c.append(c[-1] + v)
        smooth = [(c[i + 1] - c[max(0, i + 1 - w)]) / min(w, i + 1) for i in range(len(y))]
        ax.plot(x, smooth, color="tab:blue", lw=1.6, label="train" + (f" (mean of {w})" if w > 1 else ""))
    if val:
        x, y = zip(*val)
        ax.plot(x, y, "o-", color="tab:orange", lw=1.6, ms=4, label="validation")
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    fig.tight_layout()
    tmp = png + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png)
