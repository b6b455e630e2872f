"""A few steps of `ratlm train` on each data source; what a run leaves behind."""
import json
import os
import sys
import types

import numpy as np
import pytest
import torch
from train_helpers import tiny_args, tiny_recipe
from transformers import AutoModelForCausalLM, AutoTokenizer

from ratlm.cli import main
from ratlm.train.loop import cosine_schedule, train


def check_run(out, steps=4, sft=False):
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    train_rows = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, steps + 1))
    assert all(np.isfinite(r["loss"]) and r["tokens_per_s"] > 0 for r in train_rows)
    assert any("val_loss" in r for r in records)
    assert os.path.getsize(os.path.join(out, "loss.png")) > 1000
    kept = [f"step-{s:08d}.pt" for s in range(2, steps + 1, 2)][-2:]
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == kept
    model = AutoModelForCausalLM.from_pretrained(os.path.join(out, "model"))
    tok = AutoTokenizer.from_pretrained(os.path.join(out, "model"))
    assert model.config.use_cache and model.config.eos_token_id == tok.eos_token_id
    ids = tok("def f", return_tensors="pt").input_ids
    gen = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] > ids.shape[1]
    return records


def test_default_stdlib_source_few_steps(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [a for a in tiny_args(progress="true") if a]
    assert main(["train", *args]) == 0  # no --data: the standard library; no --out: runs/tiny-rat-TIMESTAMP
    err = capsys.readouterr().err
    assert "standard library" in err and "writing to runs/tiny-rat-" in err
    assert "loss=" in err and "tok_s=" in err  # the progress bar
    (run,) = (tmp_path / "runs").iterdir()
    check_run(run)
    # --resume auto without --out finds that run again
    assert main(["train", *args, "--resume", "auto"]) == 0
    newest = os.path.join("runs", run.name, "checkpoints", "step-00000004.pt")
    assert f"resuming from {newest}" in capsys.readouterr().err


def test_text_files_and_final_model(tmp_path, corpus_dir):
    summary = train(tiny_recipe(data=str(corpus_dir / "*.py"), out=str(tmp_path / "run")))
    check_run(tmp_path / "run")
    assert summary["steps"] == 4 and summary["val_loss"] is not None and summary["val_bpb"] > 0
    # the loss goes down on this repetitive corpus
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0]


def test_prepared_shards_with_bpe(tmp_path, corpus_dir, capsys):
    assert main(["prepare", "--data", str(corpus_dir), "--tokenizer", "bpe:300", "--out", str(tmp_path / "tok"),
                 "--shard-tokens", "500"]) == 0
    out = capsys.readouterr()
    assert "train:" in out.out and "prepare" in out.err  # the progress bar
    train(tiny_recipe(data=str(tmp_path / "tok"), out=str(tmp_path / "run")))
    check_run(tmp_path / "run")
    assert len(AutoTokenizer.from_pretrained(tmp_path / "run" / "model")) == \
        len(AutoTokenizer.from_pretrained(tmp_path / "tok" / "tokenizer"))


def test_local_tokenizer_folder(tmp_path, corpus_dir):
    from ratlm.data import corpus
    from ratlm.data.bpe import train_bpe

    train_bpe(corpus.read_documents(corpus.expand(str(corpus_dir))), 290).save_pretrained(tmp_path / "tokdir")
    summary = train(tiny_recipe(data=str(corpus_dir), tokenizer=str(tmp_path / "tokdir"), out=str(tmp_path / "run"),
                                max_steps=2))
    assert AutoModelForCausalLM.from_pretrained(summary["model_dir"]).config.vocab_size == \
        len(AutoTokenizer.from_pretrained(tmp_path / "tokdir"))


def test_hf_datasets_source(tmp_path):
    pytest.importorskip("datasets")
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"record {i}: " + "alpha beta " * (i % 5 + 2)}) + "\n"
                            for i in range(60)))
    train(tiny_recipe(data="hf:json", data_options=f"data_files={path},val_docs=6", out=str(tmp_path / "run")))
    check_run(tmp_path / "run")


def test_sft_jsonl(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Q: what is {i}+1?\nA:", "response": f" {i + 1}"}) + "\n"
                            for i in range(80)))
    train(tiny_recipe(data=str(path), out=str(tmp_path / "run"), val_fraction=0.1))
    check_run(tmp_path / "run")


def test_synthetic_source_then_init_from(tmp_path, monkeypatch, corpus_dir):
    def examples(task, n, seed, **options):
        rng = np.random.default_rng(seed)
        for _ in range(n):
            key = int(rng.integers(10, 99))
            yield {"prompt": f"key {key}. filler. key?", "response": f" {key}"}

    fake = types.ModuleType("ratlm.data.synthetic")
    fake.examples = examples
    monkeypatch.setitem(sys.modules, "ratlm.data.synthetic", fake)
    base = train(tiny_recipe(data=str(corpus_dir), out=str(tmp_path / "base"), max_steps=2))
    # SFT on the synthetic task, starting from the pretrained model (its tokenizer comes along)
    train(tiny_recipe(data="synthetic:passkey", data_options="n=40,val_n=8", init_from=base["model_dir"],
                      out=str(tmp_path / "run")))
    check_run(tmp_path / "run")


def test_other_mixers_and_options(tmp_path, corpus_dir):
    for name in ("attention-swa-tiny", "rnn-tiny"):
        train(tiny_recipe(data=str(corpus_dir), model=name, sliding_window=8, max_steps=2,
                          gradient_checkpointing="true", out=str(tmp_path / name)))
        config = AutoModelForCausalLM.from_pretrained(tmp_path / name / "model").config
        assert config.layer_types[0] == name.split("-")[0]


def test_cosine_schedule():
    f = cosine_schedule(100, 10, lr=1e-3, min_lr=1e-5)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.01 + 0.99 * 0.5)
    assert f(100) == pytest.approx(0.01) and f(1000) == pytest.approx(0.01)
    lrs = [f(s) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_accumulation_matches_one_big_batch(tmp_path, corpus_dir):
    """micro_batch_size only changes how the global batch is computed, not the update."""
    a = train(tiny_recipe(data=str(corpus_dir), out=str(tmp_path / "a"), micro_batch_size=1, max_steps=3))
    b = train(tiny_recipe(data=str(corpus_dir), out=str(tmp_path / "b"), micro_batch_size=4, max_steps=3))
    wa = AutoModelForCausalLM.from_pretrained(a["model_dir"]).state_dict()
    wb = AutoModelForCausalLM.from_pretrained(b["model_dir"]).state_dict()
    # the sums differ in float rounding only; Adam divides each update by the gradient's own size, so
    # after a few steps weights whose gradient is near zero differ by a little more than rounding
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4)
