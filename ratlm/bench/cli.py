"""`ratlm bench ...`: the benchmark subcommands."""
from __future__ import annotations

import sys

from ..cli import CLIError, csv_list


def register(sub):
    p = sub.add_parser("bench", help="measure speed: one layer, or whole-model generation")
    bsub = p.add_subparsers(dest="bench_cmd", metavar="{layer}")
    b = bsub.add_parser("layer", help="train / prefill / decode-step latency of each mixer, with ratios against attention",
                        description="Train (fwd+bwd), prefill and one decode step for each mixer, measured in the "
                                    "same run; prints medians and ratios against attention, writes JSON and a PNG.")
    b.add_argument("--preset", choices=["cpu", "paper"], default=None,
                   help="cpu: D=512, 8 heads, fp32, batch 1 (default on CPU); paper: D=2048, 16x128 heads, bf16, "
                        "batch x length = 131072 (default on CUDA)")
    b.add_argument("--mixers", type=csv_list(str), help="comma list of attention, swa[W], rnn, rat[L] (e.g. rat16,rat64)")
    b.add_argument("--lengths", type=csv_list(int), help="comma list of sequence lengths (decode: positions)")
    b.add_argument("--modes", type=csv_list(str), default=["train", "prefill", "decode"], help="subset of train,prefill,decode")
    b.add_argument("--hidden", type=int, help="model width D")
    b.add_argument("--heads", type=int, help="number of heads")
    b.add_argument("--batch", type=int, help="batch size (ignored with --token-budget)")
    b.add_argument("--token-budget", type=int, help="keep batch x length at this many tokens")
    b.add_argument("--window", type=int, default=1024, help="sliding window W for swa (default 1024)")
    b.add_argument("--qk-groups", type=int, default=2, help="RAT query/key groups (default 2)")
    b.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: float32 on CPU, bfloat16 on CUDA")
    b.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    b.add_argument("--warmup", type=int, default=1)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--compile", action="store_true", help="torch.compile the layers (CUDA)")
    b.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    b.add_argument("--out", default="runs/bench", help="folder for bench_layer.json and bench_layer.png")
    p.set_defaults(func=_run_bench)


def _run_bench(args):
    if args.bench_cmd != "layer":
        raise CLIError("choose what to benchmark: `ratlm bench layer`")
    import torch
    from tqdm import tqdm

    from . import layer as bl

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    preset = dict(bl.PRESETS[args.preset or ("paper" if device.startswith("cuda") else "cpu")])
    opts = {k: getattr(args, k) if getattr(args, k) is not None else preset.get(k)
            for k in ("mixers", "lengths", "hidden", "heads", "batch", "token_budget", "dtype")}
    if args.batch is not None:
        opts["token_budget"] = args.token_budget
    bad = [m for m in args.modes if m not in ("train", "prefill", "decode")]
    if bad:
        raise CLIError(f"unknown mode(s) {', '.join(bad)}: use train, prefill, decode")
    for m in opts["mixers"]:
        try:
            bl.parse_mixer(m, args.window)
        except ValueError as e:
            raise CLIError(str(e))
    if opts["hidden"] % opts["heads"]:
        raise CLIError(f"--hidden {opts['hidden']} is not divisible by --heads {opts['heads']}")
    if "attention" not in opts["mixers"]:
        opts["mixers"] = ["attention", *opts["mixers"]]  # ratios need it
    results = bl.run(mixers=opts["mixers"], lengths=opts["lengths"], modes=args.modes, hidden=opts["hidden"],
                     heads=opts["heads"], batch=opts["batch"] or 1, token_budget=opts["token_budget"],
                     window=args.window, qk_groups=args.qk_groups, dtype=opts["dtype"], device=device,
                     warmup=args.warmup, repeats=args.repeats, compile=args.compile,
                     progress=lambda **kw: tqdm(**kw, file=sys.stderr))
    meta = {"hidden": opts["hidden"], "heads": opts["heads"], "dtype": opts["dtype"], "device": device,
            "device_name": bl.device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "window": args.window, "qk_groups": args.qk_groups, "warmup": args.warmup, "repeats": args.repeats,
            "command": "ratlm " + " ".join(sys.argv[1:])}
    print(f"# {meta['device_name']}, torch {meta['torch']}, D={meta['hidden']}, {meta['heads']} heads, {meta['dtype']}")
    print(bl.table(results))
    path, png = bl.save(results, args.out, meta)
    print(f"wrote {path} and {png}")
