"""`ratlm bench layer`: latency of one mixer layer for training, prefill and a decode step.

All variants are measured in the same run, so ratios against attention compare like with like.
Each measurement: warmup runs, then `repeats` timed runs, reported as the median; the repeats of the
mixers of one (mode, length) take turns (A, B, C, A, B, C, ...), so that a machine whose speed drifts
slows them alike, and the memory peak is that of each mixer's first timed run. A decode run is
DECODE_STEPS consecutive steps from the given position (so it includes the steps where a chunk ends
and joins RAT's memory), reported per step.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field

import torch

from ..layers import RAT, RNN, Attention, SlidingWindowAttention
from ..layers.common import pack_linears
from .system import PeakMemory, cpu_summary, now

DECODE_STEPS = 16

PRESETS = {
    # the CPU configuration: fp32, D=512, 8 heads of 64, batch 1
    "cpu": dict(hidden=512, heads=8, lengths=[1024, 4096, 16384], batch=1, token_budget=None,
                mixers=["attention", "swa", "rnn", "rat16"], dtype="float32", device="cpu"),
    # the paper's efficiency setting: D=2048, 16 heads of 128, bf16, batch x length constant
    "paper": dict(hidden=2048, heads=16, lengths=[4096, 16384, 65536, 131072], batch=None,
                  token_budget=131072, mixers=["attention", "swa", "rnn", "rat16", "rat64", "rat128"],
                  dtype="bfloat16", device="cuda"),
}


@dataclass
class Result:
    mixer: str
    mode: str  # train | prefill | decode
    length: int  # sequence length (train/prefill) or decode position
    batch: int
    median_s: float
    times_s: list = field(default_factory=list)
    flops: float = 0.0
    cache_bytes: int | None = None
    ratio_vs_attention: float | None = None  # attention time / this time
    ideal_ratio: float | None = None  # RAT rows: attention / (RNN + (attention - RNN) / L), same run
    of_ideal: float | None = None  # ratio_vs_attention / ideal_ratio
    of_ideal_rounds: list = field(default_factory=list)  # of_ideal from each round of the interleaved repeats
    peak_bytes: int | None = None  # peak memory of the timed runs above their start (see memory_kind)
    memory_kind: str | None = None  # cuda_allocated | cpu_rss (ratlm.bench.system.PeakMemory)
    compile: bool = False


def parse_mixer(name, window):
    """'attention', 'swa' (or 'swa512'), 'rnn', 'rat' (L=16) or 'ratN' -> (label, kind, options)."""
    if name == "attention":
        return name, "attention", {}
    if name.startswith("swa"):
        w = int(name[3:]) if name[3:] else window
        return f"swa{w}", "swa", {"window": w}
    if name == "rnn":
        return name, "rnn", {}
    if name.startswith("rat"):
        L = int(name[3:]) if name[3:] else 16
        return f"rat{L}", "rat", {"chunk_size": L}
    raise ValueError(f"unknown mixer {name!r}: use attention, swa[W], rnn or rat[L]")


def build(kind, hidden, heads, opts, qk_groups=2):
    if kind == "attention":
        return Attention(hidden, heads)
    if kind == "swa":
        return SlidingWindowAttention(hidden, heads, window=opts["window"])
    if kind == "rnn":
        return RNN(hidden)
    return RAT(hidden, heads, chunk_size=opts["chunk_size"], qk_groups=min(qk_groups, heads))


def mixer_flops(kind, opts, hidden, heads, qk_groups, B, T, decode_at=None):
    """Multiply-adds x 2 of one forward over T tokens, or of one decode step at position decode_at."""
    D = hidden
    dh = D // heads
    proj_out = {"attention": 3 * D, "swa": 3 * D, "rnn": 3 * D}.get(kind, 3 * D + 2 * qk_groups * dh) + D
    if decode_at is not None:
        P = decode_at
        keys = {"attention": P + 1, "swa": min(P + 1, opts.get("window", 0) + 1), "rnn": 0}.get(
            kind, P // opts.get("chunk_size", 1) + 1)
        return 2 * B * D * proj_out + 4 * B * D * keys
    if kind == "attention":
        keys = T * (T + 1) / 2
    elif kind == "swa":
        W = opts["window"]
        keys = sum(min(t + 1, W + 1) for t in range(T))
    elif kind == "rnn":
        keys = 0
    else:
        L = opts["chunk_size"]
        keys = sum(t // L + 1 for t in range(T))
    return 2 * B * T * D * proj_out + 4 * B * D * keys


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_once(fn, device):
    t0 = now()
    fn()
    _sync(device)
    return now() - t0


def _workload(layer, kind, opts, mode, B, T, hidden, heads, qk_groups, dt, device, steps, compile):
    """(the function to time, its FLOPs, the decode cache bytes or None) for one measurement."""
    x = torch.randn(B, T, hidden, device=device, dtype=dt)
    if not compile:  # prefill and decode as the inference commands run them (packed weights on the CPU)
        pack_linears(layer)
    fwd = torch.compile(layer) if compile else layer
    if mode == "train":
        x.requires_grad_(True)

        def fn():
            fwd(x).float().square().mean().backward()
        return fn, 3 * mixer_flops(kind, opts, hidden, heads, qk_groups, B, T), None
    if mode == "prefill":
        def fn():
            with torch.no_grad():
                fwd(x, cache=layer.init_cache(B, max_length=T))
        return fn, mixer_flops(kind, opts, hidden, heads, qk_groups, B, T), None
    cache = layer.init_cache(B, max_length=T + steps * DECODE_STEPS)
    with torch.no_grad():
        layer(x, cache=cache)
    nbytes = cache.nbytes()  # at position T
    step = torch.randn(B, 1, hidden, device=device, dtype=dt)

    def fn():
        with torch.no_grad():
            for _ in range(DECODE_STEPS):
                fwd(step, cache=cache)
    return fn, DECODE_STEPS * mixer_flops(kind, opts, hidden, heads, qk_groups, B, T, decode_at=T), nbytes


def run(mixers=None, lengths=None, modes=("train", "prefill", "decode"), hidden=512, heads=8, batch=1,
        token_budget=None, window=1024, qk_groups=2, dtype="float32", device="cpu", warmup=1, repeats=3,
        compile=False, progress=None, seed=0):
    """Measure every (mixer, mode, length). Returns a list of Result (ratios filled in)."""
    device = torch.device(device)
    dt = getattr(torch, dtype)
    mixers = mixers or ["attention", "swa", "rnn", "rat16"]
    lengths = lengths or [1024, 4096, 16384]
    specs = [parse_mixer(m, window) for m in mixers]
    results = []
    groups = [(mode, T) for T in lengths for mode in modes]
    bar = progress(total=len(groups) * len(specs), desc="bench layer") if progress else None
    for mode, T in groups:
        B = max(1, token_budget // T) if token_budget else batch
        work = []  # every mixer's workload of this (mode, T), alive together so that repeats interleave
        for label, kind, opts in specs:
            torch.manual_seed(seed)
            layer = build(kind, hidden, heads, opts, qk_groups).to(device=device, dtype=dt)
            fn, flops, cache_bytes = _workload(layer, kind, opts, mode, B, T, hidden, heads, qk_groups, dt, device,
                                               warmup + repeats + 1, compile)
            for _ in range(warmup):
                fn()
            with PeakMemory(device) as peak:  # the first timed run, alone: its memory peak
                first = _time_once(fn, device)
            work.append((label, fn, flops, cache_bytes, peak, [first]))
            if bar:
                bar.update(1)
        for _ in range(repeats - 1):  # A, B, C, A, B, C, ...: drift of the machine hits every mixer alike
            for _, fn, *_, times in work:
                times.append(_time_once(fn, device))
        for label, _, flops, cache_bytes, peak, times in work:
            if mode == "decode":
                times = [s / DECODE_STEPS for s in times]
                flops /= DECODE_STEPS
            results.append(Result(label, mode, T, B, statistics.median(times), times, flops, cache_bytes,
                                  peak_bytes=peak.bytes, memory_kind=peak.kind, compile=bool(compile)))
        del work
    if bar:
        bar.close()
    base = {(r.mode, r.length): r.median_s for r in results if r.mixer == "attention"}
    for r in results:
        if (r.mode, r.length) in base:
            r.ratio_vs_attention = base[(r.mode, r.length)] / r.median_s
        if r.mixer.startswith("rat") and r.ratio_vs_attention:
            r.ideal_ratio = ideal_ratio(results, r.mode, r.length, int(r.mixer[3:]))
            r.of_ideal = r.ratio_vs_attention / r.ideal_ratio if r.ideal_ratio else None
            if r.of_ideal:
                r.of_ideal_rounds = rounds_of_ideal(results, r)
    return results


def rounds_of_ideal(results, r):
    """Measured / ideal of RAT row r in each round of the interleaved repeats (attention, RNN and r timed
    back to back): how far a single round's figure can stray on this machine."""
    get = {(x.mixer, x.mode, x.length): x.times_s for x in results}
    att, rnn = get[("attention", r.mode, r.length)], get[("rnn", r.mode, r.length)]
    L = int(r.mixer[3:])
    return [(a / t) / limit(a, n, L) for a, n, t in zip(att, rnn, r.times_s)]


def table(results):
    """Plain-text table: one row per (mode, length, mixer)."""
    head = (f"{'mode':<8}{'length':>8}{'batch':>6}  {'mixer':<10}{'median':>11}{'vs attn':>9}{'ideal':>8}"
            f"{'of ideal':>9}{'GFLOP/s':>9}{'cache MiB':>11}{'peak MiB':>10}")
    lines = [head, "-" * len(head)]
    for r in sorted(results, key=lambda r: (r.mode, r.length)):
        ratio = f"{r.ratio_vs_attention:.2f}x" if r.ratio_vs_attention else "-"
        ideal = f"{r.ideal_ratio:.2f}x" if r.ideal_ratio else "-"
        of_ideal = f"{100 * r.of_ideal:.0f}%" if r.of_ideal else "-"
        cache = f"{r.cache_bytes / 2**20:.2f}" if r.cache_bytes is not None else "-"
        peak = f"{r.peak_bytes / 2**20:.1f}" if r.peak_bytes is not None else "-"
        med = f"{r.median_s * 1e3:.2f} ms" if r.median_s < 1 else f"{r.median_s:.3f} s"
        lines.append(f"{r.mode:<8}{r.length:>8}{r.batch:>6}  {r.mixer:<10}{med:>11}{ratio:>9}{ideal:>8}{of_ideal:>9}"
                     f"{r.flops / r.median_s / 1e9:>9.1f}{cache:>11}{peak:>10}")
    kinds = {r.memory_kind for r in results if r.memory_kind}
    if kinds:
        what = {"cuda_allocated": "peak allocated CUDA bytes", "cpu_rss": "peak resident set growth"}
        lines.append(f"peak MiB: {', '.join(what.get(k, k) for k in sorted(kinds))} during the timed runs; "
                     "ideal: attention / (RNN + (attention - RNN) / L) from this run")
    return "\n".join(lines)


def plot(results, png, meta):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in ("train", "prefill", "decode") if any(r.mode == m for r in results)]
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4), squeeze=False)
    titles = {"train": "training (fwd+bwd)", "prefill": "prefill", "decode": "one decode step at position"}
    for ax, mode in zip(axes[0], modes):
        for mixer in dict.fromkeys(r.mixer for r in results):
            pts = sorted((r.length, r.median_s) for r in results if r.mixer == mixer and r.mode == mode)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=mixer)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length" if mode != "decode" else "position")
        ax.set_ylabel("seconds (median)")
        ax.set_title(titles[mode])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"ratlm bench layer: D={meta['hidden']}, {meta['heads']} heads, {meta['dtype']}, "
                 f"{meta['device_name']}")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def device_name(device):
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_summary()}, {torch.get_num_threads()} threads of {os.cpu_count()} cores"


def ideal_ratio(results, mode, length, L):
    """The design's limit: attention / (RNN + (attention core) / L), with core = attention - RNN
    (projections cost about the same in both); None when a needed measurement is missing."""
    get = {(r.mixer, r.mode, r.length): r.median_s for r in results}
    att, rnn = get.get(("attention", mode, length)), get.get(("rnn", mode, length))
    if att is None or rnn is None:
        return None
    return limit(att, rnn, L)


def limit(att, rnn, L):
    """attention / (RNN + (attention - RNN) / L) from the two times."""
    return att / (rnn + max(att - rnn, 0.0) / L)
