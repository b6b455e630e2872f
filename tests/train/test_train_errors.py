"""User errors: one line from the CLI, exit code 2, no traceback, and no checkpoint harmed."""
import hashlib
import os
import sys

import pytest
from helpers import write_corpus
from train_helpers import tiny_args, tiny_recipe

from ratlm.cli import main
from ratlm.train import recipe as rc
from ratlm.train.loop import train


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("errors")
    src = write_corpus(tmp / "src")
    run = tmp / "run"
    train(tiny_recipe(data=str(src), out=str(run), max_steps=2))
    (tmp / "empty.txt").write_text("")
    (tmp / "bad.yaml").write_text("base: tiny-rat\nlrr: 0.1\n")
    (tmp / "badvalue.yaml").write_text("base: tiny-rat\nmax_steps: lots\n")
    from ratlm.data.bpe import train_bpe

    train_bpe(["some text " * 50], 300).save_pretrained(tmp / "bpe")
    return tmp


def snapshot(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


T = "{tmp}"
CASES = [
    # (id, extra arguments, message, run on the existing run folder with --resume auto)
    ("missing data", ["--data", f"{T}/nothing/*.txt"], "no file matches", False),
    ("missing folder", ["--data", f"{T}/nowhere/"], "no file matches", False),
    ("empty data", ["--data", f"{T}/empty.txt"], "no text", False),
    ("data too short", ["--data", f"{T}/src/mod00.py", "--seq-len", "4000"], "too short", False),
    ("unknown recipe key", ["--recipe", f"{T}/bad.yaml"], "unknown key 'lrr' \\(did you mean 'lr'\\?\\)", True),
    ("unknown recipe", ["--recipe", "tiny-ratt"], "no recipe 'tiny-ratt'.*did you mean tiny-rat", True),
    ("bad value in recipe", ["--recipe", f"{T}/badvalue.yaml"], "max_steps': bad value 'lots'", True),
    ("bad number", ["--lr", "fast"], "'lr': bad value 'fast'", True),
    ("negative lr", ["--lr", "-1"], "lr = -1.0: must be > 0", True),
    ("bad choice", ["--position-encoding", "alibi"], "'alibi' is not one of rope, nope", True),
    ("bad betas", ["--betas", "0.9"], "betas", True),
    ("warmup", ["--warmup-fraction", "1.5"], "warmup_fraction", True),
    ("batch not divisible", ["--batch-size", "5"], "not a multiple of micro_batch_size", True),
    ("bad model shape", ["--hidden-size", "30", "--num-attention-heads", "4"], "not divisible", False),
    ("unknown preset", ["--model", "transformer-tiny"], "unknown preset", False),
    ("vocab too small", ["--vocab-size", "100"], "the tokenizer has 259 tokens but vocab_size is 100", False),
    ("tokenizer not the data's", ["--tokenizer", f"{T}/tok-missing"], "no such folder", False),
    ("xl needs a tokenizer", ["--recipe", "xl-rat"], "recipe xl-rat needs --tokenizer:", False),
    ("xl tokenizer too big", ["--recipe", "xl-rat", "--tokenizer", f"{T}/bpe", "--vocab-size", "260",
                              "--data", f"{T}/src"], "tokenizer has 2.. tokens but vocab_size is 260", False),
    ("out of memory", ["--micro-batch-size", "4096", "--batch-size", "4096", "--seq-len", "100000",
                       "--data", "stdlib"], "needs at least about .* GiB .* free", False),
    ("checkpoints already there", ["--out", f"{T}/run"], "already holds checkpoints.*--resume auto", False),
    ("resume file missing", ["--resume", f"{T}/none.pt"], "no such checkpoint file", False),
    ("changed model on resume", ["--hidden-size", "64"], "cannot change hidden_size when resuming", True),
    ("changed data on resume", ["--data", f"{T}/empty.txt"], "cannot change data when resuming", True),
    ("bad bpe", ["--tokenizer", "bpe:many"], "expected bpe:VOCAB_SIZE", False),
    ("synthetic without its module", ["--data", "synthetic:passkey"], "needs ratlm.data.synthetic", False),
    ("unknown source", ["--data", "s3:bucket/x"], "unknown source", False),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_error_is_one_line_and_harmless(case, setup, capsys, monkeypatch):
    name, extra, message, on_existing = case
    tmp = setup
    monkeypatch.setitem(sys.modules, "ratlm.data.synthetic", None)  # as when the module is absent
    extra = [a.replace(T, str(tmp)) for a in extra]
    before = snapshot(tmp / "run")
    fresh = tmp / f"fresh-{abs(hash(name))}"
    base = tiny_args(data=tmp / "src", out=tmp / "run" if on_existing else fresh,
                     **({"tokenizer": None} if name == "xl needs a tokenizer" else {}))
    args = ["train", *base, *(["--resume", "auto"] if on_existing else []), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ratlm: ")]
    assert len(lines) == 1 and lines[0].startswith("ratlm: error: "), err
    import re

    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in err
    assert snapshot(tmp / "run") == before  # no checkpoint (or anything else) harmed
    assert not fresh.exists() or not any(fresh.rglob("*.pt"))


def test_every_shipped_recipe_loads():
    names = rc.shipped_recipes()
    assert {"tiny-rat", "tiny-attention", "tiny-rnn", "tiny-rat-swa", "tiny-attention-swa", "xl-rat",
            "xl-attention", "xl-rat-swa"} <= set(names)
    for name in names:
        extra = {"tokenizer": "byte", "data": "stdlib"} if name.startswith("xl") else {}
        r = rc.load(name, extra)
        assert r["lr"] > 0 and r["max_steps"] > 0
    xl = rc.load("xl-rat", {"tokenizer": "x", "data": "y"})
    assert (xl["lr"], xl["betas"], xl["weight_decay"], xl["min_lr"], xl["warmup_fraction"], xl["grad_clip"]) == \
        (8e-4, [0.9, 0.95], 0.1, 1e-6, 0.05, 1.0)
    assert (xl["batch_size"], xl["seq_len"], xl["precision"], xl["vocab_size"]) == (512, 4096, "bf16", 32000)


def test_help_documents_every_key(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for opt in rc.OPTIONS:
        assert "--" + opt.name.replace("_", "-") in text
