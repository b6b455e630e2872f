"""Length generalisation: per-position losses, table, JSON and PNG for several models."""
import json

import torch

from ratlm.cli import main
from ratlm.eval.length import buckets, mean_upto, position_losses
from ratlm.runtime import load


def test_position_losses_match_a_forward(random_dirs, text_file):
    model, tok, _ = load(random_dirs[0])
    text = open(text_file).read()
    losses, n = position_losses(model, tok, [text], 50, max_windows=3, batch_size=2)
    assert n == 3 and len(losses) == 49
    ids = torch.tensor(list(("\n\n".join([text])).encode())[:150]).view(3, 50)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids, use_cache=False).logits[:, :-1].float(), -1)
    want = -logp.gather(-1, ids[:, 1:, None])[..., 0].mean(0)
    torch.testing.assert_close(torch.tensor(losses, dtype=torch.float32), want, rtol=1e-5, atol=1e-5)
    assert mean_upto(losses, 50) == sum(losses) / 49
    assert [(a, b) for a, b, _ in buckets(losses, 20)] == [(1, 20), (21, 40), (41, 49)]


def test_cli(random_dirs, text_file, tmp_path, capsys):
    assert main(["eval", "length", *random_dirs, "--data", text_file, "--factors", "1,2,4", "--windows", "2",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4x (128)" in out and "rat-tiny" in out and "attention-tiny" in out
    res = json.load(open(tmp_path / "length.json"))
    assert res["train_length"] == 32 and [r["eval_lengths"] for r in res["results"]] == [[32, 64, 128]] * 2
    assert all(len(r["position_loss"]) == 127 and len(r["buckets"]) == 16 for r in res["results"])
    assert (tmp_path / "length.png").stat().st_size > 1000
    assert main(["eval", "length", *random_dirs, "--data", text_file, "--factors", "1000"]) == 2
    assert "fewer than one window" in capsys.readouterr().err
