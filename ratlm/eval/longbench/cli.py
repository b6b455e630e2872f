"""`ratlm eval longbench`, `ratlm eval longbench-mini` and `ratlm eval generate` (registered by ratlm.eval.cli);
the work is done by the functions of ratlm.eval.longbench.api."""
from __future__ import annotations

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


def _common(args):
    return {"batch_size": args.batch_size, "device": args.device, "dtype": args.dtype, "tokenizer": args.tokenizer,
            "out": args.out}


def _run_longbench(args):
    from . import api

    if args.score_only:
        if args.models or args.data:
            raise UserError("--score-only scores an existing folder: give no MODEL and no --data")
        api.score_only(args.score_only, e=args.e, postprocess=args.postprocess)
        return
    api.longbench(args.models, args.data, tasks=args.tasks, max_length=args.max_length, limit=args.limit, e=args.e,
                  postprocess=args.postprocess, **_common(args))


def _run_mini(args):
    from . import api

    api.longbench_mini(args.folder, examples=args.examples, paragraphs=args.paragraphs, seed=args.seed,
                       sft_examples=args.sft_examples, sft_pairs=args.sft_pairs)


def _run_generate(args):
    from . import api

    api.generate(args.models, args.data, args.metric, max_new_tokens=args.max_new_tokens, max_length=args.max_length,
                 limit=args.limit, **_common(args))
