"""Running the plan: each step's Python call in this process with its log, the held-out file, results.json
gathered from the files the commands wrote, and the `ratlm reproduce` command itself."""
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
import traceback

from ..errors import UserError
from .claims import change_pct, claims
from .plan import (
    FORMAT,
    FULL,
    PAPER,
    QUICK,
    VARIANTS,
    calibrate,
    equalise,
    lm_run_name,
    lm_runs,
    plan,
    settings,
    sft_models,
    timing_model,
)
from .report import plot_lm_loss, read_jsonl, render


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
    """Run one step through its Python call, its output (and, on failure, the traceback) into
    logdir/ID.log, headed by the equivalent command. Returns the seconds taken."""
    os.makedirs(logdir, exist_ok=True)
    path = os.path.join(logdir, f"{step.id}.log")
    t0 = time.time()
    with open(path, "w") as log:
        log.write(f"$ {step.command}\n")
        log.flush()
        stream = _Tee(log, sys.__stderr__) if verbose else log
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                step.call()
        except Exception as e:
            traceback.print_exc(file=log)
            raise UserError(f"step {step.id} failed ({type(e).__name__}: {e}); its log is {path}") from e
    seconds = time.time() - t0
    if step.after:
        step.after()
    return seconds


def write_heldout(path, max_chars, val_fraction=0.02):
    """The held-out documents: the standard-library files the trainer's split keeps for validation (never
    trained on), whole, in order, until max_chars characters. Returns what it wrote (files, characters)."""
    from ..data import corpus

    files = corpus.stdlib_files()
    _, val = corpus.split_files(files, val_fraction)
    root = corpus.stdlib_root()
    chosen, total = [], 0
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as out:
        for f in val:
            text = next(corpus.read_documents([f], errors="replace"))  # as training reads the stdlib
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



def _paired_se(a, b):
    """The standard error (x100) of the mean of the per-example differences b - a (scores in 0..1)."""
    d = [y - x for x, y in zip(a, b)]
    if len(d) < 2:
        return None
    mean = sum(d) / len(d)
    return 100 * math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d))


def gather_sft(s, work, res, train_copy):
    """The SFT stage's numbers: each fine-tune's training, and each metric's scores of base and fine-tuned
    model with the gap and its paired standard error (from the per-example scores of `ratlm eval generate`)."""
    out = {"train": {}, "scores": {}}
    for name, _, _ in sft_models(s, work):
        folder = os.path.join(work, "sft", name)
        recs = read_jsonl(os.path.join(folder, "metrics.jsonl"))
        shutil.copyfile(os.path.join(folder, "metrics.jsonl"), os.path.join(train_copy, f"sft-{name}.metrics.jsonl"))
        last = [r for r in recs if "loss" in r][-1]
        val = [r for r in recs if "val_loss" in r]
        out["train"][name] = {"steps": last["step"], "train_loss": last["loss"], "train_seconds": last["time"],
                              "val_loss": val[-1]["val_loss"] if val else None}
    for metric in s.sft_metrics:
        data = _read_json(os.path.join(res, "sft", metric, "generate.json"))["results"]
        for i, (name, _, _) in enumerate(sft_models(s, work)):
            base, tuned = data[2 * i], data[2 * i + 1]
            scores = [[p["score"] for p in r["predictions"]] for r in (base, tuned)]
            out["scores"].setdefault(name, {})[metric] = {
                "base": base["score"], "tuned": tuned["score"], "gap": round(tuned["score"] - base["score"], 2),
                "se": _paired_se(*scores), "n": tuned["n"], "mean_new_tokens": [base["mean_new_tokens"],
                                                                              tuned["mean_new_tokens"]]}
    return out


def gather(s, steps, work, out, widths, target, heldout, calibration, meta):
    """results.json: everything the write-up shows, read from the files the commands wrote."""
    res = os.path.join(out, "results")
    train_copy = os.path.join(res, "train")
    os.makedirs(train_copy, exist_ok=True)
    lm = {}
    for run, name, seed in lm_runs(s):
        folder = os.path.join(work, "lm", run)
        recs = read_jsonl(os.path.join(folder, "metrics.jsonl"))
        shutil.copyfile(os.path.join(folder, "metrics.jsonl"), os.path.join(train_copy, f"lm-{run}.metrics.jsonl"))
        last = [r for r in recs if "loss" in r][-1]
        val = [r for r in recs if "val_loss" in r][-1]
        lm[run] = {"variant": name, "label": VARIANTS[name].label, "seed": seed, "steps": last["step"],
                   "tokens": last["tokens"], "train_seconds": last["time"], "train_loss": last["loss"],
                   "val_loss": val["val_loss"], "val_ppl": val["val_ppl"], "val_bpb": val.get("val_bpb"),
                   "intermediate_size": widths[name][0],
                   "params": _safetensors_params(os.path.join(folder, "model")),
                   "chunk_size": VARIANTS[name].chunk_size, "position_encoding": VARIANTS[name].position_encoding}
        lm[run]["params_vs_attention_pct"] = change_pct(lm[run]["params"], target)
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
        first = mean[length["factors"][0]]
        lm[run]["length_rise_pct"] = {str(f): change_pct(mean[f], first) for f in length["factors"]}
    for r in lm.values():
        for base in ("attention", "rat16"):
            r[f"heldout_ppl_vs_{base}_pct"] = change_pct(r.get("heldout_ppl"), lm.get(base, {}).get("heldout_ppl"))
    # seed-to-seed spread of held-out perplexity
    pairs = []
    for seed in s.noise_seeds:
        for name in s.noise_variants:
            other = lm_run_name(name, seed, s)
            if name in lm and other in lm:
                pairs.append({"variant": name, "seeds": [s.seed, seed],
                              "ppl": [lm[name]["heldout_ppl"], lm[other]["heldout_ppl"]],
                              "diff_pct": abs(change_pct(lm[other]["heldout_ppl"], lm[name]["heldout_ppl"]))})
    noise = {"pairs": pairs, "spread_pct": max((p["diff_pct"] for p in pairs), default=None)}

    retrieval = {}
    task = s.retrieval_task
    entry = {"train": {}, "eval": {}}
    for name in s.retrieval_variants:
        folder = os.path.join(work, "retrieval", f"{task}-{name}")
        recs = read_jsonl(os.path.join(folder, "metrics.jsonl"))
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

    sft = gather_sft(s, work, res, train_copy)

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
                   "retrieval_tokens_per_step": s.batch_size * s.retrieval_per_row * (s.retrieval_train_length + 1),
                   "sft_tokens_per_step": s.batch_size * s.sft_seq_len},
        "calibration": calibration,
        "params": {"attention": target,
                   "variants": {n: {"intermediate_size": i, "params": p, "vs_attention_pct": change_pct(p, target)}
                                for n, (i, p) in widths.items()}},
        "heldout": {k: v for k, v in heldout.items() if k != "files"} | {"n_files": len(heldout["files"]),
                                                                         "files": heldout["files"]},
        "lm": lm, "length": length_info, "noise": noise, "retrieval": retrieval, "sft": sft,
        "bench": bench,
        "steps": [{"n": i, "id": st.id, "stage": st.stage, "title": st.title, "command": st.command, "shell": st.shell,
                   "estimate_s": st.estimate_s, "seconds": getattr(st, "seconds", None),
                   "status": getattr(st, "status", None)} for i, st in enumerate(steps, 1)],
    }
    results["claims"] = claims(results)
    return results


# --------------------------------------------------------------------------------------------------
# the paper's claims, judged by explicit rules


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
                                   "budgets, evaluate them (perplexity, length generalisation, retrieval, "
                                   "SFT scored on generated answers), "
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
    p.add_argument("--rejudge", action="store_true", help="run nothing: judge the claims of OUT/results/results.json "
                                                          "again with this version's rules and rewrite RESULTS.md "
                                                          "(the write-up records the change)")
    p.add_argument("--device", default="cpu", help="device of every step (default cpu: the published results "
                                                   "are CPU results)")
    p.add_argument("--threads", type=int,
                   help="torch CPU threads for training and benchmarks (default: torch's choice)")
    p.add_argument("--lm-steps", type=int, help=f"training steps of each language model (default: {FULL['lm_steps']}; "
                                                f"quick {QUICK['lm_steps']})")
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

    from ..data.tokenizer import BYTE_VOCAB

    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "ratlm reproduce" + ("" if not argv else " " + shlex.join(argv)),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "platform": platform.platform(terse=True), "cpu": _cpu_name(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "device": device, "git_commit": _git_commit(),
            "model": {"hidden_size": s.hidden_size, "num_hidden_layers": s.num_hidden_layers,
                      "num_attention_heads": s.num_attention_heads, "qk_groups": s.qk_groups,
                      "sliding_window": s.sliding_window, "vocab_size": BYTE_VOCAB}}


def rejudge(out):
    """New verdicts for a finished run from its results.json (same numbers, this version's rules); the
    earlier verdicts are kept in results["rejudged"] and shown in the write-up. Returns the results."""
    path = os.path.join(out, "results", "results.json")
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist; run `ratlm reproduce` first (or give its --out)")
    results = _read_json(path)
    before = {c["id"]: c["verdict"] for c in results["claims"]}
    results["claims"] = claims(results)
    results.setdefault("rejudged", []).append({
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": _git_commit(),
        "changed": {c["id"]: [before.get(c["id"]), c["verdict"]] for c in results["claims"]
                    if before.get(c["id"]) != c["verdict"]}})
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1)
    with open(os.path.join(out, "RESULTS.md"), "w") as fh:
        fh.write(render(results))
    return results


def _print_verdicts(results):
    for c in results["claims"]:
        print(f"{c['verdict']:>20s}  {c['title']}: {c['reason']}")


def _run(args):
    import torch

    out = args.out or ("runs/reproduce-quick" if args.quick else "docs")
    if args.rejudge:
        results = rejudge(out)
        _print_verdicts(results)
        changed = results["rejudged"][-1]["changed"]
        print(f"rewrote {os.path.join(out, 'RESULTS.md')}; " + (", ".join(
            f"{k}: {a} -> {b}" for k, (a, b) in changed.items()) if changed else "no verdict changed"))
        return
    argv = sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "reproduce" else []
    s = settings(args.quick, lm_steps=args.lm_steps, retrieval_steps=args.retrieval_steps, seed=args.seed)
    work = args.work or (os.path.join(out, "work") if args.quick else "runs/reproduce")
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.time()
    meta = _setup_meta(s, args.device, argv)
    names = list(dict.fromkeys(s.lm_variants))
    widths, target = equalise(names, s)
    _say(f"{s.mode} run: {len(lm_runs(s))} language models, {len(s.retrieval_variants)} "
         f"retrieval fine-tunes, {len(s.sft_variants)} SFT fine-tunes, 2 benchmarks; work folder {work}, "
         f"results in {out}")
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
        raise UserError(f"{work} holds a run with other settings; use --fresh to discard it or --work to choose "
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
    _print_verdicts(results)
    print(f"wrote {md} and {res}/ in {_hms(meta['seconds_total'])}")
