"""lm-evaluation-harness on a tiny ratlm model, with the offline ratlm_* tasks (skipped without lm-eval)."""
import json

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")  # lm_eval's HF model needs it (the `hf` extra of lm-eval)

from ratlm.cli import main  # noqa: E402
from ratlm.eval import harness  # noqa: E402


def test_ratlm_tasks_through_the_harness(copy_dir, random_dirs, tmp_path, capsys):
    # the copying model answers every passkey; the random one none
    assert main(["eval", "lm-eval", copy_dir, random_dirs[1], "--tasks", "ratlm_passkey,ratlm_mqar", "--limit", "3",
                 "-o", "length=180", "--device", "cpu", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ratlm_passkey" in out and "acc" in out
    res = json.load(open(tmp_path / "lm_eval.json"))["results"]
    names = list(res)
    assert res[names[0]]["ratlm_passkey"]["acc"] == 1.0 and res[names[1]]["ratlm_passkey"]["acc"] == 0.0
    assert res[names[0]]["ratlm_mqar"]["acc"] == 1.0  # a copier recalls; lengths come from -o length=180


def test_lm_eval_command_line(copy_dir, capsys):
    # `python -m ratlm.eval.harness` is the lm_eval command with ratlm registered: pretrained=DIR loads
    # through AutoModelForCausalLM
    harness.main(["--model", "hf", "--model_args", f"pretrained={copy_dir}", "--device", "cpu",
                  "--tasks", "ratlm_passkey", "--limit", "2", "--batch_size", "2"])
    out = capsys.readouterr().out
    assert "ratlm_passkey" in out and "|acc" in out.replace(" ", "")


def test_dataset_is_the_generator():
    from ratlm.data.synthetic import examples

    ds = harness.synthetic_dataset(task="mqar", n=3, seed=1, pairs=4, pretrained="ignored", version=1.0)["test"]
    assert list(ds) == list(examples("mqar", 3, 1, pairs=4, queries=1))
    ds = harness.synthetic_dataset(task="niah", n=2, length=300)["test"]
    assert list(ds) == list(examples("niah", 2, 1234, length=300))
