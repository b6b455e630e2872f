"""`ratlm reproduce`: the paper's findings at small scale, in one command, written up in RESULTS.md.

It runs the public commands only (`ratlm train`, `ratlm eval ppl|length|retrieval`, `ratlm bench
layer|generate`), in this process, one after the other, each with its output in WORK/logs/ID.log, and
records every command line so that each step can be rerun by hand. Then it gathers the JSON files the
commands wrote into OUT/results/results.json and renders OUT/RESULTS.md from that file alone: every
number of the write-up comes from a JSON file written by the run.

The plan (see `plan`):
  lm         one tiny byte-level model per variant (attention, RAT(16/64/256), RNN, attention+SWA,
             RAT(16)+SWA, with RoPE and NoPE where relevant), all with the same seed, data order, steps,
             batch and sequence length, and parameter counts equalised through the FFN width; a second
             seed for attention and RAT(16) measures the seed-to-seed spread
  lm-eval    `ratlm eval ppl` on held-out standard-library files (never trained on) and `ratlm eval
             length` at 1x, 2x and 4x the training length
  retrieval  the LM models of attention, RAT(16), RAT(64) and the RNN fine-tuned on a synthetic
             retrieval task (`--data synthetic:TASK`), then `ratlm eval retrieval` at the trained
             length and longer
  bench      `ratlm bench layer` and `ratlm bench generate`

A rerun with the same settings and --work skips the steps already done (each leaves a marker in
WORK/done/); --fresh starts over.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time

from .cli import CLIError, csv_list

STAGES = ("lm", "lm-eval", "retrieval", "bench")
FORMAT = "ratlm-reproduce-v1"

# The paper's numbers (Wei et al., 2025, arXiv 2507.04416): 1.3B models, 100B tokens, training length 4096.
PAPER = {
    "arxiv": "arXiv 2507.04416",
    "model_params_b": 1.3,
    "train_tokens_b": 100,
    "train_length": 4096,
    "val_ppl": {"attention": 7.61, "rat16": 7.67, "attention-swa": 7.61, "rat16-swa": 7.57},
    "length_factor": 4,
    "train_speedup": 7,
    "train_speedup_length": 100000,
    "generation_speedup": 9,
    "generation_speedup_position": 4096,
}

# --------------------------------------------------------------------------------------------------
# settings


@dataclasses.dataclass
class Settings:
    mode: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    qk_groups: int
    sliding_window: int
    seq_len: int
    batch_size: int
    micro_batch_size: int
    lm_steps: int
    lr: float
    eval_batches: int
    seed: int
    noise_seeds: list
    noise_variants: list
    lm_variants: list
    heldout_chars: int
    ppl_tokens: int
    length_factors: list
    length_windows: int
    retrieval_variants: list
    retrieval_task: str            # the task the language models are fine-tuned on
    retrieval_options: dict        # its generator options (for training and evaluation)
    retrieval_train_length: int    # characters (tokens) per training example
    retrieval_per_row: int         # examples packed in one training row (of per_row x (length + 1) tokens)
    retrieval_n: int               # training examples
    retrieval_steps: int
    retrieval_lr: float
    retrieval_eval: dict           # task -> lengths, depths: what every fine-tuned model is scored on
    retrieval_examples: int
    bench_layer: dict
    bench_generate: dict

    @property
    def tokens_per_step(self):
        return self.batch_size * self.seq_len


LM_VARIANTS = ["attention", "rat16", "rat64", "rat256", "rnn", "attention-swa", "rat16-swa", "rat16-swa-nope",
               "attention-nope"]

FULL = dict(
    mode="full", hidden_size=128, num_hidden_layers=4, num_attention_heads=4, qk_groups=2, sliding_window=64,
    seq_len=256,
    batch_size=16, micro_batch_size=16, lm_steps=600, lr=3e-3, eval_batches=8, seed=0, noise_seeds=[1],
    noise_variants=["attention", "rat16"], lm_variants=LM_VARIANTS, heldout_chars=400_000, ppl_tokens=262_144,
    length_factors=[1, 2, 4], length_windows=16,
    # MQAR with one-letter keys and one-digit values (the Zoology setting: each key one token) is the
    # retrieval task these models start to learn within minutes; longer keys, passkey and NIAH are not
    # learned at this budget (measured while building this command; see docs/RESULTS.md)
    retrieval_variants=["attention", "rat16", "rat64", "rnn"], retrieval_task="mqar",
    retrieval_options={"key_len": 1, "value_len": 1}, retrieval_train_length=64, retrieval_per_row=4,
    retrieval_n=60000,
    retrieval_steps=1000, retrieval_lr=3e-3,
    retrieval_eval={"mqar": {"lengths": [64, 96], "depths": [0.0, 0.25, 0.5, 0.75, 1.0]},
                    "passkey": {"lengths": [256, 512], "depths": [0.0, 0.5, 1.0]},
                    "niah": {"lengths": [256, 512], "depths": [0.0, 0.5, 1.0]}},
    retrieval_examples=20,
    bench_layer=dict(lengths=[1024, 4096, 16384], modes=["train", "prefill", "decode"],
                     mixers=["attention", "swa", "rnn", "rat16"], repeats=3, warmup=1),
    bench_generate=dict(size="small", prompt_len=4096, batch=8, new_tokens=32, repeats=2, warmup=1),
)

QUICK = dict(
    FULL, mode="quick", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, sliding_window=16, seq_len=64,
    batch_size=8,
    micro_batch_size=8, lm_steps=12, eval_batches=2, heldout_chars=30_000, ppl_tokens=4096, length_windows=4,
    retrieval_steps=10, retrieval_n=400, retrieval_examples=4, retrieval_train_length=48, retrieval_per_row=2,
    retrieval_eval={"mqar": {"lengths": [48], "depths": [0.0, 1.0]}, "passkey": {"lengths": [160], "depths": [0.0, 1.0]},
                    "niah": {"lengths": [160], "depths": [0.0, 1.0]}},
    bench_layer=dict(lengths=[64, 128], modes=["train", "prefill", "decode"], mixers=["attention", "swa", "rnn", "rat16"],
                     repeats=1, warmup=0, hidden=64, heads=2, window=32),
    bench_generate=dict(size="tiny", prompt_len=64, batch=2, new_tokens=4, repeats=1, warmup=0),
)


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    label: str
    model: str      # preset name (size tiny; the sizes are then set explicitly)
    recipe: str     # the shipped recipe it starts from
    chunk_size: int | None = None
    position_encoding: str = "rope"


VARIANTS = {v.name: v for v in [
    Variant("attention", "attention", "attention-tiny", "tiny-attention"),
    Variant("rat16", "RAT(16)", "rat-tiny", "tiny-rat", 16),
    Variant("rat64", "RAT(64)", "rat64-tiny", "tiny-rat", 64),
    Variant("rat256", "RAT(256)", "rat256-tiny", "tiny-rat", 256),
    Variant("rnn", "RNN", "rnn-tiny", "tiny-rnn"),
    Variant("attention-swa", "attention+SWA", "attention-swa-tiny", "tiny-attention-swa"),
    Variant("rat16-swa", "RAT(16)+SWA", "rat-swa-tiny", "tiny-rat-swa", 16),
    Variant("rat16-swa-nope", "RAT(16)+SWA, NoPE", "rat-swa-tiny", "tiny-rat-swa", 16, "nope"),
    Variant("attention-nope", "attention, NoPE", "attention-tiny", "tiny-attention", None, "nope"),
]}


def settings(quick=False, **overrides):
    s = dict(QUICK if quick else FULL)
    s.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**s)


# --------------------------------------------------------------------------------------------------
# parameter counts


def model_kwargs(v, s, intermediate=None):
    """Config keyword arguments of variant v at the settings' size (as `ratlm train` builds them)."""
    from .data.tokenizer import BYTE_VOCAB

    kw = dict(vocab_size=BYTE_VOCAB, hidden_size=s.hidden_size, num_hidden_layers=s.num_hidden_layers,
              num_attention_heads=s.num_attention_heads, qk_groups=s.qk_groups, sliding_window=s.sliding_window,
              train_length=s.seq_len,
              position_encoding=v.position_encoding, intermediate_size=intermediate or 4 * s.hidden_size)
    if v.chunk_size:
        kw["chunk_size"] = v.chunk_size
    return kw


def count_params(v, s, intermediate=None):
    """Parameters of variant v (tied embeddings counted once), built on the meta device."""
    import torch

    from .models import RATConfig, RATForCausalLM

    cfg = RATConfig.from_preset(v.model, **model_kwargs(v, s, intermediate))
    with torch.device("meta"):
        model = RATForCausalLM(cfg)
    return sum(p.numel() for p in model.parameters())


def equalise(names, s):
    """{variant: (intermediate_size, params)}: each variant's FFN width chosen so that its parameter
    count is as close as possible to attention's at the default width 4 D."""
    I0 = 4 * s.hidden_size
    target = count_params(VARIANTS["attention"], s, I0)
    out = {}
    for name in names:
        v = VARIANTS[name]
        p0 = count_params(v, s, I0)
        unit = p0 - count_params(v, s, I0 - 1)
        I = I0 - round((p0 - target) / unit)
        out[name] = (I, count_params(v, s, I))
    return out, target


# --------------------------------------------------------------------------------------------------
# the plan


@dataclasses.dataclass
class Step:
    id: str
    stage: str
    title: str
    argv: list
    estimate_s: float
    after: object = None     # called after success (e.g. linking the model folder)
    shell: list = dataclasses.field(default_factory=list)  # extra shell lines recorded after the command

    @property
    def command(self):
        return "ratlm " + shlex.join(self.argv)


def _fmt_num(x):
    return f"{x:g}" if isinstance(x, float) else str(x)


def lm_run_name(name, seed, s):
    return name if seed == s.seed else f"{name}-seed{seed}"


def lm_runs(s):
    """[(run name, variant name, seed)] of the language-modelling stage."""
    runs = [(n, n, s.seed) for n in s.lm_variants]
    for seed in s.noise_seeds:
        runs += [(lm_run_name(n, seed, s), n, seed) for n in s.noise_variants if n in s.lm_variants]
    return runs


def size_args(s):
    return ["--hidden-size", str(s.hidden_size), "--num-hidden-layers", str(s.num_hidden_layers),
            "--num-attention-heads", str(s.num_attention_heads)]


def shape_args(v, s):
    """The size and mixer options of variant v (only those that apply to it)."""
    args = size_args(s)
    if v.chunk_size:
        args += ["--qk-groups", str(s.qk_groups), "--chunk-size", str(v.chunk_size)]
    if "swa" in v.model:
        args += ["--sliding-window", str(s.sliding_window)]
    return args


def plan(s, work, out, widths, timing, device="cpu", threads=None):
    """The steps of a run, in order, with their time estimates (seconds)."""
    steps = []
    thr = ["--threads", str(threads)] if threads else []
    dev = ["--device", device]
    res = os.path.join(out, "results")
    models = os.path.join(work, "models")
    log_every = str(max(1, s.lm_steps // 20))
    # language modelling
    for run, name, seed in lm_runs(s):
        v = VARIANTS[name]
        argv = ["train", "--recipe", v.recipe, "--model", v.model, *shape_args(v, s)]
        argv += ["--intermediate-size", str(widths[name][0]), "--position-encoding", v.position_encoding,
                 "--data", "stdlib", "--tokenizer", "byte", "--seq-len", str(s.seq_len),
                 "--batch-size", str(s.batch_size), "--micro-batch-size", str(s.micro_batch_size),
                 "--max-steps", str(s.lm_steps), "--lr", _fmt_num(s.lr), "--seed", str(seed),
                 "--eval-every", "0", "--eval-batches", str(s.eval_batches), "--save-every", "0",
                 "--log-every", log_every, "--progress", "false", *dev, *thr,
                 "--out", os.path.join(work, "lm", run)]
        link = os.path.join(models, run)
        steps.append(Step(f"lm-{run}", "lm", f"train {run}", argv,
                          timing["overhead"] + s.lm_steps * timing["step"].get(name, timing["step_default"]),
                          after=_linker(os.path.join(work, "lm", run, "model"), link),
                          shell=[f"ln -sfn {shlex.quote(os.path.relpath(os.path.join(work, 'lm', run, 'model'), models))} "
                                 f"{shlex.quote(link)}"]))
    lm_models = [os.path.join(models, run) for run, _, _ in lm_runs(s)]
    heldout = os.path.join(work, "heldout.jsonl")
    fwd = timing["forward_tok_s"]
    n_lm = len(lm_models)
    ev = 1.0  # seconds per evaluation command besides the forward passes
    steps.append(Step("lm-eval-ppl", "lm-eval", "held-out perplexity",
                      ["eval", "ppl", *lm_models, "--data", heldout, "--context", str(s.seq_len),
                       "--max-tokens", str(s.ppl_tokens), "--batch-size", "8", *dev, "--out", os.path.join(res, "ppl")],
                      ev + n_lm * s.ppl_tokens / fwd))
    longest = max(s.length_factors) * s.seq_len
    steps.append(Step("lm-eval-length", "lm-eval", "length generalisation",
                      ["eval", "length", *lm_models, "--data", heldout,
                       "--factors", ",".join(map(str, s.length_factors)), "--windows", str(s.length_windows),
                       "--batch-size", "4", *dev, "--out", os.path.join(res, "length")],
                      ev + n_lm * s.length_windows * longest * (1 + longest / 2048) / fwd))
    # retrieval
    task = s.retrieval_task
    opts = "".join(f",{k}={v}" for k, v in s.retrieval_options.items())
    tuned = []
    for name in s.retrieval_variants:
        run = f"{task}-{name}"
        rdir = os.path.join(work, "retrieval", run)
        argv = ["train", "--init-from", os.path.join(models, name), "--data", f"synthetic:{task}",
                "--data-options", f"n={s.retrieval_n},length={s.retrieval_train_length}{opts}",
                "--seq-len", str(s.retrieval_per_row * (s.retrieval_train_length + 1)),
                "--batch-size", str(s.batch_size), "--micro-batch-size", str(s.micro_batch_size),
                "--max-steps", str(s.retrieval_steps),
                "--lr", _fmt_num(s.retrieval_lr), "--min-lr", _fmt_num(s.retrieval_lr / 10),
                "--seed", str(s.seed), "--eval-every", "0", "--eval-batches", str(s.eval_batches),
                "--save-every", "0", "--log-every", str(max(1, s.retrieval_steps // 10)), "--progress", "false",
                *dev, *thr, "--out", rdir]
        link = os.path.join(models, run)
        steps.append(Step(f"retrieval-{run}", "retrieval", f"fine-tune {name} on {task}", argv,
                          timing["overhead"] + s.retrieval_n / REFERENCE["sft_records_per_s"]
                          + s.retrieval_steps * timing["step"].get(name, timing["step_default"]),
                          after=_linker(os.path.join(rdir, "model"), link),
                          shell=[f"ln -sfn {shlex.quote(os.path.relpath(os.path.join(rdir, 'model'), models))} "
                                 f"{shlex.quote(link)}"]))
        tuned.append(link)
    for etask, grid in s.retrieval_eval.items():
        lengths, depths = grid["lengths"], grid["depths"]
        n_cells = len(lengths) * (len(depths) if etask != "mqar" else 1)
        tokens = n_cells * s.retrieval_examples * sum(lengths) / len(lengths)
        eopts = [x for k, v in s.retrieval_options.items() for x in ("-o", f"{k}={v}")] if etask == task else []
        steps.append(Step(f"retrieval-eval-{etask}", "retrieval", f"{etask} accuracy of the {task} models",
                          ["eval", "retrieval", *tuned, "--task", etask, *eopts,
                           "--lengths", ",".join(map(str, lengths)),
                           "--depths", ",".join(_fmt_num(float(d)) for d in depths),
                           "-n", str(s.retrieval_examples), "--seed", str(s.seed), *dev,
                           "--out", os.path.join(res, "retrieval")],
                          ev + len(tuned) * tokens / fwd * 2))
    # benchmarks
    bl, bg = s.bench_layer, s.bench_generate
    argv = ["bench", "layer", "--mixers", ",".join(bl["mixers"]), "--lengths", ",".join(map(str, bl["lengths"])),
            "--modes", ",".join(bl["modes"])]
    for k in ("hidden", "heads", "window"):
        if k in bl:
            argv += [f"--{k}", str(bl[k])]
    argv += ["--warmup", str(bl["warmup"]), "--repeats", str(bl["repeats"]), *dev, *thr,
             "--out", os.path.join(res, "bench")]
    steps.append(Step("bench-layer", "bench", "layer latency", argv, timing["bench_layer"]))
    argv = ["bench", "generate", "--size", bg["size"], "--prompt-len", str(bg["prompt_len"]), "--batch", str(bg["batch"]),
            "--new-tokens", str(bg["new_tokens"]), "--warmup", str(bg["warmup"]), "--repeats", str(bg["repeats"]),
            *dev, *thr, "--out", os.path.join(res, "bench")]
    steps.append(Step("bench-generate", "bench", "generation throughput", argv, timing["bench_generate"]))
    return steps


def _linker(target, link):
    def make():
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            if os.path.islink(link):
                os.unlink(link)
            else:
                shutil.rmtree(link)
        try:
            os.symlink(os.path.relpath(target, os.path.dirname(link)), link, target_is_directory=True)
        except OSError:  # no symlinks here: a copy does as well
            shutil.copytree(target, link)
    return make


# --------------------------------------------------------------------------------------------------
# timing: a few training steps of each variant, measured here, give the estimates

REFERENCE = {  # measured on 2 idle cores (see docs/RESULTS.md); scaled by this machine's speed
    "overhead": 2.0,              # seconds per training command: reading the corpus, writing the model
    "sft_records_per_s": 15000.0,  # synthetic records made and tokenised per second
    "forward_tok_s": 45000.0,     # tiny model forward tokens/s at seq_len 256
    "bench_layer": 120.0,
    "bench_generate": 180.0,
}


def calibrate(s, names, device="cpu", steps=3, log=None):
    """Seconds per training step of each variant at the run's size (median of `steps` after a warm-up)."""
    import statistics

    import torch

    from .models import RATConfig, RATForCausalLM

    widths, _ = equalise(names, s)
    out = {}
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (s.micro_batch_size, s.seq_len), generator=g).to(device)
    for name in names:
        v = VARIANTS[name]
        torch.manual_seed(0)
        model = RATForCausalLM(RATConfig.from_preset(v.model, **model_kwargs(v, s, widths[name][0]))).to(device)
        model.config.use_cache = False
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        times = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            for _ in range(s.batch_size // s.micro_batch_size):
                model(input_ids=x, labels=x, use_cache=False).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device != "cpu":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
        if log:
            log(f"  {name:16s} {out[name] * 1e3:7.0f} ms/step  ({s.tokens_per_step / out[name]:,.0f} tokens/s)")
        del model, opt
    return out


def timing_model(s, step_times):
    """Estimates for every kind of step: the measured step times, and the reference constants scaled by
    how fast this machine trains attention compared with the reference machine (0.29 s/step)."""
    ref_step = 0.29 * s.tokens_per_step / (16 * 256)
    speed = ref_step / step_times.get("attention", ref_step) if step_times else 1.0
    t = {"step": dict(step_times), "step_default": max(step_times.values()) if step_times else ref_step,
         "overhead": REFERENCE["overhead"], "forward_tok_s": REFERENCE["forward_tok_s"] * speed}
    scale = 1.0 if s.mode == "full" else 0.02
    t["bench_layer"] = REFERENCE["bench_layer"] * scale / speed
    t["bench_generate"] = REFERENCE["bench_generate"] * scale / speed
    return t


# --------------------------------------------------------------------------------------------------
# running


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self):
        for st in self.streams:
            st.flush()

    def isatty(self):
        return False


def _hms(seconds):
    seconds = int(round(max(seconds, 0)))
    h, rest = divmod(seconds, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def run_step(step, logdir, verbose=False):
    """Run one `ratlm` command in this process, its output into logdir/ID.log. Returns seconds taken."""
    from . import cli

    os.makedirs(logdir, exist_ok=True)
    path = os.path.join(logdir, f"{step.id}.log")
    argv0 = sys.argv
    t0 = time.time()
    with open(path, "w") as log:
        log.write(f"$ {step.command}\n")
        log.flush()
        stream = _Tee(log, sys.__stderr__) if verbose else log
        sys.argv = ["ratlm", *step.argv]
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                rc = cli.main(step.argv)
        finally:
            sys.argv = argv0
    seconds = time.time() - t0
    if rc != 0:
        with open(path) as f:
            tail = "".join(f.readlines()[-5:]).strip()
        raise CLIError(f"step {step.id} failed (exit {rc}); its log is {path}:\n{tail}")
    if step.after:
        step.after()
    return seconds


def write_heldout(path, max_chars, val_fraction=0.02):
    """The held-out documents: the standard-library files the trainer's split keeps for validation (never
    trained on), whole, in order, until max_chars characters. Returns what it wrote (files, characters)."""
    from .data import corpus

    files = corpus.stdlib_files()
    _, val = corpus.split_files(files, val_fraction)
    root = corpus.stdlib_root()
    chosen, total = [], 0
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as out:
        for f in val:
            text = next(corpus.read_documents([f]))
            if not text.strip():
                continue
            if total and total + len(text) > max_chars:
                continue
            out.write(json.dumps({"text": text}) + "\n")
            chosen.append({"file": os.path.relpath(f, root), "chars": len(text)})
            total += len(text)
            if total >= max_chars:
                break
    os.replace(path + ".tmp", path)
    return {"path": path, "stdlib": root, "validation_files": len(val), "files": chosen, "chars": total,
            "val_fraction": val_fraction}


# --------------------------------------------------------------------------------------------------
# gathering the JSON files into results.json


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _safetensors_params(model_dir):
    """Parameter count from the model file's JSON header (tied weights are stored once)."""
    total = 0
    files = sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))
    for name in files:
        with open(os.path.join(model_dir, name), "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        for k, meta in header.items():
            if k != "__metadata__":
                total += math.prod(meta["shape"])
    return total


def _pct(a, b):
    """100 * (a / b - 1), or None."""
    if a is None or b is None or not b:
        return None
    return 100.0 * (a / b - 1.0)


def gather(s, steps, work, out, widths, target, heldout, calibration, meta):
    """results.json: everything the write-up shows, read from the files the commands wrote."""
    res = os.path.join(out, "results")
    train_copy = os.path.join(res, "train")
    os.makedirs(train_copy, exist_ok=True)
    lm = {}
    for run, name, seed in lm_runs(s):
        folder = os.path.join(work, "lm", run)
        recs = _read_jsonl(os.path.join(folder, "metrics.jsonl"))
        shutil.copyfile(os.path.join(folder, "metrics.jsonl"), os.path.join(train_copy, f"lm-{run}.metrics.jsonl"))
        last = [r for r in recs if "loss" in r][-1]
        val = [r for r in recs if "val_loss" in r][-1]
        lm[run] = {"variant": name, "label": VARIANTS[name].label, "seed": seed, "steps": last["step"],
                   "tokens": last["tokens"], "train_seconds": last["time"], "train_loss": last["loss"],
                   "val_loss": val["val_loss"], "val_ppl": val["val_ppl"], "val_bpb": val.get("val_bpb"),
                   "intermediate_size": widths[name][0],
                   "params": _safetensors_params(os.path.join(folder, "model")),
                   "chunk_size": VARIANTS[name].chunk_size, "position_encoding": VARIANTS[name].position_encoding}
        lm[run]["params_vs_attention_pct"] = _pct(lm[run]["params"], target)
    ppl = _read_json(os.path.join(res, "ppl", "ppl.json"))
    for (run, _, _), r in zip(lm_runs(s), ppl["results"]):
        lm[run].update(heldout_tokens=r["tokens"], heldout_nll=r["nll"], heldout_ppl=r["ppl"],
                       heldout_bpb=r["bits_per_byte"])
    length = _read_json(os.path.join(res, "length", "length.json"))
    length_info = {"factors": length["factors"], "train_length": length["train_length"],
                   "eval_lengths": [f * length["train_length"] for f in length["factors"]],
                   "windows": length["results"][0]["windows"]}
    for (run, _, _), r in zip(lm_runs(s), length["results"]):
        mean = dict(zip(length["factors"], r["mean_loss"]))
        lm[run]["length_loss"] = {str(f): mean[f] for f in length["factors"]}
        lm[run]["length_rise_pct"] = {str(f): _pct(mean[f], mean[length["factors"][0]]) for f in length["factors"]}
    for r in lm.values():
        for base in ("attention", "rat16"):
            r[f"heldout_ppl_vs_{base}_pct"] = _pct(r.get("heldout_ppl"), lm.get(base, {}).get("heldout_ppl"))
    # seed-to-seed spread of held-out perplexity
    pairs = []
    for seed in s.noise_seeds:
        for name in s.noise_variants:
            other = lm_run_name(name, seed, s)
            if name in lm and other in lm:
                pairs.append({"variant": name, "seeds": [s.seed, seed],
                              "ppl": [lm[name]["heldout_ppl"], lm[other]["heldout_ppl"]],
                              "diff_pct": abs(_pct(lm[other]["heldout_ppl"], lm[name]["heldout_ppl"]))})
    noise = {"pairs": pairs, "spread_pct": max((p["diff_pct"] for p in pairs), default=None)}

    retrieval = {}
    task = s.retrieval_task
    entry = {"train": {}, "eval": {}}
    for name in s.retrieval_variants:
        folder = os.path.join(work, "retrieval", f"{task}-{name}")
        recs = _read_jsonl(os.path.join(folder, "metrics.jsonl"))
        shutil.copyfile(os.path.join(folder, "metrics.jsonl"),
                        os.path.join(train_copy, f"retrieval-{task}-{name}.metrics.jsonl"))
        last = [r for r in recs if "loss" in r][-1]
        val = [r for r in recs if "val_loss" in r]
        entry["train"][name] = {"steps": last["step"], "train_loss": last["loss"], "train_seconds": last["time"],
                                "val_loss": val[-1]["val_loss"] if val else None}
    for etask in s.retrieval_eval:
        data = _read_json(os.path.join(res, "retrieval", f"retrieval_{etask}.json"))
        per = {}
        for name, r in zip(s.retrieval_variants, data["results"]):
            by_len = []
            for i in range(len(r["lengths"])):
                right = sum((a or 0) * t for a, t in zip(r["accuracy"][i], r["answers"][i]))
                total = sum(r["answers"][i])
                by_len.append(right / total if total else None)
            per[name] = {"lengths": r["lengths"], "accuracy": by_len, "exact": r["exact"],
                         "answers": [sum(a) for a in r["answers"]], "examples": r["n"]}
        entry["eval"][etask] = per
    retrieval[task] = entry

    bench = {"layer": [], "generate": []}
    layer = _read_json(os.path.join(res, "bench", "bench_layer.json"))
    for r in layer["results"]:
        bench["layer"].append({"mixer": r["mixer"], "mode": r["mode"], "length": r["length"], "batch": r["batch"],
                               "median_ms": r["median_s"] * 1e3, "ratio_vs_attention": r["ratio_vs_attention"],
                               "cache_mib": r["cache_bytes"] / 2**20 if r["cache_bytes"] is not None else None})
    bench["layer_meta"] = {k: layer["meta"].get(k) for k in ("device_name", "torch", "threads", "hidden", "heads",
                                                             "dtype", "window", "qk_groups", "repeats", "warmup")}
    gen = _read_json(os.path.join(res, "bench", "bench_generate.json"))
    for r in gen["results"]:
        bench["generate"].append({"variant": r["variant"], "batch": r["batch"], "prompt_len": r["prompt_len"],
                                  "new_tokens": r["new_tokens"], "ttft_ms": r["ttft_s"] * 1e3,
                                  "tokens_per_s": r["tokens_per_s"], "ratio_vs_attention": r["ratio_vs_attention"],
                                  "cache_mib": r["cache_bytes"] / 2**20, "params": r["params"]})
    bench["generate_meta"] = {k: gen["meta"].get(k) for k in ("device_name", "torch", "threads", "size", "dtype",
                                                              "prompt_len", "new_tokens", "repeats", "warmup")}

    results = {
        "format": FORMAT, "mode": s.mode, "setup": meta, "paper": PAPER,
        "settings": dataclasses.asdict(s),
        "budget": {"tokens_per_step": s.tokens_per_step, "tokens_per_model": s.tokens_per_step * s.lm_steps,
                   "retrieval_tokens_per_step": s.batch_size * s.retrieval_per_row * (s.retrieval_train_length + 1)},
        "calibration": calibration,
        "params": {"attention": target,
                   "variants": {n: {"intermediate_size": i, "params": p, "vs_attention_pct": _pct(p, target)}
                                for n, (i, p) in widths.items()}},
        "heldout": {k: v for k, v in heldout.items() if k != "files"} | {"n_files": len(heldout["files"]),
                                                                         "files": heldout["files"]},
        "lm": lm, "length": length_info, "noise": noise, "retrieval": retrieval, "bench": bench,
        "steps": [{"n": i, "id": st.id, "stage": st.stage, "title": st.title, "command": st.command, "shell": st.shell,
                   "estimate_s": st.estimate_s, "seconds": getattr(st, "seconds", None),
                   "status": getattr(st, "status", None)} for i, st in enumerate(steps, 1)],
    }
    results["claims"] = claims(results)
    return results


# --------------------------------------------------------------------------------------------------
# the paper's claims, judged by explicit rules

VERDICTS = ("reproduces", "partly reproduces", "does not reproduce", "inconclusive")
FLAT_PCT = 2.0       # a mean loss at 4x within +2% of the 1x loss is "flat"
EXPLODE_PCT = 10.0   # more than +10% is a blow-up
MIN_BAND_PCT = 1.0   # perplexity differences below max(1%, seed spread) are noise
RETRIEVAL_CLOSE = 0.10
RETRIEVAL_WEAKER = 0.05
RETRIEVAL_LEARNED = 0.20


def _ppl(results, run):
    r = results["lm"].get(run)
    return r["heldout_ppl"] if r else None


def claims(results):
    s = results["settings"]
    paper = results["paper"]["val_ppl"]
    spread = results["noise"]["spread_pct"]
    band = max(MIN_BAND_PCT, spread or 0.0)
    out = []

    # 1. RAT(16) about equal to attention
    att, rat = _ppl(results, "attention"), _ppl(results, "rat16")
    d = _pct(rat, att)
    tol = max(2.0, 2 * (spread or 0.0))
    c = {"id": "ppl", "title": "RAT(16) matches attention in validation perplexity",
         "paper": {"attention": paper["attention"], "rat16": paper["rat16"],
                   "diff_pct": _pct(paper["rat16"], paper["attention"])},
         "ours": {"attention": att, "rat16": rat, "diff_pct": d, "tolerance_pct": tol},
         "rule": f"reproduces when RAT(16)'s held-out perplexity is at most max(2%, twice the seed spread) = "
                 f"{tol:.2f}% above attention's (or below it)"}
    if d is None:
        c["verdict"], c["reason"] = "inconclusive", "a run is missing"
    elif d <= tol:
        c["verdict"] = "reproduces"
        c["reason"] = (f"RAT(16) is {abs(d):.2f}% {'above' if d > 0 else 'below'} attention "
                       f"(paper: {c['paper']['diff_pct']:+.2f}%)")
    else:
        c["verdict"] = "does not reproduce"
        c["reason"] = f"RAT(16) is {d:.2f}% above attention, more than the {tol:.2f}% allowed"
    out.append(c)

    # 2. hybrids: RAT(16)+SWA at least as good as attention+SWA (paper: better)
    aswa, rswa = _ppl(results, "attention-swa"), _ppl(results, "rat16-swa")
    d = _pct(rswa, aswa)
    c = {"id": "hybrid", "title": "RAT(16)+SWA beats attention+SWA (and attention)",
         "paper": {"attention": paper["attention"], "attention-swa": paper["attention-swa"],
                   "rat16-swa": paper["rat16-swa"], "diff_pct": _pct(paper["rat16-swa"], paper["attention-swa"])},
         "ours": {"attention": att, "attention-swa": aswa, "rat16-swa": rswa, "diff_pct": d,
                  "vs_attention_pct": _pct(rswa, att), "band_pct": band},
         "rule": f"reproduces when RAT(16)+SWA's perplexity is below attention+SWA's by more than the noise band "
                 f"max(1%, seed spread) = {band:.2f}%; does not when above it by more than the band; "
                 "inconclusive in between"}
    if d is None:
        c["verdict"], c["reason"] = "inconclusive", "a run is missing"
    elif d < -band:
        c["verdict"], c["reason"] = "reproduces", f"RAT(16)+SWA is {abs(d):.2f}% below attention+SWA"
    elif d > band:
        c["verdict"], c["reason"] = "does not reproduce", f"RAT(16)+SWA is {d:.2f}% above attention+SWA"
    else:
        c["verdict"] = "inconclusive"
        c["reason"] = (f"the difference ({d:+.2f}%) is inside the noise band of {band:.2f}% "
                       f"(the paper's own gap is {c['paper']['diff_pct']:+.2f}%)")
    out.append(c)

    # 3. perplexity rises with L
    p16, p64, p256 = _ppl(results, "rat16"), _ppl(results, "rat64"), _ppl(results, "rat256")
    c = {"id": "chunk", "title": "perplexity rises as the chunk length L grows from 16 to 256",
         "paper": {"trend": "rises"},
         "ours": {"rat16": p16, "rat64": p64, "rat256": p256, "rise_16_64_pct": _pct(p64, p16),
                  "rise_64_256_pct": _pct(p256, p64), "rise_16_256_pct": _pct(p256, p16), "band_pct": band},
         "rule": f"reproduces when perplexity increases from L=16 to 64 to 256 and the total rise exceeds the noise "
                 f"band ({band:.2f}%); does not when L=256 is below L=16 by more than the band; else inconclusive"}
    if None in (p16, p64, p256):
        c["verdict"], c["reason"] = "inconclusive", "a run is missing"
    else:
        total = _pct(p256, p16)
        if p16 < p64 < p256 and total > band:
            c["verdict"], c["reason"] = "reproduces", f"perplexity rises by {total:.2f}% from L=16 to L=256"
        elif total < -band:
            c["verdict"], c["reason"] = "does not reproduce", f"perplexity falls by {abs(total):.2f}% from L=16 to L=256"
        else:
            c["verdict"] = "inconclusive"
            c["reason"] = (f"the change from L=16 to L=256 ({total:+.2f}%) is not a clear monotonic rise beyond "
                           f"the {band:.2f}% band")
    out.append(c)

    # 4. length generalisation: RAT(16)+SWA with NoPE flat to 4x, attention with RoPE blows up
    f_max = str(max(s["length_factors"]))
    lm = results["lm"]
    flat = lm.get("rat16-swa-nope", {}).get("length_rise_pct", {}).get(f_max)
    boom = lm.get("attention", {}).get("length_rise_pct", {}).get(f_max)
    c = {"id": "length", "title": f"with NoPE, RAT(16)+SWA stays flat up to {f_max}x the training length "
                                  "while attention with RoPE blows up",
         "paper": {"factor": results["paper"]["length_factor"]},
         "ours": {"factor": int(f_max), "rat16-swa-nope_rise_pct": flat, "attention_rise_pct": boom,
                  "flat_pct": FLAT_PCT, "explode_pct": EXPLODE_PCT},
         "rule": f"mean loss over {f_max}x the training length against the mean at 1x: within +{FLAT_PCT:g}% is "
                 f"flat, above +{EXPLODE_PCT:g}% is a blow-up; reproduces when both halves hold, partly when one does"}
    if flat is None or boom is None:
        c["verdict"], c["reason"] = "inconclusive", "a run is missing"
    else:
        ok_flat, ok_boom = flat <= FLAT_PCT, boom > EXPLODE_PCT
        c["verdict"] = {(True, True): "reproduces", (False, False): "does not reproduce"}.get(
            (ok_flat, ok_boom), "partly reproduces")
        c["reason"] = (f"RAT(16)+SWA NoPE: {flat:+.2f}% ({'flat' if ok_flat else 'not flat'}); "
                       f"attention RoPE: {boom:+.2f}% ({'blows up' if ok_boom else 'no blow-up'})")
    out.append(c)

    # 5. retrieval: RAT(16) about equal to attention, RNN and RAT(64) weaker
    task = s["retrieval_task"]
    acc = {}
    if task in results["retrieval"] and task in results["retrieval"][task]["eval"]:
        for name, r in results["retrieval"][task]["eval"][task].items():
            acc[name] = r["accuracy"][0]
    c = {"id": "retrieval", "title": "RAT(16) about equals attention at retrieval; the RNN and RAT(64) are weaker",
         "paper": {"task": "niah"},
         "ours": {"task": task, "length": s["retrieval_eval"][task]["lengths"][0], "accuracy": acc,
                  "close": RETRIEVAL_CLOSE, "weaker": RETRIEVAL_WEAKER, "learned": RETRIEVAL_LEARNED},
         "rule": f"accuracy on the fine-tuning task at the trained length: inconclusive when no model reaches "
                 f"{RETRIEVAL_LEARNED:g}; reproduces when RAT(16) is within {RETRIEVAL_CLOSE:g} of attention (or "
                 f"above) and the RNN and RAT(64) are each more than {RETRIEVAL_WEAKER:g} below RAT(16); partly "
                 "when one of the two holds"}
    need = ("attention", "rat16", "rat64", "rnn")
    if not all(acc.get(n) is not None for n in need):
        c["verdict"], c["reason"] = "inconclusive", "a run is missing"
    elif max(acc.values()) < RETRIEVAL_LEARNED:
        c["verdict"] = "inconclusive"
        c["reason"] = f"no model learned the task (best accuracy {max(acc.values()):.2f})"
    else:
        close = acc["rat16"] >= acc["attention"] - RETRIEVAL_CLOSE
        weaker = acc["rnn"] < acc["rat16"] - RETRIEVAL_WEAKER and acc["rat64"] < acc["rat16"] - RETRIEVAL_WEAKER
        c["verdict"] = {(True, True): "reproduces", (False, False): "does not reproduce"}.get(
            (close, weaker), "partly reproduces")
        c["reason"] = (f"accuracy: attention {acc['attention']:.2f}, RAT(16) {acc['rat16']:.2f}, "
                       f"RAT(64) {acc['rat64']:.2f}, RNN {acc['rnn']:.2f}")
    out.append(c)

    # 6. speed: RAT(16) faster than attention for long sequences
    layer = results["bench"]["layer"]
    train = [r for r in layer if r["mixer"] == "rat16" and r["mode"] == "train"]
    longest = max(train, key=lambda r: r["length"]) if train else None
    dec = [r for r in layer if r["mixer"] == "rat16" and r["mode"] == "decode"]
    gen = {r["variant"]: r for r in results["bench"]["generate"]}
    g = gen.get("rat", {}).get("ratio_vs_attention")
    c = {"id": "speed", "title": "RAT(16) trains and generates faster than attention on long sequences",
         "paper": {"train_speedup": results["paper"]["train_speedup"],
                   "train_length": results["paper"]["train_speedup_length"],
                   "generation_speedup": results["paper"]["generation_speedup"],
                   "generation_position": results["paper"]["generation_speedup_position"]},
         "ours": {"train_speedup": longest["ratio_vs_attention"] if longest else None,
                  "train_length": longest["length"] if longest else None,
                  "decode_speedup": max(dec, key=lambda r: r["length"])["ratio_vs_attention"] if dec else None,
                  "decode_position": max(dec, key=lambda r: r["length"])["length"] if dec else None,
                  "generation_speedup": g,
                  "generation_context": results["bench"]["generate_meta"].get("prompt_len")},
         "rule": "reproduces in direction when RAT(16) is faster than attention both in training at the longest "
                 "length measured and in whole-model generation; partly when one holds. The sizes are not the "
                 "paper's (CPU, fp32, shorter sequences), so the factors are not comparable"}
    t = c["ours"]["train_speedup"]
    if t is None or g is None:
        c["verdict"], c["reason"] = "inconclusive", "a benchmark is missing"
    else:
        c["verdict"] = {(True, True): "reproduces", (False, False): "does not reproduce"}.get(
            (t > 1, g > 1), "partly reproduces")
        c["reason"] = (f"training {t:.2f}x attention's speed at {longest['length']} tokens; generation "
                       f"{g:.2f}x attention's throughput")
    out.append(c)
    return out


# --------------------------------------------------------------------------------------------------
# the write-up: RESULTS.md from results.json alone

SECTIONS = ["Summary", "Setup", "Perplexity", "Hybrids with sliding-window attention", "Chunk length",
            "Length generalisation", "Retrieval", "Speed", "Every run", "Commands"]


def f(x, digits=3):
    """A number as the write-up shows it ('-' for a missing value)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.{digits}f}"


def pct(x, digits=2):
    return "-" if x is None else f"{x:+.{digits}f}%"


def _table(head, rows):
    """A markdown table; columns whose cells all start with a digit, a sign or '-' are right-aligned."""
    rows = [[str(c) for c in r] for r in rows]

    def numeric(i):
        return bool(rows) and all(r[i][:1] in "0123456789+-" for r in rows)

    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" ---: " if numeric(i) else " --- " for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _seconds(seconds):
    return "-" if seconds is None else f"{seconds:.0f} s"


def render(results):
    """RESULTS.md (a string) from the results dict (as loaded from results.json)."""
    s, setup, paper, lm = results["settings"], results["setup"], results["paper"], results["lm"]
    claims_by = {c["id"]: c for c in results["claims"]}
    quick = results["mode"] == "quick"
    label = {n: v.label for n, v in VARIANTS.items()}
    L = []
    add = L.append
    add("# Reproducing RAT's findings at small scale")
    add("")
    add(f"Generated by `{setup['command']}` on {setup['date']} from `results/results.json`; every number below is "
        "read from the JSON files the commands of this run wrote (see [Commands](#commands)).")
    if quick:
        add("")
        add("> **Quick mode**: a smoke test with toy sizes and a handful of steps. The numbers and verdicts below "
            "say nothing about RAT; run `ratlm reproduce` without `--quick` for the real comparison.")
    add("")
    add(f"The paper ({paper['arxiv']}) trains {paper['model_params_b']}B-parameter models on {paper['train_tokens_b']}B "
        f"tokens at training length {paper['train_length']}. Here every model has about "
        f"{f(results['params']['attention'])} parameters and sees {f(results['budget']['tokens_per_model'])} "
        f"tokens of the Python standard library's sources, byte by byte, at training length {s['seq_len']}.")
    add("")

    add("## Summary")
    add("")
    rows = []
    for c in results["claims"]:
        rows.append([c["title"], _paper_cell(c, paper), _ours_cell(c), f"**{c['verdict']}**", c["reason"]])
    add(_table(["claim", "paper", "here", "verdict", "why"], rows))
    add("")
    add("Each verdict follows a rule fixed before the run (stated in its section). Perplexity differences are "
        "compared with the seed-to-seed spread: " + _noise_text(results) + ".")
    add("")

    add("## Setup")
    add("")
    m = setup["model"]
    add(f"- Machine: {setup['platform']}, {setup['cpu']}, {setup['cores']} cores, torch {setup['torch']} "
        f"({setup['threads']} threads), transformers {setup['transformers']}, Python {setup['python']}, device "
        f"{setup['device']}; ratlm commit {setup['git_commit']}.")
    add(f"- Date: {setup['date']}; wall time {f(setup.get('minutes_total'), 1)} min (estimated at start: "
        f"{f(results['calibration'].get('estimated_total_min'), 1)} min).")
    add(f"- Models: {m['num_hidden_layers']} layers x {m['hidden_size']} wide, {m['num_attention_heads']} heads, "
        f"RAT query/key groups {m['qk_groups']}, sliding window {m['sliding_window']}, byte vocabulary of "
        f"{m['vocab_size']}, tied embeddings; chunk-level RoPE in RAT, token RoPE in attention, unless NoPE.")
    add(f"- Language modelling: {s['lm_steps']} steps x {s['batch_size']} rows x {s['seq_len']} tokens = "
        f"{f(results['budget']['tokens_per_model'])} tokens per model, AdamW, peak learning rate "
        f"{s['lr']:g}, cosine schedule (the `tiny-rat` recipe), the same seed ({s['seed']}) and so the same "
        f"data order for every model; seeds {', '.join(map(str, s['noise_seeds']))} also for "
        f"{', '.join(label[n] for n in s['noise_variants'])} (the spread).")
    h = results["heldout"]
    add(f"- Held-out text: {h['n_files']} of the {h['validation_files']} standard-library files the trainer's "
        f"split keeps out of training (val_fraction {h['val_fraction']}), {f(h['chars'])} characters, in "
        f"`{h['path']}`; the file list is in results.json.")
    add("- Parameter counts are equalised through the FFN width (`--intermediate-size`), since RAT's input "
        "projection is wider (it adds the query/key group projections):")
    add("")
    rows = [[label[n], f(p["intermediate_size"]), f(p["params"]), pct(p["vs_attention_pct"])]
            for n, p in results["params"]["variants"].items()]
    add(_table(["variant", "FFN width", "parameters", "vs attention"], rows))
    add("")
    cal = results["calibration"]
    if cal.get("step_ms"):
        add("- Measured training step times at the start of the run (median of a few steps, "
            f"{s['batch_size']} x {s['seq_len']} tokens): "
            + ", ".join(f"{label[n]} {t:.0f} ms" for n, t in cal["step_ms"].items()) + ".")
        add("")

    add("## Perplexity")
    add("")
    c = claims_by["ppl"]
    add(f"Paper: attention {paper['val_ppl']['attention']}, RAT(16) {paper['val_ppl']['rat16']} "
        f"({pct(c['paper']['diff_pct'])}). Rule: {c['rule']}. **Verdict: {c['verdict']}** ({c['reason']}).")
    add("")
    add("Every language-modelling run. *Trainer validation*: `ratlm train`'s loss on its validation split at the "
        "last step; *held-out*: `ratlm eval ppl` on the held-out files in windows of the training length "
        "(nats per byte-token, perplexity, bits per byte).")
    add("")
    rows = []
    for run, r in lm.items():
        rows.append([f"`{run}`", r["label"], r["seed"], f(r["params"]), f(r["train_loss"]), f(r["val_loss"]),
                     f(r["heldout_nll"]), f(r["heldout_ppl"]), f(r["heldout_bpb"]), _seconds(r["train_seconds"])])
    add(_table(["run", "variant", "seed", "params", "train loss", "trainer val loss", "held-out loss",
                "held-out ppl", "bits/byte", "train time"], rows))
    add("")
    add("Training curves: [results/lm_loss.png](results/lm_loss.png).")
    add("")
    add("![training loss](results/lm_loss.png)")
    add("")

    add("## Hybrids with sliding-window attention")
    add("")
    c = claims_by["hybrid"]
    add(f"Paper: attention {paper['val_ppl']['attention']}, attention+SWA {paper['val_ppl']['attention-swa']}, "
        f"RAT(16)+SWA {paper['val_ppl']['rat16-swa']} ({pct(c['paper']['diff_pct'])} against attention+SWA). "
        f"Rule: {c['rule']}. **Verdict: {c['verdict']}** ({c['reason']}).")
    add("")
    rows = [[label[n], f(_ppl(results, n)), pct(lm[n]["heldout_ppl_vs_attention_pct"])]
            for n in ("attention", "attention-swa", "rat16", "rat16-swa", "rat16-swa-nope") if n in lm]
    add(_table(["variant", "held-out ppl", "vs attention"], rows))
    add("")

    add("## Chunk length")
    add("")
    c = claims_by["chunk"]
    add(f"Paper: perplexity rises as L grows from 16 to 256. Rule: {c['rule']}. **Verdict: {c['verdict']}** "
        f"({c['reason']}).")
    add("")
    rows = [[label[n], lm[n]["chunk_size"] or "-", f(_ppl(results, n)), pct(lm[n]["heldout_ppl_vs_rat16_pct"])]
            for n in ("rat16", "rat64", "rat256", "rnn", "attention") if n in lm]
    add(_table(["variant", "L", "held-out ppl", "vs RAT(16)"], rows))
    add("")

    add("## Length generalisation")
    add("")
    c = claims_by["length"]
    factors = [str(x) for x in s["length_factors"]]
    add(f"Paper: with NoPE, RAT(16)+SWA stays flat up to {paper['length_factor']}x its training length, where "
        f"attention with RoPE blows up. Rule: {c['rule']}. **Verdict: {c['verdict']}** ({c['reason']}).")
    add("")
    add(f"`ratlm eval length`: mean loss (nats per token) over sequences of each length, on "
        f"{results['length']['windows']} "
        "windows of held-out text, and the rise against the 1x loss.")
    add("")
    rows = []
    for run, r in lm.items():
        rows.append([f"`{run}`", r["label"], *[f(r["length_loss"][k]) for k in factors],
                     *[pct(r["length_rise_pct"][k]) for k in factors[1:]]])
    add(_table(["run", "variant", *[f"{k}x ({n})" for k, n in zip(factors, results["length"]["eval_lengths"])],
                *[f"rise at {k}x" for k in factors[1:]]], rows))
    add("")
    add("![loss by position](results/length/length.png)")
    add("")

    add("## Retrieval")
    add("")
    c = claims_by["retrieval"]
    add(f"Paper: RAT(16) about equals attention on needle-in-a-haystack, the RNN and RAT(64) are weaker. "
        f"Rule: {c['rule']}. **Verdict: {c['verdict']}** ({c['reason']}).")
    add("")
    for task, entry in results["retrieval"].items():
        add(f"### Fine-tuned on {task}")
        add("")
        opts = ", ".join(f"{k}={v}" for k, v in s["retrieval_options"].items())
        add(f"Each language model of {', '.join(label[n] for n in s['retrieval_variants'])} is fine-tuned "
            f"(`--init-from`) on `synthetic:{task}` examples ({opts}) of {s['retrieval_train_length']} characters for "
            f"{s['retrieval_steps']} steps (loss on the answers only), then scored by `ratlm eval retrieval` "
            f"(greedy exact match of each answer, {s['retrieval_examples']} examples per cell, seed {s['seed']}). "
            "The paper's evidence is needle-in-a-haystack on pretrained 1.3B models; models this small retrieve "
            "nothing zero-shot, so they are first taught a retrieval task. The task is MQAR with one-letter keys "
            "and one-digit values (each key a single token, as in Zoology), because in trials while this command "
            "was built (not part of this run), tiny models fine-tuned for minutes on MQAR with longer keys, on "
            "passkey or on needle-in-a-haystack stayed at chance. A model that has learned MQAR has learned "
            "associative recall, the mechanism a needle search needs; the passkey and NIAH tables below measure "
            "whether that carries over to those formats.")
        add("")
        rows = [[label[n], f(t["train_loss"]), f(t["val_loss"]), _seconds(t["train_seconds"])]
                for n, t in entry["train"].items()]
        add(_table(["variant", "final train loss", "validation loss", "time"], rows))
        add("")
        for etask, per in entry["eval"].items():
            lengths = next(iter(per.values()))["lengths"]
            note = "" if etask == task else " (not trained on: transfer)"
            add(f"**{etask}**{note}: answer accuracy by length (exact: every answer of an example right)")
            add("")
            rows = [[label[n], *[f"{f(a, 2)} ({f(e, 2)})" for a, e in zip(r["accuracy"], r["exact"])]]
                    for n, r in per.items()]
            add(_table(["variant", *[f"{x}" for x in lengths]], rows))
            add("")
            add(f"![{etask} heatmap](results/retrieval/retrieval_{etask}.png)")
            add("")
    add(_retrieval_text(results))
    add("")

    add("## Speed")
    add("")
    c = claims_by["speed"]
    add(f"Paper: the RAT(16) layer trains {paper['train_speedup']}x faster than attention at "
        f"{f(paper['train_speedup_length'])} tokens and generates {paper['generation_speedup']}x faster at position "
        f"{f(paper['generation_speedup_position'])} (GPU, bf16, 1.3B-sized layers). Rule: {c['rule']}. "
        f"**Verdict: {c['verdict']}** ({c['reason']}).")
    add("")
    bm = results["bench"]["layer_meta"]
    add(f"`ratlm bench layer` ({bm['device_name']}, D={bm['hidden']}, {bm['heads']} heads, {bm['dtype']}, "
        f"median of {bm['repeats']}): milliseconds per call and speed-up against attention (higher is faster).")
    add("")
    rows = [[r["mode"], f(r["length"]), r["mixer"], f(r["median_ms"], 2), f(r["ratio_vs_attention"], 2) + "x",
             f(r["cache_mib"], 2)] for r in results["bench"]["layer"]]
    add(_table(["mode", "length", "mixer", "ms", "vs attention", "cache MiB"], rows))
    add("")
    add("![layer benchmark](results/bench/bench_layer.png)")
    add("")
    gm = results["bench"]["generate_meta"]
    add(f"`ratlm bench generate` ({gm['size']} models, {gm['dtype']}, prompt {gm['prompt_len']}, "
        f"{gm['new_tokens']} new tokens): decode throughput, time to first token and cache.")
    add("")
    rows = [[r["variant"], r["batch"], f(r["ttft_ms"], 1), f(r["tokens_per_s"], 1), f(r["ratio_vs_attention"], 2) + "x",
             f(r["cache_mib"], 2), f(r["params"])] for r in results["bench"]["generate"]]
    add(_table(["variant", "batch", "TTFT ms", "decode tokens/s", "vs attention", "cache MiB", "params"], rows))
    add("")
    add("![generation benchmark](results/bench/bench_generate.png)")
    add("")

    add("## Every run")
    add("")
    add("Every command this run executed, in order, with its time; nothing was left out or rerun selectively. "
        "Logs are in the work folder's `logs/`.")
    add("")
    rows = [[st["n"], st["stage"], st["title"], _seconds(st["seconds"]), _seconds(st["estimate_s"]), st["status"]]
            for st in results["steps"]]
    add(_table(["#", "stage", "step", "time", "estimated", "status"], rows))
    add("")

    add("## Commands")
    add("")
    add("The whole run is `" + setup["command"] + "`. Step by step, from the repository root:")
    add("")
    add("```bash")
    add(results["heldout"]["command"])
    for st in results["steps"]:
        add(st["command"])
        for line in st["shell"]:
            add(line)
    add("```")
    add("")
    return "\n".join(L)


def _paper_cell(c, paper):
    p = c["paper"]
    if c["id"] == "ppl":
        return f"attention {p['attention']}, RAT(16) {p['rat16']}"
    if c["id"] == "hybrid":
        return f"attention+SWA {p['attention-swa']}, RAT(16)+SWA {p['rat16-swa']}"
    if c["id"] == "chunk":
        return "rises"
    if c["id"] == "length":
        return f"flat vs blow-up at {p['factor']}x"
    if c["id"] == "retrieval":
        return "RAT(16) ~ attention > RAT(64), RNN"
    if c["id"] == "speed":
        return f"{p['train_speedup']}x training at {f(p['train_length'])}, {p['generation_speedup']}x generation"
    return ""


def _ours_cell(c):
    o = c["ours"]
    if c["id"] == "ppl":
        return f"attention {f(o['attention'])}, RAT(16) {f(o['rat16'])} ({pct(o['diff_pct'])})"
    if c["id"] == "hybrid":
        return f"attention+SWA {f(o['attention-swa'])}, RAT(16)+SWA {f(o['rat16-swa'])} ({pct(o['diff_pct'])})"
    if c["id"] == "chunk":
        return f"L=16 {f(o['rat16'])}, L=64 {f(o['rat64'])}, L=256 {f(o['rat256'])}"
    if c["id"] == "length":
        return (f"RAT(16)+SWA NoPE {pct(o['rat16-swa-nope_rise_pct'])}, attention RoPE "
                f"{pct(o['attention_rise_pct'])} at {o['factor']}x")
    if c["id"] == "retrieval":
        return ", ".join(f"{n} {f(a, 2)}" for n, a in o["accuracy"].items()) + f" ({o['task']}, {o['length']})"
    if c["id"] == "speed":
        return (f"{f(o['train_speedup'], 2)}x training at {f(o['train_length'])}, "
                f"{f(o['generation_speedup'], 2)}x generation")
    return ""


def _noise_text(results):
    n = results["noise"]
    if not n["pairs"]:
        return "no second seed was run, so differences below the fixed band are treated as noise"
    parts = [f"{VARIANTS[p['variant']].label} {f(p['ppl'][0])} (seed {p['seeds'][0]}) vs {f(p['ppl'][1])} "
             f"(seed {p['seeds'][1]}), {f(p['diff_pct'], 2)}%" for p in n["pairs"]]
    return "; ".join(parts) + f"; largest spread {f(n['spread_pct'], 2)}%"


def _retrieval_text(results):
    """What the tiny models can and cannot do here, in words, from the numbers."""
    out = []
    for task, entry in results["retrieval"].items():
        per = entry["eval"].get(task, {})
        if per:
            first = [(VARIANTS[n].label, r["accuracy"][0] or 0, r["accuracy"][-1]) for n, r in per.items()]
            learned = [n for n, a, _ in first if a >= 0.5]
            partly = [n for n, a, _ in first if RETRIEVAL_LEARNED <= a < 0.5]
            failed = [n for n, a, _ in first if a < RETRIEVAL_LEARNED]
            if learned:
                out.append(f"At the trained length, {', '.join(learned)} answer at least half of the {task} queries.")
            if partly:
                out.append(f"{', '.join(partly)} learned part of it.")
            if failed:
                out.append(f"{', '.join(failed)} stay below {RETRIEVAL_LEARNED:g}: at this size and budget they did "
                           "not learn the task.")
            lengths = next(iter(per.values()))["lengths"]
            if len(lengths) > 1:
                out.append(f"At {lengths[-1]} characters, beyond the trained length: "
                           + ", ".join(f"{n} {f(b, 2)}" for n, _, b in first) + ".")
        for etask, r in entry["eval"].items():
            if etask != task:
                best = max((a or 0) for x in r.values() for a in x["accuracy"])
                out.append(f"On {etask}, which they were not fine-tuned on, the best accuracy is {f(best, 2)}"
                           + (": the skill does not carry over to that format." if best < RETRIEVAL_LEARNED
                              else "."))
    return " ".join(out)


# --------------------------------------------------------------------------------------------------
# plots of our own (the commands draw the others)


def plot_lm_loss(results, png):
    from .eval.common import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    folder = os.path.join(os.path.dirname(png), "train")
    for run, r in results["lm"].items():
        recs = _read_jsonl(os.path.join(folder, f"lm-{run}.metrics.jsonl"))
        pts = [(x["tokens"], x["loss"]) for x in recs if x.get("loss") is not None]
        if not pts:
            continue
        smooth, ys = None, []
        for _, y in pts:
            smooth = y if smooth is None else 0.8 * smooth + 0.2 * y
            ys.append(smooth)
        line, = ax.plot([p[0] for p in pts], ys, label=f"{r['label']} (seed {r['seed']})",
                        linestyle="-" if r["seed"] == results["settings"]["seed"] else ":")
        ax.plot([r["tokens"]], [r["val_loss"]], marker="o", color=line.get_color())
    ax.set_xlabel("training tokens")
    ax.set_ylabel("loss (nats / byte), smoothed; dots: validation")
    ax.set_title("language modelling on the Python standard library")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# the command


EPILOG = """\
The full run (no --quick) trains every variant at the tiny size on 2 CPU cores in about an hour and
writes docs/RESULTS.md and docs/results/; it needs the cores to itself (timings and the time budget
assume an idle machine). --quick runs every stage with toy sizes in a few minutes, into
runs/reproduce-quick/, without touching docs/. A rerun with the same settings continues where the
last one stopped; --dry-run shows the commands and the time estimate without running anything.

examples:
  ratlm reproduce --dry-run           the plan, the commands, the estimated time
  ratlm reproduce                     the full reproduction -> docs/RESULTS.md
  ratlm reproduce --quick             a smoke test -> runs/reproduce-quick/RESULTS.md
"""


def register(sub):
    p = sub.add_parser("reproduce", help="reproduce the paper's findings at small scale and write RESULTS.md",
                       description="Train tiny attention, RNN, RAT and hybrid models with equal parameters and "
                                   "budgets, evaluate them (perplexity, length generalisation, retrieval), "
                                   "benchmark the layers and generation, and write RESULTS.md with the paper's "
                                   "numbers, ours, and a verdict per claim.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="toy sizes and a few steps per stage: a smoke test in "
                                                        "minutes whose numbers mean nothing")
    p.add_argument("--out", help="folder for RESULTS.md and results/ (default docs; with --quick runs/reproduce-quick)")
    p.add_argument("--work", help="folder for models, checkpoints and logs (default runs/reproduce; with --quick "
                                  "OUT/work)")
    p.add_argument("--fresh", action="store_true", help="discard the steps an earlier run left in the work folder")
    p.add_argument("--dry-run", action="store_true", help="print the plan, its commands and the time estimate, "
                                                          "then stop")
    p.add_argument("--device", default="cpu", help="device of every step (default cpu: the published results "
                                                   "are CPU results)")
    p.add_argument("--threads", type=int, help="torch CPU threads for training and benchmarks (default: torch's choice)")
    p.add_argument("--lm-steps", type=int, help="training steps of each language model (default: 700; quick 12)")
    p.add_argument("--retrieval-steps", type=int, help="fine-tuning steps of each retrieval model")
    p.add_argument("--seed", type=int, help="seed of every run (default 0)")
    p.add_argument("--no-calibration", action="store_true", help="estimate times from the reference machine "
                                                                 "instead of measuring a few steps first")
    p.add_argument("--verbose", "-v", action="store_true", help="show each command's output (always in WORK/logs)")
    p.set_defaults(func=_run)


def _say(msg):
    print(f"[reproduce] {msg}", file=sys.stderr, flush=True)


def _git_commit():
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _setup_meta(s, device, argv):
    import torch
    import transformers

    from .data.tokenizer import BYTE_VOCAB

    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "ratlm reproduce" + ("" if not argv else " " + shlex.join(argv)),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "platform": platform.platform(terse=True), "cpu": _cpu_name(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "device": device, "git_commit": _git_commit(),
            "model": {"hidden_size": s.hidden_size, "num_hidden_layers": s.num_hidden_layers,
                      "num_attention_heads": s.num_attention_heads, "qk_groups": s.qk_groups,
                      "sliding_window": s.sliding_window, "vocab_size": BYTE_VOCAB}}


def _run(args):
    import torch

    argv = sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "reproduce" else []
    s = settings(args.quick, lm_steps=args.lm_steps, retrieval_steps=args.retrieval_steps, seed=args.seed)
    out = args.out or ("runs/reproduce-quick" if args.quick else "docs")
    work = args.work or (os.path.join(out, "work") if args.quick else "runs/reproduce")
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.time()
    meta = _setup_meta(s, args.device, argv)
    names = list(dict.fromkeys(s.lm_variants))
    widths, target = equalise(names, s)
    _say(f"{s.mode} run: {len(lm_runs(s))} language models, {len(s.retrieval_variants)} "
         f"retrieval fine-tunes, 2 benchmarks; work folder {work}, results in {out}")
    _say(f"parameters (attention {target:,}): " + ", ".join(
        f"{n} {p:,} (FFN {i})" for n, (i, p) in widths.items()))
    step_times = {}
    if not args.no_calibration:
        _say("measuring a few training steps of each variant for the time estimate")
        step_times = calibrate(s, names, args.device, log=_say)
    timing = timing_model(s, step_times)
    steps = plan(s, work, out, widths, timing, args.device, args.threads)
    estimate = sum(st.estimate_s for st in steps) + 10
    calibration = {"step_ms": {n: t * 1e3 for n, t in step_times.items()}, "tokens_per_step": s.tokens_per_step,
                   "estimated_total_s": estimate, "estimated_total_min": estimate / 60}
    _say(f"estimated time: {_hms(estimate)} for {len(steps)} steps"
         + (" (an idle machine; other work on the cores slows every step)" if not args.quick else ""))
    heldout_path = os.path.join(work, "heldout.jsonl")
    heldout_cmd = (f"python -c \"from ratlm.reproduce import write_heldout; "
                   f"write_heldout('{heldout_path}', {s.heldout_chars})\"")
    if args.dry_run:
        print(heldout_cmd)
        for st in steps:
            print(f"{st.command}    # ~{_hms(st.estimate_s)}")
            for line in st.shell:
                print(line)
        return

    # the work folder: continue the same plan, or start over
    plan_file = os.path.join(work, "plan.json")
    fingerprint = {"format": FORMAT, "settings": dataclasses.asdict(s), "commands": [st.command for st in steps]}
    if args.fresh and os.path.isdir(work):
        shutil.rmtree(work)
    if os.path.isfile(plan_file) and _read_json(plan_file) != fingerprint:
        raise CLIError(f"{work} holds a run with other settings; use --fresh to discard it or --work to choose "
                       "another folder")
    os.makedirs(os.path.join(work, "done"), exist_ok=True)
    with open(plan_file, "w") as fh:
        json.dump(fingerprint, fh, indent=1)
    heldout = write_heldout(heldout_path, s.heldout_chars)
    heldout["command"] = heldout_cmd

    done_est, done_real = 0.0, 0.0
    remaining = sum(st.estimate_s for st in steps)
    for i, st in enumerate(steps, 1):
        marker = os.path.join(work, "done", f"{st.id}.json")
        if os.path.isfile(marker) and _read_json(marker).get("command") == st.command:
            st.seconds, st.status = _read_json(marker)["seconds"], "done earlier"
            if st.after:
                st.after()
            remaining -= st.estimate_s
            continue
        pace = done_real / done_est if done_est else 1.0
        _say(f"({i}/{len(steps)}) {st.stage}: {st.title}; elapsed {_hms(time.time() - t_start)}, "
             f"ETA {_hms(remaining * pace)}")
        if st.argv[0] == "train":  # a run that stopped half-way starts over
            out_dir = st.argv[st.argv.index("--out") + 1]
            if os.path.isdir(out_dir):
                shutil.rmtree(out_dir)
        st.seconds = run_step(st, os.path.join(work, "logs"), args.verbose)
        st.status = "ran"
        with open(marker, "w") as fh:
            json.dump({"command": st.command, "seconds": st.seconds}, fh)
        done_est += st.estimate_s
        done_real += st.seconds
        remaining -= st.estimate_s

    _say("writing the results")
    meta["seconds_total"] = time.time() - t_start
    meta["minutes_total"] = meta["seconds_total"] / 60
    results = gather(s, steps, work, out, widths, target, heldout, calibration, meta)
    res = os.path.join(out, "results")
    with open(os.path.join(res, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    plot_lm_loss(results, os.path.join(res, "lm_loss.png"))
    md = os.path.join(out, "RESULTS.md")
    with open(md, "w") as fh:
        fh.write(render(_read_json(os.path.join(res, "results.json"))))
    for c in results["claims"]:
        print(f"{c['verdict']:>20s}  {c['title']}: {c['reason']}")
    print(f"wrote {md} and {res}/ in {_hms(meta['seconds_total'])}")
