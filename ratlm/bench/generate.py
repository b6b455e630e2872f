"""`ratlm bench generate`: whole-model generation speed of each variant, side by side.

For each variant: prefill a random prompt of `prompt_len` tokens for `batch` rows (time to first
token), then decode `new_tokens` tokens greedily, one step at a time with the model's cache
(throughput = batch * new_tokens / decode time). Models have random weights: speed does not depend
on them. With `max_batch`, the batch doubles until memory runs out (or the budget is reached), and
the largest batch that ran is reported: the paper's "maximum throughput".
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from ..models import RATConfig, RATForCausalLM
from ..models.presets import preset_kwargs

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


def build_model(variant, size, device, dtype, **overrides):
    cfg = RATConfig(**preset_kwargs(f"{variant}-{size}", **overrides))
    torch.manual_seed(0)
    return RATForCausalLM(cfg).to(device=device, dtype=dtype).eval()


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def generate_once(model, prompt, new_tokens, device):
    """Greedy decoding with the model's cache. Returns (prefill seconds, decode seconds, cache bytes)."""
    B, P = prompt.shape
    cache = model.make_cache(B, max_length=P + new_tokens + 1)
    _sync(device)
    t0 = time.perf_counter()
    logits = model(prompt, cache=cache, use_cache=True, logits_to_keep=1).logits
    nxt = logits[:, -1].argmax(-1, keepdim=True)
    _sync(device)
    t1 = time.perf_counter()
    cache_bytes = cache.nbytes()
    for _ in range(new_tokens):
        logits = model(nxt, cache=cache, use_cache=True).logits
        nxt = logits[:, -1].argmax(-1, keepdim=True)
    _sync(device)
    return t1 - t0, time.perf_counter() - t1, cache_bytes


def _is_oom(e):
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower() or isinstance(e, MemoryError)


def run(variants=None, size="small", prompt_len=4096, new_tokens=64, batch=8, max_batch=False, batch_limit=4096,
        device="cpu", dtype="float32", warmup=1, repeats=3, progress=None, **overrides):
    dt = getattr(torch, dtype)
    variants = variants or VARIANTS
    results = []
    bar = progress(total=len(variants), desc="bench generate") if progress else None
    for v in variants:
        model = build_model(v, size, device, dt, **overrides)
        params = sum(p.numel() for p in model.parameters())
        vocab = model.config.vocab_size
        batches = [batch]
        if max_batch:
            b = batch
            while b * 2 <= batch_limit:
                b *= 2
                batches.append(b)
        best = None
        for B in batches:
            g = torch.Generator().manual_seed(1)
            prompt = torch.randint(0, vocab, (B, prompt_len), generator=g).to(device)
            try:
                for _ in range(warmup):
                    generate_once(model, prompt[:, : min(prompt_len, 64)], 2, device)
                runs = [generate_once(model, prompt, new_tokens, device) for _ in range(repeats)]
            except (RuntimeError, MemoryError) as e:
                if not _is_oom(e) or B == batches[0]:
                    raise
                if torch.device(device).type == "cuda":
                    torch.cuda.empty_cache()
                break
            ttft = statistics.median(r[0] for r in runs)
            dec = statistics.median(r[1] for r in runs)
            best = GenResult(v, B, prompt_len, new_tokens, ttft, dec, B * new_tokens / dec, runs[0][2], params)
        if max_batch and best.batch == batches[-1]:
            best.note = f"batch limit {batch_limit} reached"
        results.append(best)
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
    lines = [head, "-" * len(head)]
    for r in results:
        ratio = f"{r.ratio_vs_attention:.2f}x" if r.ratio_vs_attention else "-"
        lines.append(f"{r.variant:<15}{r.batch:>6}{r.prompt_len:>8}{r.new_tokens:>5}{r.ttft_s * 1e3:>9.0f}ms"
                     f"{r.tokens_per_s:>14.1f}{ratio:>9}{r.cache_bytes / 2**20:>11.2f}{r.params / 1e6:>10.1f}"
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
