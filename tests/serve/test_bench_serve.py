"""`ratlm bench serve` end to end at a tiny scale (no timing is asserted)."""
import json

import torch
from models.hf_tiny import tiny_model
from serve_helpers import ThreadServer

from ratlm.cli import main
from ratlm.data.tokenizer import byte_tokenizer
from ratlm.serve.engine import Engine


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
