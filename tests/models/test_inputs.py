"""Bad input to the model API and to `ratlm generate`: one clear message, never an internal error."""
import io
import os
import subprocess
import sys

import pytest
import torch
from hf_tiny import fresh_model, tokenizer

from ratlm.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs") / "model"
    fresh_model("rat-swa").save_pretrained(d)
    tokenizer().save_pretrained(d)
    return d


def one_error(capsys, argv, pattern):
    import re

    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "internal error" not in err, err
    assert re.search(pattern, err), err


@pytest.mark.parametrize("ids, match", [
    (torch.zeros(0, 5, dtype=torch.long), r"the batch is empty \(input_ids has shape \(0, 5\)\)"),
    (torch.zeros(2, 0, dtype=torch.long), r"the batch is empty"),
    (torch.tensor([[1, 2, -3]]), r"token id -3, outside the model's vocabulary of \d+"),
    (torch.tensor([[1, 2, 10_000]]), r"token id 10000, outside the model's vocabulary of (\d+) \(ids 0 to \d+\)"),
    (torch.tensor([[1.0, 2.0]]), r"integer token ids"),
])
def test_model_refuses_bad_input_ids(ids, match):
    model = fresh_model("rat")
    with pytest.raises(ValueError, match=match):
        model(ids)


def test_model_refuses_attention_mask_values_other_than_0_and_1():
    model = fresh_model("rat")
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="only 0 \\(padding\\) and 1 \\(token\\), found 2"):
        model(ids, attention_mask=torch.tensor([[1, 2, 1]]))
    model(ids, attention_mask=torch.tensor([[0, 1, 1]]))  # fine
    model(ids, attention_mask=torch.tensor([[True, True, True]]))


def test_generate_prompt_that_is_not_utf8(model_dir, capsys, monkeypatch):
    # argv: Python turns the byte 0xff into a lone surrogate
    one_error(capsys, ["generate", model_dir, "ab\udcffc", "--max-new-tokens", 2],
              "the prompt given on the command line is not UTF-8 text \\(byte 0xff at offset 2\\)")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"abc\xfe\xff")))
    one_error(capsys, ["generate", model_dir, "-", "--max-new-tokens", 2],
              "the prompt read from stdin is not UTF-8 text \\(byte 0xfe at offset 3\\)")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("h\u00e9".encode())))
    assert main(["generate", str(model_dir), "-", "--max-new-tokens", "2"]) == 0


def test_generate_into_a_closed_pipe_exits_quietly(model_dir):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "ratlm", "generate", str(model_dir), "Once", "--max-new-tokens",
                             "3000", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.read(1)
    proc.stdout.close()  # as `| head -c 1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert err == ""
