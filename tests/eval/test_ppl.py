"""Perplexity: windows score every token once; a trained model beats a uniform one on its text."""
import json
import math

import pytest
import torch

from ratlm.cli import main
from ratlm.eval.ppl import perplexity, windows
from ratlm.runtime import load


@pytest.mark.parametrize("n,context,stride", [(1, 4, 3), (2, 4, 3), (10, 4, 3), (10, 4, 1), (100, 16, 5), (7, 16, 15)])
def test_windows_score_each_token_once(n, context, stride):
    scored = []
    for begin, end, first in windows(n, context, stride):
        assert end - begin <= context and begin < first <= end
        if begin > 0:
            assert first - begin >= context - stride  # history of the first new token
        scored += range(first, end)
    assert scored == list(range(1, n))
    with pytest.raises(ValueError, match="stride"):
        windows(n, context, context)


def test_trained_model_beats_uniform(trained_dir, text_file):
    model, tok, _ = load(trained_dir)
    text = open(text_file).read()
    r = perplexity(model, tok, [text], context=64, batch_size=8)
    assert r["tokens"] == len(text) - 1 and r["bytes"] == len(text) - 1
    assert r["ppl"] < 259 / 4  # uniform over the byte vocabulary is 259
    assert r["bits_per_byte"] == pytest.approx(r["nll"] / math.log(2))
    # batching, padding and the stride change nothing but the history each token gets
    one = perplexity(model, tok, [text[:300], text[:77]], context=64, stride=20, batch_size=1)
    many = perplexity(model, tok, [text[:300], text[:77]], context=64, stride=20, batch_size=8)
    assert one["tokens"] == many["tokens"] == 299 + 76
    assert one["nll"] == pytest.approx(many["nll"], rel=1e-5)
    bos = perplexity(model, tok, [text[:300]], context=64, bos=True)
    assert bos["tokens"] == 300 and bos["bytes"] == 300
    ids = torch.tensor([list(text[:64].encode())])
    with torch.no_grad():
        direct = model(ids, labels=ids, use_cache=False).loss.item()
    assert perplexity(model, tok, [text[:64]], context=64)["nll"] == pytest.approx(direct, rel=1e-5)


def test_cli(trained_dir, random_dirs, text_file, tmp_path, capsys):
    assert main(["eval", "ppl", trained_dir, *random_dirs, "--data", text_file, "--context", "32",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    names = ["trained", "rat-tiny", "attention-tiny"]
    assert all(n in out for n in names) and "bits/byte" in out
    res = json.load(open(tmp_path / "ppl.json"))["results"]
    assert len(res) == 3 and res[0]["ppl"] < min(r["ppl"] for r in res[1:])
    assert main(["eval", "ppl", trained_dir, "--data", str(tmp_path / "missing.txt")]) == 2
    assert main(["eval", "ppl", str(tmp_path / "nope"), "--data", text_file]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err
