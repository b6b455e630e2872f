"""`ratlm train` and `ratlm prepare`."""
from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from . import recipe as rc

GROUPS = {"run": "run", "model": "model (ignored with --init-from)", "data": "data", "optim": "optimisation",
          "speed": "speed and memory"}

TRAIN_EPILOG = """\
Every recipe key KEY can be set with --KEY VALUE (underscores written as hyphens); the command line wins
over the recipe. With no option at all, a tiny RAT model learns the Python standard library's sources
with a 1024-token BPE trained first (offline, about 5 minutes on 2 CPU cores) and lands in
runs/tiny-rat-TIMESTAMP/model. A recipe's tokenizer yields to the prepared data's or --init-from's own.

examples:
  ratlm train                                       the offline default
  ratlm train --recipe tiny-attention --max-steps 200 --lr 1e-3
  ratlm train --data 'notes/**/*.md' --tokenizer bpe:2048 --name notes
  ratlm prepare --data corpus/ --tokenizer bpe:8192 --out tokens/  &&  ratlm train --data tokens/
  ratlm train --data synthetic:passkey --data-options n=5000 --init-from runs/x/model
  ratlm train --name mine --resume auto             continue after a crash, exactly
  torchrun --nproc_per_node 8 -m ratlm train --recipe xl-rat --tokenizer ~/llama2 --data tokens/
"""


def _recipe_help():
    try:
        names = rc.shipped_recipes()
    except Exception:  # pragma: no cover
        return "a shipped recipe name or a YAML file"
    return "a YAML file or a shipped recipe: " + ", ".join(names) + f" (default {rc.DEFAULT_RECIPE})"


def _defaults():
    try:
        return rc._read(rc.DEFAULT_RECIPE)
    except Exception:  # pragma: no cover
        return {}


def register(sub):
    p = sub.add_parser("train", help="train a model from a recipe (offline default: tiny RAT on the Python stdlib)",
                       description="Train a RAT (or attention, RNN, hybrid) language model from a YAML recipe, "
                                   "with --key value overrides. Works the same under torchrun (DDP, or FSDP with "
                                   "--fsdp true).",
                       epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=None, help=_recipe_help())
    p.add_argument("--list-recipes", action="store_true", help="list the shipped recipes and exit")
    p.add_argument("--print-recipe", action="store_true", help="print the resolved recipe (YAML) and exit")
    defaults = _defaults()
    groups = {g: p.add_argument_group(title) for g, title in GROUPS.items()}
    for opt in rc.OPTIONS:
        flag = "--" + opt.name.replace("_", "-")
        default = defaults.get(opt.name)
        shown = f" ({rc.DEFAULT_RECIPE}: {default})" if default is not None else ""
        kw = {"nargs": "?", "const": "true"} if opt.parse is rc._bool else {}
        groups[opt.group].add_argument(flag, dest=opt.name, default=None, metavar=opt.metavar or _metavar(opt),
                                       help=opt.help + shown, **kw)
    p.set_defaults(func=_run_train)

    q = sub.add_parser("prepare", help="tokenise text into token shards for `ratlm train --data DIR`",
                       description="Tokenise a text source into numpy token shards (train/validation split, "
                                   "documents separated by EOS) with the tokenizer saved alongside.")
    q.add_argument("--data", required=True, help="stdlib, text files/folders/globs (comma-separated), or hf:NAME")
    q.add_argument("--data-options", default=None,
                   help="k=v,k=v options of hf: sources (split, val_split, val_docs, text_field, ...)")
    q.add_argument("--tokenizer", default="byte", help="byte, bpe:N (trained here on the training split) or a "
                                                        "local tokenizer folder (default byte)")
    q.add_argument("--out", required=True, help="the folder to write (must not hold prepared tokens already)")
    q.add_argument("--val-fraction", type=float, default=0.02, help="share of files held out for validation")
    q.add_argument("--text-errors", choices=["strict", "replace"], default="strict",
                   help="bytes that are not UTF-8 text: strict (refuse, naming the file and offset; default) or "
                        "replace (read them as U+FFFD)")
    q.add_argument("--shard-tokens", type=int, default=1 << 28, help="tokens per shard file (default 2^28)")
    q.set_defaults(func=_run_prepare)


def _metavar(opt):
    if opt.choices:
        return "{" + ",".join(opt.choices) + "}"
    return {rc._bool: "BOOL", rc._int: "N", rc._float: "X"}.get(opt.parse, "VALUE")


def _run_train(args):
    if args.list_recipes:
        for name, desc in rc.shipped_recipes().items():
            print(f"{name:22s} {desc}")
        return
    overrides = {o.name: getattr(args, o.name) for o in rc.OPTIONS if getattr(args, o.name) is not None}
    if args.print_recipe:
        print(rc.to_yaml(rc.load(args.recipe or rc.DEFAULT_RECIPE, overrides, check_required=False)), end="")
        return
    from .api import run

    run(args.recipe, **overrides)


def _run_prepare(args):
    import os

    from tqdm import tqdm

    from ..data import shards
    from ..data.sources import choose_tokenizer, kind_of, parse_options, text_source
    from ..data.tokens import Encoder

    if kind_of(args.data) in ("prepared", "synthetic"):
        raise UserError(f"--data {args.data}: prepare reads text (stdlib, files, hf:NAME)")
    if not 0 < args.val_fraction <= 0.5:
        raise UserError(f"--val-fraction {args.val_fraction}: must be in (0, 0.5]")
    if args.shard_tokens < 1:
        raise UserError("--shard-tokens must be >= 1")
    if shards.is_prepared(args.out):
        raise UserError(f"{args.out} already holds prepared tokens (meta.json); choose another --out")
    options = parse_options(args.data_options)
    train_texts, val_texts, desc, _ = text_source(args.data, options, args.val_fraction,
                                                  text_errors=args.text_errors, log=lambda m: print(m, file=sys.stderr))
    tok = choose_tokenizer(args.tokenizer, args.data, texts=train_texts, log=lambda m: print(m, file=sys.stderr))
    enc = Encoder(tok)
    splits = {"train": train_texts()}
    if val_texts is not None:
        splits["val"] = val_texts()
    print(f"tokenising {desc}", file=sys.stderr)
    with tqdm(unit="tok", unit_scale=True, desc="prepare", file=sys.stderr) as bar:
        meta = shards.prepare(args.out, splits, enc, args.shard_tokens, progress=bar.update, source=args.data)
    for split, info in meta["splits"].items():
        print(f"{split}: {info['tokens']:,} tokens, {info['documents']:,} documents, {len(info['files'])} shard(s)")
    if not meta["splits"]["train"]["tokens"]:
        raise UserError(f"--data {args.data}: no text to tokenise")
    print(f"wrote {os.path.abspath(args.out)} (train with: ratlm train --data {args.out})")
