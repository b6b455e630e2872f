"""`--data SPEC` to tokenizer + train rows + validation rows.

SPEC is one of
    stdlib                   the running Python's standard library sources (the offline default)
    PATH[,PATH...]           text files, folders, globs; .jsonl files give one document per "text" line,
                             or SFT records when their lines have "prompt" and "response"
    DIR                      a folder written by `ratlm prepare` (token shards + their tokenizer)
    hf:NAME                  a Hugging Face dataset (optional extra; see ratlm.data.hf)
    synthetic:TASK           SFT on records of ratlm.data.synthetic (options: n, val_n, and the task's own)
Options for hf: and synthetic: come from --data-options "k=v,k=v".
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import sys

import numpy as np

from ..options import parse_pairs
from . import corpus, sft, shards
from .bpe import parse_bpe, train_bpe
from .packing import PackedRows, StreamRows
from .tokenizer import load_tokenizer
from .tokens import Encoder, TokenStream


@dataclasses.dataclass
class Data:
    tokenizer: object
    train: object            # StreamRows, PackedRows or hf.StreamingRows
    val: object              # StreamRows or PackedRows (indexable), or None
    sft: bool
    description: str
    bytes_per_token: float | None = None   # of the validation split, for bits per byte
    notes: list = dataclasses.field(default_factory=list)


def parse_options(text):
    """--data-options "k=v,k=v" to a dict (numbers and booleans recognised); a part without "=" continues
    the previous value (so data_files=a.json,b.json works)."""
    return parse_pairs(text, "--data-options", continuation=True)


def kind_of(spec):
    if spec in (None, "", "stdlib"):
        return "stdlib"
    if spec.startswith("hf:"):
        return "hf"
    if spec.startswith("synthetic:"):
        return "synthetic"
    path = os.path.expanduser(spec)
    if os.path.isdir(path) and shards.is_prepared(path):
        return "prepared"
    return "files"


def _log(log, msg):
    if log:
        log(msg)


def choose_tokenizer(spec, data_spec, init_from=None, texts=None, log=None):
    """The tokenizer for a run: `spec` is None (auto: the prepared data's or the init model's, else bytes),
    "byte", "bpe:N" (trained here on `texts()`), or a local tokenizer folder."""
    kind = kind_of(data_spec)
    carried = None
    if kind == "prepared":
        carried = os.path.join(os.path.expanduser(data_spec), "tokenizer")
    elif init_from and os.path.isfile(os.path.join(init_from, "tokenizer_config.json")):
        carried = init_from
    if spec is None:
        return load_tokenizer(carried) if carried else load_tokenizer("byte")
    bpe = parse_bpe(spec)
    if bpe is not None:
        if carried:
            raise ValueError(f"--tokenizer {spec}: the {'prepared data' if kind == 'prepared' else 'init model'} "
                             "already comes with a tokenizer; drop --tokenizer")
        _log(log, f"training a byte-level BPE tokenizer of {bpe} tokens on the training text")
        tok = train_bpe(texts(), bpe)
        if len(tok) < bpe:
            _log(log, f"warning: the BPE tokenizer reached only {len(tok)} of the {bpe} tokens asked for (the "
                      f"training text holds no more merges); the vocabulary is {len(tok)}")
        return tok
    if spec not in ("byte", "bytes") and not os.path.isdir(os.path.expanduser(spec)):
        raise FileNotFoundError(f"--tokenizer {spec}: no such folder (give a local tokenizer folder, 'byte' or bpe:N)")
    tok = load_tokenizer(spec if spec in ("byte", "bytes") else os.path.expanduser(spec))
    if kind == "prepared":
        meta = shards.load_meta(os.path.expanduser(data_spec))
        if len(tok) != meta["vocab_size"] or tok.eos_token_id != meta["eos_token_id"]:
            raise ValueError(f"--tokenizer {spec} ({len(tok)} tokens, eos {tok.eos_token_id}) is not the tokenizer "
                             f"{data_spec} was prepared with ({meta['vocab_size']} tokens, eos "
                             f"{meta['eos_token_id']}); drop --tokenizer to use the data's own")
    return tok


def text_source(spec, options, val_fraction, hold_out=True, text_errors="strict", prompt_response=False, log=None):
    """(train texts factory, val texts factory or None, description, documents an hf: split holds out for
    validation) for stdlib / files / hf sources.
    hold_out=False (validation comes from elsewhere, --val-data): everything is training text.
    text_errors: bytes that are not UTF-8 text in files (strict: refuse; the stdlib is read with "replace").
    prompt_response: prompt/response .jsonl lines are read as their prompt + response text."""
    kind = kind_of(spec)
    if kind in ("stdlib", "files"):
        files = corpus.stdlib_files() if kind == "stdlib" else corpus.expand(spec)
        errors = "replace" if kind == "stdlib" else text_errors  # a few stdlib test files are not UTF-8 on purpose
        train, val = corpus.split_files(files, val_fraction) if hold_out and val_fraction > 0 else (files, [])
        version = ".".join(map(str, sys.version_info[:3]))
        name = f"Python {version} standard library ({corpus.stdlib_root()})" if kind == "stdlib" else spec
        desc = f"{name}: {len(train)} train / {len(val)} validation files"

        def read(fs):
            return lambda: corpus.read_documents(fs, errors, prompt_response)

        return read(train), (read(val) if val else None), desc, 0
    if kind == "hf":
        from . import hf

        name, field = spec[3:], options.get("text_field", "text")
        split, val_split = options.get("split", "train"), options.get("val_split")
        if val_split and hold_out:
            return (lambda: hf.texts(hf.load(name, split, options), field)), \
                (lambda: hf.texts(hf.load(name, val_split, options), field)), f"{name} ({split} / {val_split})", 0
        n_val = hf.held_out_docs(name, split, options, log) if hold_out else 0
        if not n_val:
            return (lambda: hf.texts(hf.load(name, split, options), field)), None, f"{name} ({split})", 0
        return (lambda: hf.texts(hf.load(name, split, options), field, skip=n_val)), \
            (lambda: itertools.islice(hf.texts(hf.load(name, split, options), field), n_val)), \
            f"{name} ({split}, first {n_val} documents held out for validation)", n_val
    raise ValueError(f"--data {spec}: not a text source")


def _val_stream(enc, val_data, text_errors):
    """The validation tokens of --val-data files (read with the run's tokenizer)."""
    tokens, _, nbytes = enc.stream(corpus.read_documents(corpus.expand(val_data), text_errors, True))
    if not len(tokens):
        raise ValueError(f"--val-data {val_data}: no text")
    return TokenStream([tokens], nbytes / max(1, len(tokens)))


def open_data(spec, seq_len, *, options=None, tokenizer=None, val_data=None, val_fraction=0.02, sft_mode=None,
              seed=0, init_from=None, text_errors="strict", log=None):
    """Everything the loop needs from `--data` (see the module docstring). With `val_data`, validation
    comes from those files for every kind of source, and nothing of `spec` is held out."""
    options = parse_options(options)
    kind = kind_of(spec)
    if kind == "files" and not os.path.exists(os.path.expanduser(spec.split(",")[0])) and ":" in spec.split(",")[0] \
            and not spec.split(",")[0].startswith((".", "/", "~")):
        raise ValueError(f"--data {spec}: unknown source; use a path, stdlib, hf:NAME or synthetic:TASK")
    is_sft = kind == "synthetic" or (kind == "files" and all(corpus.is_sft_jsonl(f) for f in corpus.expand(spec)))
    prompt_response = False
    if sft_mode is True and not is_sft:
        raise ValueError("--sft true needs prompt/response records: JSONL lines with \"prompt\" and \"response\", "
                         "or --data synthetic:TASK")
    if sft_mode is False and is_sft:
        if kind == "synthetic":
            raise ValueError("--data synthetic:... is SFT data; drop --sft false")
        is_sft, prompt_response = False, True  # plain text: loss on prompt and response alike
    if val_data and kind == "synthetic":
        raise ValueError("--val-data does not apply to --data synthetic:TASK; set the number of validation records "
                         "with --data-options val_n=N")
    if is_sft:
        return _open_sft(spec, kind, seq_len, options, tokenizer, val_data, val_fraction, seed, init_from, log)
    if kind == "prepared":
        return _open_prepared(spec, seq_len, tokenizer, val_data, val_fraction, init_from, text_errors, log)
    train_texts, val_texts, desc, n_held = text_source(spec, options, val_fraction, hold_out=not val_data,
                                               text_errors=text_errors, prompt_response=prompt_response, log=log)
    if prompt_response:
        desc += " (prompt/response records as plain text, --sft false)"
    tok = choose_tokenizer(tokenizer, spec, init_from, texts=train_texts, log=log)
    enc = Encoder(tok)

    def held_out():
        """The validation stream: --val-data, else the source's own held-out texts (None: neither)."""
        if val_data:
            return _val_stream(enc, val_data, text_errors)
        if val_texts is not None:
            val_tokens, _, val_bytes = enc.stream(val_texts())
            return TokenStream([val_tokens], val_bytes / max(1, len(val_tokens)))
        return None

    if val_data:
        desc += f"; validation: {val_data}"
    if kind == "hf" and options.get("streaming", True):
        from .hf import StreamingRows, load

        val_stream = held_out()
        train = StreamingRows(load(spec[3:], options.get("split", "train"), options), options.get("text_field", "text"),
                              enc, seq_len, skip_docs=n_held)
        val = StreamRows(val_stream, seq_len, enc.eos) if val_stream is not None else None
        data = Data(tok, train, val, False, f"{desc}, streamed", val_stream.bytes_per_token if val_stream else None)
        return _check_val(data)
    _log(log, f"reading {desc}")
    tokens, docs, nbytes = enc.stream(train_texts())
    if not len(tokens):
        raise ValueError(f"--data {spec}: the training split holds no text")
    train_stream = TokenStream([tokens], nbytes / len(tokens))
    val_stream = held_out()
    if val_stream is None and not val_data and val_fraction > 0:  # one file: its tail is the validation split
        train_stream, val_stream = train_stream.split_tail(val_fraction)
    n_val = len(val_stream) if val_stream is not None else 0
    desc += f"; {len(train_stream):,} train / {n_val:,} validation tokens, {docs:,} documents"
    val = StreamRows(val_stream, seq_len, enc.eos) if val_stream is not None else None
    data = Data(tok, StreamRows(train_stream, seq_len, enc.eos), val, False, desc,
                val_stream.bytes_per_token if val_stream is not None else None)
    if val is None:
        data.notes.append("--val-fraction 0 and no --val-data: no validation loss")
    return _check_val(data)


def _open_prepared(spec, seq_len, tokenizer, val_data, val_fraction, init_from, text_errors, log):
    folder = os.path.expanduser(spec)
    meta = shards.load_meta(folder)
    tok = choose_tokenizer(tokenizer, spec, init_from, log=log)
    train = shards.open_split(folder, "train", meta)
    if train is None:
        raise ValueError(f"--data {spec}: the prepared training split is empty")
    if val_data:  # the prepared validation split (if any) is left out
        val = _val_stream(Encoder(tok), val_data, text_errors)
        where = f"validation: {val_data}"
    else:
        val = shards.open_split(folder, "val", meta)
        if val is None and val_fraction > 0:
            train, val = train.split_tail(val_fraction)
        where = "prepared validation split" if val is not None else "no validation"
    eos = meta["eos_token_id"]
    desc = f"prepared tokens {spec}: {len(train):,} train / {len(val) if val else 0:,} validation tokens ({where})"
    return _check_val(Data(tok, StreamRows(train, seq_len, eos), StreamRows(val, seq_len, eos) if val else None,
                           False, desc, val.bytes_per_token if val else None))


def _open_sft(spec, kind, seq_len, options, tokenizer, val_data, val_fraction, seed, init_from, log):
    if kind == "synthetic":
        task = spec.split(":", 1)[1]
        opts = dict(options)
        n, n_val = int(opts.pop("n", 20000)), int(opts.pop("val_n", 200))
        train_recs = sft.synthetic_records(task, n, seed, **opts)
        val_recs = sft.synthetic_records(task, n_val, seed + 1_000_003, **opts)
        desc = f"synthetic:{task} ({n} train / {n_val} validation records, options {opts or 'default'})"
    else:
        files = corpus.expand(spec)
        if val_data:
            train_recs, val_recs = sft.read_jsonl(files), sft.read_jsonl(corpus.expand(val_data))
        else:
            records = sft.read_jsonl(files)
            order = np.random.default_rng(seed).permutation(len(records))
            n_val = max(1, int(len(records) * val_fraction)) if len(records) > 1 else 0
            val_recs = [records[i] for i in order[:n_val]]
            train_recs = [records[i] for i in order[n_val:]]
        desc = f"SFT records {spec}: {len(train_recs)} train / {len(val_recs)} validation"
    if not train_recs:
        raise ValueError(f"--data {spec}: no SFT records to train on")
    tok = choose_tokenizer(tokenizer, spec if kind != "synthetic" else "stdlib", init_from,
                           texts=lambda: (r["prompt"] + r["response"] for r in train_recs), log=log)
    enc = Encoder(tok)
    train_ex, cut = sft.encode_records(train_recs, enc, seq_len)
    val_ex, _ = sft.encode_records(val_recs, enc, seq_len)
    notes = [f"{cut} of {len(train_recs)} SFT records were longer than seq_len {seq_len} and were cut"] if cut else []
    if not train_ex:
        raise ValueError(f"--data {spec}: no SFT record has a response token within seq_len {seq_len}")
    order = np.random.default_rng(seed).permutation(len(train_ex))
    train = PackedRows([train_ex[i] for i in order], seq_len, enc.pad)
    val = PackedRows(val_ex, seq_len, enc.pad) if val_ex else None
    desc += f"; packed into {len(train)} rows of {seq_len}"
    return Data(tok, train, val, True, desc, None, notes)


def _check_val(data):
    if data.val is not None and len(data.val) == 0:
        data.notes.append("the validation split is shorter than one row: no validation loss")
        data.val = None
    return data
