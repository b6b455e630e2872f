"""Where training text comes from: the running Python's standard library, or local files, folders and globs.

A document is one file, or one line of a `.jsonl` file (its "text" field). Files are split into
train and validation by a hash of their name, so the split is the same on every run and machine.
"""
from __future__ import annotations

import glob
import json
import os
import sysconfig
import zlib

# what a folder contributes (files named explicitly or by a glob are taken whatever their suffix)
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".jsonl", ".c", ".h", ".cpp", ".js", ".ts", ".java", ".go",
                 ".rs", ".tex", ".html", ".css", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".sh", ".csv")


def stdlib_root():
    return sysconfig.get_paths()["stdlib"]


def stdlib_files():
    """The .py sources of the running Python's standard library (its tests included, installed
    packages excluded): tens of MB of real text on every machine."""
    root = stdlib_root()
    files = sorted(f for f in glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
                   if not any(part in ("site-packages", "dist-packages") for part in f.split(os.sep)))
    if not files:
        raise FileNotFoundError(f"found no .py files in the standard library folder {root}; give --data PATH")
    return files


def expand(spec):
    """Files named by a comma-separated list of files, folders (searched recursively for text files)
    and globs. Raises FileNotFoundError naming the first part that matches nothing."""
    files = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        path = os.path.expanduser(part)
        if os.path.isdir(path):
            found = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                           if os.path.isfile(f) and f.lower().endswith(TEXT_SUFFIXES)
                           and not any(s.startswith(".") for s in os.path.relpath(f, path).split(os.sep)))
            if not found:
                raise FileNotFoundError(f"folder {part} holds no text files ({', '.join(TEXT_SUFFIXES[:5])}, ...)")
        elif os.path.isfile(path):
            found = [path]
        else:
            found = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
            if not found:
                raise FileNotFoundError(f"no file matches {part!r}")
        files.extend(found)
    if not files:
        raise FileNotFoundError(f"no data files given ({spec!r})")
    return list(dict.fromkeys(files))  # drop duplicates, keep order


def split_files(files, val_fraction):
    """(train, val) lists: a file goes to validation when a hash of its name says so (stable across runs);
    with two files or more each side gets at least one. One file gives ([file], []): the caller splits
    its tokens instead."""
    if len(files) < 2:
        return list(files), []
    common = os.path.commonpath([os.path.abspath(f) for f in files])
    keyed = [(zlib.crc32(os.path.relpath(os.path.abspath(f), common).encode()) / 2**32, f) for f in files]
    val = [f for h, f in keyed if h < val_fraction]
    if not val:
        val = [min(keyed)[1]]
    if len(val) == len(files):
        val = val[:-1]
    chosen = set(val)
    return [f for f in files if f not in chosen], val


ERRORS = ("strict", "replace")


OPT_IN = "; --text-errors replace reads such bytes as U+FFFD"


def decode(data, path, errors="strict", offset=0, hint=OPT_IN):
    """UTF-8 bytes of `path` to text. errors="strict" refuses bytes that are not UTF-8 text, and NUL bytes
    (binary files), with a ValueError naming the file and the byte offset; "replace" reads them as U+FFFD."""
    if errors not in ERRORS:
        raise ValueError(f"text errors {errors!r}: use strict or replace")
    if errors == "replace":
        return data.decode("utf-8", errors="replace")
    nul = data.find(b"\0")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        at = e.start if nul < 0 else min(e.start, nul)
        what = "binary data, not text" if at == nul else "not UTF-8 text"
        raise ValueError(f"{path}: {what} (byte 0x{data[at]:02x} at offset {offset + at}); convert it to UTF-8 or "
                         f"leave it out{hint}") from None
    if nul >= 0:
        raise ValueError(f"{path}: binary data, not text (a NUL byte at offset {offset + nul}); leave it out{hint}")
    return text


def jsonl_records(path, errors="strict", hint=OPT_IN):
    """Yield (line number, record) for the non-empty lines of a JSONL file; a bad line is a ValueError
    naming the file and line (and bytes that are not UTF-8 text, unless errors="replace")."""
    with open(path, "rb") as fh:
        offset = 0
        for n, raw in enumerate(fh, 1):
            line = decode(raw, f"{path}:{n}", errors, offset, hint)
            offset += len(raw)
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None


def read_documents(files, errors="strict", prompt_response=False):
    """Yield the text of each document: a whole file, or each "text" of a .jsonl file's lines
    (prompt_response: prompt + response of prompt/response lines, i.e. SFT records read as plain text).
    errors: what to do with bytes that are not UTF-8 text (see decode)."""
    for f in files:
        if f.endswith(".jsonl"):
            for n, rec in jsonl_records(f, errors):
                if prompt_response and isinstance(rec, dict) and isinstance(rec.get("prompt"), str) \
                        and isinstance(rec.get("response"), str):
                    yield rec["prompt"] + rec["response"]
                    continue
                text = rec.get("text") if isinstance(rec, dict) else None
                if not isinstance(text, str):
                    raise ValueError(f"{f}:{n}: a text .jsonl line needs a string field \"text\" "
                                     "(or \"prompt\" and \"response\" for SFT)")
                yield text
        else:
            with open(f, "rb") as fh:
                yield decode(fh.read(), f, errors)


def is_sft_jsonl(path):
    """True when the first record of a .jsonl file has "prompt" and "response" fields."""
    if not path.endswith(".jsonl") or not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(rec, dict) and "prompt" in rec and "response" in rec
    return False
