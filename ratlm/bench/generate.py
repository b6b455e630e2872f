"""`ratlm bench generate`: whole-model generation speed of each variant, side by side.

For each variant: prefill a random prompt of `prompt_len` tokens for `batch` rows (time to first
token), then decode `new_tokens` tokens greedily, one step at a time with the model's cache
(throughput = batch * new_tokens / decode time). Models have random weights: speed does not depend
on them.

With `max_batch` (the paper's "maximum throughput"): each variant runs the largest batch whose decode
state after prompt_len + new_tokens tokens fits `cache_memory` bytes, computed from the per-row state
size (`ratlm.models.decode_state_bytes`), never by running the machine out of memory, and capped by
`batch_limit`. The prompt is prefilled for one row and its state copied to every row (decoding speed
does not depend on what the state holds), so the time to first token is that of one row.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from ..layers.common import pack_linears
from ..models import RATConfig, RATForCausalLM, decode_state_bytes
from ..models.presets import preset_kwargs
from .system import now

VARIANTS = ["attention", "rat", "rnn", "attention-swa", "rat-swa"]


@dataclass
class GenResult:
    variant: str
    batch: int
    prompt_len: int
    new_tokens: int
    ttft_s: float  # prefill (time to first token), median
    decode_s: float  # decode of new_tokens steps, median
    tokens_per_s: float
    cache_bytes: int  # decode state after the prompt
    params: int
    ratio_vs_attention: float | None = None
    note: str = ""
    state_bytes_per_row: int | None = None  # decode_state_bytes at prompt_len + new_tokens
    cache_memory: int | None = None  # the --max-batch budget (bytes)


def build_model(variant, size, device, dtype, **overrides):
    cfg = RATConfig(**preset_kwargs(f"{variant}-{size}", **overrides))
    torch.manual_seed(0)
    model = RATForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    pack_linears(model)  # as `ratlm generate` and `ratlm serve` load models (used on the CPU only)
    return model


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def generate_once(model, prompt, new_tokens, device):
    """Greedy decoding with the model's cache. Returns (prefill seconds, decode seconds, cache bytes)."""
    B, P = prompt.shape
    cache = model.make_cache(B, max_length=P + new_tokens + 1)
    _sync(device)
    t0 = now()
    logits = model(prompt, cache=cache, use_cache=True, logits_to_keep=1).logits
    nxt = logits[:, -1].argmax(-1, keepdim=True)
    _sync(device)
    t1 = now()
    cache_bytes = cache.nbytes()
    for _ in range(new_tokens):
        logits = model(nxt, cache=cache, use_cache=True).logits
        nxt = logits[:, -1].argmax(-1, keepdim=True)
    _sync(device)
    return t1 - t0, now() - t1, cache_bytes


@torch.no_grad()
def generate_replicated(model, prompt, batch, new_tokens, device):
    """Prefill `prompt` (1, P) once, copy its decode state to `batch` rows, decode `new_tokens` steps.
    Returns (prefill seconds for the one row, decode seconds, cache bytes after the prompt)."""
    P = prompt.shape[1]
    cache = model.make_cache(1, max_length=P + new_tokens + 1)
    _sync(device)
    t0 = now()
    logits = model(prompt, cache=cache, use_cache=True, logits_to_keep=1).logits
    _sync(device)
    t1 = now()
    cache.batch_repeat_interleave(batch)
    nxt = logits[:, -1].argmax(-1, keepdim=True).expand(batch, 1).contiguous()
    cache_bytes = cache.nbytes()
    _sync(device)
    t2 = now()
    for _ in range(new_tokens):
        logits = model(nxt, cache=cache, use_cache=True).logits
        nxt = logits[:, -1].argmax(-1, keepdim=True)
    _sync(device)
    return t1 - t0, now() - t2, cache_bytes


def fitting_batch(config, context_len, dtype, cache_memory, batch_limit=None):
    """(largest batch whose decode state after context_len tokens fits cache_memory bytes, capped by
    batch_limit; bytes per row)."""
    per_row = decode_state_bytes(config, context_len, dtype)
    B = cache_memory // max(per_row, 1)
    if batch_limit is not None:
        B = min(B, batch_limit)
    return int(B), per_row


def run(variants=None, size="small", prompt_len=4096, new_tokens=64, batch=8, max_batch=False, batch_limit=4096,
        device="cpu", dtype="float32", warmup=1, repeats=3, progress=None, cache_memory=None, **overrides):
    """Measure each variant. With max_batch, `cache_memory` (bytes) sets each variant's batch (see the
    module docstring); otherwise every variant runs `batch` rows."""
    dt = getattr(torch, dtype)
    variants = variants or VARIANTS
    if max_batch and not cache_memory:
        raise ValueError("max_batch needs cache_memory (bytes of decode state to fill)")
    results = []
    bar = progress(total=len(variants), desc="bench generate") if progress else None
    for v in variants:
        model = build_model(v, size, device, dt, **overrides)
        params = sum(p.numel() for p in model.parameters())
        vocab = model.config.vocab_size
        g = torch.Generator().manual_seed(1)
        per_row, note = None, ""
        if max_batch:
            B, per_row = fitting_batch(model.config, prompt_len + new_tokens, dt, cache_memory, batch_limit)
            if B < 1:
                raise ValueError(f"{v}: one row needs {per_row} bytes of decode state, more than the "
                                 f"{cache_memory} bytes of cache memory; give a larger budget")
            if B == batch_limit:
                note = f"batch limit {batch_limit} reached"
            prompt = torch.randint(0, vocab, (1, prompt_len), generator=g).to(device)
            for _ in range(warmup):
                generate_replicated(model, prompt[:, : min(prompt_len, 64)], B, 2, device)
            runs = [generate_replicated(model, prompt, B, new_tokens, device) for _ in range(repeats)]
        else:
            B = batch
            prompt = torch.randint(0, vocab, (B, prompt_len), generator=g).to(device)
            for _ in range(warmup):
                generate_once(model, prompt[:, : min(prompt_len, 64)], 2, device)
            runs = [generate_once(model, prompt, new_tokens, device) for _ in range(repeats)]
        ttft = statistics.median(r[0] for r in runs)
        dec = statistics.median(r[1] for r in runs)
        results.append(GenResult(v, B, prompt_len, new_tokens, ttft, dec, B * new_tokens / dec, runs[0][2], params,
                                 note=note, state_bytes_per_row=per_row,
                                 cache_memory=cache_memory if max_batch else None))
        del model
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    base = next((r for r in results if r.variant == "attention"), None)
    for r in results:
        if base:
            r.ratio_vs_attention = r.tokens_per_s / base.tokens_per_s
    return results


def table(results):
    head = (f"{'variant':<15}{'batch':>6}{'prompt':>8}{'new':>5}{'TTFT':>11}{'decode tok/s':>14}"
            f"{'vs attn':>9}{'cache MiB':>11}{'params M':>10}")
    if any(r.state_bytes_per_row for r in results):
        head += f"{'MiB/row':>9}"
    lines = [head, "-" * len(head)]
    for r in results:
        ratio = f"{r.ratio_vs_attention:.2f}x" if r.ratio_vs_attention else "-"
        lines.append(f"{r.variant:<15}{r.batch:>6}{r.prompt_len:>8}{r.new_tokens:>5}{r.ttft_s * 1e3:>9.0f}ms"
                     f"{r.tokens_per_s:>14.1f}{ratio:>9}{r.cache_bytes / 2**20:>11.2f}{r.params / 1e6:>10.1f}"
                     + (f"{r.state_bytes_per_row / 2**20:>9.3f}" if r.state_bytes_per_row else "")
                     + (f"  ({r.note})" if r.note else ""))
    return "\n".join(lines)


def plot(results, png, meta):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = [r.variant for r in results]
    axes[0].bar(names, [r.tokens_per_s for r in results], color="tab:blue")
    axes[0].set_ylabel("decode tokens / s")
    axes[0].set_title(f"throughput, batch {results[0].batch if results else '?'}, context {meta['prompt_len']}")
    axes[1].bar(names, [r.cache_bytes / 2**20 for r in results], color="tab:orange")
    axes[1].set_ylabel("cache MiB")
    axes[1].set_title("decode state after the prompt")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"ratlm bench generate: {meta['size']} models, {meta['dtype']}, {meta['device_name']}")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
