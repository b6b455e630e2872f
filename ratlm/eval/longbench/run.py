"""Predict LongBench tasks with ratlm models, score them, and compare the models.

Per task, as the benchmark's pred.py does for a base (non-chat) model: the prompt is the task's template
filled with the record; it is cut in the middle at the token level to the prompt budget (--max-length;
default the model's training length less the task's answer budget, so prompt + answer fit in it); the
answer is generated greedily (batched, left padding) for at most the task's answer budget, stopping at
EOS (samsum: also at a newline, after at least one token). Predictions go to OUT/pred/MODEL/TASK.jsonl
(pred_e/ with --e) in the benchmark's format and are scored as its eval.py does (score.py).
"""
from __future__ import annotations

import functools
import os

from ...errors import UserError
from ..common import encode, pyplot, table
from ..generation import decode, encode_prompt, greedy_generate, prompt_budget, truncate_middle
from . import score as S
from . import tasks as T


def prompt(task: str, rec: dict) -> str:
    return T.tasks()[task]["prompt"].format(**rec)


def check_budgets(model, task_names, max_length):
    """Fail before any generation if a task's answer budget leaves no prompt room in the model."""
    for task in task_names:
        prompt_budget(model, T.tasks()[task]["max_new_tokens"], max_length, f"LongBench's {task}")


def predict(model, tok, task: str, records: list, max_length: int | None, batch_size: int = 8,
            progress=None) -> tuple[list, int]:
    """(prediction lines in the benchmark's format, number of prompts cut)."""
    info = T.tasks()[task]
    max_new = info["max_new_tokens"]
    budget = prompt_budget(model, max_new, max_length, f"LongBench's {task}")
    prompts, cut = [], 0
    for rec in records:
        ids = encode_prompt(tok, prompt(task, rec))
        cut += len(ids) > budget
        prompts.append(truncate_middle(ids, budget))
    stop, min_new = (), 0
    if task == "samsum":  # the benchmark stops samsum at a newline too, after at least one new token
        stop, min_new = tuple(encode(tok, "\n")[-1:]), 1
    new = greedy_generate(model, tok, prompts, max_new, batch_size, stop_ids=stop, min_new_tokens=min_new,
                          progress=progress)
    lines = [{"pred": decode(tok, ids), "answers": rec["answers"], "all_classes": rec["all_classes"],
              "length": rec["length"]} for ids, rec in zip(new, records)]
    return lines, cut


def write_predictions(path: str, lines: list):
    import json

    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            json.dump(line, f, ensure_ascii=False)
            f.write("\n")


def _labelled(progress, label, **kw):
    return progress(**{**kw, "desc": label})


def run_model(model, tok, name: str, data: dict, out: str, max_length: int | None = None, e: bool = False,
              batch_size: int = 8, progress=None, mode: str = "longbench") -> dict:
    """Predict and score every task of `data` ({task: records}) for one model. Returns {"name",
    "folder", "scores", "averages", "truncated"}."""
    check_budgets(model, data, max_length)
    folder = os.path.join(out, "pred_e" if e else "pred", name)
    os.makedirs(folder, exist_ok=True)
    truncated = {}
    for task, records in data.items():
        bar = functools.partial(_labelled, progress, f"{name} {task}") if progress else None
        lines, cut = predict(model, tok, task, records, max_length, batch_size, bar)
        truncated[task] = cut
        write_predictions(os.path.join(folder, f"{task}.jsonl"), lines)
    everything = S.score_folder(folder, e, mode=mode)  # and result.json of the folder, as eval.py writes it
    scores = {t: everything[t] for t in data}
    return {"name": name, "folder": folder, "scores": scores, "averages": S.averages(scores), "truncated": truncated}


def rows(results: list, e: bool = False) -> tuple[list, list]:
    """(header, rows) of the comparison table: one row per task, then the category averages and the
    overall average; one column per model (per model and length bucket with --e)."""
    names = [r["name"] for r in results]
    task_names = list(results[0]["scores"])
    keys = [(n, b) for n in names for b in S.BUCKETS] if e else [(n, None) for n in names]
    head = ["task", *[f"{n} {b}" if b else n for n, b in keys]]

    def cell(r, value, b):
        if value is None:
            return None
        return value[b] if b else value

    body = []
    for t in task_names:
        body.append([t, *[cell(r, r["scores"][t], b) for r in results for b in (S.BUCKETS if e else [None])]])
    for cat in [*T.CATEGORY_ORDER, "average"]:
        if cat in results[0]["averages"]:
            label = f"[{cat}]" if cat != "average" else "[average]"
            body.append([label, *[cell(r, r["averages"].get(cat), b) for r in results
                                  for b in (S.BUCKETS if e else [None])]])
    return head, body


def print_table(results: list, e: bool = False) -> str:
    head, body = rows(results, e)
    return table(head, body)


def plot(results: list, png: str, e: bool = False):
    """Bars: each task and category average (x) for each model; with --e, the overall average by bucket."""
    import numpy as np

    plt = pyplot()
    if e:
        fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
        for r in results:
            avg = r["averages"]["average"]
            ax.plot(S.BUCKETS, [np.nan if avg[b] is None else avg[b] for b in S.BUCKETS], marker="o", label=r["name"])
        ax.set_xlabel("length")
        ax.set_ylabel("average score")
    else:
        head, body = rows(results)
        labels = [b[0] for b in body]
        x = np.arange(len(labels))
        w = 0.8 / len(results)
        fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(labels) * max(1, len(results) / 2)), 4), layout="constrained")
        for k, r in enumerate(results):
            ax.bar(x + k * w, [np.nan if b[1 + k] is None else b[1 + k] for b in body], w, label=r["name"])
        ax.set_xticks(x + 0.4 - w / 2, labels, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("score")
        ax.set_ylim(0, max(1.0, max((b[k] or 0) for b in body for k in range(1, len(results) + 1)) * 1.1))
    ax.set_title("ratlm eval longbench" + (" (LongBench-E)" if e else ""))
    ax.legend(fontsize=8)
    fig.savefig(png, dpi=120)
    plt.close(fig)


def load_data(source: str, task_names: list, e: bool = False, limit: int | None = None) -> dict:
    """{task: records} for every task, all read (and checked) before any model work."""
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    from .data import load

    return {t: load(source, t, e, limit) for t in task_names}
