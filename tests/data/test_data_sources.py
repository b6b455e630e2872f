"""Data sources: files/folders/globs, the stdlib corpus, prepared shards, BPE, HF datasets, synthetic SFT;
deterministic batches that any number of processes split the same way."""
import json
import sys
import types

import numpy as np
import pytest
from helpers import write_corpus

from ratlm.data import corpus, shards
from ratlm.data.loader import Batches
from ratlm.data.sources import open_data, parse_options
from ratlm.data.tokenizer import byte_tokenizer
from ratlm.data.tokens import Encoder, is_byte_tokenizer


def test_expand_and_split(tmp_path):
    d = write_corpus(tmp_path / "src")
    (d / "notes.bin").write_bytes(b"\x00\x01")  # not a text suffix: a folder skips it
    files = corpus.expand(str(d))
    assert len(files) == 12
    assert corpus.expand(str(d / "mod0*.py")) == files[:10]
    train, val = corpus.split_files(files, 0.2)
    assert set(train) | set(val) == set(files) and not set(train) & set(val) and val
    assert corpus.split_files(files, 0.2) == (train, val)  # stable
    with pytest.raises(FileNotFoundError, match="no file matches"):
        corpus.expand(str(tmp_path / "nothing*.txt"))


def test_stdlib_corpus_is_real_python():
    files = corpus.stdlib_files()
    assert len(files) > 100 and all(f.endswith(".py") for f in files)
    assert not any("site-packages" in f for f in files)


def test_files_source_rows_and_single_file_tail_split(tmp_path):
    d = write_corpus(tmp_path / "src")
    data = open_data(str(d), seq_len=32, val_fraction=0.2)
    assert is_byte_tokenizer(data.tokenizer) and not data.sft
    assert len(data.train) > 10 and len(data.val) >= 1
    assert abs(data.bytes_per_token - 1) < 0.01
    one = open_data(str(d / "mod00.py"), seq_len=16, val_fraction=0.25)
    total = len((d / "mod00.py").read_bytes()) + 1
    assert (len(one.train.stream) + len(one.val.stream)) == total


def test_empty_and_missing_data(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="no text"):
        open_data(str(tmp_path / "empty.txt"), seq_len=16)
    with pytest.raises(FileNotFoundError):
        open_data(str(tmp_path / "missing.txt"), seq_len=16)
    (tmp_path / "short.txt").write_text("ab")
    data = open_data(str(tmp_path / "short.txt"), seq_len=16)
    with pytest.raises(ValueError, match="too short"):
        Batches(data.train, 2, 0)


def test_batches_are_a_function_of_step_and_split_by_rank(tmp_path):
    data = open_data(str(write_corpus(tmp_path / "src")), seq_len=16)
    b = Batches(data.train, 8, seed=3)
    whole = b.for_rank(5)
    halves = b.for_rank(5, 0, 2) + b.for_rank(5, 1, 2)
    assert all((x["input_ids"] == y["input_ids"]).all() for x, y in zip(whole, halves))
    again = Batches(data.train, 8, seed=3).for_rank(5)
    assert all((x["input_ids"] == y["input_ids"]).all() for x, y in zip(whole, again))
    other = Batches(data.train, 8, seed=4).for_rank(5)
    assert not all((x["input_ids"] == y["input_ids"]).all() for x, y in zip(whole, other))
    # an epoch visits every row once
    n = len(data.train)
    seen = sorted(b.row_index(k) for k in range(n))
    assert seen == list(range(n))


def test_prepare_round_trip(tmp_path):
    d = write_corpus(tmp_path / "src")
    enc = Encoder(byte_tokenizer())
    files = corpus.expand(str(d))
    train, val = corpus.split_files(files, 0.2)
    meta = shards.prepare(str(tmp_path / "tok"), {"train": corpus.read_documents(train),
                                                  "val": corpus.read_documents(val)}, enc, shard_tokens=700)
    assert len(meta["splits"]["train"]["files"]) > 1  # documents span shards
    prepared = open_data(str(tmp_path / "tok"), seq_len=32)
    direct = open_data(str(d), seq_len=32, val_fraction=0.2)
    assert len(prepared.train) == len(direct.train)
    for i in (0, len(direct.train) - 1):
        assert (prepared.train[i]["input_ids"] == direct.train[i]["input_ids"]).all()
        assert (prepared.train[i]["labels"] == direct.train[i]["labels"]).all()
    with pytest.raises(FileExistsError):
        shards.prepare(str(tmp_path / "tok"), {"train": iter(["x"])}, enc)


def test_bpe_tokenizer_trained_here(tmp_path):
    d = write_corpus(tmp_path / "src")
    data = open_data(str(d), seq_len=16, tokenizer="bpe:300")
    tok = data.tokenizer
    assert 259 < len(tok) <= 300 and tok.eos_token_id == 2  # a tiny corpus may run out of merges
    text = "def f3_4(x):\n    return x * 4 + 3\n"
    assert tok.decode(tok(text).input_ids) == text
    assert len(tok(text).input_ids) < len(text)  # merges learned
    assert data.bytes_per_token > 1.2


def test_tokenizer_that_does_not_match_prepared_data(tmp_path):
    d = write_corpus(tmp_path / "src")
    from ratlm.data.bpe import train_bpe

    tok = train_bpe(corpus.read_documents(corpus.expand(str(d))), 300)
    tok.save_pretrained(tmp_path / "bpe")
    shards.prepare(str(tmp_path / "tok"), {"train": corpus.read_documents(corpus.expand(str(d)))}, Encoder(tok))
    data = open_data(str(tmp_path / "tok"), seq_len=16)  # its own tokenizer by default
    assert len(data.tokenizer) == len(tok)
    with pytest.raises(ValueError, match="not the tokenizer"):
        open_data(str(tmp_path / "tok"), seq_len=16, tokenizer="byte")


def test_sft_jsonl_detected(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Q{i}:", "response": f" A{i}"}) + "\n" for i in range(20)))
    data = open_data(str(path), seq_len=32, val_fraction=0.1)
    assert data.sft and len(data.train) >= 1 and data.val is not None
    row = data.train[0]
    kept = bytes(t for t in row["labels"] if 0 <= t < 256)
    assert kept.startswith(b" A") and b"Q" not in kept


def test_synthetic_source_uses_the_generator_module(tmp_path, monkeypatch):
    calls = []

    def examples(task, n, seed, **options):
        calls.append((task, n, seed, options))
        rng = np.random.default_rng(seed)
        for _ in range(n):
            key = int(rng.integers(1000, 9999))
            yield {"prompt": f"The pass key is {key}. " + "Grass is green. " * options.get("filler", 1) + "Key?",
                   "response": f" {key}"}

    fake = types.ModuleType("ratlm.data.synthetic")
    fake.examples = examples
    monkeypatch.setitem(sys.modules, "ratlm.data.synthetic", fake)
    data = open_data("synthetic:passkey", seq_len=64, options="n=30,val_n=4,filler=2", seed=7)
    assert data.sft and len(data.val) >= 1
    assert calls[0] == ("passkey", 30, 7, {"filler": 2}) and calls[1][1] == 4 and calls[1][2] != 7
    row = data.train[0]
    kept = bytes(t for t in row["labels"] if 0 <= t < 256).decode()
    assert kept.strip().replace(" ", "").isdigit()


def test_parse_options():
    assert parse_options("n=5,streaming=false,x=0.5,name=abc,data_files=a.json,b.json") == \
        {"n": 5, "streaming": False, "x": 0.5, "name": "abc", "data_files": "a.json,b.json"}
    with pytest.raises(ValueError):
        parse_options("oops")


def _hf_records(tmp_path, n=40):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"document {i}: " + "word " * (i % 7 + 3)}) + "\n" for i in range(n)))
    return path


def test_hf_datasets_streaming_and_resume(tmp_path):
    pytest.importorskip("datasets")
    path = _hf_records(tmp_path)
    opts = f"data_files={path},val_docs=5"
    data = open_data("hf:json", seq_len=16, options=opts)
    assert len(data.val) >= 1
    b = Batches(data.train, 4, seed=0)
    first = [b.for_rank(s) for s in range(3)]
    state = b.state_dict()
    later = [b.for_rank(s) for s in range(3, 40)]  # wraps around the dataset
    again = Batches(open_data("hf:json", seq_len=16, options=opts).train, 4, seed=0)
    again.load_state_dict(state, 3)
    for i, want in enumerate(later):
        got = again.for_rank(3 + i)
        assert all((x["input_ids"] == y["input_ids"]).all() for x, y in zip(got, want))
    assert first[0][0]["input_ids"][0] == ord("d")


def test_hf_datasets_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"body": [f"text number {i} " * 5 for i in range(30)]})
    ds.save_to_disk(str(tmp_path / "ds"))
    data = open_data(f"hf:{tmp_path / 'ds'}", seq_len=16, options="streaming=false,text_field=body,val_docs=3")
    assert len(data.train) > 5 and len(data.val) >= 1
    with pytest.raises(ValueError, match="no string field"):
        open_data(f"hf:{tmp_path / 'ds'}", seq_len=16, options="streaming=false,val_docs=3")
