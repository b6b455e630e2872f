"""The benchmark commands run end to end on tiny shapes (no timing is asserted)."""
import json

import pytest

from ratlm.bench.layer import mixer_flops, parse_mixer
from ratlm.cli import main


def test_bench_layer_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "b"
    rc = main(["bench", "layer", "--lengths", "16,40", "--hidden", "32", "--heads", "4", "--mixers", "rat4,swa8,rnn",
               "--repeats", "1", "--warmup", "0", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    data = json.loads((out / "bench_layer.json").read_text())
    assert (out / "bench_layer.png").stat().st_size > 0
    rows = data["results"]
    assert {r["mixer"] for r in rows} == {"attention", "rat4", "swa8", "rnn"}  # attention is always added
    assert {(r["mode"], r["length"]) for r in rows} == {(m, n) for m in ("train", "prefill", "decode") for n in (16, 40)}
    for r in rows:
        assert r["median_s"] > 0 and len(r["times_s"]) == 1
        assert (r["cache_bytes"] is not None) == (r["mode"] == "decode")
        if r["mixer"] == "attention":
            assert r["ratio_vs_attention"] == pytest.approx(1.0)
    assert "rat4" in text and "vs attn" in text
    assert data["meta"]["hidden"] == 32


def test_bench_generate_runs(tmp_path, capsys):
    out = tmp_path / "g"
    rc = main(["bench", "generate", "--size", "tiny", "--variants", "rat,rat-swa", "--prompt-len", "24",
               "--new-tokens", "3", "--batch", "2", "--repeats", "1", "--warmup", "0", "--out", str(out)])
    assert rc == 0
    rows = json.loads((out / "bench_generate.json").read_text())["results"]
    assert [r["variant"] for r in rows] == ["attention", "rat", "rat-swa"]
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["cache_bytes"] > 0 and r["batch"] == 2
    assert (out / "bench_generate.png").exists()


@pytest.mark.parametrize("argv,message", [
    (["bench"], "choose what to benchmark"),
    (["bench", "layer", "--mixers", "lstm"], "unknown mixer 'lstm'"),
    (["bench", "layer", "--modes", "train,infer"], "unknown mode(s) infer"),
    (["bench", "layer", "--hidden", "30", "--heads", "4"], "not divisible"),
    (["bench", "layer", "--device", "cuda"], "no CUDA device"),
    (["bench", "generate", "--variants", "mamba"], "unknown preset 'mamba-"),
    (["bench", "generate", "--batch", "0"], "must be >= 1"),
])
def test_bench_errors_are_one_line(argv, message, capsys):
    import torch

    if "--device" in argv and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_flop_counts_follow_the_design():
    """Per token, RAT does about 1/L of attention's score work; the window caps it at W + 1 keys."""
    T, D, H = 4096, 512, 8
    proj = mixer_flops("rnn", {}, D, H, 2, 1, T)
    att = mixer_flops("attention", {}, D, H, 2, 1, T) - proj
    rat = mixer_flops("rat", {"chunk_size": 16}, D, H, 2, 1, T) - mixer_flops("rat", {"chunk_size": 10**9}, D, H, 2, 1, T)
    assert rat == pytest.approx(att / 16, rel=0.01)
    swa = mixer_flops("swa", {"window": 64}, D, H, 2, 1, T) - proj
    assert swa == pytest.approx(4 * D * sum(min(t + 1, 65) for t in range(T)))
    assert parse_mixer("rat", 1024) == ("rat16", "rat", {"chunk_size": 16})
    assert parse_mixer("swa", 256) == ("swa256", "swa", {"window": 256})
