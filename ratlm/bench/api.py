"""The benchmark commands as Python functions: `ratlm bench layer|generate` are `layer(...)` and
`generate(...)` with the keyword arguments taken from the command line (the same names, `--qk-groups` ->
qk_groups). Each prints the command's table, writes its JSON and PNG under `out` and returns the JSON's
contents. Bad arguments raise ratlm.errors.UserError. `command` is what the JSON records as the command
line that made it (default: this process's)."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict

from ..errors import UserError

MODES = ("train", "prefill", "decode")


def _setup(device, threads, warmup, repeats, clock="wall"):
    import torch

    if threads:
        torch.set_num_threads(threads)
    from ..runtime import pick_device

    device = str(pick_device(device))
    if repeats < 1 or warmup < 0:
        raise UserError("--repeats must be >= 1 and --warmup >= 0")
    if clock not in ("wall", "cpu"):
        raise UserError(f"clock must be wall or cpu, got {clock!r}")
    if clock == "cpu" and (threads != 1 or not device.startswith("cpu")):
        raise UserError("--clock cpu measures one thread's work on the CPU: add --threads 1 (and --device cpu)")
    from .system import check_busy, set_clock

    set_clock(clock)
    note = check_busy()
    if note:
        print(f"ratlm: note: {note}", file=sys.stderr)
    return device


def _note_dtype(device, dtype):
    from ..runtime import bf16_note

    note = bf16_note(device, dtype)
    if note:
        print(f"ratlm: note: {note}", file=sys.stderr)


def _progress():
    from tqdm import tqdm

    return lambda **kw: tqdm(**kw, file=sys.stderr)


def _meta(device, warmup, repeats, command, clock="wall", **extra):
    import torch

    from .layer import device_name
    from .system import busy_at_start, cpu_info

    return {"device": device, "device_name": device_name(device), "cpu": cpu_info(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "clock": clock, "warmup": warmup, "repeats": repeats,
            "busy_cores_at_start": busy_at_start(),
            "command": command or "ratlm " + " ".join(sys.argv[1:]), **extra}


def _save(out, name, results, meta, plot):
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{name}.json")
    data = {"meta": meta, "results": [asdict(r) for r in results]}
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    png = os.path.join(out, f"{name}.png")
    plot(results, png, meta)
    print(f"wrote {path} and {png}")
    return data


def default_cache_memory(device: str) -> int:
    """Half the memory available now: free CUDA memory, or MemAvailable on a Linux CPU."""
    import torch

    from ..runtime import free_memory

    free = free_memory(torch.device(device))
    if free is None:
        raise UserError("cannot tell how much memory is available here; give --cache-memory BYTES (e.g. 4GiB)")
    return free // 2


def layer(*, preset: str | None = None, mixers: Sequence[str] | None = None, lengths: Sequence[int] | None = None,
          modes: Sequence[str] = MODES, hidden: int | None = None, heads: int | None = None, batch: int | None = None,
          token_budget: int | None = None, window: int = 1024, qk_groups: int = 2, compile: bool = False,
          dtype: str | None = None, device: str | None = None, warmup: int = 1, repeats: int = 3,
          threads: int | None = None, clock: str = "wall", out: str = "runs/bench",
          command: str | None = None) -> dict:
    """`ratlm bench layer`: train (fwd+bwd), prefill and decode-step latency of each mixer, with ratios
    against attention; writes OUT/bench_layer.json and .png. Unset sizes come from the preset (cpu, or
    paper on CUDA)."""
    from . import layer as bl

    device = _setup(device, threads, warmup, repeats, clock)
    preset = dict(bl.PRESETS[preset or ("paper" if device.startswith("cuda") else "cpu")])
    given = {"mixers": mixers, "lengths": lengths, "hidden": hidden, "heads": heads, "batch": batch,
             "token_budget": token_budget, "dtype": dtype}
    opts = {k: v if v is not None else preset.get(k) for k, v in given.items()}
    if batch is not None:
        opts["token_budget"] = token_budget
    modes = list(modes)
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise UserError(f"unknown mode(s) {', '.join(bad)}: use train, prefill, decode")
    for m in opts["mixers"]:
        bl.parse_mixer(m, window)
    if opts["hidden"] % opts["heads"]:
        raise UserError(f"--hidden {opts['hidden']} is not divisible by --heads {opts['heads']}")
    if any(n < 1 for n in opts["lengths"]):
        raise UserError("--lengths must be positive")
    if "attention" not in opts["mixers"]:
        opts["mixers"] = ["attention", *opts["mixers"]]  # ratios need it
    _note_dtype(device, opts["dtype"])
    results = bl.run(mixers=opts["mixers"], lengths=opts["lengths"], modes=modes, hidden=opts["hidden"],
                     heads=opts["heads"], batch=opts["batch"] or 1, token_budget=opts["token_budget"],
                     window=window, qk_groups=qk_groups, dtype=opts["dtype"], device=device,
                     warmup=warmup, repeats=repeats, compile=compile, progress=_progress())
    meta = _meta(device, warmup, repeats, command, clock, hidden=opts["hidden"], heads=opts["heads"],
                 dtype=opts["dtype"], window=window, qk_groups=qk_groups, compile=bool(compile))
    print(f"# {meta['device_name']}, torch {meta['torch']}, D={meta['hidden']}, {meta['heads']} heads, {meta['dtype']}"
          + (", compiled" if compile else "") + (", CPU-time clock" if clock == "cpu" else ""))
    print(bl.table(results))
    for r in results:
        if r.ideal_ratio and r.length >= 1024:  # at short lengths fixed costs dominate
            spread = (f"; single rounds {100 * min(r.of_ideal_rounds):.0f}-{100 * max(r.of_ideal_rounds):.0f}%"
                      if len(r.of_ideal_rounds) > 1 else "")
            print(f"{r.mixer} {r.mode} at {r.length}: measured/ideal {r.ratio_vs_attention:.2f}x / "
                  f"{r.ideal_ratio:.2f}x ({100 * r.of_ideal:.0f}%{spread})")
    return _save(out, "bench_layer", results, meta, bl.plot)


def generate(*, variants: Sequence[str] | None = None, size: str | None = None, prompt_len: int = 4096,
             new_tokens: int = 64, batch: int = 8, max_batch: bool = False, cache_memory: int | None = None,
             batch_limit: int = 4096, dtype: str | None = None, device: str | None = None, warmup: int = 1,
             repeats: int = 3, threads: int | None = None, clock: str = "wall", out: str = "runs/bench",
             command: str | None = None) -> dict:
    """`ratlm bench generate`: prefill a random prompt and decode greedily with each model variant;
    tokens/s, time to first token, cache size and ratios against attention in OUT/bench_generate.json
    and .png. cache_memory: the decode-state budget in bytes of max_batch (default half the memory
    available now)."""
    from ..models.presets import preset_kwargs
    from . import generate as bg

    device = _setup(device, threads, warmup, repeats, clock)
    size = size or ("xl" if device.startswith("cuda") else "small")
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    variants = list(variants or bg.VARIANTS)
    for v in variants:
        preset_kwargs(f"{v}-{size}")  # one clear line for an unknown variant
    if min(prompt_len, new_tokens, batch) < 1:
        raise UserError("--prompt-len, --new-tokens and --batch must be >= 1")
    if batch_limit < 1:
        raise UserError("--batch-limit must be >= 1")
    if "attention" not in variants:
        variants = ["attention", *variants]
    budget = None
    if max_batch:
        budget = cache_memory or default_cache_memory(device)
    elif cache_memory:
        raise UserError("--cache-memory only applies with --max-batch")
    try:
        _note_dtype(device, dtype)
        results = bg.run(variants, size, prompt_len, new_tokens, batch, max_batch, batch_limit, device, dtype,
                         warmup, repeats, progress=_progress(), cache_memory=budget)
    except ValueError as e:
        if "decode state" not in str(e):
            raise
        raise UserError(str(e)) from None
    meta = _meta(device, warmup, repeats, command, clock, size=size, dtype=dtype, prompt_len=prompt_len,
                 new_tokens=new_tokens, max_batch=bool(max_batch), cache_memory=budget, batch_limit=batch_limit)
    print(f"# {meta['device_name']}, torch {meta['torch']}, {size} models, {dtype}"
          + (", CPU-time clock" if clock == "cpu" else "")
          + (f", max batch for {budget / 2**30:.2f} GiB of decode state (TTFT: one row)" if budget else ""))
    print(bg.table(results))
    return _save(out, "bench_generate", results, meta, bg.plot)
