"""The `ratlm bench serve` subcommand (registered by bench/cli.py)."""
from __future__ import annotations

import os
import sys

from ..cli import csv_list
from ..errors import UserError


def register(bsub, common):
    s = bsub.add_parser(
        "serve", help="serving throughput and latency under concurrent openai clients, per model variant",
        description="Start `ratlm serve` for a model (random-weight presets by default, or --model DIR), or target "
                    "--url, and drive it with N concurrent async openai clients (streaming); prompts are slices of "
                    "the local corpus. Reports requests/s, output tokens/s, TTFT and inter-token latency p50/p99, the "
                    "peak number of running rows, the server's peak memory and (from its /metrics) the decode steps' "
                    "own tokens/s, prefill excluded. --compare serves attention, RAT and "
                    "the hybrids of the same size one after another under the same load and --cache-memory, with "
                    "ratios against attention (level by level). --concurrency fill gives each served model as many "
                    "clients as its --cache-memory admits rows at once, so one command fills every variant's "
                    "budget. Writes JSON and a PNG of throughput against concurrency (bars per target for a "
                    "single level: end to end and decode steps alone).")
    s.add_argument("--url", help="an already running server (its model: the first of --variants)")
    s.add_argument("--model", metavar="DIR", help="serve this model directory instead of random-weight presets")
    s.add_argument("--variants", type=csv_list(str), help="presets to serve one after another (default: rat)")
    s.add_argument("--compare", action="store_true", help="attention, rat, attention-swa and rat-swa, same load")
    s.add_argument("--transformers", action="store_true",
                   help="with --compare: also `transformers serve` on the RAT model (if it runs here)")
    s.add_argument("--size", default="small", choices=["tiny", "small", "xl"], help="preset size (default small)")
    s.add_argument("--concurrency", default="1,4,16", metavar="N,...|fill",
                   help="concurrent clients per load, comma-separated (default 1,4,16); `fill`: per served model, "
                        "as many as its server admits rows at once: --cache-memory over one row's decode state at "
                        "the longest prompt + --new-tokens (prompt characters counted as tokens, as with the "
                        "presets' byte tokenizer; for a --model with another tokenizer, an upper bound), or "
                        "--max-running; not with --url")
    s.add_argument("--requests", type=int,
                   help="requests per concurrency level (default: 2 x its number of clients, >= 4)")
    s.add_argument("--prompt-len", default="512", metavar="N|MIN-MAX",
                   help="prompt length in characters (= tokens with the byte tokenizer), or a range (default 512)")
    s.add_argument("--new-tokens", type=int, default=64, help="output tokens per request (default 64)")
    s.add_argument("--cache-memory", default="1GiB", help="the servers' decode-state budget (default 1GiB)")
    s.add_argument("--max-running", type=int, help="admit by row count instead of --cache-memory")
    s.add_argument("--corpus", default="stdlib", help="text for the prompts: stdlib (default) or paths")
    s.add_argument("--api-key", help="for --url")
    s.add_argument("--timeout", type=float, default=600, help="per-request client timeout in seconds (default 600)")
    s.add_argument("--generate-baseline", action="store_true",
                   help="after each served model, run the same prompts through it without a server (one at a "
                        "time, in this process) and show that row too: the one-client reference")
    common(s, serve=True)
    s.set_defaults(func=_run)


def _parse_range(text):
    try:
        lo, _, hi = text.partition("-")
        lo, hi = int(lo), int(hi or lo)
    except ValueError:
        raise UserError(f"--prompt-len must be N or MIN-MAX, got {text!r}") from None
    if lo < 1 or hi < lo:
        raise UserError(f"--prompt-len must be N >= 1 or MIN-MAX with MIN <= MAX, got {text!r}")
    return lo, hi


def _parse_concurrency(text):
    """--concurrency: positive integers and `fill`, comma-separated."""
    try:
        levels = [v.strip() if v.strip() == "fill" else int(v) for v in text.split(",")]
    except ValueError:
        levels = []
    if not levels or any(v != "fill" and v < 1 for v in levels):
        raise UserError(f"--concurrency takes positive integers or fill, comma-separated, got {text!r}")
    return levels


def _run(args):
    from ..options import parse_bytes
    from . import serve as bs
    from .api import _meta, _save, _setup

    device = _setup(args.device, args.threads, args.warmup, 1)
    prompt_len = _parse_range(args.prompt_len)
    concurrency = _parse_concurrency(args.concurrency)
    if args.new_tokens < 1 or (args.requests is not None and args.requests < 1):
        raise UserError("--new-tokens and --requests must be >= 1")
    cache_memory = None if args.max_running else parse_bytes(args.cache_memory)
    if args.generate_baseline and args.url:
        raise UserError("--generate-baseline needs the model here: use --variants or --model, not --url")
    if "fill" in concurrency and args.url:
        raise UserError("--concurrency fill needs the model here (its rows per --cache-memory): use --variants "
                        "or --model, or give --url a number of clients")
    if args.model and not os.path.isdir(args.model):
        raise UserError(f"no such model directory: {args.model}")
    variants = args.variants or (bs.COMPARE if args.compare else ["rat"])
    from ..models.presets import preset_kwargs

    if not args.model and not args.url:
        for v in variants:
            preset_kwargs(f"{v}-{args.size}")  # one clear line for an unknown variant
        if args.compare and "attention" not in variants:
            variants = ["attention", *variants]
    os.makedirs(args.out, exist_ok=True)
    log = os.path.join(args.out, "bench_serve_servers.log")

    def show(r):
        print(f"  {r.target} x{r.concurrency}: {r.output_tokens_per_s:.1f} output tokens/s, "
              f"{r.completed}/{r.requests} done", file=sys.stderr, flush=True)

    results, notes = bs.run(variants, args.size, args.url, args.model, prompt_len, args.new_tokens,
                            concurrency, args.requests, cache_memory, args.max_running,
                            prompt_len[1] + args.new_tokens, args.threads, args.device, args.dtype, args.corpus,
                            args.api_key, args.transformers and args.compare, args.timeout, log, show,
                            warmup=args.warmup, baseline=args.generate_baseline)
    bs.add_ratios(results)
    limit = f"--max-running {args.max_running}" if args.max_running else f"--cache-memory {args.cache_memory}"
    meta = _meta(device, args.warmup, None, None, size=args.size, prompt_len=args.prompt_len,
                 new_tokens=args.new_tokens, concurrency=args.concurrency, limit=limit,
                 dtype=args.dtype or "auto", notes=notes, server_log=log)
    print(f"# {meta['device_name']}, torch {meta['torch']}, {args.size} models, prompts {args.prompt_len} chars, "
          f"{args.new_tokens} new tokens, {limit}")
    print(bs.table(results))
    decode = bs.summary_ratios(results, "decode_ratio_vs_attention")
    for name, ratio in bs.summary_ratios(results).items():
        if name != "attention":
            also = (f"; decode steps alone (prefill excluded): {decode[name]:.2f}x" if name in decode else "")
            print(f"{name}: {ratio:.2f}x attention's output tokens/s (mean over concurrency levels){also}")
    for line in bs.one_client(results):
        print(line)
    for note in notes:
        print(f"note: {note}")
    _save(args.out, "bench_serve", results, meta, bs.plot)
