"""Scoring prediction files the way LongBench's eval.py does, into its result.json.

A prediction folder holds one `TASK.jsonl` per task, one JSON object per line with `pred` (the model's
text), `answers` (list of true answers), `all_classes` (list or null) and `length` (the example's length
in words, or characters for Chinese). Per example, the score is the best over the answers (the few-shot
tasks trec, triviaqa, samsum and lsht first keep only the first line of the prediction, after leading
newlines); a task's score is 100 x the mean, rounded to 2 decimals. With --e (LongBench-E) the examples
go to length buckets 0-4k (< 4000), 4-8k (< 8000) and 8k+, and each bucket gets 100 x its numpy mean,
rounded (an empty bucket is NaN, as there). As there, `all_classes` of a file's last line serves the
whole file. The task is the file name up to its first ".".

postprocess="paper" scores as the RAT authors' scorer does for their base models instead (to compare
with the paper's Table 3): on the paper's 14 tasks, the prediction is cut before "\nQuestion" (QA tasks,
trec, triviaqa) or "\nQuery"/"\nQuestion" (qmsum), after leading newlines, and kept whole on the
summarisation and code tasks and samsum, in place of the first-line rule. Those are not LongBench's numbers.
"""
from __future__ import annotations

import json
import os
import warnings

import numpy as np

from ...data.corpus import jsonl_records
from ...errors import UserError
from . import tasks as T
from .metrics import best_score

BUCKETS = ("0-4k", "4-8k", "8k+")
FIELDS = ("pred", "answers", "all_classes")


def first_line(prediction: str) -> str:
    return prediction.lstrip("\n").split("\n")[0]


POSTPROCESS = ("longbench", "paper")


def postprocess(task: str, prediction: str, mode: str = "longbench") -> str:
    """The prediction as the scorer sees it: LongBench's first-line rule for its few-shot tasks, or with
    mode="paper" the RAT authors' cut where they have one."""
    if mode == "paper":
        markers = T.paper_cut(task)
        if markers is not None:
            if not markers:
                return prediction
            prediction = prediction.lstrip("\n")
            for m in markers:
                prediction = prediction.split(m)[0]
            return prediction
    elif mode != "longbench":
        raise UserError(f"unknown postprocessing {mode!r}; use {' or '.join(POSTPROCESS)}")
    if task in T.first_line_tasks():
        return first_line(prediction)
    return prediction


def example_score(task: str, prediction: str, answers: list, all_classes=None, mode: str = "longbench") -> float:
    """One example's score in [0, 1] (the first-line rule applied for the few-shot tasks)."""
    prediction = postprocess(task, prediction, mode)
    return best_score(T.tasks()[task]["metric"], prediction, answers, all_classes)


def task_score(task: str, predictions: list, answers: list, all_classes=None, mode: str = "longbench") -> float:
    """100 x the mean example score, rounded to 2 decimals (summed in file order, as eval.py does)."""
    if not predictions:
        raise UserError(f"no predictions to score for {task}")
    total = 0.0
    for pred, truths in zip(predictions, answers):
        total += example_score(task, pred, truths, all_classes, mode)
    return round(100 * total / len(predictions), 2)


def task_score_e(task: str, predictions: list, answers: list, lengths: list, all_classes=None,
                 mode: str = "longbench") -> dict:
    """LongBench-E: {"0-4k", "4-8k", "8k+"} -> 100 x the bucket's mean, rounded; NaN for an empty bucket."""
    scores = {b: [] for b in BUCKETS}
    for pred, truths, length in zip(predictions, answers, lengths):
        s = example_score(task, pred, truths, all_classes, mode)
        scores["0-4k" if length < 4000 else "4-8k" if length < 8000 else "8k+"].append(s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's warning for the mean of an empty bucket
        return {b: round(100 * np.mean(v), 2) for b, v in scores.items()}


def read_predictions(path: str, need_length: bool = False) -> tuple[list, list, object, list]:
    """(predictions, answers, all_classes of the last line, lengths) of one prediction file, checked."""
    preds, answers, lengths, classes = [], [], [], None
    for n, rec in jsonl_records(path):
        if not isinstance(rec, dict):
            raise UserError(f"{path}:{n}: expected a JSON object per line")
        missing = [k for k in FIELDS + (("length",) if need_length else ()) if k not in rec]
        if missing:
            raise UserError(f"{path}:{n}: missing field {missing[0]!r}; a prediction line needs pred, answers, "
                            "all_classes" + (" and length (for --e)" if need_length else " (and length)"))
        if not isinstance(rec["pred"], str):
            raise UserError(f"{path}:{n}: 'pred' must be a string")
        if not isinstance(rec["answers"], list) or not all(isinstance(a, str) for a in rec["answers"]):
            raise UserError(f"{path}:{n}: 'answers' must be a list of strings")
        if rec["all_classes"] is not None and not isinstance(rec["all_classes"], list):
            raise UserError(f"{path}:{n}: 'all_classes' must be a list or null")
        if need_length and not isinstance(rec["length"], (int, float)):
            raise UserError(f"{path}:{n}: 'length' must be a number")
        preds.append(rec["pred"])
        answers.append(rec["answers"])
        classes = rec["all_classes"]
        if "length" in rec:
            lengths.append(rec["length"])
    if not preds:
        raise UserError(f"{path} holds no predictions (an empty file); remove it or predict again")
    return preds, answers, classes, lengths


def prediction_files(folder: str) -> dict:
    """{task: path} of the folder's *.jsonl files (every one must be named after a LongBench task)."""
    if not os.path.isdir(folder):
        raise UserError(f"no such folder: {folder}")
    files = sorted(f for f in os.listdir(folder) if f.endswith("jsonl"))
    if not files:
        raise UserError(f"{folder} has no prediction files (TASK.jsonl)")
    out = {}
    for f in files:
        task = f.split(".")[0]
        if task not in T.tasks():
            raise UserError(f"{os.path.join(folder, f)}: {task!r} is not a LongBench task; prediction files are "
                            f"named TASK.jsonl with TASK one of {', '.join(T.tasks())}")
        out[task] = os.path.join(folder, f)
    return out


def score_folder(folder: str, e: bool = False, write: bool = True, mode: str = "longbench") -> dict:
    """{task: score} (with e, {task: {bucket: score}}) of a prediction folder; writes FOLDER/result.json
    in LongBench's format unless write=False (result_paper.json with mode="paper")."""
    scores = {}
    for task, path in prediction_files(folder).items():
        preds, answers, classes, lengths = read_predictions(path, need_length=e)
        if e:
            scores[task] = task_score_e(task, preds, answers, lengths, classes, mode)
        else:
            scores[task] = task_score(task, preds, answers, classes, mode)
    if write:
        with open(os.path.join(folder, result_name(mode)), "w", encoding="utf-8") as f:
            json.dump(scores, f, ensure_ascii=False, indent=4)
    return scores


def result_name(mode: str = "longbench") -> str:
    return "result.json" if mode == "longbench" else f"result_{mode}.json"


def averages(scores: dict) -> dict:
    """Category averages (over the tasks present) and the overall average over all tasks, from
    {task: score}; for LongBench-E scores ({bucket: score}) each bucket is averaged the same way,
    skipping NaN buckets."""
    def mean(values):
        values = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
        return round(sum(values) / len(values), 2) if values else None

    def avg(tasks_):
        if not tasks_:
            return None
        if isinstance(scores[tasks_[0]], dict):
            return {b: mean([scores[t][b] for t in tasks_]) for b in BUCKETS}
        return mean([scores[t] for t in tasks_])

    out = {}
    for cat in T.CATEGORY_ORDER:
        present = [t for t in scores if T.category(t) == cat]
        if present:
            out[cat] = avg(present)
    out["average"] = avg(list(scores))
    return out
