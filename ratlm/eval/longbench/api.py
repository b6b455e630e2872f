"""`ratlm eval longbench`, `longbench --score-only`, `longbench-mini` and `generate` as Python functions:
the same names and keyword arguments as the command-line options. Each prints the command's table,
writes its files, and returns what it wrote. Bad arguments raise ratlm.errors.UserError."""
from __future__ import annotations

import os
from collections.abc import Sequence

from ...errors import UserError
from ..api import check_positive, load_models, progress
from ..common import table, write_json


def _as_list(x):
    return [x] if isinstance(x, str) else list(x)


def longbench(models: Sequence[str], data: str, *, tasks: Sequence[str] | None = None, max_length: int | None = None,
              limit: int | None = None, e: bool = False, postprocess: str = "longbench", batch_size: int = 8,
              device: str | None = None, dtype: str | None = None, tokenizer: str | None = None,
              out: str = "runs/eval") -> dict:
    """Predict LongBench `tasks` (default: the paper's 14) from `data` (a folder or hf:NAME) with each
    model, write OUT/pred[_e]/MODEL/TASK.jsonl and result.json, print the tasks x models table, write
    OUT/longbench[_e].json and .png. Returns the JSON's contents."""
    from . import run
    from . import tasks as T

    models = _as_list(models)
    if not models:
        raise UserError("give one or more MODEL directories (or --score-only DIR)")
    if not data:
        raise UserError("--data is required: a folder of LongBench JSONL files or hf:THUDM/LongBench "
                        "(make small local ones with `ratlm eval longbench-mini DIR`)")
    check_positive(batch_size=batch_size, limit=limit)
    if max_length is not None and max_length < 2:
        raise UserError(f"--max-length must be at least 2, got {max_length}")
    names = T.resolve(tasks, e)
    records = run.load_data(data, names, e, limit)
    results = [run.run_model(model, tok, name, records, out, max_length, e, batch_size, progress(), postprocess)
               for name, model, tok in load_models(models, device, dtype, tokenizer)]
    how = "" if postprocess == "longbench" else ", predictions cut as the RAT authors do"
    print(f"# LongBench{'-E' if e else ''} scores (x100){how}; prompts cut in the middle to "
          f"{max_length or 'train_length - answer budget'} tokens")
    print(run.print_table(results, e))
    os.makedirs(out, exist_ok=True)
    stem = "longbench_e" if e else "longbench"
    result = {"data": data, "tasks": names, "max_length": max_length, "limit": limit, "e": e,
              "postprocess": postprocess, "results": results}
    path = write_json(os.path.join(out, f"{stem}.json"), result)
    png = os.path.join(out, f"{stem}.png")
    run.plot(results, png, e)
    preds = os.path.join(out, "pred_e" if e else "pred")
    print(f"wrote {path} and {png}; prediction files and result.json under {preds}")
    return result


def score_only(folder: str, *, e: bool = False, postprocess: str = "longbench") -> dict:
    """Score the prediction files of `folder` as LongBench's eval.py does; writes FOLDER/result.json
    (result_paper.json with postprocess="paper") and prints the scores with the category averages.
    Returns {task: score}."""
    from . import score as S

    scores = S.score_folder(folder, e, mode=postprocess)
    avgs = S.averages(scores)
    if e:
        print(table(["task", *S.BUCKETS], [[t, *[s[b] for b in S.BUCKETS]] for t, s in scores.items()]
                    + [[f"[{k}]", *[v[b] for b in S.BUCKETS]] for k, v in avgs.items()]))
    else:
        print(table(["task", "score"], [[t, s] for t, s in scores.items()] + [[f"[{k}]", v] for k, v in avgs.items()]))
    print(f"wrote {os.path.join(folder, S.result_name(postprocess))}")
    return scores


def longbench_mini(folder: str, *, examples: int = 20, paragraphs: int = 8, seed: int = 0, sft_examples: int = 0,
                   sft_pairs: int = 4) -> list:
    """Write the local mini tasks (and, with sft_examples, the SFT train/test files); returns the paths."""
    from . import mini

    check_positive(examples=examples)
    if sft_examples < 0:
        raise UserError(f"--sft-examples must be 0 or more, got {sft_examples}")
    if paragraphs < 2:
        raise UserError(f"--paragraphs must be at least 2, got {paragraphs}")
    try:
        paths = mini.write(folder, n=examples, k=paragraphs, seed=seed)
        if sft_examples:
            paths += mini.write_sft(folder, sft_examples, examples, sft_pairs, seed)
    except ValueError as err:
        raise UserError(str(err)) from None
    print("wrote " + ", ".join(paths))
    return paths


def read_records(path: str) -> list:
    """The {"prompt", "response"} records of a JSONL file, checked."""
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


def generate(models: Sequence[str], data: str, metric: str, *, max_new_tokens: int | None = None,
             max_length: int | None = None, limit: int | None = None, batch_size: int = 8,
             device: str | None = None, dtype: str | None = None, tokenizer: str | None = None,
             out: str = "runs/eval") -> dict:
    """`ratlm eval generate`: score each model's greedy answers to the prompt/response JSONL `data`
    with `metric`; prints one table, writes OUT/generate.json. Returns its contents."""
    from ..generation import evaluate_generation

    check_positive(batch_size=batch_size, limit=limit, max_new_tokens=max_new_tokens)
    if max_length is not None and max_length < 2:
        raise UserError(f"--max-length must be at least 2, got {max_length}")
    records = read_records(data)[:limit]
    results = []
    for name, model, tok in load_models(_as_list(models), device, dtype, tokenizer):
        r = evaluate_generation(model, tok, records, metric, max_new_tokens, max_length, batch_size, progress())
        results.append({"name": name, **r})
    print(table(["model", metric, "examples", "prompts cut", "prompt budget", "answer budget", "new tokens"],
                [[r["name"], r["score"], r["n"], r["truncated"], r["max_length"], r["max_new_tokens"],
                  r["mean_new_tokens"]] for r in results]))
    result = {"data": data, "metric": metric, "results": results}
    path = write_json(os.path.join(out, "generate.json"), result)
    print(f"wrote {path}")
    return result
