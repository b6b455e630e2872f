"""The benchmark's tasks as data (tasks.json): prompt template, answer budget, metric, category."""
from __future__ import annotations

import functools
import json
import os

from ...errors import UserError

CATEGORY_ORDER = ["single-doc QA", "multi-doc QA", "summarization", "few-shot", "synthetic", "code"]


@functools.lru_cache(maxsize=1)
def _data() -> dict:
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks.json"), encoding="utf-8") as f:
        return json.load(f)


def tasks() -> dict:
    """{task: {"prompt", "max_new_tokens", "metric", "category", "language"}} for all 21 tasks."""
    return _data()["tasks"]


def paper_tasks() -> list:
    """The 14 English tasks the RAT paper reports."""
    return list(_data()["paper_tasks"])


def e_tasks() -> list:
    """The 13 tasks LongBench-E has."""
    return list(_data()["e_tasks"])


def first_line_tasks() -> frozenset:
    """Few-shot tasks whose prediction is cut to its first line before scoring."""
    return frozenset(_data()["first_line_tasks"])


def paper_cut(task: str):
    """The RAT authors' markers for `task` (a list, maybe empty), or None where they have no rule."""
    return _data()["paper_postprocess"]["cut"].get(task)


def category(task: str) -> str:
    return tasks()[task]["category"]


def resolve(names, e: bool = False) -> list:
    """A task list from the command line: None or ["paper"] (the paper's 14; under --e those LongBench-E
    has), ["all"], or task names. Unknown names are a UserError."""
    names = list(names or ["paper"])
    if names == ["paper"]:
        out = paper_tasks()
        return [t for t in out if t in e_tasks()] if e else out
    if names == ["all"]:
        return e_tasks() if e else list(tasks())
    known = tasks()
    bad = [n for n in names if n not in known]
    if bad:
        raise UserError(f"unknown LongBench task {bad[0]!r}; use paper, all, or some of: {', '.join(known)}")
    if e:
        bad = [n for n in names if n not in e_tasks()]
        if bad:
            raise UserError(f"LongBench-E has no task {bad[0]!r}; it has {', '.join(e_tasks())}")
    return list(dict.fromkeys(names))
