"""The serving engine: continuous batching over every mixer's decode state, usable without HTTP.

    engine = Engine(model, tokenizer, cache_memory=1 << 30)
    [req] = engine.generate([tokenizer("Hello").input_ids], SamplingParams(max_tokens=32, temperature=0))
    req.output_ids, req.text, req.finish_reason

Each `step()`:
  1. cancelled requests leave (waiting, prefilling or running), their state freed;
  2. waiting requests are admitted in arrival order while their decode state fits: each reserves
     the bytes its row's state reaches at prompt + max_tokens tokens (ratlm.models.decode_state_bytes),
     against `cache_memory`, or counts against `max_running`;
  3. admitted requests are prefilled in chunks, at most `prefill_chunk` prompt tokens per step over
     all of them, each into its own one-row cache; a finished prefill gives the first token and the
     row joins the running batch (`RATCache.append_rows`);
  4. one decode step runs every running row as one batch, each at its own position (the mixers'
     per-row decode paths); finished, stopped or cancelled rows leave at once (`keep_rows`).

A background thread (`start()` / `shutdown()`) runs steps while there is work; `submit` and
`cancel` are thread-safe. Events go to each request's `sink(request, event)` from that thread.
"""
from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..models.state_size import decode_state_bytes
from .sampling import SamplingParams, choose


class QueueFull(Exception):
    """The waiting queue is full: retry later."""


class Draining(Exception):
    """The engine is shutting down and admits nothing new."""


@dataclass
class Event:
    """What one step produced for one request (sent to its sink)."""
    token_ids: list[int]
    text: str  # new text, safe to show (stop strings held back until they are ruled out)
    logprobs: list[dict] | None = None  # per token: {"token_id", "logprob", "top": [(id, logprob), ...]}
    finish_reason: str | None = None  # "stop", "length", "cancelled", "error" on the last event


@dataclass(eq=False)
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    sink: Callable[[Request, Event], None] | None = None
    id: int = 0
    output_ids: list[int] = field(default_factory=list)
    text: str = ""  # output text so far (final once done)
    finish_reason: str | None = None
    error: str | None = None
    arrival: float = 0.0
    first_token_time: float | None = None
    last_token_time: float | None = None
    done: threading.Event = field(default_factory=threading.Event)
    # engine-side state
    reserved: int = 0
    prefilled: int = 0
    cache: object = None
    generator: torch.Generator | None = None
    counts: torch.Tensor | None = None
    prompt_tensor: torch.Tensor | None = None
    cancelled: bool = False
    _detok: object = None
    _sent: int = 0  # characters of `text` already sent

    @property
    def num_prompt_tokens(self):
        return len(self.prompt_ids)


class Detokenizer:
    """Incremental decoding: only complete characters, with a context of a few tokens so that
    tokenizers whose pieces depend on their neighbours (leading spaces) decode as a whole would."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def _decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=True)

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix:self.read])
        now = self._decode(self.ids[self.prefix:])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return now[len(before):]
        return ""

    def flush(self) -> str:
        before = self._decode(self.ids[self.prefix:self.read])
        now = self._decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return now[len(before):] if len(now) > len(before) else ""


class Engine:
    def __init__(self, model, tokenizer, cache_memory: int | None = 4 << 30, max_running: int | None = None,
                 max_waiting: int = 256, prefill_chunk: int = 512, max_model_len: int | None = None,
                 metrics=None):
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be >= 1, got {prefill_chunk}")
        if max_running is not None and max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {max_running}")
        if cache_memory is not None and cache_memory < 1:
            raise ValueError(f"cache_memory must be > 0 bytes, got {cache_memory}")
        self.model = model.eval()
        self.tok = tokenizer
        self.device = model.device
        self.dtype = model.dtype
        self.cache_memory = None if max_running is not None else cache_memory
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.prefill_chunk = prefill_chunk
        cfg = model.config
        self.max_model_len = max_model_len or getattr(cfg, "max_position_embeddings", None) or cfg.train_length
        self.vocab_size = cfg.vocab_size
        self.eos_ids = self._eos_ids(model, tokenizer)
        self.metrics = metrics
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self.waiting: collections.deque[Request] = collections.deque()
        self.prefilling: list[Request] = []
        self.rows: list[Request] = []  # running rows, in cache row order
        self.cache = None  # RATCache of the running rows
        self.reserved = 0
        self.draining = False
        self.generated_tokens = 0
        self.steps = 0
        # time inside steps and tokens processed, by phase: "prefill" (prompt tokens, with each request's
        # first token) and "decode" (one output token per running row per step)
        self.phase_seconds = {"prefill": 0.0, "decode": 0.0}
        self.phase_tokens = {"prefill": 0, "decode": 0}
        self._thread = None
        self._stop = False
        self._cancel_pending = False
        self._report()

    @staticmethod
    def _eos_ids(model, tok):
        eos = model.generation_config.eos_token_id
        if eos is None and tok is not None and tok.eos_token_id is not None:
            eos = tok.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        return {e for e in eos if e < model.config.vocab_size}

    # ------------------------------------------------------------------------------------ accounting
    def state_bytes(self, n_tokens: int) -> int:
        """Decode-state bytes of one row after n_tokens tokens."""
        return decode_state_bytes(self.model.config, n_tokens, self.dtype)

    def need(self, prompt_len: int, max_tokens: int) -> int:
        return self.state_bytes(prompt_len + max_tokens)

    def check_request(self, prompt_len: int, max_tokens: int) -> None:
        """ValueError if this request can never run (too long for the model or the memory budget)."""
        if prompt_len < 1:
            raise ValueError("the prompt is empty; give at least one token")
        if prompt_len + max_tokens > self.max_model_len:
            raise ValueError(f"this model's maximum context length is {self.max_model_len} tokens, but "
                             f"{prompt_len + max_tokens} were asked for ({prompt_len} in the prompt, {max_tokens} "
                             "to generate); shorten the prompt or lower max_tokens")
        if self.cache_memory is not None and self.need(prompt_len, max_tokens) > self.cache_memory:
            raise ValueError(f"the decode state of this request ({self.need(prompt_len, max_tokens)} bytes for "
                             f"{prompt_len + max_tokens} tokens) exceeds the server's cache memory "
                             f"({self.cache_memory} bytes); shorten the prompt or lower max_tokens")

    @property
    def num_running(self):
        return len(self.rows) + len(self.prefilling)

    @property
    def num_waiting(self):
        return len(self.waiting)

    def cache_bytes(self) -> int:
        """Bytes of decode state the running rows hold now (their own tokens, not the reservation)."""
        return sum(self.state_bytes(r.num_prompt_tokens + len(r.output_ids) - 1) for r in self.rows) + sum(
            self.state_bytes(r.prefilled) for r in self.prefilling)

    def _report(self):
        if self.metrics is not None:
            self.metrics.set_state(self.num_running, self.num_waiting, self.reserved, self.cache_memory)

    # ------------------------------------------------------------------------------------ client side
    def submit(self, prompt_ids: list[int], params: SamplingParams, sink=None) -> Request:
        """Queue a request (thread-safe). ValueError: it can never run; QueueFull; Draining."""
        params.check()
        prompt_ids = [int(t) for t in prompt_ids]
        if any(t < 0 or t >= self.vocab_size for t in prompt_ids):
            raise ValueError(f"prompt token ids must be in [0, {self.vocab_size})")
        self.check_request(len(prompt_ids), params.max_tokens)
        req = Request(prompt_ids, params, sink, id=next(self._ids), arrival=time.perf_counter())
        with self._wake:
            if self.draining:
                raise Draining("the server is shutting down")
            if len(self.waiting) >= self.max_waiting:
                raise QueueFull(f"the waiting queue is full ({self.max_waiting} requests)")
            self.waiting.append(req)
            self._report()
            self._wake.notify()
        return req

    def cancel(self, req: Request) -> None:
        """Ask for `req` to leave at the next step (thread-safe; no-op once it is done)."""
        with self._wake:
            if not req.done.is_set():
                req.cancelled = True
                self._cancel_pending = True
                self._wake.notify()

    def cancel_all(self) -> None:
        with self._wake:
            for r in list(self.waiting) + self.prefilling + self.rows:
                r.cancelled = True
            self._cancel_pending = True
            self._wake.notify()

    def has_work(self) -> bool:
        return bool(self.waiting or self.prefilling or self.rows)

    # ------------------------------------------------------------------------------------ the step
    @torch.inference_mode()
    def step(self) -> bool:
        """One engine step; False if there was nothing to do."""
        with self._lock:
            if self._cancel_pending:
                self._drop_cancelled()
            admitted = self._admit()
        if not (self.prefilling or self.rows):
            self._report()
            return bool(admitted)
        self.steps += 1
        t0 = time.perf_counter()
        joined, n_prompt = self._prefill()
        if joined:
            self._join(joined)
        t1 = time.perf_counter()
        n_rows = len(self.rows)
        if n_rows:
            self._decode()
        t2 = time.perf_counter()
        self._phase("prefill", t1 - t0, n_prompt)
        self._phase("decode", t2 - t1, n_rows)
        self._report()
        return True

    def _phase(self, phase, seconds, tokens):
        if tokens:
            self.phase_seconds[phase] += seconds
            self.phase_tokens[phase] += tokens
            if self.metrics is not None:
                self.metrics.add_phase(phase, seconds, tokens)

    def _admit(self):
        admitted = []
        while self.waiting:
            req = self.waiting[0]
            need = self.need(req.num_prompt_tokens, req.params.max_tokens)
            if self.max_running is not None:
                if self.num_running >= self.max_running:
                    break
            elif self.reserved + need > self.cache_memory:
                break
            self.waiting.popleft()
            req.reserved = need
            self.reserved += need
            req.cache = self.model.make_cache(1)
            p = req.params
            if p.seed is not None:
                req.generator = torch.Generator(self.device).manual_seed(p.seed)
            elif not p.greedy:
                req.generator = torch.Generator(self.device).manual_seed(
                    int(torch.randint(0, 2**62, (1,))))
            if p.presence_penalty or p.frequency_penalty or p.repetition_penalty != 1.0:
                req.counts = torch.zeros(self.vocab_size, dtype=torch.long, device=self.device)
            req.prompt_tensor = torch.tensor(req.prompt_ids, device=self.device)
            req._detok = Detokenizer(self.tok)
            self.prefilling.append(req)
            admitted.append(req)
        return admitted

    def _drop_cancelled(self):
        self._cancel_pending = False
        for r in [r for r in self.waiting if r.cancelled]:
            self.waiting.remove(r)
            self._finish(r, "cancelled")
        for r in [r for r in self.prefilling if r.cancelled]:
            self.prefilling.remove(r)
            self._finish(r, "cancelled")
        gone = [i for i, r in enumerate(self.rows) if r.cancelled]
        if gone:
            for i in gone:
                self._finish(self.rows[i], "cancelled")
            self._keep([i for i, r in enumerate(self.rows) if not r.cancelled])

    def _keep(self, keep):
        """Keep running rows `keep` (indices, in order); the others' state is dropped."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.cache = None
        else:
            self.cache.keep_rows(torch.tensor(keep, dtype=torch.long, device=self.device))

    def _prefill(self):
        """Prefill up to `prefill_chunk` prompt tokens; returns (requests whose prefill ended and which
        go on to decode, prompt tokens processed)."""
        budget = self.prefill_chunk
        joined = []
        for req in list(self.prefilling):
            if budget <= 0:
                break
            n = min(budget, req.num_prompt_tokens - req.prefilled)
            ids = req.prompt_tensor[req.prefilled:req.prefilled + n][None]
            try:
                out = self.model(input_ids=ids, cache=req.cache, use_cache=True, logits_to_keep=1)
            except Exception as e:  # noqa: BLE001 - one request's failure must not stop the others
                self.prefilling.remove(req)
                self._finish(req, "error", error=f"{type(e).__name__}: {e}")
                continue
            budget -= n
            req.prefilled += n
            if req.prefilled == req.num_prompt_tokens:
                self.prefilling.remove(req)
                token = self._choose_one(req, out.logits[0, -1].float())
                if not self._emit(req, token, out.logits[0, -1]):
                    joined.append(req)
        return joined, self.prefill_chunk - budget

    def _join(self, joined):
        for req in joined:
            if self.cache is None:
                self.cache = req.cache
            else:
                self.cache.append_rows(req.cache)
            req.cache = None
            self.rows.append(req)

    def _decode(self):
        ids = torch.tensor([[r.output_ids[-1]] for r in self.rows], device=self.device)
        try:
            logits = self.model(input_ids=ids, cache=self.cache, use_cache=True).logits[:, -1]
        except Exception as e:  # noqa: BLE001
            for r in self.rows:
                self._finish(r, "error", error=f"{type(e).__name__}: {e}")
            self.rows, self.cache = [], None
            return
        logits32 = logits.float()
        plain = [i for i, r in enumerate(self.rows) if r.params.plain]
        tokens = [0] * len(self.rows)
        if plain:
            best = logits32[plain].argmax(-1).tolist()
            for i, t in zip(plain, best):
                tokens[i] = t
        for i, r in enumerate(self.rows):
            if not r.params.plain:
                tokens[i] = self._choose_one(r, logits32[i])
        keep = []
        for i, r in enumerate(self.rows):
            if self._emit(r, tokens[i], logits32[i]):
                continue
            if r.cancelled:  # cancelled while this step ran
                self._finish(r, "cancelled")
            else:
                keep.append(i)
        self._keep(keep)

    def _choose_one(self, req, logits32):
        return choose(logits32, req.params, req.prompt_tensor, req.counts, req.generator)

    # ------------------------------------------------------------------------------------ output
    def _logprobs(self, req, token, logits):
        lp = torch.log_softmax(logits.float(), -1)
        n = req.params.logprobs
        top = []
        if n:
            v, i = torch.topk(lp, n)
            top = list(zip(i.tolist(), v.tolist()))
        return {"token_id": token, "logprob": float(lp[token]), "top": top}

    def _emit(self, req, token, logits) -> bool:
        """Record one new token of `req` and tell its sink; True if the request is finished."""
        now = time.perf_counter()
        if req.first_token_time is None:
            req.first_token_time = now
            if self.metrics is not None:
                self.metrics.observe_ttft(now - req.arrival)
        elif self.metrics is not None:
            self.metrics.observe_itl(now - req.last_token_time)
        req.last_token_time = now
        req.output_ids.append(token)
        self.generated_tokens += 1
        if self.metrics is not None:
            self.metrics.add_tokens(1)
        if req.counts is not None:
            req.counts[token] += 1
        lp = [self._logprobs(req, token, logits)] if req.params.logprobs is not None else None
        finish = None
        if token in self.eos_ids and not req.params.ignore_eos:
            finish = "stop"
        else:
            req.text += req._detok.add(token)
        if finish is None and len(req.output_ids) >= req.params.max_tokens:
            finish = "length"
        if finish is not None:
            req.text += req._detok.flush()
        stops = req.params.stop
        if stops:
            hit = self._find_stop(req.text, stops, req._sent)
            if hit is not None:
                req.text, finish = req.text[:hit], "stop"
        if finish is None:
            hold = max((len(s) for s in stops), default=1) - 1
            upto = max(req._sent, len(req.text) - hold)
        else:
            upto = len(req.text)
        delta, req._sent = req.text[req._sent:upto], upto
        if finish is not None:
            self._finish(req, finish, Event([token], delta, lp, finish))
            return True
        if req.sink is not None:
            req.sink(req, Event([token], delta, lp))
        return False

    @staticmethod
    def _find_stop(text, stops, sent):
        start = max(0, sent - max(len(s) for s in stops))
        hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
        return min(hits) if hits else None

    def _finish(self, req, reason, event=None, error=None):
        req.finish_reason = reason
        req.error = error
        self.reserved -= req.reserved
        req.reserved = 0
        req.cache = None
        if event is None:
            event = Event([], req.text[req._sent:] if reason not in ("cancelled", "error") else "", None, reason)
        if req.sink is not None:
            try:
                req.sink(req, event)
            except Exception:  # noqa: BLE001 - a broken sink must not break the engine
                pass
        if self.metrics is not None:
            self.metrics.finished(reason, req.num_prompt_tokens)
        req.done.set()

    # ------------------------------------------------------------------------------------ driving
    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]) -> list[Request]:
        """Run `prompts` to completion on the calling thread (no background thread must be running)."""
        if self._thread is not None:
            raise RuntimeError("the engine runs in its background thread; use submit() and wait on req.done")
        ps = params if isinstance(params, list) else [params] * len(prompts)
        reqs = [self.submit(p, sp) for p, sp in zip(prompts, ps)]
        while not all(r.done.is_set() for r in reqs):
            self.step()
        return reqs

    def start(self) -> None:
        """Run steps in a background thread while there is work."""
        if self._thread is not None:
            return
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="ratlm-engine", daemon=True)
        self._thread.start()

    def _loop(self):
        while True:
            with self._wake:
                while not self._stop and not self.has_work():
                    self._wake.wait(0.5)
                if self._stop:
                    break
            try:
                self.step()
            except Exception as e:  # noqa: BLE001 - fail what is in flight, keep serving
                with self._lock:
                    for r in self.prefilling + self.rows:
                        self._finish(r, "error", error=f"{type(e).__name__}: {e}")
                    self.prefilling, self.rows, self.cache = [], [], None
                    self._report()

    def drain(self) -> None:
        """Admit nothing new from now on (requests already queued still run)."""
        with self._wake:
            self.draining = True

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the background thread (after cancelling what is left)."""
        self.cancel_all()
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._lock:  # anything left unfinished is cancelled
            for r in list(self.waiting) + self.prefilling + self.rows:
                self._finish(r, "cancelled")
            self.waiting.clear()
            self.prefilling, self.rows, self.cache = [], [], None
