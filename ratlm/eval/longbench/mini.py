"""Small local LongBench-format tasks, made offline from Python standard-library docstrings.

    ratlm eval longbench-mini data/mini --examples 20 --paragraphs 8

writes, in the benchmark's exact JSONL format (input, context, answers, length, dataset, language,
all_classes, _id), files named after the LongBench task whose prompt template and metric they use:

- passage_retrieval_en.jsonl: "Paragraph 1: ...", ..., and an abstract (the first sentence of one of
  them); the answer is "Paragraph N".
- passage_count.jsonl: paragraphs, some repeated, in random order; the answer is the number of distinct ones.
- multifieldqa_en.jsonl: a needle QA. A sentence "The secret code of the NAME is NUMBER." hidden at a
  random depth among the paragraphs; the question asks for it, the answer is NUMBER (scored by F1).

`lookup_sft(n, pairs, seed)` makes prompt/response records for a small SFT task (for `ratlm train --data
X.jsonl --init-from ...` and `ratlm eval generate`): a list of "NAME NUMBER" codes, a question for one
of them, and the number as the response; `longbench-mini --sft-examples N` writes sft_train.jsonl and
sft_test.jsonl.

The paragraphs are first paragraphs of docstrings of a fixed list of modules, so the exact text depends
on the Python version; the records are seeded and deterministic for a given one.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import random
import warnings

MODULES = ("argparse", "base64", "bisect", "calendar", "codecs", "collections", "contextlib", "copy", "csv",
           "dataclasses", "datetime", "decimal", "difflib", "enum", "fnmatch", "fractions", "functools",
           "glob", "gzip", "hashlib", "heapq", "inspect", "io", "itertools", "json", "logging", "operator",
           "os", "pathlib", "pprint", "queue", "random", "re", "shutil", "statistics", "string", "struct",
           "tarfile", "tempfile", "textwrap", "threading", "typing", "unittest", "zipfile")
TASKS = ("passage_retrieval_en", "passage_count", "multifieldqa_en")
NAMES = ("heron", "otter", "falcon", "walrus", "badger", "lynx", "marmot", "ibis", "gecko", "tapir", "quokka",
         "bison", "crane", "dingo", "ermine", "ferret", "gazelle", "hyena", "impala", "jackal")


@functools.lru_cache(maxsize=4)
def paragraphs(min_words: int = 12, max_words: int = 60) -> tuple:
    """Distinct first paragraphs of standard-library docstrings, whitespace collapsed, with
    min_words..max_words words, in a fixed order."""
    seen, out = set(), []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr in sorted(vars(module)):
            if attr.startswith("_"):
                continue
            obj = getattr(module, attr)
            if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                continue
            with warnings.catch_warnings():  # typing.io / typing.re warn when their docstrings are read
                warnings.simplefilter("ignore", DeprecationWarning)
                doc = inspect.getdoc(obj) or ""
            para = " ".join(doc.split("\n\n")[0].split())
            if min_words <= len(para.split()) <= max_words and para not in seen and "{" not in para:
                seen.add(para)
                out.append(para)
    return tuple(out)


def _record(task: str, i: int, context: str, inp: str, answer: str) -> dict:
    return {"input": inp, "context": context, "answers": [answer],
            "length": len(context.split()) + len(inp.split()) + len(answer.split()),
            "dataset": task, "language": "en", "all_classes": None, "_id": f"ratlm-mini-{task}-{i}"}


def _first_sentence(text: str) -> str:
    head = text.split(". ")[0]
    return head if head.endswith(".") else head + "."


def retrieval(n: int, k: int, rng: random.Random) -> list:
    pool = paragraphs()
    out = []
    for i in range(n):
        chosen = rng.sample(pool, k)
        target = rng.randrange(k)
        context = "\n\n".join(f"Paragraph {j + 1}: {p}" for j, p in enumerate(chosen))
        out.append(_record("passage_retrieval_en", i, context, _first_sentence(chosen[target]),
                           f"Paragraph {target + 1}"))
    return out


def count(n: int, k: int, rng: random.Random) -> list:
    pool = paragraphs()
    out = []
    for i in range(n):
        unique = rng.randint(1, max(1, k - 1))
        chosen = rng.sample(pool, unique)
        items = chosen + [rng.choice(chosen) for _ in range(k - unique)]
        rng.shuffle(items)
        context = "\n\n".join(f"Paragraph {j + 1}: {p}" for j, p in enumerate(items))
        out.append(_record("passage_count", i, context, "", str(unique)))
    return out


def needle(n: int, k: int, rng: random.Random) -> list:
    pool = paragraphs()
    out = []
    for i in range(n):
        chosen = list(rng.sample(pool, k))
        name, code = rng.choice(NAMES), str(rng.randint(1000, 9999))
        chosen.insert(rng.randint(0, k), f"The secret code of the {name} is {code}.")
        out.append(_record("multifieldqa_en", i, "\n\n".join(chosen), f"What is the secret code of the {name}?", code))
    return out


def lookup_sft(n: int, pairs: int = 4, seed: int = 0) -> list:
    """n {"prompt", "response"} records: "Codes: heron 4821, otter 1937, ...\nWhat is the code of the
    otter?\nAnswer:" -> " 1937"."""
    if pairs < 1 or pairs > len(NAMES):
        raise ValueError(f"pairs must be between 1 and {len(NAMES)}")
    rng = random.Random(f"{seed}-lookup")
    out = []
    for _ in range(n):
        names = rng.sample(NAMES, pairs)
        codes = [str(rng.randint(1000, 9999)) for _ in names]
        k = rng.randrange(pairs)
        listing = ", ".join(f"{a} {c}" for a, c in zip(names, codes))
        out.append({"prompt": f"Codes: {listing}.\nWhat is the code of the {names[k]}?\nAnswer:",
                    "response": f" {codes[k]}"})
    return out


def write_sft(folder: str, n_train: int, n_test: int, pairs: int = 4, seed: int = 0) -> list:
    """FOLDER/sft_train.jsonl and FOLDER/sft_test.jsonl (the test set from another seed)."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name, n, s in (("sft_train", n_train, seed), ("sft_test", n_test, seed + 1)):
        path = os.path.join(folder, f"{name}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for rec in lookup_sft(n, pairs, s):
                f.write(json.dumps(rec) + "\n")
        paths.append(path)
    return paths


MAKERS = {"passage_retrieval_en": retrieval, "passage_count": count, "multifieldqa_en": needle}


def make(task: str, n: int = 20, k: int = 8, seed: int = 0) -> list:
    """n records of a mini task with k paragraphs each."""
    if task not in MAKERS:
        raise ValueError(f"no local maker for {task!r}; choose from {', '.join(MAKERS)}")
    if n < 1 or k < 2:
        raise ValueError("a mini task needs at least 1 example and 2 paragraphs")
    if k > len(paragraphs()):
        raise ValueError(f"at most {len(paragraphs())} paragraphs are available")
    return MAKERS[task](n, k, random.Random(f"{seed}-{task}"))


def write(folder: str, tasks=TASKS, n: int = 20, k: int = 8, seed: int = 0) -> list:
    """Write FOLDER/TASK.jsonl for each task; returns the paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for task in tasks:
        path = os.path.join(folder, f"{task}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for rec in make(task, n, k, seed):
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths
