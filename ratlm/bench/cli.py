"""`ratlm bench layer` and `ratlm bench generate`."""
from __future__ import annotations

import argparse

from .. import options
from ..cli import csv_list
from ..errors import UserError


def register(sub):
    p = sub.add_parser("bench", help="measure speed: one layer, whole-model generation, or a server under load")
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


def parse_bytes(text):
    """argparse type: a size ('4GiB', '512MiB', '2GB', '1e9', '1000000') in bytes (ratlm.options.parse_bytes)."""
    try:
        return options.parse_bytes(text)
    except UserError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: give bytes or a number with a unit, e.g. 4GiB, "
                                         "512MiB, 2GB") from None


def _common(p, serve=False):
    p.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: float32 on CPU, bfloat16 on CUDA")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    if serve:
        p.add_argument("--warmup", type=int, default=2,
                       help="untimed requests sent to each server, one at a time, before its loads (default 2)")
    else:
        p.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones (default 1)")
        p.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time (default); cpu: this process's CPU time, for a shared, loaded machine "
                        "(needs --threads 1, CPU only)")
    p.add_argument("--out", default="runs/bench", help="folder for the JSON and PNG (default runs/bench)")


_LAYER = ("preset", "mixers", "lengths", "modes", "hidden", "heads", "batch", "token_budget", "window", "qk_groups",
          "compile")
_GENERATE = ("variants", "size", "prompt_len", "new_tokens", "batch", "max_batch", "cache_memory", "batch_limit")
_COMMON = ("dtype", "device", "warmup", "repeats", "threads", "clock", "out")


def _options(args, names):
    return {k: getattr(args, k) for k in (*names, *_COMMON)}


def _run_layer(args):
    from . import api

    api.layer(**_options(args, _LAYER))


def _run_generate(args):
    from . import api

    api.generate(**_options(args, _GENERATE))
