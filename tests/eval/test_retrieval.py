"""Retrieval: a model that copies scores 100% on a trivial passkey (and MQAR); a random one does not."""
import json
import string

import torch
from eval_models import copy_model

from ratlm.cli import main
from ratlm.data.synthetic import records
from ratlm.data.tokenizer import byte_tokenizer
from ratlm.eval.retrieval import evaluate, mean_accuracy, prepare
from ratlm.runtime import load


def test_copy_model_finds_the_passkey(copy_dir):
    model, tok, _ = load(copy_dir)
    r = evaluate(model, tok, "passkey", [128, 256], [0.0, 0.5, 1.0], n=2, seed=0, batch_size=4)
    assert r["accuracy"] == [[1.0] * 3] * 2 and r["exact"] == [1.0, 1.0]
    assert r["answers"] == [[2] * 3] * 2 and 100 < r["mean_tokens"][0] <= 128
    # teacher-forced exact match is greedy decoding: generate gives the same key
    rec = next(records("passkey", 1, 5, length=200, depth=0.3))
    ids = torch.tensor([list(rec["prompt"].encode())])
    out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=256)
    assert bytes(out[0, ids.shape[1]:].tolist()).decode() == rec["response"]


def test_copy_model_recalls_mqar_and_random_model_does_not(random_dirs):
    tok = byte_tokenizer()
    copier = copy_model(sorted(set(string.ascii_lowercase + string.digits + ":")), k=4)
    r = evaluate(copier, tok, "mqar", [60, 120], [0.0, 0.5, 1.0], n=2, seed=0, options={"queries": 3})
    assert r["exact"] == [1.0, 1.0] and sum(map(sum, r["answers"])) == 2 * 2 * 3
    random, _, _ = load(random_dirs[1])
    r = evaluate(random, tok, "mqar", [60], [0.0, 1.0], n=4, seed=0)
    assert mean_accuracy(r, 0) < 0.5


def test_prepare_marks_answer_tokens():
    rec = next(records("mqar", 1, 0, pairs=4, queries=3))
    ids, ranges = prepare(byte_tokenizer(), rec, bos=257)
    text = rec["prompt"] + rec["response"]
    assert ids[0] == 257 and bytes(ids[1:]).decode() == text
    assert [bytes(ids[a:b]).decode() for a, b in ranges] == [rec["response"][a:b] for a, b, _ in rec["meta"]["answers"]]


def test_cli(copy_dir, random_dirs, tmp_path, capsys):
    args = ["eval", "retrieval", copy_dir, random_dirs[1], "--task", "passkey", "--lengths", "128,160",
            "--depths", "0,1", "-n", "2", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "copy" in out and "attention-tiny" in out and "exact" in out
    res = json.load(open(tmp_path / "retrieval_passkey.json"))["results"]
    assert res[0]["accuracy"] == [[1.0, 1.0]] * 2 and res[1]["name"].startswith("attention-tiny")
    assert (tmp_path / "retrieval_passkey.png").stat().st_size > 1000
    assert main(["eval", "retrieval", copy_dir, "--task", "niah", "--lengths", "100", "-n", "1"]) == 2
    assert "too short" in capsys.readouterr().err
    assert main(["eval", "retrieval", copy_dir, "--task", "niah", "-o", "keys"]) == 2
    assert main(["eval"]) == 2
