"""Hugging Face `datasets` as a source (`--data hf:NAME`, optional extra `pip install ratlm[datasets]`).

NAME is anything `datasets.load_dataset` takes (a hub name when online, a builder such as "json" or
"parquet" with `data_files=...`, a local folder), or a folder written by `Dataset.save_to_disk`.
Options (`--data-options k=v,k=v`): config, split (train), val_split (none: the first val_docs
documents of the training split are held out), val_docs (200, but at most a tenth of a split of fewer
than 2000 documents; 0: no validation), text_field (text), data_files, streaming (true: documents are
read as they come, nothing is downloaded up front).

Under torchrun every process reads (and tokenises) the whole stream and keeps its share of each global
batch, so that any number of processes sees the same batches; for large runs, tokenise once with
`ratlm prepare --data hf:NAME` and train on the shards.
"""
from __future__ import annotations

import itertools
import os

import numpy as np

from .packing import stream_row


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ValueError("--data hf:... needs the optional `datasets` package: pip install 'ratlm[datasets]'") from None
    return datasets


def load(name, split, options):
    """A datasets Dataset or IterableDataset of one split."""
    ds_mod = _datasets()
    streaming = bool(options.get("streaming", True))
    saved = any(os.path.isfile(os.path.join(name, f)) for f in ("dataset_info.json", "dataset_dict.json"))
    if saved:  # written by save_to_disk
        ds = ds_mod.load_from_disk(name)
        if isinstance(ds, ds_mod.DatasetDict):
            if split not in ds:
                raise ValueError(f"{name} has splits {', '.join(ds)}, not {split!r}; set --data-options split=...")
            ds = ds[split]
        return ds.to_iterable_dataset() if streaming else ds
    kw = {}
    if options.get("data_files"):
        kw["data_files"] = options["data_files"]
    try:
        return ds_mod.load_dataset(name, options.get("config"), split=split, streaming=streaming, **kw)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"could not load dataset {name!r} split {split!r}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # connection errors and the like
        raise ValueError(f"could not load dataset {name!r}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


SMALL = 2000  # a split with fewer documents holds out at most a tenth of them by default
DEFAULT_VAL_DOCS = 200


def held_out_docs(name, split, options, log=None):
    """How many documents at the start of `split` are held out for validation when there is no val_split:
    --data-options val_docs (default 200, at most a tenth of a small split). Refuses a val_docs that
    leaves nothing to train on."""
    given = options.get("val_docs")
    if given is not None and (not isinstance(given, int) or isinstance(given, bool) or given < 0):
        raise ValueError(f"--data-options val_docs={given}: expected a whole number >= 0")
    ds = load(name, split, options)
    n_docs = len(ds) if hasattr(ds, "__len__") else sum(1 for _ in itertools.islice(iter(ds), SMALL))
    small = n_docs < SMALL
    if given is None:
        n = min(DEFAULT_VAL_DOCS, n_docs // 10) if small else DEFAULT_VAL_DOCS
        if small and log:
            log(f"note: the {split} split has only {n_docs} documents: the first {n} are held out for validation "
                "(at most a tenth; set --data-options val_docs=N or val_split=SPLIT to choose)")
        return n
    if small and given >= n_docs:
        raise ValueError(f"--data-options val_docs={given} holds out every document of the {split} split "
                         f"(it has {n_docs}), leaving none to train on; lower val_docs (by default 200, at most a "
                         "tenth of a small split) or give val_split=SPLIT")
    return given


def texts(dataset, field, skip=0):
    """The text field of each record, from record `skip` on."""
    it = iter(dataset.skip(skip)) if skip and hasattr(dataset, "skip") else itertools.islice(iter(dataset), skip, None)
    for n, rec in enumerate(it):
        value = rec.get(field) if isinstance(rec, dict) else None
        if not isinstance(value, str):
            raise ValueError(f"dataset record {skip + n} has no string field {field!r}; set --data-options "
                             f"text_field=... (fields: {', '.join(rec) if isinstance(rec, dict) else '?'})")
        yield value


class StreamingRows:
    """Rows packed on the fly from a dataset read in order (it starts over at its end).

    It is read sequentially, so the loop asks for consecutive global batches; the position
    ({"epoch", "docs", "buffer"}) goes into checkpoints and a resumed run skips what was read."""

    def __init__(self, dataset, field, encoder, seq_len, skip_docs=0):
        self.dataset, self.field, self.encoder, self.seq_len = dataset, field, encoder, seq_len
        self.skip_docs = skip_docs  # documents held out for validation at the start of each pass
        self.epoch, self.docs, self.buffer = 0, 0, np.zeros(0, np.int64)
        self._it = None

    def state_dict(self):
        return {"epoch": self.epoch, "docs": self.docs, "buffer": self.buffer.tolist()}

    def load_state_dict(self, state):
        self.epoch, self.docs = state["epoch"], state["docs"]
        self.buffer = np.array(state["buffer"], np.int64)
        self._it = None

    def _documents(self):
        empty_pass = True
        while True:
            records = texts(self.dataset, self.field, self.skip_docs + self.docs)
            for doc in self.encoder.documents(records, keep_empty=True):
                self.docs += 1  # records read, empty ones included, so that a resume skips exactly these
                if len(doc):
                    empty_pass = False
                    yield doc
            if empty_pass:
                raise ValueError("the dataset gave no documents to train on")
            self.epoch, self.docs, empty_pass = self.epoch + 1, 0, True

    def next_rows(self, n):
        """The next n rows."""
        if self._it is None:
            self._it = self._documents()
        rows, T = [], self.seq_len
        while len(rows) < n:
            while len(self.buffer) < T + 1:
                self.buffer = np.concatenate([self.buffer, next(self._it).astype(np.int64)])
            rows.append(stream_row(self.buffer[:T + 1], self.encoder.eos))
            self.buffer = self.buffer[T:]
        return rows
