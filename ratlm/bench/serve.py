"""`ratlm bench serve`: a running server under load from concurrent `openai` clients.

For each target (a `ratlm serve` subprocess per model variant, or `--url`), and each concurrency C:
C async clients (the real `openai.AsyncOpenAI`, streaming) send `requests` completions between
them; prompts are slices of the local corpus (the standard library's sources by default) of the given
lengths in characters (= tokens with the byte tokenizer of the preset models), `new_tokens` each
(`ignore_eos`, temperature 0), after `warmup` untimed requests to each target, one at a time.
Reported: requests/s and output tokens/s over the wall time, time to first token and inter-token
latency (p50, p99), the largest number of rows running at once (from /metrics), the server's
peak resident memory, and (from the engine's counters in /metrics) the decode steps' own throughput:
output tokens per second of engine time spent decoding, prefill excluded, as the paper's throughput
runs time it. `--compare` runs attention, RAT and the hybrids
of the same size one after another under the same load and `--cache-memory`, plus `transformers
serve` when asked and available, with ratios against attention.

A concurrency level may be `fill`: for each served model, as many clients as its server admits rows at
once (`budget_rows`: the engine's own admission rule, at the longest prompt plus `new_tokens`; with
`--max-running N`, N), so that one command fills every variant's memory budget. Ratios pair each
target's i-th level with attention's i-th, so fill rows are compared with fill rows.
"""
from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from ..errors import UserError

COMPARE = ["attention", "rat", "attention-swa", "rat-swa"]
FILL = "fill"  # a --concurrency level: as many clients as the server admits rows at once


@dataclass
class ServeResult:
    target: str
    concurrency: int
    requests: int
    completed: int
    failed: int
    wall_s: float
    requests_per_s: float
    output_tokens_per_s: float
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    itl_p50_s: float | None
    itl_p99_s: float | None
    peak_running: int | None
    peak_rss_bytes: int | None
    prompt_chars: list[int] = field(default_factory=list)
    new_tokens: int = 0
    # from the server's /metrics (ratlm serve only): tokens per second of engine time spent in each phase,
    # decode = one output token per running row per decode step (the paper's throughput runs time decoding
    # alone), prefill = prompt tokens
    decode_tokens_per_s: float | None = None
    prefill_tokens_per_s: float | None = None
    ratio_vs_attention: float | None = None
    decode_ratio_vs_attention: float | None = None
    note: str = ""
    baseline_of: str | None = None  # set on a `generate_baseline` row: the served target it is the reference for


# ------------------------------------------------------------------------------------ load
def corpus_text(spec: str = "stdlib", need: int = 1 << 20) -> str:
    """At least `need` characters of printable ASCII text from the corpus (stdlib or paths)."""
    from ..data import corpus

    files = corpus.stdlib_files() if spec == "stdlib" else corpus.expand(spec)
    out, n = [], 0
    for doc in corpus.read_documents(files):
        doc = "".join(c for c in doc if 32 <= ord(c) < 127 or c == "\n")
        out.append(doc)
        n += len(doc)
        if n >= need:
            break
    text = "".join(out)
    if not text:
        raise ValueError(f"no text in the corpus {spec!r}")
    while len(text) < need:
        text += text
    return text


def make_prompts(text: str, lengths: tuple[int, int], count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.randint(*lengths)
        start = rng.randrange(0, len(text) - n)
        out.append(text[start:start + n])
    return out


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


async def drive(url: str, model: str, prompts: list[str], new_tokens: int, concurrency: int, api_key: str,
                extra: dict, timeout: float):
    """Send every prompt, `concurrency` at a time; returns (wall, ttfts, itls, output tokens, completed, failed)."""
    import openai

    ttfts, itls, out_tokens = [], [], []
    failed = 0
    queue = list(reversed(prompts))
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=api_key or "none", max_retries=0,
                                  timeout=timeout) as client:
        async def worker():
            nonlocal failed
            while queue:
                prompt = queue.pop()
                t0 = time.perf_counter()
                last, first, n = None, None, 0
                try:
                    stream = await client.completions.create(
                        model=model, prompt=prompt, max_tokens=new_tokens, temperature=0, stream=True,
                        stream_options={"include_usage": True}, extra_body=extra)
                    usage = None
                    async for chunk in stream:
                        now = time.perf_counter()
                        if chunk.usage is not None:
                            usage = chunk.usage.completion_tokens
                        if chunk.choices and (chunk.choices[0].text or chunk.choices[0].finish_reason is None):
                            if first is None:
                                first = now
                                ttfts.append(now - t0)
                            else:
                                itls.append(now - last)
                            last = now
                            n += 1
                    out_tokens.append(usage if usage is not None else n)
                except Exception as e:  # noqa: BLE001 - counted and reported
                    failed += 1
                    print(f"ratlm bench serve: request failed: {type(e).__name__}: {e}", file=sys.stderr)

        start = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - start
    return wall, ttfts, itls, sum(out_tokens), len(out_tokens), failed


PHASE = re.compile(r'^ratlm_engine_(seconds|tokens)_total\{phase="(prefill|decode)"\} ([0-9.e+-]+)$', re.M)


class Sampler:
    """Polls /metrics (running rows) and the server's peak RSS while a load runs, and reads the engine's
    time and tokens per phase before and after it."""

    def __init__(self, url, pid, api_key):
        self.url, self.pid, self.api_key = url, pid, api_key
        self.peak_running = None
        self._phases = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _metrics(self):
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            return httpx.get(f"{self.url}/metrics", headers=headers, timeout=2).text
        except Exception:  # noqa: BLE001 - a server without /metrics (transformers serve)
            return ""

    def _run(self):
        while not self._stop.wait(0.2):
            m = re.search(r"^ratlm_requests_running ([0-9.e+]+)$", self._metrics(), re.M)
            if m:
                self.peak_running = max(self.peak_running or 0, int(float(m.group(1))))

    def _snapshot(self):
        self._phases.append({(what, phase): float(v) for what, phase, v in PHASE.findall(self._metrics())})

    def rate(self, phase):
        """Tokens per second of engine time in `phase` during the load (None without the counters)."""
        if len(self._phases) != 2:
            return None
        a, b = self._phases
        try:
            seconds = b["seconds", phase] - a.get(("seconds", phase), 0.0)
            tokens = b["tokens", phase] - a.get(("tokens", phase), 0.0)
        except KeyError:
            return None
        return tokens / seconds if seconds > 0 and tokens > 0 else None

    def peak_rss(self):
        if self.pid is None:
            return None
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def __enter__(self):
        self._snapshot()
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)
        self._snapshot()


# ------------------------------------------------------------------------------------ servers
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc, timeout=300):
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before answering")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.25)
    raise RuntimeError(f"no answer from {url}/health after {timeout} s")


def model_config(variant, size, model_dir=None):
    """The config of the model a target serves: the preset's (what `save_variant` saves), or model_dir's."""
    from ..models import RATConfig
    from ..models.presets import preset_kwargs

    if model_dir:
        try:
            return RATConfig.from_pretrained(model_dir)
        except OSError as e:
            raise UserError(f"cannot read the model config in {model_dir}: {e}") from None
    return RATConfig(**preset_kwargs(f"{variant}-{size}"))


def budget_rows(config, cache_memory, context_len, dtype):
    """(rows, bytes per row): how many requests of `context_len` tokens (prompt + max_tokens) a server with
    this `cache_memory` admits at once. Its engine admits while reserved + need <= cache_memory, with
    need = decode_state_bytes(config, context_len, dtype) (`Engine.need`), the same for every such row."""
    from ..models.state_size import decode_state_bytes

    per_row = decode_state_bytes(config, context_len, dtype)
    return cache_memory // per_row, per_row


def resolve_levels(name, config, concurrencies, cache_memory, max_running, context_len, dtype):
    """`concurrencies` with each FILL replaced by the rows this target's server admits at once (with
    max_running, that), saying so on stderr. UserError if the budget does not hold one row."""
    if max_running:
        rows, how = max_running, f"--max-running {max_running}"
    else:
        rows, per_row = budget_rows(config, cache_memory, context_len, dtype)
        if rows < 1:
            raise UserError(f"--concurrency fill: {name}'s decode state for {context_len} tokens "
                            f"({per_row / 2**20:.3g} MiB) does not fit --cache-memory "
                            f"{cache_memory / 2**20:.3g} MiB; raise --cache-memory")
        how = f"{cache_memory / 2**20:.3g} MiB / {per_row / 2**20:.3g} MiB per row at {context_len} tokens"
    print(f"  {name}: {FILL} = {rows} clients ({how})", file=sys.stderr, flush=True)
    return [rows if c == FILL else c for c in concurrencies]


def save_variant(variant, size, folder, dtype="float32", seed=0):
    """A preset model with random weights + the byte tokenizer, saved to folder (what the server loads)."""
    import torch

    from ..data.tokenizer import byte_tokenizer
    from ..models import RATForCausalLM

    cfg = model_config(variant, size)
    torch.manual_seed(seed)
    RATForCausalLM(cfg).to(getattr(torch, dtype)).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


def start_ratlm(model_dir, name, port, cache_memory, max_running, max_model_len, threads, device, dtype, log):
    cmd = [sys.executable, "-m", "ratlm", "serve", model_dir, "--host", "127.0.0.1", "--port", str(port),
           "--served-model-name", name, "--max-model-len", str(max_model_len), "--max-waiting", "100000",
           "--grace", "1"]
    cmd += ["--max-running", str(max_running)] if max_running else ["--cache-memory", str(cache_memory)]
    if threads:
        cmd += ["--threads", str(threads)]
    if device:
        cmd += ["--device", device]
    if dtype:
        cmd += ["--dtype", dtype]
    return subprocess.Popen(cmd, stdout=log, stderr=log, env=_env())


# `transformers serve` for a ratlm model: the class must be reachable as transformers.RATForCausalLM (transformers
# 5.24 swaps its lazy module while importing the serving code, so it is set on every copy)
TRANSFORMERS_SERVE = "; ".join([
    "import sys, transformers, ratlm",
    "from transformers import AutoModelForDecision",
    "from transformers.cli.serve import Serve",
    "import transformers.cli.serving.model_manager as mm",
    "[setattr(m, 'RATForCausalLM', ratlm.RATForCausalLM) for m in (transformers, sys.modules['transformers'], "
    "mm.transformers)]",
    "Serve(force_model=sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]), device=sys.argv[3], dtype=sys.argv[4], "
    "log_level='warning')"])


def start_transformers(model_dir, port, threads, device, dtype, log):
    env = _env()
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, "-c", TRANSFORMERS_SERVE, model_dir, str(port), device or "cpu",
                             dtype or "float32"], stdout=log, stderr=log, env=env)


def _env():
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")  # this ratlm, not another install
    env["HF_HUB_OFFLINE"] = "1"
    return env


def stop(proc):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------------ the run
def run_target(label, url, model_name, proc, prompts_for, new_tokens, concurrencies, requests, api_key, extra,
               timeout, progress=None, warmup=0):
    results = []
    if warmup:  # the first requests of a fresh server run slower (allocations, code paths seen once)
        asyncio.run(drive(url, model_name, prompts_for(warmup), new_tokens, 1, api_key, extra, timeout))
    for c in concurrencies:
        n = requests or max(2 * c, 4)
        prompts = prompts_for(n)
        with Sampler(url, proc.pid if proc is not None else None, api_key) as sampler:
            wall, ttfts, itls, out_tok, done, failed = asyncio.run(
                drive(url, model_name, prompts, new_tokens, c, api_key, extra, timeout))
        results.append(ServeResult(
            target=label, concurrency=c, requests=n, completed=done, failed=failed, wall_s=wall,
            requests_per_s=done / wall, output_tokens_per_s=out_tok / wall,
            ttft_p50_s=pct(ttfts, 50), ttft_p99_s=pct(ttfts, 99), itl_p50_s=pct(itls, 50), itl_p99_s=pct(itls, 99),
            peak_running=sampler.peak_running, peak_rss_bytes=sampler.peak_rss(),
            prompt_chars=[len(p) for p in prompts], new_tokens=new_tokens,
            decode_tokens_per_s=sampler.rate("decode"), prefill_tokens_per_s=sampler.rate("prefill")))
        if progress:
            progress(results[-1])
    return results


def generate_baseline(label, folder, prompts, new_tokens, device, dtype, progress=None):
    """The same model and prompts without a server: each prompt alone through the cached decode loop that
    `ratlm bench generate` times (greedy, `new_tokens` each), in this process. The one-client reference for
    the serving path: time to first token and the time between tokens."""
    import torch

    from ..runtime import load

    model, tok, _ = load(folder, device, dtype)
    ttfts, itls = [], []
    start = time.perf_counter()
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([tok(prompt, add_special_tokens=False).input_ids], device=model.device)
            t0 = time.perf_counter()
            cache = model.make_cache(1, max_length=ids.shape[1] + new_tokens)
            logits = model(ids, cache=cache, use_cache=True, logits_to_keep=1).logits
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            nxt.tolist()  # the token as a client would get it
            last = time.perf_counter()
            ttfts.append(last - t0)
            for _ in range(new_tokens - 1):
                nxt = model(nxt, cache=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)
                nxt.tolist()
                now = time.perf_counter()
                itls.append(now - last)
                last = now
    wall = time.perf_counter() - start
    r = ServeResult(target=f"{label} (generate)", concurrency=1, requests=len(prompts), completed=len(prompts),
                    failed=0, wall_s=wall, requests_per_s=len(prompts) / wall,
                    output_tokens_per_s=len(prompts) * new_tokens / wall, ttft_p50_s=pct(ttfts, 50),
                    ttft_p99_s=pct(ttfts, 99), itl_p50_s=pct(itls, 50), itl_p99_s=pct(itls, 99), peak_running=1,
                    peak_rss_bytes=None, prompt_chars=[len(p) for p in prompts], new_tokens=new_tokens,
                    note="no server: each prompt alone through the cached decode loop, in the bench process",
                    baseline_of=label)
    if progress:
        progress(r)
    return r


def add_ratios(results):
    """Ratios against attention level by level: each target's i-th load against attention's i-th (the same
    number of clients, or with `fill` each server's own); none for `generate_baseline` rows."""
    served = [r for r in results if not r.baseline_of]
    att = [r for r in served if r.target == "attention"]
    for t in dict.fromkeys(r.target for r in served):
        for r, b in zip([r for r in served if r.target == t], att):
            r.ratio_vs_attention = r.output_tokens_per_s / b.output_tokens_per_s
            if r.decode_tokens_per_s and b.decode_tokens_per_s:
                r.decode_ratio_vs_attention = r.decode_tokens_per_s / b.decode_tokens_per_s


def one_client(results):
    """Lines comparing each served target at one client with its `generate_baseline` row."""
    lines = []
    for b in (r for r in results if r.baseline_of):
        served = next((r for r in results if r.target == b.baseline_of and r.concurrency == 1), None)
        if served is None or None in (served.ttft_p50_s, served.itl_p50_s, b.ttft_p50_s, b.itl_p50_s):
            continue
        lines.append(f"{b.baseline_of}, one client: first token {1e3 * served.ttft_p50_s:.0f} ms served vs "
                     f"{1e3 * b.ttft_p50_s:.0f} ms without a server ({served.ttft_p50_s / b.ttft_p50_s - 1:+.0%}); "
                     f"between tokens {1e3 * served.itl_p50_s:.1f} ms vs {1e3 * b.itl_p50_s:.1f} ms "
                     f"({served.itl_p50_s / b.itl_p50_s - 1:+.0%}) (p50s)")
    return lines


def table(results):
    w = max([16] + [len(r.target) + 1 for r in results])
    head = (f"{'target':<{w}}{'conc':>5}{'done':>6}{'fail':>5}{'req/s':>8}{'out tok/s':>11}{'TTFT p50':>10}"
            f"{'TTFT p99':>10}{'ITL p50':>9}{'ITL p99':>9}{'rows':>6}{'peak RSS':>10}{'vs attn':>9}"
            f"{'decode tok/s':>13}{'vs attn':>9}")
    lines = [head]

    def ms(x):
        return f"{1e3 * x:.0f}ms" if x is not None else "-"

    for r in results:
        rss = f"{r.peak_rss_bytes / 2**20:.0f}MiB" if r.peak_rss_bytes else "-"
        ratio = f"{r.ratio_vs_attention:.2f}x" if r.ratio_vs_attention else "-"
        dec = f"{r.decode_tokens_per_s:.1f}" if r.decode_tokens_per_s else "-"
        dec_ratio = f"{r.decode_ratio_vs_attention:.2f}x" if r.decode_ratio_vs_attention else "-"
        lines.append(f"{r.target:<{w}}{r.concurrency:>5}{r.completed:>6}{r.failed:>5}{r.requests_per_s:>8.2f}"
                     f"{r.output_tokens_per_s:>11.1f}{ms(r.ttft_p50_s):>10}{ms(r.ttft_p99_s):>10}"
                     f"{ms(r.itl_p50_s):>9}{ms(r.itl_p99_s):>9}{r.peak_running or '-':>6}{rss:>10}{ratio:>9}"
                     f"{dec:>13}{dec_ratio:>9}")
    return "\n".join(lines)


def plot(results, png, meta):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    targets = list(dict.fromkeys(r.target for r in results))
    if len(results) == len(targets):  # one load per target: bars (lines would be single dots)
        _bars(axes, targets, results)
    else:
        for target in targets:
            rs = [r for r in results if r.target == target]
            xs = [r.concurrency for r in rs]
            axes[0].plot(xs, [r.output_tokens_per_s for r in rs], marker="o", label=target)
            axes[1].plot(xs, [1e3 * (r.ttft_p50_s or float("nan")) for r in rs], marker="o", label=target)
        for ax in axes:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients")
            ax.legend(fontsize=8)
    axes[0].set_ylabel("output tokens / s")
    axes[0].set_title("throughput")
    axes[1].set_ylabel("time to first token, p50 (ms)")
    axes[1].set_yscale("log")
    axes[1].set_title("latency")
    fig.suptitle(f"ratlm bench serve: prompts {meta['prompt_len']} chars, {meta['new_tokens']} new tokens, "
                 f"{meta.get('limit', '')}, {meta['device_name']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def _bars(axes, targets, results):
    """One load per target (a single concurrency, or `fill`: each labelled with its own client count): output
    tokens/s over the wall time and, where the server reported them, the decode steps' tokens/s, side by side
    per target; time to first token per target."""
    xs = range(len(targets))
    by = {r.target: r for r in results}
    decode = any(by[t].decode_tokens_per_s for t in targets)
    w = 0.4 if decode else 0.8
    axes[0].bar([x - w / 2 if decode else x for x in xs], [by[t].output_tokens_per_s for t in targets], w,
                label="end to end")
    if decode:
        axes[0].bar([x + w / 2 for x in xs], [by[t].decode_tokens_per_s or 0 for t in targets], w,
                    label="decode steps alone")
        axes[0].legend(fontsize=8)
    axes[1].bar(list(xs), [1e3 * (by[t].ttft_p50_s or float("nan")) for t in targets], 0.6)
    for ax in axes:
        ax.set_xticks(list(xs), [f"{t}\n({by[t].concurrency} clients)" for t in targets], fontsize=8)


def run(targets, size, url, model_dir, prompt_len, new_tokens, concurrencies, requests, cache_memory, max_running,
        max_model_len, threads, device, dtype, corpus, api_key, with_transformers, timeout, log_path,
        progress=None, warmup=0, baseline=False):
    """targets: variant names to serve one after another (ignored with url or model_dir); concurrencies:
    client counts and FILL (not with url; resolved per served model by `resolve_levels`); warmup: untimed
    requests sent to each target, one at a time, before its timed loads; baseline: after each served model,
    the same model without a server (`generate_baseline`, as many prompts as the first load's requests)."""
    plan = [(model_dir, os.path.basename(os.path.normpath(model_dir)))] if model_dir else \
        [(None, v) for v in targets]
    served = [name for _, name in plan] + (["transformers-rat"] if with_transformers else [])
    levels = {name: list(concurrencies) for name in served}
    if FILL in concurrencies and not url:  # resolved before any server starts
        from ..runtime import pick_device, pick_dtype

        context, served_dtype = prompt_len[1] + new_tokens, pick_dtype(dtype, pick_device(device))
        for name in served:  # transformers serve runs the RAT model: the same load as its ratlm server
            cfg = model_config("rat" if name == "transformers-rat" else name, size, model_dir)
            levels[name] = resolve_levels(name, cfg, concurrencies, cache_memory, max_running, context, served_dtype)
    text = corpus_text(corpus, need=max(1 << 20, 4 * prompt_len[1]))
    seed = iter(range(10**6))

    def prompts_for(n):
        return make_prompts(text, prompt_len, n, seed=next(seed))

    extra = {"ignore_eos": True}
    results, notes = [], []
    if url:
        return run_target(url, url, targets[0] if targets else "default", None, prompts_for, new_tokens,
                          concurrencies, requests, api_key, extra, timeout, progress, warmup), notes
    with tempfile.TemporaryDirectory(prefix="ratlm-bench-serve-") as tmp, open(log_path, "a") as log:
        for folder, name in plan:
            folder = folder or save_variant(name, size, os.path.join(tmp, name), dtype or "float32")
            port = free_port()
            proc = start_ratlm(folder, name, port, cache_memory, max_running, max_model_len, threads, device,
                               dtype, log)
            try:
                wait_ready(f"http://127.0.0.1:{port}", proc)
                results += run_target(name, f"http://127.0.0.1:{port}", name, proc, prompts_for, new_tokens,
                                      levels[name], requests, None, extra, timeout, progress, warmup)
            finally:
                stop(proc)
            if baseline:  # after the server has stopped, so that the two never share the cores
                n = requests or max(2 * levels[name][0], 4)
                results.append(generate_baseline(name, folder, prompts_for(n), new_tokens, device, dtype, progress))
        if with_transformers:
            folder = model_dir or os.path.join(tmp, "rat")
            if not os.path.isdir(folder):
                save_variant("rat", size, folder, dtype or "float32")
            port = free_port()
            proc = start_transformers(folder, port, threads, device, dtype, log)
            try:
                wait_transformers(f"http://127.0.0.1:{port}", proc)
                rs = run_target("transformers-rat", f"http://127.0.0.1:{port}", folder, proc, prompts_for,
                                new_tokens, levels["transformers-rat"], requests, None, {}, timeout, progress,
                                warmup)
                for r in rs:
                    r.note = "transformers serve (no ignore_eos: output may stop early at EOS)"
                results += rs
            except RuntimeError as e:
                notes.append(f"transformers serve could not run here: {e}")
            finally:
                stop(proc)
    return results, notes


def wait_transformers(url, proc, timeout=300):
    """transformers serve answers /v1/models once it is up (its /health may not exist)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"it exited with code {proc.returncode} (see the log)")
        for path in ("/health", "/v1/models"):
            try:
                if httpx.get(url + path, timeout=2).status_code == 200:
                    return
            except Exception:  # noqa: BLE001
                pass
        time.sleep(0.25)
    raise RuntimeError(f"no answer after {timeout} s")


def summary_ratios(results, field="ratio_vs_attention"):
    """Mean over concurrencies of each target's ratio against attention (output tokens/s, or with
    field="decode_ratio_vs_attention" the decode steps' tokens/s)."""
    out = {}
    for t in dict.fromkeys(r.target for r in results):
        rs = [getattr(r, field) for r in results if r.target == t and getattr(r, field)]
        if rs:
            out[t] = statistics.mean(rs)
    return out
