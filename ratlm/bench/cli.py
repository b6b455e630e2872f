"""`ratlm bench layer` and `ratlm bench generate`."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from ..cli import csv_list
from ..errors import UserError


def register(sub):
    p = sub.add_parser("bench", help="measure speed: one layer, or whole-model generation")
    bsub = p.add_subparsers(dest="bench_cmd", metavar="{layer,generate,serve}")
    b = bsub.add_parser("layer",
                        help="train / prefill / decode-step latency of each mixer, with ratios against attention",
                        description="Train (fwd+bwd), prefill and one decode step for each mixer, measured in the "
                                    "same run; prints medians and ratios against attention, writes JSON and a PNG.")
    b.add_argument("--preset", choices=["cpu", "paper"], default=None,
                   help="cpu: D=512, 8 heads, fp32, batch 1 (default on CPU); paper: D=2048, 16x128 heads, bf16, "
                        "batch x length = 131072 (default on CUDA)")
    b.add_argument("--mixers", type=csv_list(str),
                   help="comma list of attention, swa[W], rnn, rat[L] (e.g. rat16,rat64)")
    b.add_argument("--lengths", type=csv_list(int), help="comma list of sequence lengths (decode: positions)")
    b.add_argument("--modes", type=csv_list(str), default=["train", "prefill", "decode"],
                   help="subset of train,prefill,decode")
    b.add_argument("--hidden", type=int, help="model width D")
    b.add_argument("--heads", type=int, help="number of heads")
    b.add_argument("--batch", type=int, help="batch size (ignored with --token-budget)")
    b.add_argument("--token-budget", type=int, help="keep batch x length at this many tokens (the paper's setting)")
    b.add_argument("--window", type=int, default=1024, help="sliding window W for swa (default 1024)")
    b.add_argument("--qk-groups", type=int, default=2, help="RAT query/key groups (default 2)")
    _common(b)
    b.add_argument("--compile", action="store_true",
                   help="torch.compile the layer for every workload (recorded in the JSON)")
    b.set_defaults(func=_run_layer)

    g = bsub.add_parser("generate", help="whole-model generation throughput and time to first token per variant",
                        description="Prefill a random prompt and decode greedily with each model variant (random "
                                    "weights), in the same run; prints tokens/s, time to first token, cache size and "
                                    "ratios against attention; writes JSON and a PNG.")
    g.add_argument("--variants", type=csv_list(str),
                   help="comma list of attention, rat, ratN, rnn, attention-swa, rat-swa (default: all five)")
    g.add_argument("--size", default=None, choices=["tiny", "small", "xl"],
                   help="model size preset (default: small on CPU (6 x 512), xl on CUDA)")
    g.add_argument("--prompt-len", type=int, default=4096, help="context length before decoding (default 4096)")
    g.add_argument("--new-tokens", type=int, default=64, help="tokens decoded per run (default 64)")
    g.add_argument("--batch", type=int, default=8, help="rows decoded together (default 8)")
    g.add_argument("--max-batch", action="store_true",
                   help="maximum throughput: each variant runs the largest batch whose decode state fits "
                        "--cache-memory (computed from its per-row state size, capped by --batch-limit)")
    g.add_argument("--cache-memory", type=parse_bytes, default=None,
                   help="decode-state budget for --max-batch, in bytes or with a unit: 4GiB, 512MiB, 2GB "
                        "(default: half the memory available now)")
    g.add_argument("--batch-limit", type=int, default=4096, help="upper bound for --max-batch (default 4096)")
    _common(g)
    g.set_defaults(func=_run_generate)
    from .serve_cli import register as register_serve

    register_serve(bsub, _common)
    p.set_defaults(func=lambda args: (_ for _ in ()).throw(UserError("choose what to benchmark: `ratlm bench layer`, "
                                                                      "`ratlm bench generate` or `ratlm bench serve`")))


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_bytes(text):
    """'4GiB', '512MiB', '2GB', '1e9', '1000000' -> bytes (int)."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS or float(m.group(1)) * _UNITS[unit] < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: give bytes or a number with a unit, e.g. 4GiB, "
                                         "512MiB, 2GB")
    return int(float(m.group(1)) * _UNITS[unit])


def _default_cache_memory(device):
    """Half the memory available now: free CUDA memory, or MemAvailable on a Linux CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0] // 2
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    raise UserError("cannot tell how much memory is available here; give --cache-memory BYTES (e.g. 4GiB)")


def _common(p):
    p.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: float32 on CPU, bfloat16 on CUDA")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default="runs/bench", help="folder for the JSON and PNG (default runs/bench)")


def _setup(args):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from ..runtime import pick_device

    device = str(pick_device(args.device))
    if args.repeats < 1 or args.warmup < 0:
        raise UserError("--repeats must be >= 1 and --warmup >= 0")
    return device


def _progress():
    from tqdm import tqdm

    return lambda **kw: tqdm(**kw, file=sys.stderr)


def _meta(args, device, **extra):
    import torch

    from .layer import device_name
    from .system import cpu_info

    return {"device": device, "device_name": device_name(device), "cpu": cpu_info(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "warmup": args.warmup, "repeats": args.repeats,
            "command": "ratlm " + " ".join(sys.argv[1:]), **extra}


def _save(out, name, results, meta, plot):
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{name}.json")
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": [asdict(r) for r in results]}, f, indent=1)
    png = os.path.join(out, f"{name}.png")
    plot(results, png, meta)
    print(f"wrote {path} and {png}")


def _run_layer(args):
    from . import layer as bl

    device = _setup(args)
    preset = dict(bl.PRESETS[args.preset or ("paper" if device.startswith("cuda") else "cpu")])
    opts = {k: getattr(args, k) if getattr(args, k) is not None else preset.get(k)
            for k in ("mixers", "lengths", "hidden", "heads", "batch", "token_budget", "dtype")}
    if args.batch is not None:
        opts["token_budget"] = args.token_budget
    bad = [m for m in args.modes if m not in ("train", "prefill", "decode")]
    if bad:
        raise UserError(f"unknown mode(s) {', '.join(bad)}: use train, prefill, decode")
    for m in opts["mixers"]:
        bl.parse_mixer(m, args.window)
    if opts["hidden"] % opts["heads"]:
        raise UserError(f"--hidden {opts['hidden']} is not divisible by --heads {opts['heads']}")
    if any(n < 1 for n in opts["lengths"]):
        raise UserError("--lengths must be positive")
    if "attention" not in opts["mixers"]:
        opts["mixers"] = ["attention", *opts["mixers"]]  # ratios need it
    results = bl.run(mixers=opts["mixers"], lengths=opts["lengths"], modes=args.modes, hidden=opts["hidden"],
                     heads=opts["heads"], batch=opts["batch"] or 1, token_budget=opts["token_budget"],
                     window=args.window, qk_groups=args.qk_groups, dtype=opts["dtype"], device=device,
                     warmup=args.warmup, repeats=args.repeats, compile=args.compile, progress=_progress())
    meta = _meta(args, device, hidden=opts["hidden"], heads=opts["heads"], dtype=opts["dtype"], window=args.window,
                 qk_groups=args.qk_groups, compile=bool(args.compile))
    print(f"# {meta['device_name']}, torch {meta['torch']}, D={meta['hidden']}, {meta['heads']} heads, {meta['dtype']}"
          + (", compiled" if args.compile else ""))
    print(bl.table(results))
    for r in results:
        if r.ideal_ratio and r.length >= 1024:  # at short lengths fixed costs dominate
            print(f"{r.mixer} {r.mode} at {r.length}: measured/ideal {r.ratio_vs_attention:.2f}x / "
                  f"{r.ideal_ratio:.2f}x ({100 * r.of_ideal:.0f}%)")
    _save(args.out, "bench_layer", results, meta, bl.plot)


def _run_generate(args):
    from . import generate as bg

    device = _setup(args)
    size = args.size or ("xl" if device.startswith("cuda") else "small")
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    variants = args.variants or bg.VARIANTS
    from ..models.presets import preset_kwargs

    for v in variants:
        preset_kwargs(f"{v}-{size}")  # one clear line for an unknown variant
    if min(args.prompt_len, args.new_tokens, args.batch) < 1:
        raise UserError("--prompt-len, --new-tokens and --batch must be >= 1")
    if args.batch_limit < 1:
        raise UserError("--batch-limit must be >= 1")
    if "attention" not in variants:
        variants = ["attention", *variants]
    budget = None
    if args.max_batch:
        budget = args.cache_memory or _default_cache_memory(device)
    elif args.cache_memory:
        raise UserError("--cache-memory only applies with --max-batch")
    try:
        results = bg.run(variants, size, args.prompt_len, args.new_tokens, args.batch, args.max_batch,
                         args.batch_limit, device, dtype, args.warmup, args.repeats, progress=_progress(),
                         cache_memory=budget)
    except ValueError as e:
        if "decode state" not in str(e):
            raise
        raise UserError(str(e)) from None
    meta = _meta(args, device, size=size, dtype=dtype, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                 max_batch=bool(args.max_batch), cache_memory=budget, batch_limit=args.batch_limit)
    print(f"# {meta['device_name']}, torch {meta['torch']}, {size} models, {dtype}"
          + (f", max batch for {budget / 2**30:.2f} GiB of decode state (TTFT: one row)" if budget else ""))
    print(bg.table(results))
    _save(args.out, "bench_generate", results, meta, bg.plot)
