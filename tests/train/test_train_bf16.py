"""bf16 autocast training (`--precision bf16`) on CPU for every mixer and hybrid recipe: a few steps,
the loss finite and falling."""
import json
import os

import numpy as np
import pytest
from train_helpers import TINY, tiny_args

from ratlm.cli import main
from ratlm.train import recipe as rc
from ratlm.train.loop import train

RECIPES = ("tiny-rat", "tiny-rat-swa", "tiny-attention", "tiny-attention-swa", "tiny-rnn")


def losses(out):
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return [r["loss"] for r in records if "loss" in r]


@pytest.mark.parametrize("name", RECIPES)
def test_bf16_autocast_training(tmp_path, corpus_dir, name):
    settings = {k: v for k, v in TINY.items() if k != "model"}  # the recipe's own mixer
    r = rc.load(name, {**settings, "data": str(corpus_dir), "out": str(tmp_path / "run"), "precision": "bf16",
                       "sliding_window": 8, "max_steps": 6, "eval_every": 6, "save_every": 6, "lr": "1e-2"})
    train(r)
    loss = losses(tmp_path / "run")
    assert len(loss) == 6 and all(np.isfinite(loss))
    assert loss[-1] < loss[0]


def test_bf16_from_the_command_line(tmp_path, corpus_dir):
    args = tiny_args(model="rat-swa-tiny", sliding_window=8, precision="bf16", max_steps=2, save_every=2,
                     eval_every=2, data=str(corpus_dir), out=str(tmp_path / "run"))
    assert main(["train", *args]) == 0
    assert all(np.isfinite(losses(tmp_path / "run")))
