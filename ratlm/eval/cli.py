"""`ratlm eval ...`: perplexity, length generalisation, retrieval, lm-evaluation-harness, LongBench and
generation-scored tasks (the last two in ratlm/eval/longbench/cli.py).

Every subcommand takes one or more model directories and prints one comparison table; results go to
JSON (and PNG) files under --out.
"""
from __future__ import annotations

import os

from ..cli import csv_list
from ..errors import UserError


def register(sub):
    p = sub.add_parser("eval", help="evaluate models: perplexity, length generalisation, retrieval, lm-eval, "
                                    "LongBench, generated answers",
                       description="Evaluate one or more model directories; each command prints one table "
                                   "comparing them and writes JSON (and a PNG) under --out.")
    esub = p.add_subparsers(dest="eval_cmd", metavar="{ppl,length,retrieval,lm-eval,longbench,longbench-mini,generate}")

    def common(q, out=True, models=True):
        if models:
            q.add_argument("models", nargs="+", metavar="MODEL", help="model directories (save_pretrained + tokenizer)")
        q.add_argument("--device", help="cpu or cuda (default: cuda if available)")
        q.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                       help="default: float32 on CPU, bfloat16 on CUDA")
        q.add_argument("--tokenizer", help="tokenizer directory or 'byte' (default: the model directory's)")
        q.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")
        if out:
            q.add_argument("--out", default="runs/eval", help="folder for the JSON and PNG files (default runs/eval)")

    q = esub.add_parser("ppl", help="perplexity and bits per byte on held-out text, in windows with a stride",
                        description="Perplexity (and bits per UTF-8 byte) of each model on held-out text. Each "
                                    "document is read in windows of --context tokens moving --stride tokens at a "
                                    "time; each token is scored once, with at least context - stride tokens of "
                                    "history after the first window.")
    common(q)
    q.add_argument("--data", nargs="+", required=True, help=".txt/.md files (one document each), .jsonl files "
                   "(one document per line) or folders of them")
    q.add_argument("--text-field", default="text", help="field of the .jsonl records (default text)")
    q.add_argument("--context", type=int, help="window length in tokens (default: each model's train_length)")
    q.add_argument("--stride", type=int, help="tokens the window moves each time, at most context - 1; later "
                   "windows score that many new tokens (default: context - 1, windows share one token)")
    q.add_argument("--max-tokens", type=int, help="score at most this many tokens of the data")
    q.add_argument("--bos", action="store_true", help="put the tokenizer's BOS before each document "
                   "(for models trained that way; then the first token is scored too)")
    q.set_defaults(func=_run_ppl)

    q = esub.add_parser("length", help="loss by position up to several times the training length",
                        description="Loss at each position bucket on sequences of factor x training length; "
                                    "one line per model in the table and the PNG.")
    common(q)
    q.add_argument("--data", nargs="+", required=True, help="held-out text (as for `ratlm eval ppl`)")
    q.add_argument("--text-field", default="text")
    q.add_argument("--factors", type=csv_list(int), default=[1, 2, 4],
                   help="eval lengths as multiples of the training length (default 1,2,4)")
    q.add_argument("--train-length", type=int,
                   help="the training length the factors multiply (default: the largest train_length of the models)")
    q.add_argument("--bucket", type=int, help="positions per bucket (default: training length / 4)")
    q.add_argument("--windows", type=int, default=16, help="sequences averaged (default 16)")
    q.set_defaults(func=_run_length)

    q = esub.add_parser("retrieval", help="passkey / needle-in-a-haystack / MQAR accuracy by length and depth",
                        description="Accuracy (greedy exact match, scored by teacher forcing) on locally "
                                    "generated, seeded retrieval tasks, as a length x depth table and heatmap.")
    common(q)
    q.add_argument("--task", choices=["passkey", "niah", "mqar"], required=True)
    q.add_argument("--lengths", type=csv_list(int),
                   help="prompt lengths in characters (tokens for byte-level models); "
                        "default: 1, 2 and 4 x the first model's train_length")
    q.add_argument("--depths", type=csv_list(float), default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="needle depths, 0 = start .. 1 = end (default 0,0.25,0.5,0.75,1)")
    q.add_argument("-n", "--examples", type=int, default=20, help="examples per cell (default 20)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--option", "-o", action="append", default=[], metavar="NAME=VALUE",
                   help="task option, repeatable: passkey: digits, haystack; niah: keys, values, queries, "
                        "value (number|word|uuid), haystack (noise|words|needles|file:PATH); "
                        "mqar: queries, key_len, value_len")
    q.add_argument("--bos", action="store_true", help="put the tokenizer's BOS before each prompt")
    q.set_defaults(func=_run_retrieval)

    q = esub.add_parser("lm-eval", help="run lm-evaluation-harness tasks (needs `pip install ratlm[eval]`)",
                        description="Runs lm-evaluation-harness (`lm_eval`) through the Hugging Face classes "
                                    "with ratlm registered. The ratlm_* tasks (passkey, niah, mqar made "
                                    "locally) are always available; the harness's own tasks need their "
                                    "datasets. For every lm_eval option use `python -m ratlm.eval.harness`.")
    common(q)
    q.add_argument("--tasks", type=csv_list(str), required=True,
                   help="comma list, e.g. ratlm_passkey,lambada_openai; 'paper' stands for the paper's six "
                        "short-context tasks (piqa, arc_easy, arc_challenge, winogrande, lambada_openai, "
                        "hellaswag), whose datasets lm_eval downloads (needs the network)")
    q.add_argument("--include-path", action="append", default=[], help="extra folder of task YAML files")
    q.add_argument("--limit", type=float, help="examples per task (a count, or a fraction below 1)")
    q.add_argument("--num-fewshot", type=int)
    q.add_argument("--max-length", type=int, help="longest input, cut from the left beyond it; also the window of "
                   "rolling-loglikelihood tasks (default: lm_eval's, unlimited for the byte tokenizer)")
    q.add_argument("--option", "-o", action="append", default=[], metavar="NAME=VALUE",
                   help="task metadata, repeatable; the ratlm_* tasks take n, seed and the generator's options "
                        "(e.g. -o length=1024 -o n=100)")
    q.set_defaults(func=_run_lm_eval)
    from .longbench.cli import register as register_longbench

    register_longbench(esub, common, csv_list)
    p.set_defaults(func=_need_subcommand)


def _need_subcommand(args):
    raise UserError("choose an evaluation: `ratlm eval ppl|length|retrieval|lm-eval|longbench|longbench-mini|generate` "
                    "(see ratlm eval -h)")


def _models(args):
    """Yield (name, model, tokenizer) of the common options' models, each loaded when its turn comes."""
    from .api import load_models

    return load_models(args.models, args.device, args.dtype, args.tokenizer)


def _common(args):
    return {"batch_size": args.batch_size, "device": args.device, "dtype": args.dtype, "tokenizer": args.tokenizer,
            "out": args.out}


def _run_ppl(args):
    from . import api

    api.ppl(args.models, args.data, text_field=args.text_field, context=args.context, stride=args.stride,
            max_tokens=args.max_tokens, bos=args.bos, **_common(args))


def _run_length(args):
    from . import api

    api.length(args.models, args.data, text_field=args.text_field, factors=args.factors,
               train_length=args.train_length, bucket=args.bucket, windows=args.windows, **_common(args))


def _options(items):
    from ..options import parse_pairs

    return parse_pairs(items, "--option")


def _run_retrieval(args):
    from . import api

    api.retrieval(args.models, args.task, lengths=args.lengths, depths=args.depths, examples=args.examples,
                  seed=args.seed, options=_options(args.option), bos=args.bos, **_common(args))


def _run_lm_eval(args):
    from ..runtime import pick_device
    from .api import check_out, check_positive
    from .common import labels, table, write_json
    from .harness import _require, expand_tasks, run

    check_out(args.out)
    try:
        _require()
    except ImportError as e:
        raise UserError(str(e)) from None
    check_positive(batch_size=args.batch_size, max_length=args.max_length)
    args.tasks = expand_tasks(args.tasks)
    device = pick_device(args.device)
    results, rows = {}, {}
    for path, name in zip(args.models, labels(args.models)):
        res = run(path, args.tasks, include_path=args.include_path, limit=args.limit,
                  num_fewshot=args.num_fewshot, batch_size=args.batch_size, device=device, dtype=args.dtype,
                  max_length=args.max_length, tokenizer=args.tokenizer, options=_options(args.option))
        results[name] = res
        for task, metrics in res.items():
            for metric, value in metrics.items():
                rows.setdefault((task, metric), {})[name] = value
    names = list(results)
    print(table(["task", "metric", *names],
                [[t, m, *[v.get(n) for n in names]] for (t, m), v in rows.items() if m != "sample_len"]))
    out = write_json(os.path.join(args.out, "lm_eval.json"), {"tasks": args.tasks, "results": results})
    print(f"wrote {out}")
