"""The plan of `ratlm reproduce`: the paper's numbers, the settings (full and quick), the variants with
their parameter counts equalised, the commands of each stage, and their time estimates."""
from __future__ import annotations

import dataclasses
import functools
import os
import shlex
import shutil
import time
from collections.abc import Callable

STAGES = ("lm", "lm-eval", "retrieval", "sft", "bench")
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
    sft_variants: list             # the language models fine-tuned on the SFT task (`ratlm train --init-from`)
    sft_examples: int              # training records of the code-lookup task (`longbench-mini --sft-examples`)
    sft_test: int                  # test records (`longbench-mini -n`)
    sft_pairs: int                 # codes listed per prompt
    sft_paragraphs: int            # paragraphs per example of the mini LongBench tasks written beside them
    sft_seq_len: int
    sft_steps: int
    sft_lr: float
    sft_metrics: list              # `ratlm eval generate --metric`, each a step; the first one is judged
    sft_max_new_tokens: int
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
    # the code-lookup SFT task of `ratlm eval longbench-mini` (one code per prompt: a copy the tiny models learn in
    # a few hundred steps), scored on generated answers
    sft_variants=["rat16", "attention"], sft_examples=4000, sft_test=100, sft_pairs=1, sft_paragraphs=2,
    sft_seq_len=80, sft_steps=300, sft_lr=2e-3, sft_metrics=["code_sim", "exact"], sft_max_new_tokens=8,
    bench_layer=dict(lengths=[1024, 4096, 16384], modes=["train", "prefill", "decode"],
                     mixers=["attention", "swa", "rnn", "rat16"], repeats=3, warmup=1),
    bench_generate=dict(size="small", prompt_len=4096, batch=8, new_tokens=32, repeats=2, warmup=1),
)

QUICK = dict(
    FULL, mode="quick", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, sliding_window=16, seq_len=64,
    batch_size=8,
    micro_batch_size=8, lm_steps=12, eval_batches=2, heldout_chars=30_000, ppl_tokens=4096, length_windows=4,
    retrieval_steps=10, retrieval_n=400, retrieval_examples=4, retrieval_train_length=48, retrieval_per_row=2,
    retrieval_eval={"mqar": {"lengths": [48], "depths": [0.0, 1.0]},
                    "passkey": {"lengths": [160], "depths": [0.0, 1.0]},
                    "niah": {"lengths": [160], "depths": [0.0, 1.0]}},
    sft_examples=200, sft_test=8, sft_steps=4,
    bench_layer=dict(lengths=[64, 128], modes=["train", "prefill", "decode"],
                     mixers=["attention", "swa", "rnn", "rat16"], repeats=1, warmup=0, hidden=64, heads=2, window=32),
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
    from ..data.tokenizer import BYTE_VOCAB

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

    from ..models import RATConfig, RATForCausalLM

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
    """One step of the plan: the `ratlm` command a user can rerun (argv, recorded in the write-up) and
    the same step as a Python call (call(), which the run executes); `command` and `call` are made
    from the same values (see _command)."""
    id: str
    stage: str
    title: str
    argv: list
    call: Callable[[], object]
    estimate_s: float
    after: object = None     # called after success (e.g. linking the model folder)
    shell: list = dataclasses.field(default_factory=list)  # extra shell lines recorded after the command

    @property
    def command(self):
        return "ratlm " + shlex.join(self.argv)


def _fmt_num(x):
    return f"{x:g}" if isinstance(x, float) else str(x)


def _flags(options, short=None):
    """Command-line options of keyword arguments: name -> --name (or short[name]), lists comma-separated,
    a dict one `-o key=value` per item; None is left out."""
    out = []
    for k, v in options.items():
        flag = (short or {}).get(k, "--" + k.replace("_", "-"))
        if v is None:
            continue
        if isinstance(v, dict):
            out += [x for key, value in v.items() for x in (flag, f"{key}={value}")]
        elif isinstance(v, (list, tuple)):
            out += [flag, ",".join(_fmt_num(x) for x in v)]
        else:
            out += [flag, _fmt_num(v)]
    return out


def _command(words, func, options, models=None, short=None, record=False):
    """(argv, call) of one step: `ratlm WORDS [MODELS] --OPTION VALUE ...` and func([models], **options)
    (record: and command=the command line, for the functions that write it into their JSON)."""
    argv = [*words, *(models or []), *_flags(options, short)]
    args = (list(models),) if models is not None else ()
    kwargs = {k: v for k, v in options.items() if v is not None}
    if record:
        kwargs["command"] = "ratlm " + shlex.join(argv)
    return argv, functools.partial(func, *args, **kwargs)


def _train(options):
    """A `ratlm train` step: recipe keys -> values as the command line shows them (text), which
    ratlm.train.api.run reads exactly as the command does."""
    from ..train import api

    return _command(["train"], api.run, {k: v if v is None else _fmt_num(v) for k, v in options.items()})


def lm_run_name(name, seed, s):
    return name if seed == s.seed else f"{name}-seed{seed}"


def lm_runs(s):
    """[(run name, variant name, seed)] of the language-modelling stage."""
    runs = [(n, n, s.seed) for n in s.lm_variants]
    for seed in s.noise_seeds:
        runs += [(lm_run_name(n, seed, s), n, seed) for n in s.noise_variants if n in s.lm_variants]
    return runs


def shape_options(v, s):
    """The size and mixer recipe keys of variant v (only those that apply to it)."""
    opts = {"hidden_size": s.hidden_size, "num_hidden_layers": s.num_hidden_layers,
            "num_attention_heads": s.num_attention_heads}
    if v.chunk_size:
        opts |= {"qk_groups": s.qk_groups, "chunk_size": v.chunk_size}
    if "swa" in v.model:
        opts["sliding_window"] = s.sliding_window
    return opts


def _link_line(target, link, models):
    return f"ln -sfn {shlex.quote(os.path.relpath(target, models))} {shlex.quote(link)}"


def plan(s, work, out, widths, timing, device="cpu", threads=None):
    """The steps of a run, in order, with their time estimates (seconds)."""
    from ..bench import api as bench
    from ..eval import api as evaluate

    steps = []
    run_opts = {"device": device, "threads": threads or None}
    res = os.path.join(out, "results")
    models = os.path.join(work, "models")
    # language modelling
    for run, name, seed in lm_runs(s):
        v = VARIANTS[name]
        rdir = os.path.join(work, "lm", run)
        argv, call = _train({
            "recipe": v.recipe, "model": v.model, **shape_options(v, s), "intermediate_size": widths[name][0],
            "position_encoding": v.position_encoding, "data": "stdlib", "tokenizer": "byte", "seq_len": s.seq_len,
            "batch_size": s.batch_size, "micro_batch_size": s.micro_batch_size, "max_steps": s.lm_steps,
            "lr": s.lr, "seed": seed, "eval_every": 0, "eval_batches": s.eval_batches, "save_every": 0,
            "log_every": max(1, s.lm_steps // 20), "progress": "false", **run_opts, "out": rdir})
        link = os.path.join(models, run)
        steps.append(Step(f"lm-{run}", "lm", f"train {run}", argv, call,
                          timing["overhead"] + s.lm_steps * timing["step"].get(name, timing["step_default"]),
                          after=_linker(os.path.join(rdir, "model"), link),
                          shell=[_link_line(os.path.join(rdir, "model"), link, models)]))
    lm_models = [os.path.join(models, run) for run, _, _ in lm_runs(s)]
    heldout = os.path.join(work, "heldout.jsonl")
    fwd = timing["forward_tok_s"]
    n_lm = len(lm_models)
    ev = 1.0  # seconds per evaluation command besides the forward passes
    argv, call = _command(["eval", "ppl"], evaluate.ppl, {
        "data": heldout, "context": s.seq_len, "max_tokens": s.ppl_tokens, "batch_size": 8, "device": device,
        "out": os.path.join(res, "ppl")}, models=lm_models)
    steps.append(Step("lm-eval-ppl", "lm-eval", "held-out perplexity", argv, call,
                      ev + n_lm * s.ppl_tokens / fwd))
    longest = max(s.length_factors) * s.seq_len
    argv, call = _command(["eval", "length"], evaluate.length, {
        "data": heldout, "factors": list(s.length_factors), "windows": s.length_windows, "batch_size": 4,
        "device": device, "out": os.path.join(res, "length")}, models=lm_models)
    steps.append(Step("lm-eval-length", "lm-eval", "length generalisation", argv, call,
                      ev + n_lm * s.length_windows * longest * (1 + longest / 2048) / fwd))
    # retrieval
    task = s.retrieval_task
    opts = ",".join(f"{k}={v}" for k, v in s.retrieval_options.items())
    tuned = []
    for name in s.retrieval_variants:
        run = f"{task}-{name}"
        rdir = os.path.join(work, "retrieval", run)
        argv, call = _train({
            "init_from": os.path.join(models, name), "data": f"synthetic:{task}",
            "data_options": f"n={s.retrieval_n},length={s.retrieval_train_length}" + (f",{opts}" if opts else ""),
            "seq_len": s.retrieval_per_row * (s.retrieval_train_length + 1), "batch_size": s.batch_size,
            "micro_batch_size": s.micro_batch_size, "max_steps": s.retrieval_steps, "lr": s.retrieval_lr,
            "min_lr": s.retrieval_lr / 10, "seed": s.seed, "eval_every": 0, "eval_batches": s.eval_batches,
            "save_every": 0, "log_every": max(1, s.retrieval_steps // 10), "progress": "false", **run_opts,
            "out": rdir})
        link = os.path.join(models, run)
        steps.append(Step(f"retrieval-{run}", "retrieval", f"fine-tune {name} on {task}", argv, call,
                          timing["overhead"] + s.retrieval_n / REFERENCE["sft_records_per_s"]
                          + s.retrieval_steps * timing["step"].get(name, timing["step_default"]),
                          after=_linker(os.path.join(rdir, "model"), link),
                          shell=[_link_line(os.path.join(rdir, "model"), link, models)]))
        tuned.append(link)
    for etask, grid in s.retrieval_eval.items():
        lengths, depths = grid["lengths"], grid["depths"]
        n_cells = len(lengths) * (len(depths) if etask != "mqar" else 1)
        tokens = n_cells * s.retrieval_examples * sum(lengths) / len(lengths)
        argv, call = _command(["eval", "retrieval"], evaluate.retrieval, {
            "task": etask, "options": dict(s.retrieval_options) if etask == task else None,
            "lengths": list(lengths), "depths": [float(d) for d in depths], "examples": s.retrieval_examples,
            "seed": s.seed, "device": device, "out": os.path.join(res, "retrieval")},
            models=tuned, short={"options": "-o", "examples": "-n"})
        steps.append(Step(f"retrieval-eval-{etask}", "retrieval", f"{etask} accuracy of the {task} models", argv,
                          call, ev + len(tuned) * tokens / fwd * 2))
    steps += sft_steps(s, work, out, timing, device, threads)
    # benchmarks
    bl, bg = s.bench_layer, s.bench_generate
    argv, call = _command(["bench", "layer"], bench.layer, {
        "mixers": list(bl["mixers"]), "lengths": list(bl["lengths"]), "modes": list(bl["modes"]),
        **{k: bl[k] for k in ("hidden", "heads", "window") if k in bl}, "warmup": bl["warmup"],
        "repeats": bl["repeats"], **run_opts, "out": os.path.join(res, "bench")}, record=True)
    steps.append(Step("bench-layer", "bench", "layer latency", argv, call, timing["bench_layer"]))
    argv, call = _command(["bench", "generate"], bench.generate, {
        "size": bg["size"], "prompt_len": bg["prompt_len"], "batch": bg["batch"], "new_tokens": bg["new_tokens"],
        "warmup": bg["warmup"], "repeats": bg["repeats"], **run_opts, "out": os.path.join(res, "bench")},
        record=True)
    steps.append(Step("bench-generate", "bench", "generation throughput", argv, call, timing["bench_generate"]))
    return steps


def sft_data_dir(work):
    return os.path.join(work, "sft", "data")


def sft_models(s, work):
    """[(variant, base model folder, fine-tuned model folder)] of the SFT stage."""
    models = os.path.join(work, "models")
    return [(n, os.path.join(models, n), os.path.join(models, f"sft-{n}")) for n in s.sft_variants]


def sft_steps(s, work, out, timing, device="cpu", threads=None):
    """The SFT stage: write the code-lookup task (`ratlm eval longbench-mini --sft-examples`), fine-tune each
    of the sft_variants' language models on it (`ratlm train --init-from`, loss on the responses), and score
    every base and fine-tuned model on the test records' generated answers (`ratlm eval generate`), one step
    per metric."""
    from ..eval.longbench import api as longbench

    steps = []
    data = sft_data_dir(work)
    options = {"examples": s.sft_test, "paragraphs": s.sft_paragraphs, "seed": s.seed,
               "sft_examples": s.sft_examples, "sft_pairs": s.sft_pairs}
    argv = ["eval", "longbench-mini", data, *_flags(options, short={"examples": "-n"})]
    steps.append(Step("sft-data", "sft", "write the SFT task", argv,
                      functools.partial(longbench.longbench_mini, data, **options),
                      1.0 + (s.sft_examples + s.sft_test) / REFERENCE["sft_records_per_s"]))
    models = os.path.join(work, "models")
    evaluated = []
    for name, base, tuned in sft_models(s, work):
        rdir = os.path.join(work, "sft", name)
        argv, call = _train({
            "init_from": base, "data": os.path.join(data, "sft_train.jsonl"), "seq_len": s.sft_seq_len,
            "batch_size": s.batch_size, "micro_batch_size": s.micro_batch_size, "max_steps": s.sft_steps,
            "lr": s.sft_lr, "min_lr": s.sft_lr / 10, "seed": s.seed, "eval_every": 0, "eval_batches": s.eval_batches,
            "save_every": 0, "log_every": max(1, s.sft_steps // 10), "progress": "false",
            "device": device, "threads": threads or None, "out": rdir})
        step_s = timing["step"].get(name, timing["step_default"]) * s.sft_seq_len / s.seq_len
        steps.append(Step(f"sft-{name}", "sft", f"fine-tune {name} on the SFT task", argv, call,
                          timing["overhead"] + s.sft_steps * step_s,
                          after=_linker(os.path.join(rdir, "model"), tuned),
                          shell=[_link_line(os.path.join(rdir, "model"), tuned, models)]))
        evaluated += [base, tuned]
    per_model = (s.sft_test * (s.sft_seq_len + s.sft_max_new_tokens) / timing["forward_tok_s"]
                 + -(-s.sft_test // 8) * s.sft_max_new_tokens * timing["decode_step_s"])
    for metric in s.sft_metrics:
        argv, call = _command(["eval", "generate"], longbench.generate, {
            "data": os.path.join(data, "sft_test.jsonl"), "metric": metric,
            "max_new_tokens": s.sft_max_new_tokens, "batch_size": 8, "device": device,
            "out": os.path.join(out, "results", "sft", metric)}, models=evaluated)
        steps.append(Step(f"sft-eval-{metric}", "sft", f"{metric} of the base and fine-tuned models' answers",
                          argv, call, 1.0 + len(evaluated) * per_model))
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
    "decode_step_s": 0.01,        # one greedy decoding step of a batch of 8 (tiny model)
    "bench_layer": 120.0,
    "bench_generate": 180.0,
}


def calibrate(s, names, device="cpu", steps=3, log=None):
    """Seconds per training step of each variant at the run's size (median of `steps` after a warm-up)."""
    import statistics

    import torch

    from ..models import RATConfig, RATForCausalLM

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
         "overhead": REFERENCE["overhead"], "forward_tok_s": REFERENCE["forward_tok_s"] * speed,
         "decode_step_s": REFERENCE["decode_step_s"] / speed}
    scale = 1.0 if s.mode == "full" else 0.02
    t["bench_layer"] = REFERENCE["bench_layer"] * scale / speed
    t["bench_generate"] = REFERENCE["bench_generate"] * scale / speed
    return t


# --------------------------------------------------------------------------------------------------
# running
