"""Every documented option of every command, driven once on a tiny model, with a check that it took
effect: the configuration written, the files used, the mode run (issue 15).

Each case names the options it covers; `test_every_option_has_a_case` walks the argument parser and
fails for an option no case covers, so that a new option cannot break silently. Commands that other
work owns have their own option tests (NOT_HERE).
"""
import argparse
import json
import os
import re
import sys

import pytest
import torch
from helpers import write_corpus

from ratlm.cli import build_parser, main

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "models"))
from official_format import official_state_dict, save_checkpoint  # noqa: E402

NOT_HERE = ("serve", "bench serve", "eval longbench", "eval generate")  # covered by their own tests
TINY = ["--hidden-size", "32", "--num-hidden-layers", "2", "--num-attention-heads", "2", "--seq-len", "32",
        "--batch-size", "4", "--micro-batch-size", "2", "--max-steps", "2", "--progress", "false", "--threads", "1",
        "--lr", "3e-3", "--tokenizer", "byte"]


def run(capsys, *argv, code=0):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == code, err[-3000:]
    return out, err


def yaml_of(folder):
    import yaml

    return yaml.safe_load(open(os.path.join(folder, "recipe.yaml")))


def config_of(model_dir):
    return json.load(open(os.path.join(model_dir, "config.json")))


def records(folder):
    return [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("options")
    src = write_corpus(d / "src")
    (d / "val.md").write_text("def held_out(x):\n    return x\n" * 20)
    (d / "latin.txt").write_bytes(("caf\u00e9 = 1\n" * 80).encode("latin-1"))
    (d / "docs.jsonl").write_text("".join(json.dumps({"body": f"doc {i} " * 30}) + "\n" for i in range(20)))
    (d / "sft.jsonl").write_text("".join(json.dumps({"prompt": f"Q{i}?", "response": f" A{i}."}) + "\n"
                                         for i in range(60)))
    # a base model for generate / eval / --init-from: two steps of the default recipe, tiny
    assert main(["train", *TINY, "--data", str(src), "--out", str(d / "base")]) == 0
    save_checkpoint(d / "official.pt", official_state_dict(["rat", "attention"] * 2, head_dim=8, vocab=300))
    # a tokenizer that adds BOS (for --add-special-tokens)
    from tokenizers import processors

    from ratlm.data.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 257)])
    tok.save_pretrained(d / "bostok")
    return d


@pytest.fixture
def spy(monkeypatch):
    """Records calls of the functions it wraps: spy(obj, "name") -> list of (args, kwargs)."""
    def wrap(obj, name, call_through=True, result=None):
        calls, orig = [], getattr(obj, name)

        def f(*a, **kw):
            calls.append((a, kw))
            return orig(*a, **kw) if call_through else result

        monkeypatch.setattr(obj, name, f)
        return calls

    return wrap


CASES = {}


def case(*options):
    """Mark a test as covering `options` ("COMMAND --option") for test_every_option_has_a_case."""
    def deco(fn):
        CASES[fn.__name__] = (options, fn)
        return fn

    return deco


# ------------------------------------------------------------------------------------------ train
@case("train --recipe", "train --out", "train --seed", "train --device", "train --threads", "train --log-every",
      "train --eval-every", "train --eval-batches", "train --save-every", "train --keep-last", "train --progress",
      "train --hidden-size", "train --num-hidden-layers", "train --num-attention-heads", "train --intermediate-size",
      "train --position-encoding", "train --vocab-size", "train --data", "train --val-data", "train --seq-len",
      "train --max-steps", "train --batch-size", "train --micro-batch-size", "train --lr", "train --min-lr",
      "train --warmup-steps", "train --betas", "train --weight-decay", "train --grad-clip", "train --precision",
      "train --gradient-checkpointing")
def test_train_run_keys(work, capsys, tmp_path, spy):
    from ratlm.models import RATForCausalLM

    # the name the loop calls (transformers >= 5.24 renamed it; spying on both makes the old one look overridden)
    name = next(n for n in ("activation_checkpointing_enable", "gradient_checkpointing_enable")
                if hasattr(RATForCausalLM, n))
    ckpt = [spy(RATForCausalLM, name)]
    threads = spy(torch, "set_num_threads")
    out = tmp_path / "run"
    _, err = run(capsys, "train", "--recipe", "tiny-attention", "--tokenizer", "byte", "--out", out, "--seed", 7,
                 "--device", "cpu",
                 "--threads", 1, "--log-every", 2, "--eval-every", 2, "--eval-batches", 1, "--save-every", 2,
                 "--keep-last", 1, "--progress", "false", "--hidden-size", 32, "--num-hidden-layers", 2,
                 "--num-attention-heads", 2, "--intermediate-size", 48, "--position-encoding", "nope",
                 "--vocab-size", 300, "--data", work / "src", "--val-data", work / "val.md", "--seq-len", 32,
                 "--max-steps", 4, "--batch-size", 4, "--micro-batch-size", 2, "--lr", "2e-3", "--min-lr", "1e-4",
                 "--warmup-steps", 1, "--betas", "0.8,0.9", "--weight-decay", 0.05, "--grad-clip", 0.5,
                 "--precision", "fp32", "--gradient-checkpointing", "true")
    r = yaml_of(out)
    assert r["recipe"] == "tiny-attention" and r["seed"] == 7 and r["device"] == "cpu"
    cfg = config_of(out / "model")
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["intermediate_size"],
            cfg["position_encoding"], cfg["vocab_size"], cfg["train_length"]) == (32, 2, 2, 48, "nope", 300, 32)
    assert set(cfg["layer_types"]) == {"attention"}  # the recipe's mixer
    recs = records(out)
    assert [x["step"] for x in recs if "loss" in x] == [2, 4]  # --log-every 2, --max-steps 4
    assert [x["step"] for x in recs if "val_loss" in x] == [2, 4]  # --eval-every 2
    assert all(x.get("grad_norm") is not None for x in recs if "loss" in x)  # --grad-clip
    assert sorted(os.listdir(out / "checkpoints")) == ["step-00000004.pt"]  # --save-every 2 --keep-last 1
    state = torch.load(out / "checkpoints" / "step-00000004.pt", weights_only=True)
    group = state["optimizer"]["param_groups"][0]
    assert tuple(group["betas"]) == (0.8, 0.9) and group["weight_decay"] == 0.05 and group["initial_lr"] == 2e-3
    lrs = [x["lr"] for x in recs if "lr" in x]
    # the lr of steps 2 and 4: --warmup-steps 1 reached the peak --lr, then cosine (2/3 of the way) to --min-lr
    assert lrs == pytest.approx([2e-3, 2e-3 * (0.05 + 0.95 * 0.25)])
    assert "validation: " + str(work / "val.md") in err and "0 validation files" in err  # --val-data
    assert "tokens/step (2 per forward, 2 accumulation" in err and " bf16" not in err  # batch sizes, fp32
    assert "validation loss" in err  # --eval-batches: a validation loss from 1 batch
    assert any(ckpt) and 1 in [a[0] for a, _ in threads]  # --gradient-checkpointing, --threads
    assert "step 2/4 loss" in err and "train:" not in err  # --progress false: a line per --log-every, no bar


@case("train --model", "train --chunk-size", "train --qk-groups", "train --warmup-fraction", "train --val-fraction",
      "train --name", "train --text-errors", "train --sliding-window")
def test_train_model_and_data_keys(work, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, err = run(capsys, "train", *TINY, "--model", "rat-swa-tiny", "--chunk-size", 8, "--qk-groups", 1,
                 "--sliding-window", 6, "--warmup-fraction", 0.5, "--val-fraction", 0.3, "--name", "named",
                 "--data", f"{work / 'src'},{work / 'latin.txt'}", "--text-errors", "replace", "--max-steps", 4,
                 "--log-every", 1)
    out = tmp_path / "runs" / "named"  # --name
    cfg = config_of(out / "model")
    assert cfg["layer_types"] == ["rat", "sliding_attention"]  # --model
    assert (cfg["chunk_size"], cfg["qk_groups"], cfg["sliding_window"]) == (8, 1, 6)
    lrs = [x["lr"] for x in records(out) if "lr" in x]
    assert lrs[0] == pytest.approx(3e-3 / 2)  # --warmup-fraction 0.5 of 4 steps: 2 warmup steps
    n_val = int(re.search(r"(\d+) validation files", err).group(1))
    assert n_val >= 3  # --val-fraction 0.3 of 13 files (the 0.02 default holds out 1)
    assert "latin.txt" in err or n_val  # --text-errors replace: the latin-1 file is read, not refused


@case("train --resume", "train --init-from", "train --sft", "train --data-options", "train --tokenizer")
def test_train_resume_init_sft_tokenizer(work, capsys, tmp_path):
    out = tmp_path / "run"
    run(capsys, "train", *TINY, "--data", work / "src", "--out", out, "--tokenizer", "bpe:300")
    assert 259 < config_of(out / "model")["vocab_size"] <= 300  # --tokenizer bpe:300 (vocab auto: what it reached)
    _, err = run(capsys, "train", *TINY, "--data", work / "src", "--out", out, "--resume", "auto", "--max-steps", 3,
                 "--tokenizer", "bpe:300")
    assert "resuming from" in err and "step 2" in err  # --resume
    sft = tmp_path / "sft"
    _, err = run(capsys, "train", *TINY, "--data", work / "sft.jsonl", "--sft", "true", "--init-from",
                 work / "base" / "model", "--out", sft)
    assert "SFT records" in err and "model: " + str(work / "base" / "model") in err  # --sft, --init-from
    hf = tmp_path / "hf"
    pytest.importorskip("datasets")
    _, err = run(capsys, "train", *TINY, "--data", "hf:json", "--data-options",
                 f"data_files={work / 'docs.jsonl'},text_field=body,val_docs=4", "--out", hf)
    assert "first 4 documents held out" in err  # --data-options


@case("train --compile", "train --fsdp")
def test_train_compile_and_fsdp(work, capsys, tmp_path, spy):
    from ratlm.models import RATForCausalLM

    compiled = spy(RATForCausalLM, "compile", call_through=False)  # compiling takes minutes on a CPU
    _, err = run(capsys, "train", *TINY, "--data", work / "src", "--out", tmp_path / "run", "--compile", "true",
                 "--fsdp", "true")
    assert compiled and "--fsdp needs several processes" in err


@case("train --list-recipes", "train --print-recipe")
def test_train_list_and_print(capsys):
    out, _ = run(capsys, "train", "--list-recipes")
    assert "tiny-rat" in out and "xl-rat" in out
    out, _ = run(capsys, "train", "--recipe", "tiny-rnn", "--print-recipe", "--lr", "0.01")
    assert "recipe: tiny-rnn" in out and "lr: 0.01" in out


# ------------------------------------------------------------------------------------------ prepare
@case("prepare --data", "prepare --tokenizer", "prepare --out", "prepare --val-fraction", "prepare --text-errors",
      "prepare --shard-tokens", "prepare --data-options")
def test_prepare(work, capsys, tmp_path):
    out, _ = run(capsys, "prepare", "--data", f"{work / 'src'},{work / 'latin.txt'}", "--tokenizer", "bpe:280",
                 "--out", tmp_path / "tok", "--val-fraction", 0.3, "--text-errors", "replace", "--shard-tokens", 500)
    meta = json.load(open(tmp_path / "tok" / "meta.json"))
    assert meta["vocab_size"] == 280  # --tokenizer
    assert all(n <= 500 for n in meta["splits"]["train"]["file_tokens"]) and len(meta["splits"]["train"]["files"]) > 1
    assert meta["splits"]["val"]["documents"] >= 3  # --val-fraction 0.3 of 13 files
    pytest.importorskip("datasets")
    run(capsys, "prepare", "--data", "hf:json", "--data-options", f"data_files={work / 'docs.jsonl'},text_field=body,"
        "val_docs=5", "--out", tmp_path / "hf")
    meta = json.load(open(tmp_path / "hf" / "meta.json"))
    assert (meta["splits"]["train"]["documents"], meta["splits"]["val"]["documents"]) == (15, 5)


# ------------------------------------------------------------------------------------------ generate
@case("generate model", "generate prompt", "generate --max-new-tokens", "generate --greedy", "generate --device",
      "generate --dtype", "generate --echo", "generate --quiet", "generate --stop", "generate --repetition-penalty")
def test_generate_greedy(work, capsys, spy):
    from ratlm.models import RATForCausalLM

    calls = spy(RATForCausalLM, "generate")
    out, err = run(capsys, "generate", work / "base" / "model", "def f", "--max-new-tokens", 5, "--greedy",
                   "--device", "cpu", "--dtype", "float32", "--echo", "--quiet", "--stop", "zz",
                   "--repetition-penalty", 1.3)
    assert out.startswith("def f") and err == ""  # --echo, --quiet
    (_, kw), = calls
    assert kw["max_new_tokens"] == 5 and kw["do_sample"] is False and kw["stop_strings"] == ["zz"]
    assert kw["repetition_penalty"] == 1.3 and kw["input_ids"].device.type == "cpu"
    assert calls[0][0][0].dtype == torch.float32  # the model generate ran on


@case("generate --do-sample", "generate --temperature", "generate --top-k", "generate --top-p", "generate --seed",
      "generate --prompt-file")
def test_generate_sampling(work, capsys, spy, tmp_path):
    from ratlm.models import RATForCausalLM

    (tmp_path / "p.txt").write_text("import ")
    calls = spy(RATForCausalLM, "generate")
    args = ["generate", work / "base" / "model", "--prompt-file", tmp_path / "p.txt", "--max-new-tokens", 8,
            "--do-sample", "--temperature", 0.7, "--top-k", 5, "--top-p", 0.9, "--seed", 3, "--quiet"]
    a, _ = run(capsys, *args)
    b, _ = run(capsys, *args)
    assert a == b  # --seed
    kw = calls[0][1]
    assert (kw["do_sample"], kw["temperature"], kw["top_k"], kw["top_p"]) == (True, 0.7, 5, 0.9)
    assert kw["input_ids"].shape[1] == len("import ")  # --prompt-file


@case("generate --tokenizer", "generate --add-special-tokens")
def test_generate_tokenizer_and_special_tokens(work, capsys, spy):
    from ratlm.models import RATForCausalLM

    calls = spy(RATForCausalLM, "generate")
    run(capsys, "generate", work / "base" / "model", "ab", "--max-new-tokens", 1, "--tokenizer", work / "bostok",
        "--add-special-tokens", "--quiet")
    run(capsys, "generate", work / "base" / "model", "ab", "--max-new-tokens", 1, "--tokenizer", work / "bostok",
        "--quiet")
    assert calls[0][1]["input_ids"].tolist() == [[257, 97, 98]] and calls[1][1]["input_ids"].tolist() == [[97, 98]]


OFFICIAL = ["--hybrid", "--head-dim", 8, "--chunk-size", 4, "--window", 5, "--position-encoding", "rope",
            "--mixer", "rat"]


@case("generate --mixer", "generate --hybrid", "generate --head-dim", "generate --chunk-size", "generate --window",
      "generate --position-encoding")
def test_generate_from_an_official_checkpoint(work, capsys):
    _, err = run(capsys, "generate", work / "official.pt", "Hi", "--max-new-tokens", 2, *OFFICIAL,
                 "--tokenizer", "byte")
    assert "converted" in err and "rat+sliding_attention" in err and "4 layers x 32" in err


@case("convert-official checkpoint", "convert-official --out", "convert-official --tokenizer",
      "convert-official --overwrite", "convert-official --mixer", "convert-official --hybrid",
      "convert-official --head-dim", "convert-official --chunk-size", "convert-official --window",
      "convert-official --position-encoding")
def test_convert_official(work, capsys, tmp_path):
    out = tmp_path / "conv"
    out.mkdir()
    (out / "old.txt").write_text("x")
    run(capsys, "convert-official", work / "official.pt", "--out", out, "--tokenizer", work / "base" / "model",
        "--overwrite", *OFFICIAL[:-2], "--position-encoding", "nope", "--mixer", "rat")
    cfg = config_of(out)
    assert cfg["layer_types"] == ["rat", "sliding_attention"] * 2 and cfg["chunk_size"] == 4
    assert cfg["sliding_window"] == 5 and cfg["hidden_size"] // cfg["num_attention_heads"] == 8
    assert cfg["position_encoding"] == "nope" and os.path.isfile(out / "tokenizer.json")


# ------------------------------------------------------------------------------------------ eval
EVAL_COMMON = ["--device", "cpu", "--dtype", "float32", "--tokenizer", "byte", "--batch-size", 2]


def eval_common(cmd):
    return [f"eval {cmd} {o}" for o in ("models", "--device", "--dtype", "--tokenizer", "--batch-size", "--out")]


@case(*eval_common("ppl"), "eval ppl --data", "eval ppl --text-field", "eval ppl --context", "eval ppl --stride",
      "eval ppl --max-tokens", "eval ppl --bos")
def test_eval_ppl(work, capsys, tmp_path):
    run(capsys, "eval", "ppl", work / "base" / "model", *EVAL_COMMON, "--out", tmp_path, "--data",
        work / "docs.jsonl", "--text-field", "body", "--context", 16, "--stride", 8, "--max-tokens", 100, "--bos")
    (r,) = json.load(open(tmp_path / "ppl.json"))["results"]
    assert (r["context"], r["stride"]) == (16, 8) and r["tokens"] == 100  # --bos: the first token is scored too


@case(*eval_common("length"), "eval length --data", "eval length --text-field", "eval length --factors",
      "eval length --train-length", "eval length --bucket", "eval length --windows")
def test_eval_length(work, capsys, tmp_path):
    run(capsys, "eval", "length", work / "base" / "model", *EVAL_COMMON, "--out", tmp_path, "--data",
        work / "docs.jsonl", "--text-field", "body", "--factors", "1,2", "--train-length", 16, "--bucket", 8,
        "--windows", 2)
    res = json.load(open(tmp_path / "length.json"))
    assert (res["factors"], res["train_length"], res["bucket"], res["results"][0]["windows"]) == ([1, 2], 16, 8, 2)


@case(*eval_common("retrieval"), "eval retrieval --task", "eval retrieval --lengths", "eval retrieval --depths",
      "eval retrieval --examples", "eval retrieval --seed", "eval retrieval --option", "eval retrieval --bos")
def test_eval_retrieval(work, capsys, tmp_path, spy):
    from ratlm.eval import retrieval

    calls = spy(retrieval, "evaluate")
    run(capsys, "eval", "retrieval", work / "base" / "model", *EVAL_COMMON, "--out", tmp_path, "--task", "passkey",
        "--lengths", 128, "--depths", "0,1", "-n", 2, "--seed", 4, "-o", "digits=3", "--bos")
    (r,) = json.load(open(tmp_path / "retrieval_passkey.json"))["results"]
    assert r["lengths"] == [128] and r["depths"] == [0.0, 1.0]
    a, _ = calls[0]
    assert (a[2], a[5], a[6], a[7], a[9]) == ("passkey", 2, 4, {"digits": 3}, 257)  # examples, seed, option, bos


@case(*eval_common("lm-eval"), "eval lm-eval --tasks", "eval lm-eval --include-path", "eval lm-eval --limit",
      "eval lm-eval --num-fewshot", "eval lm-eval --max-length", "eval lm-eval --option")
def test_eval_lm_eval(work, capsys, tmp_path, spy, monkeypatch):
    from ratlm.eval import harness

    monkeypatch.setattr(harness, "_require", lambda: None)
    calls = spy(harness, "run", call_through=False, result={"ratlm_passkey": {"acc": 0.5}})  # the harness has its test
    run(capsys, "eval", "lm-eval", work / "base" / "model", *EVAL_COMMON, "--out", tmp_path, "--tasks",
        "ratlm_passkey", "--include-path", tmp_path, "--limit", 3, "--num-fewshot", 0, "--max-length", 128,
        "-o", "n=2")
    (a, kw), = calls
    assert a[1] == ["ratlm_passkey"] and kw["include_path"] == [str(tmp_path)] and kw["limit"] == 3
    assert (kw["num_fewshot"], kw["max_length"], kw["options"], kw["batch_size"]) == (0, 128, {"n": 2}, 2)
    assert (str(kw["device"]), kw["dtype"], kw["tokenizer"]) == ("cpu", "float32", "byte")
    assert json.load(open(tmp_path / "lm_eval.json"))["tasks"] == ["ratlm_passkey"]


# ------------------------------------------------------------------------------------------ bench
@case("bench layer --preset", "bench layer --mixers", "bench layer --lengths", "bench layer --modes",
      "bench layer --hidden", "bench layer --heads", "bench layer --batch", "bench layer --window",
      "bench layer --qk-groups", "bench layer --dtype", "bench layer --device", "bench layer --warmup",
      "bench layer --repeats", "bench layer --threads", "bench layer --out", "bench layer --clock")
def test_bench_layer(capsys, tmp_path):
    run(capsys, "bench", "layer", "--preset", "cpu", "--mixers", "rat4,swa8", "--lengths", 16, "--modes", "prefill",
        "--hidden", 32, "--heads", 2, "--batch", 2, "--window", 8, "--qk-groups", 1, "--dtype", "float32",
        "--device", "cpu", "--warmup", 0, "--repeats", 1, "--threads", 1, "--clock", "cpu", "--out", tmp_path)
    res = json.load(open(tmp_path / "bench_layer.json"))
    rows = res["results"]
    assert {r["mixer"] for r in rows} == {"attention", "rat4", "swa8"} and {r["mode"] for r in rows} == {"prefill"}
    assert {r["length"] for r in rows} == {16} and {r["batch"] for r in rows} == {2}
    meta = res["meta"]
    assert (meta["hidden"], meta["heads"], meta["dtype"], meta["repeats"], meta["warmup"]) == (32, 2, "float32", 1, 0)
    assert (meta["window"], meta["qk_groups"], meta["threads"], meta["clock"]) == (8, 1, 1, "cpu")


@case("bench layer --token-budget", "bench layer --compile")
def test_bench_layer_budget_and_compile(capsys, tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, *a, **kw: compiled.append(kw) or fn)  # minutes on a CPU
    run(capsys, "bench", "layer", "--mixers", "rat4", "--lengths", "8,16", "--modes", "train", "--hidden", 32,
        "--heads", 2, "--token-budget", 32, "--warmup", 0, "--repeats", 1, "--out", tmp_path, "--compile")
    rows = json.load(open(tmp_path / "bench_layer.json"))["results"]
    assert sorted({(r["length"], r["batch"]) for r in rows}) == [(8, 4), (16, 2)] and compiled  # with attention


@case("bench generate --variants", "bench generate --size", "bench generate --prompt-len",
      "bench generate --new-tokens", "bench generate --batch", "bench generate --dtype", "bench generate --device",
      "bench generate --warmup", "bench generate --repeats", "bench generate --threads", "bench generate --out",
      "bench generate --clock")
def test_bench_generate(capsys, tmp_path):
    run(capsys, "bench", "generate", "--variants", "rat", "--size", "tiny", "--prompt-len", 16, "--new-tokens", 3,
        "--batch", 2, "--dtype", "float32", "--device", "cpu", "--warmup", 0, "--repeats", 1, "--threads", 1,
        "--clock", "cpu", "--out", tmp_path)
    res = json.load(open(tmp_path / "bench_generate.json"))
    assert {r["variant"] for r in res["results"]} == {"attention", "rat"}  # attention: the baseline
    r = next(r for r in res["results"] if r["variant"] == "rat")
    assert (r["batch"], r["prompt_len"], r["new_tokens"]) == (2, 16, 3)
    assert (res["meta"]["size"], res["meta"]["dtype"], res["meta"]["repeats"], res["meta"]["clock"]) == \
        ("tiny", "float32", 1, "cpu")


@case("bench generate --max-batch", "bench generate --cache-memory", "bench generate --batch-limit")
def test_bench_generate_max_batch(capsys, tmp_path):
    run(capsys, "bench", "generate", "--variants", "rat", "--size", "tiny", "--prompt-len", 16, "--new-tokens", 2,
        "--max-batch", "--cache-memory", "64MiB", "--batch-limit", 4, "--warmup", 0, "--repeats", 1,
        "--out", tmp_path)
    res = json.load(open(tmp_path / "bench_generate.json"))
    r = next(r for r in res["results"] if r["variant"] == "rat")
    assert r["batch"] <= 4 and res["meta"]["batch_limit"] == 4 and res["meta"]["max_batch"] is True
    assert res["meta"]["cache_memory"] == 64 << 20


# ------------------------------------------------------------------------------------------ reproduce
@case("reproduce --quick", "reproduce --out", "reproduce --work", "reproduce --fresh", "reproduce --dry-run",
      "reproduce --device", "reproduce --threads", "reproduce --lm-steps", "reproduce --retrieval-steps",
      "reproduce --seed", "reproduce --no-calibration", "reproduce --verbose")
def test_reproduce_plan(capsys, tmp_path):
    out, _ = run(capsys, "reproduce", "--quick", "--out", tmp_path / "o", "--work", tmp_path / "w", "--fresh",
                 "--dry-run", "--device", "cpu", "--threads", 1, "--lm-steps", 3, "--retrieval-steps", 2, "--seed", 5,
                 "--no-calibration", "--verbose")
    text = " ".join(out.split())
    assert "--max-steps 3" in text and "--seed 5" in text and "--threads 1" in text and "--device cpu" in text
    assert str(tmp_path / "w") in text and not os.path.exists(tmp_path / "o" / "results.json")  # a dry run


@case("reproduce --rejudge")
def test_reproduce_rejudge(capsys, tmp_path):
    _, err = run(capsys, "reproduce", "--rejudge", "--out", tmp_path / "none", code=2)
    assert "rejudge" in err or "results" in err  # the rejudge mode ran (tests/test_reproduce.py has the full case)


def _documented(parser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _documented(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            flag = max(action.option_strings, key=len) if action.option_strings else action.dest
            yield " ".join((*path, flag))


def test_every_option_has_a_case():
    covered = {o for options, _ in CASES.values() for o in options}
    documented = {o for o in _documented(build_parser()) if not o.startswith(NOT_HERE)}
    assert documented - covered == set(), "options without a case in tests/test_options.py"
    assert covered - documented == set(), "cases for options that no longer exist"
