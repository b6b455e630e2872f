"""Checkpoints: one file per save, `checkpoints/step-00000100.pt`, holding model, optimizer, scheduler,
every process's RNG states and the data position.

A save writes `.step-....pt.tmp`, flushes it to disk, then renames it into place (atomic on POSIX), so a
crash at any moment leaves the previous checkpoint whole; only after that are checkpoints beyond
keep-last-N deleted. Files are loaded with `weights_only=True` (tensors and plain Python values only).
"""
from __future__ import annotations

import errno
import os
import random
import re

import numpy as np
import torch

from ..errors import UserError

NAME = re.compile(r"^step-(\d{8})\.pt$")


def path_for(folder, step):
    return os.path.join(folder, f"step-{step:08d}.pt")


def list_checkpoints(folder):
    """[(step, path)] of complete checkpoints in `folder`, oldest first."""
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(1)), os.path.join(folder, f)) for f in os.listdir(folder) if (m := NAME.match(f))]
    return sorted(found)


def save(folder, step, payload, keep_last):
    """Write `payload` as the checkpoint of `step` atomically; then keep the newest `keep_last`.
    A failed write (e.g. a full disk) removes its temporary file and leaves the previous checkpoints."""
    os.makedirs(folder, exist_ok=True)
    final = path_for(folder, step)
    tmp = os.path.join(folder, f".step-{step:08d}.pt.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
        try:
            os.remove(tmp)
        except OSError:
            pass
        if getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e):
            kept = latest(folder)
            previous = f"the previous checkpoint {os.path.basename(kept)} is kept" if kept else "no earlier checkpoint"
            raise UserError(f"no space left on device writing the checkpoint of step {step} in {folder}; {previous}: "
                           "free some space and continue with --resume auto") from None
        raise
    os.replace(tmp, final)
    try:
        dfd = os.open(folder, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
    except OSError:  # pragma: no cover - e.g. file systems without directory fsync
        pass
    for _, old in list_checkpoints(folder)[:-keep_last]:
        os.remove(old)
    return final


def clean_temporaries(folder):
    """Remove temporary files that a crash mid-save left behind."""
    if os.path.isdir(folder):
        for f in os.listdir(folder):
            if f.startswith(".step-") and f.endswith(".tmp"):
                os.remove(os.path.join(folder, f))


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def describe_error(e):
    """One line about a checkpoint that cannot be loaded, without torch's advice to unpickle it with
    weights_only=False (never do that with a file you did not write)."""
    text = str(e).strip()
    if "Weights only load failed" in text or "weights_only" in text:
        return "it holds objects other than tensors and plain values, which ratlm does not unpickle"
    first = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def latest(folder):
    """Path of the newest complete checkpoint, or None."""
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


# RNG states as tensors and plain values (loadable with weights_only=True) --------------------------
def rng_state():
    np_state = np.random.get_state(legacy=False)
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"bit_generator": np_state["bit_generator"], "pos": int(np_state["state"]["pos"]),
                       "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                       "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state):
    random.setstate(_tuplify(state["python"]))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"], "has_gauss": n["has_gauss"], "gauss": n["gauss"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]}})
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x
