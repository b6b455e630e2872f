"""Per-request sampling parameters and the per-row token choice of one engine step.

Greedy rows (temperature 0) take the argmax of the model's logits, as `generate` does. Other rows
apply, in this order: repetition penalty (HF's: over prompt and output tokens), presence and
frequency penalties (OpenAI's: over output tokens), temperature, top-k, top-p, then draw with the
request's own generator (seeded when `seed` is given). Log-probabilities are those of the model's
distribution (log-softmax of the raw logits), as vLLM reports them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

MAX_LOGPROBS = 20


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: off
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None  # None: none; n >= 0: the chosen token's and the n most likely
    ignore_eos: bool = False

    def check(self) -> None:
        """Raise ValueError (one line, naming the field) for a value out of range."""
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if self.temperature < 0 or self.temperature > 100:
            raise ValueError(f"temperature must be in [0, 100], got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < -1:
            raise ValueError(f"top_k must be -1, 0 (off) or a positive integer, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise ValueError(f"{name} must be in [-2, 2], got {getattr(self, name)}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop must be a non-empty string or a list of non-empty strings")
        if len(self.stop) > 4:
            raise ValueError(f"at most 4 stop strings, got {len(self.stop)}")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise ValueError(f"logprobs must be between 0 and {MAX_LOGPROBS}, got {self.logprobs}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def plain(self) -> bool:
        """Greedy with nothing that changes the logits: a batched argmax does it."""
        return (self.greedy and self.repetition_penalty == 1.0 and self.presence_penalty == 0
                and self.frequency_penalty == 0)


def process_logits(logits: torch.Tensor, params: SamplingParams, prompt_ids: torch.Tensor,
                   output_counts: torch.Tensor | None) -> torch.Tensor:
    """Penalties, temperature, top-k and top-p applied to one row's float32 logits (V,)."""
    x = logits
    if params.repetition_penalty != 1.0:
        seen = prompt_ids
        if output_counts is not None:
            seen = torch.cat([seen, output_counts.nonzero()[:, 0]])
        vals = x[seen]
        x = x.clone()
        x[seen] = torch.where(vals > 0, vals / params.repetition_penalty, vals * params.repetition_penalty)
    if output_counts is not None and (params.presence_penalty or params.frequency_penalty):
        c = output_counts.to(x.dtype)
        x = x - params.presence_penalty * (c > 0).to(x.dtype) - params.frequency_penalty * c
    if params.greedy:
        return x
    x = x / params.temperature
    if params.top_k > 0 and params.top_k < x.shape[-1]:
        kth = torch.topk(x, params.top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_x, order = torch.sort(x, descending=True)
        cum = sorted_x.softmax(-1).cumsum(-1)
        drop = cum - sorted_x.softmax(-1) >= params.top_p  # mass before this token already reaches p
        drop[0] = False
        x = x.clone()
        x[order[drop]] = float("-inf")
    return x


def choose(logits: torch.Tensor, params: SamplingParams, prompt_ids: torch.Tensor,
           output_counts: torch.Tensor | None, generator: torch.Generator | None) -> int:
    """The next token of one row."""
    x = process_logits(logits, params, prompt_ids, output_counts)
    if params.greedy:
        return int(x.argmax())
    probs = x.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))
