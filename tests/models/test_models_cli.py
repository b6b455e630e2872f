"""`ratlm generate` and `ratlm convert-official`."""
import io
import os
import subprocess
import sys

import pytest
import torch
from hf_tiny import fresh_model, tokenizer
from official_format import official_state_dict, save_checkpoint

from ratlm.cli import main

OFFICIAL = ["--head-dim", "8", "--chunk-size", "4", "--window", "5"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = fresh_model("rat-swa")
    model.save_pretrained(d / "model")
    tokenizer().save_pretrained(d / "model")
    model.save_pretrained(d / "bare")  # no tokenizer inside
    save_checkpoint(d / "official.pt", official_state_dict(["rat", "attention"] * 2, head_dim=8, vocab=300))
    save_checkpoint(d / "small.pt", official_state_dict(["rat"], head_dim=8, vocab=61))
    return d


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def expected_text(model_dir, prompt, n, **kw):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = tokenizer()(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    out = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, pad_token_id=256, **kw)
    return tokenizer().decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_generate_greedy_streams_the_text(paths, capsys):
    rc, out, err = run(capsys, "generate", paths / "model", "Once upon", "--max-new-tokens", 12)
    assert rc == 0
    assert out == expected_text(paths / "model", "Once upon", 12, do_sample=False) + "\n"
    assert "greedy" in err and "tokens/s" in err  # notes go to stderr only
    rc, out2, err = run(capsys, "generate", paths / "model", "Once upon", "--max-new-tokens", 12, "--quiet",
                        "--echo", "--temperature", "0")
    assert rc == 0 and err == "" and out2 == "Once upon" + out


def test_generate_prompt_from_stdin_and_file(paths, capsys, monkeypatch, tmp_path):
    rc, ref, _ = run(capsys, "generate", paths / "model", "from a file\n", "--max-new-tokens", 6, "--quiet")
    monkeypatch.setattr(sys, "stdin", io.StringIO("from a file\n"))
    assert run(capsys, "generate", paths / "model", "-", "--max-new-tokens", 6, "--quiet")[:2] == (0, ref)
    f = tmp_path / "prompt.txt"
    f.write_text("from a file\n", encoding="utf-8")
    got = run(capsys, "generate", paths / "model", "--prompt-file", f, "--max-new-tokens", 6, "--quiet")
    assert got[:2] == (0, ref)


def test_generate_sampling_is_seeded(paths, capsys):
    args = ["generate", paths / "model", "Sample", "--max-new-tokens", 16, "--quiet", "--top-k", 50, "--top-p", 0.95,
            "--temperature", 1.3, "--repetition-penalty", 1.2]
    a = run(capsys, *args, "--seed", 1)
    assert a[0] == 0 and run(capsys, *args, "--seed", 1) == a
    assert run(capsys, *args, "--seed", 2)[1] != a[1]
    greedy = run(capsys, "generate", paths / "model", "Sample", "--max-new-tokens", 16, "--quiet")[1]
    assert run(capsys, "generate", paths / "model", "Sample", "--max-new-tokens", 16, "--quiet", "--do-sample",
               "--seed", 1)[1] != greedy


def test_generate_stops_at_stop_strings(paths, capsys):
    rc, full, _ = run(capsys, "generate", paths / "model", "Once upon", "--max-new-tokens", 20, "--quiet")
    text = full.rstrip("\n")
    stop = text[5:7]
    rc, out, _ = run(capsys, "generate", paths / "model", "Once upon", "--max-new-tokens", 20, "--quiet",
                     "--stop", stop, "--stop", "never-seen")
    assert rc == 0 and out.rstrip("\n") == text[: text.index(stop) + len(stop)]


def test_convert_then_generate_equals_generate_from_the_checkpoint(paths, capsys, tmp_path):
    out_dir = tmp_path / "converted"
    rc, out, err = run(capsys, "convert-official", paths / "official.pt", "--out", out_dir, "--hybrid", *OFFICIAL,
                       "--tokenizer", paths / "model")
    assert rc == 0 and "rat+sliding_attention" in out and "4 layers x 32" in out
    a = run(capsys, "generate", out_dir, "Hi there", "--max-new-tokens", 10, "--quiet")
    b = run(capsys, "generate", paths / "official.pt", "Hi there", "--max-new-tokens", 10, "--quiet", "--hybrid",
            *OFFICIAL, "--tokenizer", "byte")
    assert a[0] == b[0] == 0 and a[1] == b[1]
    rc, _, err = run(capsys, "generate", paths / "official.pt", "Hi", "--max-new-tokens", 2, "--hybrid", *OFFICIAL)
    assert rc == 0 and "converted" in err and "byte-level tokenizer" in err


@pytest.mark.parametrize("argv, match", [
    (["generate", "{d}/nowhere", "x"], "no such model directory or checkpoint"),
    (["generate", "{d}", "x"], r"is not a model directory \(no config.json\)"),
    (["generate", "{d}/model"], "no prompt"),
    (["generate", "{d}/model", "--prompt-file", "{d}/missing.txt"], "cannot read --prompt-file"),
    (["generate", "{d}/model", "x", "--prompt-file", "{d}/missing.txt"], "either as an argument or with --prompt-file"),
    (["generate", "{d}/model", "x", "--greedy", "--top-k", "3"], "--greedy conflicts with --top-k"),
    (["generate", "{d}/model", "x", "--top-p", "1.5"], r"--top-p must be in \(0, 1\]"),
    (["generate", "{d}/model", "x", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["generate", "{d}/model", "x", "--mixer", "rat"], "--mixer is only for the authors' .pt checkpoints"),
    (["generate", "{d}/model", "x", "--tokenizer", "{d}/notok"], "no such tokenizer directory"),
    (["generate", "{d}/small.pt", "x", "--head-dim", "8", "--chunk-size", "4"],
     "the tokenizer has 259 tokens but the model's vocabulary has only 61"),
    (["generate", "{d}/official.pt", "x", "--head-dim", "8"], "pass --hybrid"),
    (["convert-official", "{d}/model/config.json", "--out", "{d}/o1"], "not a torch checkpoint"),
    (["convert-official", "{d}/official.pt", "--out", "{d}/o2", "--mixer", "attention", "--hybrid", "--head-dim", "8"],
     "--mixer attention contradicts the checkpoint"),
    (["convert-official", "{d}/official.pt", "--out", "{d}/model", "--hybrid", "--head-dim", "8"],
     "exists and is not empty"),
    (["convert-official", "{d}/missing.pt", "--out", "{d}/o3"], "no such checkpoint file"),
])
def test_errors_are_one_line(paths, capsys, argv, match):
    import re

    rc, out, err = run(capsys, *[a.format(d=paths) for a in argv])
    assert rc == 2 and out == ""
    assert err.startswith("ratlm: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(match, err), err


def test_real_command_line(paths):
    """One real process: the prompt from a pipe, text on stdout, notes on stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    ok = subprocess.run([sys.executable, "-m", "ratlm", "generate", str(paths / "model"), "-",
                         "--max-new-tokens", "12"],
                        input="Once upon", capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0 and ok.stdout == expected_text(paths / "model", "Once upon", 12, do_sample=False) + "\n"
    assert "tokens/s" in ok.stderr and "Traceback" not in ok.stderr
