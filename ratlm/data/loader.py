"""Which rows each step trains on: deterministic, a function of (seed, step), the same for any number
of processes. The global batch of step s is rows s*G .. s*G + G - 1 of an endless sequence of epochs,
each a seeded permutation of all rows; process r of w takes the r-th of w equal slices. A resumed run
therefore needs only the step to continue exactly where it stopped. A streamed dataset (read in
order) keeps its reading position instead, which checkpoints save."""
from __future__ import annotations

import numpy as np

from .hf import StreamingRows


class Batches:
    def __init__(self, rows, global_rows, seed, shuffle=True):
        self.rows, self.global_rows, self.seed, self.shuffle = rows, global_rows, seed, shuffle
        self.streaming = isinstance(rows, StreamingRows)
        self.next_step = 0  # streaming only: the step whose batch comes next
        self._perm = (None, None)
        if not self.streaming and len(rows) == 0:
            raise ValueError("the training data is too short to make a single row; give more data or a smaller "
                             "--seq-len")

    def _order(self, epoch):
        if self._perm[0] != epoch:
            n = len(self.rows)
            perm = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            self._perm = (epoch, perm)
        return self._perm[1]

    def row_index(self, k):
        """Index (into rows) of the k-th row ever drawn."""
        n = len(self.rows)
        return int(self._order(k // n)[k % n])

    def epoch_of(self, step):
        if self.streaming:
            return self.rows.epoch
        return step * self.global_rows / len(self.rows)

    def for_rank(self, step, rank=0, world=1):
        """This process's rows of the global batch of `step`, in order."""
        G = self.global_rows
        per = G // world
        if self.streaming:
            if step != self.next_step:
                raise RuntimeError(f"streamed data is read in order: asked for step {step}, next is {self.next_step}")
            rows = self.rows.next_rows(G)
            self.next_step += 1
            return rows[rank * per:(rank + 1) * per]
        first = step * G + rank * per
        return [self.rows[self.row_index(k)] for k in range(first, first + per)]

    def state_dict(self):
        return {"streaming": self.rows.state_dict() if self.streaming else None, "next_step": self.next_step}

    def load_state_dict(self, state, step):
        """Continue with the batch of `step` (the step after the checkpoint's)."""
        self.next_step = step
        if self.streaming and state.get("streaming") is not None:
            self.rows.load_state_dict(state["streaming"])
