"""Prometheus metrics of a server (its own registry, so several servers can live in one process)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.running = Gauge("ratlm_requests_running", "requests admitted (prefilling or decoding)", registry=r)
        self.waiting = Gauge("ratlm_requests_waiting", "requests waiting for admission", registry=r)
        self.tokens = Counter("ratlm_generated_tokens", "output tokens generated", registry=r)
        self.prompt_tokens = Counter("ratlm_prompt_tokens", "prompt tokens of finished requests", registry=r)
        self.requests = Counter("ratlm_requests_finished", "finished requests by reason", ["finish_reason"],
                                registry=r)
        self.cache_bytes = Gauge("ratlm_cache_bytes_in_use",
                                 "decode-state bytes reserved by admitted requests (their state at prompt + "
                                 "max_tokens)", registry=r)
        self.cache_budget = Gauge("ratlm_cache_bytes_budget", "decode-state budget (--cache-memory; 0: none, "
                                  "admission by --max-running)", registry=r)
        self.ttft = Histogram("ratlm_time_to_first_token_seconds", "arrival to first output token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.step_seconds = Counter("ratlm_engine_seconds", "engine time spent prefilling prompts and in decode "
                                    "steps", ["phase"], registry=r)
        self.step_tokens = Counter("ratlm_engine_tokens", "tokens processed: prompt tokens prefilled, output "
                                   "tokens of decode steps (a request's first token comes from its prefill)",
                                   ["phase"], registry=r)
        self.itl = Histogram("ratlm_inter_token_latency_seconds", "time between a request's output tokens",
                             buckets=LATENCY_BUCKETS, registry=r)

    # the engine's hooks
    def set_state(self, running: int, waiting: int, cache_bytes: int, budget: int | None) -> None:
        self.running.set(running)
        self.waiting.set(waiting)
        self.cache_bytes.set(cache_bytes)
        self.cache_budget.set(budget or 0)

    def observe_ttft(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def observe_itl(self, seconds: float) -> None:
        self.itl.observe(seconds)

    def add_phase(self, phase: str, seconds: float, tokens: int) -> None:
        """`phase` ("prefill" or "decode") took `seconds` of one engine step for `tokens` tokens."""
        self.step_seconds.labels(phase).inc(seconds)
        self.step_tokens.labels(phase).inc(tokens)

    def add_tokens(self, n: int) -> None:
        self.tokens.inc(n)

    def finished(self, reason: str, prompt_tokens: int) -> None:
        self.requests.labels(reason).inc()
        self.prompt_tokens.inc(prompt_tokens)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
