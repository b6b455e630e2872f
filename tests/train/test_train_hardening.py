"""Issue 15: options that used to do something else silently, and bad input that used to train anyway
or crash; each case one clear line (exit 2) or the documented behaviour."""
import errno
import json
import os

import numpy as np
import pytest
import torch
from helpers import write_corpus
from train_helpers import tiny_args, tiny_recipe

from ratlm.cli import main
from ratlm.data import shards
from ratlm.data.sources import open_data
from ratlm.errors import UserError
from ratlm.train import checkpoint as ck
from ratlm.train import recipe as rc
from ratlm.train.lock import RunLock
from ratlm.train.loop import build_config, train


def one_error(capsys, args, pattern):
    import re

    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ratlm: ")]
    assert len(lines) == 1 and lines[0].startswith("ratlm: error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err
    return lines[0]


def text_files(tmp_path):
    names = {}
    for n, body in (("a.md", "alpha " * 60), ("b.md", "beta " * 70), ("c.md", "gamma " * 80), ("d.txt", "delta " * 90)):
        (tmp_path / n).write_text(body)
        names[n] = len(body)
    return names


# ------------------------------------------------------------------ options that did something else
def test_val_data_holds_nothing_of_data_out(tmp_path):
    sizes = text_files(tmp_path)
    spec = ",".join(str(tmp_path / n) for n in ("a.md", "b.md", "d.txt"))
    data = open_data(spec, 16, val_data=str(tmp_path / "c.md"))
    assert "3 train / 0 validation files" in data.description
    assert len(data.train.stream) == sizes["a.md"] + sizes["b.md"] + sizes["d.txt"] + 3  # every file, its EOS
    assert len(data.val.stream) == sizes["c.md"] + 1
    # the stdlib too: nothing held out
    std = open_data("stdlib", 16, val_data=str(tmp_path / "c.md"), tokenizer="byte")
    assert " 0 validation files" in std.description
    # --val-fraction 0: no validation split at all
    none = open_data(spec, 16, val_fraction=0)
    assert none.val is None and "3 train / 0 validation files" in none.description


def test_val_data_is_used_for_prepared_and_hf_data(tmp_path, capsys):
    sizes = text_files(tmp_path)
    assert main(["prepare", "--data", str(tmp_path / "*.md"), "--out", str(tmp_path / "tok")]) == 0
    capsys.readouterr()
    own = open_data(str(tmp_path / "tok"), 16)
    given = open_data(str(tmp_path / "tok"), 16, val_data=str(tmp_path / "d.txt"))
    assert len(given.val.stream) == sizes["d.txt"] + 1 != len(own.val.stream)
    pytest.importorskip("datasets")
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": f"doc {i} " * 20}) + "\n" for i in range(40)))
    hf = open_data("hf:json", 16, options=f"data_files={tmp_path / 'docs.jsonl'}", val_data=str(tmp_path / "d.txt"))
    assert len(hf.val.stream) == sizes["d.txt"] + 1 and hf.train.skip_docs == 0


def test_a_preset_on_the_command_line_wins_over_the_recipe_model_keys(tmp_path, capsys):
    from ratlm.data.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    small = build_config(rc.load("tiny-rat", {"model": "rat-small"}), tok)
    assert (small.num_hidden_layers, small.hidden_size) == (6, 512)
    assert build_config(rc.load("tiny-rat", {"model": "rat64-tiny"}), tok).chunk_size == 64
    sized = build_config(rc.load("tiny-rat", {"model": "rat-small", "hidden_size": 256}), tok)  # explicit size wins
    assert (sized.num_hidden_layers, sized.hidden_size) == (6, 256)
    assert build_config(rc.load("tiny-rat"), tok).hidden_size == 128  # the recipe's own keys still apply
    # the log names the preset and the size built
    src = write_corpus(tmp_path / "src")
    assert main(["train", *tiny_args(data=src, out=tmp_path / "run", max_steps=1), "--model", "attention-tiny",
                 "--num-hidden-layers", "1"]) == 0
    assert "model: attention-tiny (1 x 32," in capsys.readouterr().err


def test_sft_false_trains_on_prompt_and_response(tmp_path):
    path = tmp_path / "sft.jsonl"
    recs = [{"prompt": f"Q{i}?", "response": f" A{i}."} for i in range(40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    data = open_data(str(path), 16, sft_mode=False, val_fraction=0.2)
    assert not data.sft and "--sft false" in data.description
    n = sum(len(r["prompt"] + r["response"]) + 1 for r in recs)
    assert len(data.train.stream) + len(data.val.stream) == n
    summary = train(tiny_recipe(data=str(path), sft="false", out=str(tmp_path / "run"), max_steps=1))
    assert summary["steps"] == 1


def test_print_recipe_needs_no_required_keys(capsys):
    assert main(["train", "--recipe", "xl-rat", "--print-recipe"]) == 0
    assert "model: rat-xl" in capsys.readouterr().out
    assert main(["train", "--recipe", "xl-rat", "--print-recipe", "--lr", "1e-4"]) == 0
    assert "lr: 0.0001" in capsys.readouterr().out


def test_hf_val_docs_is_capped_for_small_datasets_and_explained(tmp_path, capsys):
    pytest.importorskip("datasets")
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"record {i}: " + "alpha beta " * 5}) + "\n" for i in range(30)))
    notes = []
    data = open_data("hf:json", 16, options=f"data_files={path}", log=notes.append)
    assert data.train.skip_docs == 3 and any("only 30 documents" in n for n in notes)
    one_error(capsys, ["train", *tiny_args(data="hf:json", data_options=f"data_files={path},val_docs=30",
                                           out=tmp_path / "run")],
              "val_docs=30 holds out every document of the train split \\(it has 30\\)")
    assert "val_docs" in rc.BY_NAME["data_options"].help


def test_out_and_name_help_and_folder_agree(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "runs/NAME with --name" in text and "the output folder is runs/NAME" in text
    src = write_corpus(tmp_path / "src")
    args = [a for a in tiny_args(data=src, max_steps=1) if a]
    assert main(["train", *args, "--name", "mine"]) == 0
    assert (tmp_path / "runs" / "mine" / "model" / "config.json").exists()


def test_typed_recipe_keeps_explicit_zeros_and_yaml_defaults():
    r = rc.typed(rc.load("tiny-rat", {"grad_clip": "0", "seed": "0", "warmup_steps": "0"}))
    assert (r.grad_clip, r.seed, r.warmup_steps, r.keep_last) == (0.0, 0, 0, 2)  # keep_last: the recipe's 2
    assert rc.typed({"recipe": "x"}).keep_last == rc.BY_NAME["keep_last"].default


# ------------------------------------------------------------------ bad input
def test_a_second_run_on_the_same_folder_is_refused(tmp_path, capsys):
    src = write_corpus(tmp_path / "src")
    run = tmp_path / "run"
    lock = RunLock(str(run)).acquire()  # as a first run would hold it
    try:
        one_error(capsys, ["train", *tiny_args(data=src, out=run)], "in use by another training run \\(pid \\d+")
    finally:
        lock.release()
    assert main(["train", *tiny_args(data=src, out=run, max_steps=1)]) == 0  # free again


@pytest.mark.parametrize("kind", ["random", "latin1", "nul"])
def test_non_text_data_is_refused_naming_file_and_offset(tmp_path, capsys, kind):
    body = {"random": bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)),
            "latin1": ("caf\u00e9 " * 500).encode("latin-1"),
            "nul": b"text " * 100 + b"\x00" + b"more " * 100}[kind]
    path = tmp_path / "data.txt"
    path.write_bytes(body)
    msg = one_error(capsys, ["train", *tiny_args(data=path, out=tmp_path / "run")], f"{path}: (not UTF-8|binary)")
    assert "offset" in msg and "--text-errors replace" in msg
    if kind == "latin1":
        assert "offset 3" in msg
        assert main(["train", *tiny_args(data=path, out=tmp_path / "run2", max_steps=1), "--text-errors",
                     "replace"]) == 0


def test_truncated_or_foreign_prepared_shards_are_refused(tmp_path, capsys):
    src = write_corpus(tmp_path / "src")
    assert main(["prepare", "--data", str(src), "--out", str(tmp_path / "tok"), "--shard-tokens", "2000"]) == 0
    capsys.readouterr()
    meta = shards.load_meta(tmp_path / "tok")
    shard = tmp_path / "tok" / meta["splits"]["train"]["files"][0]
    whole = shard.read_bytes()
    shard.write_bytes(whole[:-20])
    one_error(capsys, ["train", *tiny_args(data=tmp_path / "tok", out=tmp_path / "run")],
              f"shard {shard} holds .* but meta.json says 2,000 tokens")
    bad = np.frombuffer(whole, dtype=meta["dtype"]).copy()
    bad[5] = 300  # the byte tokenizer has 259 tokens
    shard.write_bytes(bad.tobytes())
    one_error(capsys, ["train", *tiny_args(data=tmp_path / "tok", out=tmp_path / "run")],
              f"shard {shard} holds token id 300, outside the vocabulary .*259")


def test_ids_outside_the_vocabulary_stop_the_loop(tmp_path, capsys, monkeypatch):
    src = write_corpus(tmp_path / "src")
    assert main(["prepare", "--data", str(src), "--out", str(tmp_path / "tok")]) == 0
    meta = shards.load_meta(tmp_path / "tok")
    shard = tmp_path / "tok" / meta["splits"]["train"]["files"][0]
    arr = np.fromfile(shard, dtype=meta["dtype"])
    arr[:] = 300
    arr.tofile(shard)
    monkeypatch.setattr(shards, "SCAN_TOKENS", 0)  # as for a split too large to scan when opened
    capsys.readouterr()
    one_error(capsys, ["train", *tiny_args(data=tmp_path / "tok", out=tmp_path / "run")],
              "training data .* holds token id 300, outside the model's vocabulary of 259")


# ------------------------------------------------------------------ weak today
@pytest.fixture
def finished_run(tmp_path):
    src = write_corpus(tmp_path / "src")
    run = tmp_path / "run"
    train(tiny_recipe(data=str(src), out=str(run), max_steps=4, keep_last=3))
    return src, run


def test_resume_auto_falls_back_to_the_newest_intact_checkpoint(finished_run, capsys):
    src, run = finished_run
    newest = run / "checkpoints" / "step-00000004.pt"
    newest.write_bytes(b"garbage")
    assert main(["train", *tiny_args(data=src, out=run, max_steps=5), "--resume", "auto"]) == 0
    err = capsys.readouterr().err
    assert "is unreadable" in err and "fell back to step 2" in err and "resuming from" in err
    assert (run / "checkpoints" / "step-00000004.pt.corrupt").exists()
    assert ck.load(ck.latest(str(run / "checkpoints")))["step"] == 5


def test_checkpoint_that_needs_unpickling_is_refused_without_advice_to_unpickle(finished_run, capsys):
    src, run = finished_run
    bad = run.parent / "evil.pt"
    torch.save({"x": np.random.default_rng(0)}, bad)  # an object weights_only refuses
    msg = one_error(capsys, ["train", *tiny_args(data=src, out=run.parent / "new"), "--resume", str(bad)],
                    "cannot read checkpoint")
    assert "weights_only" not in msg and "does not unpickle" in msg


def test_full_disk_says_so_and_keeps_the_previous_checkpoint(finished_run, capsys, monkeypatch):
    src, run = finished_run

    def full(obj, fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UserError, match="no space left on device .* step-00000004.pt is kept"):
        ck.save(str(run / "checkpoints"), 9, {}, keep_last=3)
    assert not any(f.endswith(".tmp") for f in os.listdir(run / "checkpoints"))
    one_error(capsys, ["train", *tiny_args(data=src, out=run, max_steps=6), "--resume", "auto"],
              "no space left on device.*step-00000004.pt is kept")
    assert ck.load(ck.latest(str(run / "checkpoints")))["step"] == 4


def test_a_recipe_that_disagrees_with_the_resumed_run_is_refused(finished_run, capsys):
    src, run = finished_run
    one_error(capsys, ["train", *tiny_args(data=src, out=run, max_steps=6), "--resume", "auto", "--recipe",
                       "tiny-attention"], "--recipe tiny-attention disagrees with the run being resumed on recipe")
    assert main(["train", *tiny_args(data=src, out=run, max_steps=5), "--resume", "auto", "--recipe",
                 "tiny-rat"]) == 0


def test_bpe_that_reaches_fewer_tokens_warns(tmp_path):
    (tmp_path / "a.txt").write_text("ab " * 50)
    notes = []
    data = open_data(str(tmp_path / "a.txt"), 8, tokenizer="bpe:5000", log=notes.append)
    assert len(data.tokenizer) < 5000
    assert any(f"reached only {len(data.tokenizer)} of the 5000 tokens" in n for n in notes)
