"""`ratlm eval longbench`, `ratlm eval longbench-mini` and `ratlm eval generate` (registered by ratlm.eval.cli)."""
from __future__ import annotations

import os

from ...errors import UserError


def register(esub, common, csv_list):
    q = esub.add_parser(
        "longbench", help="LongBench v1: predict, score (as its eval.py) and compare models",
        description="Predict LongBench tasks with each model (the benchmark's prompts and answer budgets, prompts "
                    "cut in the middle to --max-length tokens, greedy batched generation), write its prediction "
                    "files and result.json, and print one table of tasks x models with the category averages. "
                    "With --score-only DIR, only score a folder of prediction files (TASK.jsonl) as LongBench's "
                    "eval.py does. Needs `pip install 'ratlm[longbench]'` for the Chinese tasks (jieba).")
    common(q, models=False)
    q.add_argument("models", nargs="*", metavar="MODEL", help="model directories (none with --score-only)")
    q.add_argument("--data", help="folder of LongBench's JSONL files (its data.zip unpacked, or made by "
                   "`ratlm eval longbench-mini`), or hf:THUDM/LongBench (needs the network)")
    q.add_argument("--tasks", type=csv_list(str), help="paper (the paper's 14 English tasks; the default), all, "
                   "or a comma list of LongBench task names, e.g. passage_count,passage_retrieval_en")
    q.add_argument("--max-length", type=int, help="prompt budget in tokens; longer prompts are cut in the middle "
                   "(default: each model's train_length less the task's answer budget)")
    q.add_argument("--limit", type=int, help="first N examples of each task")
    q.add_argument("--e", action="store_true", help="LongBench-E: TASK_e.jsonl data, scores by length bucket "
                   "(0-4k, 4-8k, 8k+)")
    q.add_argument("--score-only", metavar="DIR", help="score the prediction files in DIR and write DIR/result.json")
    q.add_argument("--postprocess", choices=["longbench", "paper"], default="longbench",
                   help="longbench (its eval.py: the first line for trec, triviaqa, samsum, lsht; the default) or "
                        "paper (as the RAT authors score base models: cut before \"\\nQuestion\" / \"\\nQuery\"; "
                        "written to result_paper.json; not LongBench's numbers)")
    q.set_defaults(func=_run_longbench)

    q = esub.add_parser("longbench-mini", help="write small LongBench-format tasks made offline (for demos, tests)",
                        description="Writes passage_retrieval_en, passage_count and multifieldqa_en (a needle QA) "
                                    "JSONL files in LongBench's format, made from Python standard-library "
                                    "docstrings; evaluate them with `ratlm eval longbench MODEL --data DIR --tasks "
                                    "passage_retrieval_en,passage_count,multifieldqa_en`.")
    q.add_argument("folder", metavar="DIR")
    q.add_argument("-n", "--examples", type=int, default=20, help="examples per task (default 20)")
    q.add_argument("--paragraphs", type=int, default=8, help="paragraphs per example (default 8)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--sft-examples", type=int, default=0, metavar="N",
                   help="also write sft_train.jsonl (N records) and sft_test.jsonl (--examples records) of a small "
                        "prompt/response code-lookup task, for `ratlm train --init-from` and `ratlm eval generate`")
    q.add_argument("--sft-pairs", type=int, default=4, help="codes listed per SFT prompt (default 4)")
    q.set_defaults(func=_run_mini)

    q = esub.add_parser("generate", help="score generated answers of prompt/response JSONL (e.g. SFT test sets)",
                        description="Greedy, batched generation for each {\"prompt\", \"response\"} line (prompts "
                                    "longer than --max-length cut in the middle), scored against the response with "
                                    "LongBench's metrics; one table of models, JSON under --out.")
    common(q)
    q.add_argument("--data", required=True, help="JSONL file of {\"prompt\": ..., \"response\": ...} lines")
    q.add_argument("--metric", required=True, choices=["qa_f1", "rouge", "exact", "code_sim"],
                   help="qa_f1 (token F1), rouge (ROUGE-L F), code_sim (edit similarity of the first code line), "
                        "exact (stripped strings equal)")
    q.add_argument("--max-new-tokens", type=int, help="answer budget (default: longest response in tokens + 16)")
    q.add_argument("--max-length", type=int, help="prompt budget in tokens (default: train_length less the answer "
                   "budget)")
    q.add_argument("--limit", type=int, help="first N records")
    q.set_defaults(func=_run_generate)


def _positive(**kw):
    for k, v in kw.items():
        if v is not None and v < 1:
            raise UserError(f"--{k.replace('_', '-')} must be at least 1, got {v}")


def _run_longbench(args):
    from ..cli import _models, _progress
    from ..common import table, write_json
    from . import run
    from . import score as S
    from . import tasks as T

    if args.score_only:
        if args.models or args.data:
            raise UserError("--score-only scores an existing folder: give no MODEL and no --data")
        scores = S.score_folder(args.score_only, args.e, mode=args.postprocess)
        avgs = S.averages(scores)
        if args.e:
            print(table(["task", *S.BUCKETS], [[t, *[s[b] for b in S.BUCKETS]] for t, s in scores.items()]
                        + [[f"[{k}]", *[v[b] for b in S.BUCKETS]] for k, v in avgs.items()]))
        else:
            print(table(["task", "score"],
                        [[t, s] for t, s in scores.items()] + [[f"[{k}]", v] for k, v in avgs.items()]))
        print(f"wrote {os.path.join(args.score_only, S.result_name(args.postprocess))}")
        return
    if not args.models:
        raise UserError("give one or more MODEL directories (or --score-only DIR)")
    if not args.data:
        raise UserError("--data is required: a folder of LongBench JSONL files or hf:THUDM/LongBench "
                        "(make small local ones with `ratlm eval longbench-mini DIR`)")
    _positive(batch_size=args.batch_size, limit=args.limit)
    if args.max_length is not None and args.max_length < 2:
        raise UserError(f"--max-length must be at least 2, got {args.max_length}")
    names = T.resolve(args.tasks, args.e)
    data = run.load_data(args.data, names, args.e, args.limit)
    results = []
    for name, model, tok in _models(args):
        results.append(run.run_model(model, tok, name, data, args.out, args.max_length, args.e, args.batch_size,
                                     _progress(), args.postprocess))
    how = "" if args.postprocess == "longbench" else ", predictions cut as the RAT authors do"
    print(f"# LongBench{'-E' if args.e else ''} scores (x100){how}; prompts cut in the middle to "
          f"{args.max_length or 'train_length - answer budget'} tokens")
    print(run.print_table(results, args.e))
    os.makedirs(args.out, exist_ok=True)
    stem = "longbench_e" if args.e else "longbench"
    path = write_json(os.path.join(args.out, f"{stem}.json"),
                      {"data": args.data, "tasks": names, "max_length": args.max_length, "limit": args.limit,
                       "e": args.e, "postprocess": args.postprocess, "results": results})
    png = os.path.join(args.out, f"{stem}.png")
    run.plot(results, png, args.e)
    preds = os.path.join(args.out, "pred_e" if args.e else "pred")
    print(f"wrote {path} and {png}; prediction files and result.json under {preds}")


def _run_mini(args):
    from . import mini

    _positive(examples=args.examples)
    if args.sft_examples < 0:
        raise UserError(f"--sft-examples must be 0 or more, got {args.sft_examples}")
    if args.paragraphs < 2:
        raise UserError(f"--paragraphs must be at least 2, got {args.paragraphs}")
    try:
        paths = mini.write(args.folder, n=args.examples, k=args.paragraphs, seed=args.seed)
        if args.sft_examples:
            paths += mini.write_sft(args.folder, args.sft_examples, args.examples, args.sft_pairs, args.seed)
    except ValueError as e:
        raise UserError(str(e)) from None
    print("wrote " + ", ".join(paths))


def _read_records(path):
    from ...data.corpus import jsonl_records

    if not os.path.isfile(path):
        raise UserError(f"--data {path}: no such file")
    records = []
    for n, rec in jsonl_records(path):
        if not (isinstance(rec, dict) and isinstance(rec.get("prompt"), str) and isinstance(rec.get("response"), str)):
            raise UserError(f"{path}:{n}: a line needs string fields \"prompt\" and \"response\"")
        if not rec["prompt"]:
            raise UserError(f"{path}:{n}: the prompt is empty")
        records.append(rec)
    if not records:
        raise UserError(f"{path} holds no records")
    return records


def _run_generate(args):
    from ..cli import _models, _progress
    from ..common import table, write_json
    from ..generation import evaluate_generation

    _positive(batch_size=args.batch_size, limit=args.limit, max_new_tokens=args.max_new_tokens)
    if args.max_length is not None and args.max_length < 2:
        raise UserError(f"--max-length must be at least 2, got {args.max_length}")
    records = _read_records(args.data)[:args.limit]
    results = []
    for name, model, tok in _models(args):
        r = evaluate_generation(model, tok, records, args.metric, args.max_new_tokens, args.max_length,
                                args.batch_size, _progress())
        results.append({"name": name, **r})
    print(table(["model", args.metric, "examples", "prompts cut", "prompt budget", "answer budget", "new tokens"],
                [[r["name"], r["score"], r["n"], r["truncated"], r["max_length"], r["max_new_tokens"],
                  r["mean_new_tokens"]] for r in results]))
    path = write_json(os.path.join(args.out, "generate.json"), {"data": args.data, "metric": args.metric,
                                                                "results": results})
    print(f"wrote {path}")
