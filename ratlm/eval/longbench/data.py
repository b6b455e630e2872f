"""The benchmark's test data: its JSONL files in a folder, or the Hugging Face dataset when online.

A folder is what users download (data.zip unpacks to data/TASK.jsonl; LongBench-E files are
TASK_e.jsonl); `--data DIR` finds the files in DIR or DIR/data. `--data hf:THUDM/LongBench` loads
the same through `datasets` (needs the network). Each line needs input, context, answers (a list of
strings), length and all_classes (a list or null), as the benchmark's pred.py reads them.
"""
from __future__ import annotations

import os

from ...data.corpus import jsonl_records
from ...errors import UserError

FIELDS = ("input", "context", "answers", "length", "all_classes")


def check(rec, where: str) -> dict:
    if not isinstance(rec, dict):
        raise UserError(f"{where}: expected a JSON object")
    missing = [k for k in FIELDS if k not in rec]
    if missing:
        raise UserError(f"{where}: missing field {missing[0]!r}; a LongBench line needs {', '.join(FIELDS)}")
    if not isinstance(rec["input"], str) or not isinstance(rec["context"], str):
        raise UserError(f"{where}: 'input' and 'context' must be strings")
    if not isinstance(rec["answers"], list) or not all(isinstance(a, str) for a in rec["answers"]):
        raise UserError(f"{where}: 'answers' must be a list of strings")
    if rec["all_classes"] is not None and not isinstance(rec["all_classes"], list):
        raise UserError(f"{where}: 'all_classes' must be a list or null")
    return rec


def task_file(folder: str, task: str, e: bool = False) -> str:
    name = f"{task}_e.jsonl" if e else f"{task}.jsonl"
    for d in (folder, os.path.join(folder, "data")):
        path = os.path.join(d, name)
        if os.path.isfile(path):
            return path
    raise UserError(f"{folder} has no {name} (nor data/{name}); download LongBench's data.zip and unpack it there, "
                    "choose the tasks it has with --tasks, or make small local ones with `ratlm eval longbench-mini`")


def read_folder(folder: str, task: str, e: bool = False) -> list:
    path = task_file(folder, task, e)
    records = []
    for n, rec in jsonl_records(path):
        records.append(check(rec, f"{path}:{n}"))
    if not records:
        raise UserError(f"{path} is empty; it needs one JSON object per line")
    return records


def read_hub(name: str, task: str, e: bool = False) -> list:
    try:
        import datasets
    except ImportError:
        raise UserError("--data hf:... needs the datasets package: pip install 'ratlm[datasets]'") from None
    config = f"{task}_e" if e else task
    try:
        ds = datasets.load_dataset(name, config, split="test")
    except Exception as err:  # offline, unknown config, a datasets version without script support, ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UserError(f"cannot load {name} ({config}) from the Hugging Face hub: {first}; download its data.zip "
                        "and pass --data DIR instead") from None
    records = [check(dict(r), f"{name} {config} row {i}") for i, r in enumerate(ds)]
    if not records:
        raise UserError(f"{name} ({config}) has no test rows")
    return records


def load(data: str, task: str, e: bool = False, limit: int | None = None) -> list:
    """The test records of `task` from `data` (a folder, or hf:NAME), the first `limit` of them."""
    if data.startswith("hf:"):
        records = read_hub(data[3:], task, e)
    elif os.path.isdir(data):
        records = read_folder(data, task, e)
    else:
        raise UserError(f"--data {data}: no such folder; give the folder of LongBench's JSONL files or "
                        "hf:THUDM/LongBench")
    return records[:limit] if limit else records
