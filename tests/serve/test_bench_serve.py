"""`ratlm bench serve` end to end at a tiny scale (no timing is asserted)."""
import json

import pytest
import torch
from models.hf_tiny import tiny_model
from serve_helpers import ThreadServer

from ratlm.cli import main
from ratlm.data.tokenizer import byte_tokenizer
from ratlm.errors import UserError
from ratlm.serve.engine import Engine
from ratlm.serve.sampling import SamplingParams


def test_bench_serve_starts_a_server_and_reports(tmp_path, capsys):
    out = tmp_path / "b"
    rc = main(["bench", "serve", "--size", "tiny", "--variants", "rat", "--concurrency", "1,2", "--requests", "3",
               "--prompt-len", "16-40", "--new-tokens", "4", "--cache-memory", "16MiB", "--threads", "1",
               "--dtype", "float32", "--generate-baseline", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    data = json.loads((out / "bench_serve.json").read_text())
    assert (out / "bench_serve.png").stat().st_size > 0
    rows = data["results"]
    assert [(r["target"], r["concurrency"]) for r in rows] == [("rat", 1), ("rat", 2), ("rat (generate)", 1)]
    for r in rows:
        assert r["completed"] == 3 and r["failed"] == 0 and r["output_tokens_per_s"] > 0
        assert r["ttft_p50_s"] > 0 and r["itl_p50_s"] > 0
        assert all(16 <= n <= 40 for n in r["prompt_chars"])
    assert rows[0]["peak_rss_bytes"] > 0 and rows[0]["baseline_of"] is None
    # the decode steps' own throughput, from the server's counters (none for the run without a server)
    assert rows[0]["decode_tokens_per_s"] > 0 and rows[0]["prefill_tokens_per_s"] > 0
    assert rows[2]["decode_tokens_per_s"] is None
    # the reference row: the same model without a server, 3 prompts x 4 tokens (3 gaps each)
    assert rows[2]["baseline_of"] == "rat" and rows[2]["peak_rss_bytes"] is None
    assert "out tok/s" in text and "decode tok/s" in text and data["meta"]["limit"] == "--cache-memory 16MiB"
    assert "rat, one client: first token" in text and "without a server" in text


def test_bench_serve_url(tmp_path, capsys):
    torch.set_num_threads(1)
    engine = Engine(tiny_model("rat"), byte_tokenizer(), max_running=4, max_model_len=256)
    with ThreadServer(engine, name="tiny", api_key="k") as s:
        out = tmp_path / "u"
        rc = main(["bench", "serve", "--url", s.url, "--api-key", "k", "--variants", "tiny", "--concurrency", "2",
                   "--requests", "4", "--prompt-len", "8", "--new-tokens", "3", "--warmup", "1", "--out", str(out)])
        assert rc == 0
        finished = s.metrics.requests.labels(finish_reason="length")._value.get()
        assert finished == 4 + 1  # the timed requests and the warm-up one
    rows = json.loads((out / "bench_serve.json").read_text())["results"]
    assert rows[0]["completed"] == 4 and rows[0]["failed"] == 0 and rows[0]["peak_rss_bytes"] is None
    assert rows[0]["decode_tokens_per_s"] > 0  # read through --api-key


def test_decode_ratios_and_summary():
    from ratlm.bench.serve import ServeResult, add_ratios, summary_ratios

    def row(target, c, out, dec):
        return ServeResult(target, c, 4, 4, 0, 1.0, 4.0, out, None, None, None, None, None, None,
                           decode_tokens_per_s=dec)

    rows = [row("attention", 1, 10.0, 20.0), row("rat", 1, 25.0, 100.0), row("attention", 4, 10.0, None),
            row("rat", 4, 35.0, 90.0)]
    add_ratios(rows)
    assert [r.ratio_vs_attention for r in rows] == [1.0, 2.5, 1.0, 3.5]
    assert [r.decode_ratio_vs_attention for r in rows] == [1.0, 5.0, None, None]
    assert summary_ratios(rows)["rat"] == 3.0 and summary_ratios(rows, "decode_ratio_vs_attention")["rat"] == 5.0
    # `--concurrency 1,fill`: level by level, the fill rows (2 and 33 clients) against each other
    rows = [row("attention", 1, 10.0, None), row("attention", 2, 20.0, None), row("rat", 1, 30.0, None),
            row("rat", 33, 200.0, None)]
    add_ratios(rows)
    assert [r.ratio_vs_attention for r in rows] == [1.0, 1.0, 3.0, 10.0]


def test_fill_rows_are_what_the_engine_admits(tmp_path, capsys):
    """budget_rows at prompt + max_tokens: exactly that many such requests run at once, one more waits."""
    from ratlm.bench.serve import budget_rows, model_config, resolve_levels

    prompt, max_tokens = 12, 5
    for kind in ("attention", "rat"):
        model = tiny_model(kind)
        one = budget_rows(model.config, 1 << 40, prompt + max_tokens, model.dtype)[1]
        for budget, rows in ((3 * one, 3), (3 * one - 1, 2)):
            assert budget_rows(model.config, budget, prompt + max_tokens, model.dtype) == (rows, one)
            engine = Engine(model, byte_tokenizer(), cache_memory=budget, max_model_len=64)
            for _ in range(rows + 1):
                engine.submit(list(range(65, 65 + prompt)), SamplingParams(max_tokens=max_tokens, temperature=0))
            engine.step()
            assert (engine.num_running, engine.num_waiting) == (rows, 1), kind
    # a --model directory's config, as the server reads it; --max-running N: N clients
    model.config.save_pretrained(tmp_path)
    assert model_config("x", "tiny", str(tmp_path)).to_dict() == model.config.to_dict()
    assert resolve_levels("rat", model.config, [1, "fill"], None, 8, 100, torch.float32) == [1, 8]
    assert "  rat: fill = 8 clients (--max-running 8)" in capsys.readouterr().err


def test_parse_concurrency():
    from ratlm.bench.serve_cli import _parse_concurrency

    assert _parse_concurrency("1,4,16") == [1, 4, 16]
    assert _parse_concurrency("fill") == ["fill"]
    assert _parse_concurrency("1, fill") == [1, "fill"]
    for bad in ("0", "-2", "x", "", "1,,4", "Fill", "fill2", "2.5"):
        with pytest.raises(UserError, match="positive integers or fill"):
            _parse_concurrency(bad)


def test_bench_serve_fill(tmp_path, capsys):
    """--concurrency fill: each server gets as many clients as its budget admits rows at once (the tiny
    presets at 8 + 8 tokens: attention 64 KiB a row, RAT 8 KiB), twice as many requests, ratios by level."""
    out = tmp_path / "f"
    rc = main(["bench", "serve", "--size", "tiny", "--variants", "attention,rat", "--concurrency", "fill",
               "--cache-memory", "96KiB", "--prompt-len", "4-8", "--new-tokens", "8", "--threads", "1",
               "--warmup", "0", "--dtype", "float32", "--out", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    assert "  attention: fill = 1 clients (0.0938 MiB / 0.0625 MiB per row at 16 tokens)" in captured.err
    assert "  rat: fill = 12 clients" in captured.err
    data = json.loads((out / "bench_serve.json").read_text())
    rows = data["results"]
    assert [(r["target"], r["concurrency"], r["requests"]) for r in rows] == [("attention", 1, 4), ("rat", 12, 24)]
    assert all(r["completed"] == r["requests"] and r["failed"] == 0 for r in rows)
    assert rows[0]["ratio_vs_attention"] == 1.0 and rows[1]["ratio_vs_attention"] > 0
    assert data["meta"]["concurrency"] == "fill" and (out / "bench_serve.png").stat().st_size > 0
    assert "rat: " in captured.out and "x attention's output tokens/s" in captured.out


def test_plot_of_one_load_draws_bars(tmp_path, monkeypatch):
    """A single concurrency level gives bars per target (end to end and decode steps), several give lines."""
    import matplotlib.axes

    from ratlm.bench.serve import ServeResult, plot

    def row(target, c, out, dec):
        return ServeResult(target, c, 4, 4, 0, 1.0, 4.0, out, 0.5, 0.6, 0.01, 0.02, 2, None,
                           decode_tokens_per_s=dec)

    calls = []
    for kind in ("bar", "plot"):
        real = getattr(matplotlib.axes.Axes, kind)
        monkeypatch.setattr(matplotlib.axes.Axes, kind,
                            lambda self, *a, _k=kind, _f=real, **k: (calls.append(_k), _f(self, *a, **k))[1])
    meta = dict(prompt_len="8", new_tokens=4, limit="--max-running 4", device_name="cpu")
    plot([row("attention", 32, 30.0, 35.0), row("rat", 32, 180.0, 340.0)], tmp_path / "bars.png", meta)
    assert calls == ["bar", "bar", "bar"] and (tmp_path / "bars.png").stat().st_size > 0
    calls.clear()  # `--concurrency fill`: one load per target, each with its own number of clients
    plot([row("attention", 2, 30.0, 35.0), row("rat", 33, 180.0, 340.0)], tmp_path / "fill.png", meta)
    assert calls == ["bar", "bar", "bar"] and (tmp_path / "fill.png").stat().st_size > 0
    calls.clear()
    plot([row("rat", 1, 30.0, None), row("rat", 4, 80.0, None)], tmp_path / "lines.png", meta)
    assert calls == ["plot", "plot"] and (tmp_path / "lines.png").stat().st_size > 0


def test_bench_serve_errors(capsys):
    assert main(["bench", "serve", "--prompt-len", "9-3"]) == 2
    assert "MIN <= MAX" in capsys.readouterr().err
    assert main(["bench", "serve", "--variants", "mamba"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert main(["bench", "serve", "--url", "http://127.0.0.1:9", "--generate-baseline"]) == 2
    assert "--generate-baseline needs the model here" in capsys.readouterr().err
    assert main(["bench", "serve", "--concurrency", "2,many"]) == 2
    assert "--concurrency takes positive integers or fill, comma-separated, got '2,many'" in capsys.readouterr().err
    assert main(["bench", "serve", "--url", "http://127.0.0.1:9", "--concurrency", "fill"]) == 2
    assert "--concurrency fill needs the model here" in capsys.readouterr().err


def test_bench_serve_fill_needs_one_row(tmp_path, capsys):
    assert main(["bench", "serve", "--size", "tiny", "--variants", "rat,attention", "--concurrency", "1,fill",
                 "--cache-memory", "100KiB", "--prompt-len", "100", "--new-tokens", "28", "--out",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "rat: fill" in err  # rat fits, then attention's 128 tokens (0.5 MiB) do not; no server started
    assert "attention's decode state for 128 tokens (0.5 MiB) does not fit --cache-memory 0.0977 MiB" in err
    assert "raise --cache-memory" in err and not list(tmp_path.iterdir())
