"""The benchmark commands run end to end on tiny shapes (no timing is asserted)."""
import argparse
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
    modes = ("train", "prefill", "decode")
    assert {(r["mode"], r["length"]) for r in rows} == {(m, n) for m in modes for n in (16, 40)}
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
    (["bench", "layer", "--clock", "cpu"], "--clock cpu measures one thread's work"),
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
    rat = (mixer_flops("rat", {"chunk_size": 16}, D, H, 2, 1, T)
           - mixer_flops("rat", {"chunk_size": 10**9}, D, H, 2, 1, T))
    assert rat == pytest.approx(att / 16, rel=0.01)
    swa = mixer_flops("swa", {"window": 64}, D, H, 2, 1, T) - proj
    assert swa == pytest.approx(4 * D * sum(min(t + 1, 65) for t in range(T)))
    assert parse_mixer("rat", 1024) == ("rat16", "rat", {"chunk_size": 16})
    assert parse_mixer("swa", 256) == ("swa256", "swa", {"window": 256})


def test_bench_layer_records_cpu_ideal_and_peak_memory(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["bench", "layer", "--lengths", "32", "--hidden", "32", "--heads", "4", "--mixers", "rnn,rat4",
                 "--repeats", "1", "--warmup", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    data = json.loads((out / "bench_layer.json").read_text())
    cpu = data["meta"]["cpu"]
    assert cpu["model"] and set(cpu["isa"]) >= {"avx512", "amx", "bf16"}
    assert data["meta"]["compile"] is False
    assert cpu["model"] in text.splitlines()[0] and "of ideal" in text
    for r in data["results"]:
        assert r["compile"] is False
        if r["memory_kind"] is not None:  # Linux CPU or CUDA
            assert r["memory_kind"] in ("cpu_rss", "cuda_allocated") and r["peak_bytes"] >= 0
        if r["mixer"] == "rat4":
            assert r["ideal_ratio"] > 0
            assert r["of_ideal"] == pytest.approx(r["ratio_vs_attention"] / r["ideal_ratio"])
        else:
            assert r["ideal_ratio"] is None


def test_bench_layer_compile_applies_to_every_mode(tmp_path, monkeypatch):
    import torch

    compiled = []

    def fake_compile(module, **kw):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    out = tmp_path / "b"
    assert main(["bench", "layer", "--lengths", "16", "--hidden", "32", "--heads", "4", "--mixers", "rat4",
                 "--modes", "prefill,decode", "--compile", "--repeats", "1", "--warmup", "0", "--out", str(out)]) == 0
    data = json.loads((out / "bench_layer.json").read_text())
    assert len(compiled) == len(data["results"]) == 4  # attention and rat4, prefill and decode
    assert data["meta"]["compile"] is True and all(r["compile"] for r in data["results"])


def test_bench_generate_max_batch_fills_the_budget(tmp_path, capsys):
    import torch

    from ratlm.bench.generate import build_model
    from ratlm.models import decode_state_bytes

    out = tmp_path / "g"
    assert main(["bench", "generate", "--size", "tiny", "--variants", "rat,rnn,rat-swa", "--prompt-len", "40",
                 "--new-tokens", "2", "--max-batch", "--cache-memory", "2MiB", "--batch-limit", "100",
                 "--repeats", "1", "--warmup", "0", "--out", str(out)]) == 0
    data = json.loads((out / "bench_generate.json").read_text())
    assert data["meta"]["cache_memory"] == 2 * 2**20 and data["meta"]["max_batch"] is True
    for r in data["results"]:
        cfg = build_model(r["variant"], "tiny", "cpu", torch.float32).config
        per_row = decode_state_bytes(cfg, 42, "float32")
        assert r["state_bytes_per_row"] == per_row
        assert r["batch"] == min(2 * 2**20 // per_row, 100)
        assert r["cache_bytes"] <= 2 * 2**20 and r["tokens_per_s"] > 0
        assert ("batch limit 100 reached" in r["note"]) == (r["batch"] == 100)
    assert {r["variant"]: r["batch"] for r in data["results"]}["rnn"] == 100
    assert "max batch for" in capsys.readouterr().out


def test_bench_generate_batch_limit_is_respected(tmp_path):
    out = tmp_path / "g"
    assert main(["bench", "generate", "--size", "tiny", "--variants", "rat", "--prompt-len", "16", "--new-tokens", "1",
                 "--max-batch", "--batch-limit", "4", "--cache-memory", "4GiB", "--repeats", "1", "--warmup", "0",
                 "--out", str(out)]) == 0
    rows = json.loads((out / "bench_generate.json").read_text())["results"]
    assert [r["batch"] for r in rows] == [4, 4]
    assert all(r["note"] == "batch limit 4 reached" for r in rows)


def test_parse_bytes():
    from ratlm.bench.cli import parse_bytes

    assert parse_bytes("4GiB") == 4 * 2**30 and parse_bytes("512MiB") == 2**29 and parse_bytes("2GB") == 2 * 10**9
    assert parse_bytes("1000") == 1000 and parse_bytes("1e6") == 10**6 and parse_bytes("1.5k") == 1500
    for bad in ("lots", "4 parsecs", "0", "-1GiB"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not a size"):
            parse_bytes(bad)


@pytest.mark.parametrize("argv,message", [
    (["bench", "generate", "--cache-memory", "1GiB"], "only applies with --max-batch"),
    (["bench", "generate", "--size", "tiny", "--max-batch", "--cache-memory", "100", "--prompt-len", "16"],
     "more than the 100 bytes of cache memory"),
    (["bench", "generate", "--max-batch", "--batch-limit", "0"], "--batch-limit must be >= 1"),
])
def test_bench_generate_budget_errors(argv, message, capsys):
    assert main([*argv, "--repeats", "1", "--warmup", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any(message in line for line in err) and "Traceback" not in "\n".join(err)


def test_cpu_clock(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["bench", "generate", "--size", "tiny", "--variants", "rat", "--prompt-len", "16", "--new-tokens", "2",
                 "--batch", "1", "--clock", "cpu", "--threads", "1", "--repeats", "1", "--warmup", "0",
                 "--out", str(out)]) == 0
    data = json.loads((out / "bench_generate.json").read_text())
    assert data["meta"]["clock"] == "cpu" and data["meta"]["threads"] == 1
    assert all(r["tokens_per_s"] > 0 for r in data["results"])
    assert "CPU-time clock" in capsys.readouterr().out
    from ratlm.bench.system import set_clock

    set_clock("wall")


def test_bench_notes_other_work_and_records_it(tmp_path, capsys, monkeypatch):
    """A machine busy with other work before the run: one note on stderr, the figure in the JSON."""
    import os

    from ratlm.bench import system

    ticks = iter([(100, 1000), (250, 1200)])  # 75% of the machine busy over the window
    monkeypatch.setattr(system, "_cpu_times", lambda: next(ticks))
    out = tmp_path / "busy"
    assert main(["bench", "layer", "--lengths", "16", "--hidden", "32", "--heads", "4", "--mixers", "rnn",
                 "--modes", "decode", "--repeats", "1", "--warmup", "0", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "ratlm: note: other work kept" in err and "cores busy" in err
    busy = json.loads((out / "bench_layer.json").read_text())["meta"]["busy_cores_at_start"]
    assert busy == pytest.approx(0.75 * (os.cpu_count() or 1))
    # an idle machine: no note
    ticks = iter([(100, 1000), (100, 1200)])
    monkeypatch.setattr(system, "_cpu_times", lambda: next(ticks))
    assert main(["bench", "layer", "--lengths", "16", "--hidden", "32", "--heads", "4", "--mixers", "rnn",
                 "--modes", "decode", "--repeats", "1", "--warmup", "0", "--out", str(out)]) == 0
    assert "other work kept" not in capsys.readouterr().err


def test_busy_cores_reads_proc_stat():
    from ratlm.bench import system

    busy = system.busy_cores(0.05)
    assert busy is None or 0 <= busy <= (__import__("os").cpu_count() or 1) + 1e-6


def test_rounds_of_ideal_take_each_round_alone():
    """Measured / ideal per round of the interleaved repeats: attention, RNN and RAT of round i together."""
    from ratlm.bench.layer import Result, rounds_of_ideal

    att = Result("attention", "train", 4096, 1, 2.0, [2.0, 4.0])
    rnn = Result("rnn", "train", 4096, 1, 0.5, [0.5, 1.0])
    rat = Result("rat16", "train", 4096, 1, 1.0, [1.0, 1.0])
    got = rounds_of_ideal([att, rnn, rat], rat)
    # round 0: 2 / 1 = 2x measured, ideal 2 / (0.5 + 1.5 / 16); round 1: 4x, ideal 4 / (1 + 3 / 16)
    assert got == pytest.approx([2.0 / (2.0 / (0.5 + 1.5 / 16)), 4.0 / (4.0 / (1.0 + 3.0 / 16))])
