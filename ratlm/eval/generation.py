"""Greedy, batched generation for scored answers (LongBench, `ratlm eval generate`).

Prompts are encoded with the tokenizer's special tokens (e.g. BOS), as LongBench and ratlm's SFT do;
those longer than the prompt budget are cut in the middle at the token level, as LongBench does: the
first and the last int(budget / 2) tokens are kept. Prompts go through `model.generate` in batches,
padded on the left, greedy, each stopping at EOS (or at an extra stop token, e.g. the newline for
LongBench's samsum); the answer is the text of the new tokens up to and including the stop token,
special tokens dropped. `greedy_naive` is the obviously-correct reference: one prompt, no padding, no
cache, the argmax of a full forward pass per new token.

`evaluate_generation(model, tokenizer, records, metric)` scores {"prompt", "response"} records with one
of the LongBench metrics (qa_f1, rouge, code_sim) or exact match.
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import UserError
from .common import encode, pad_left


def encode_prompt(tok, text: str) -> list:
    """Prompt ids with the tokenizer's own special tokens (e.g. BOS), as LongBench's pred.py and ratlm's
    SFT training encode prompts."""
    return tok(text, add_special_tokens=True)["input_ids"]


def truncate_middle(ids: list, budget: int) -> list:
    """ids cut to the first and last int(budget / 2) tokens when longer than budget."""
    if budget < 2:
        raise UserError(f"the prompt budget must be at least 2 tokens, got {budget}")
    if len(ids) <= budget:
        return list(ids)
    half = budget // 2
    return list(ids[:half]) + list(ids[-half:])


def _ids(tok, model):
    vocab = model.config.vocab_size
    eos = tok.eos_token_id if tok.eos_token_id is not None else model.config.eos_token_id
    if eos is None or eos >= vocab:
        raise UserError("the tokenizer has no EOS token the model knows; generation needs one to stop at")
    pad = tok.pad_token_id if tok.pad_token_id is not None and tok.pad_token_id < vocab else eos
    return eos, pad


def _cut(row: list, stops: set) -> list:
    for k, t in enumerate(row):
        if t in stops:
            return row[:k + 1]
    return row


def greedy_generate(model, tok, prompts: list, max_new_tokens: int, batch_size: int = 8, stop_ids=(),
                    min_new_tokens: int = 0, progress=None) -> list:
    """New token ids for each prompt (a list of token ids), greedy, batched with left padding; each row
    ends at its first stop token (EOS or one of stop_ids), which is kept. min_new_tokens > 0 forbids the
    stop tokens before that many new tokens (LongBench's samsum asks for one)."""
    eos, pad = _ids(tok, model)
    stops = [eos, *[s for s in stop_ids if s != eos]]
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first: memory errors early
    out: list[Any] = [None] * len(prompts)
    bar = progress(total=len(prompts), desc="generate", unit="prompt") if progress else None
    for a in range(0, len(order), batch_size):
        idx = order[a:a + batch_size]
        rows = [prompts[i] for i in idx]
        if any(len(r) == 0 for r in rows):
            raise UserError("an empty prompt: generation needs at least one prompt token")
        ids, mask = pad_left(rows, pad)
        kw = dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=stops,
                  pad_token_id=pad)
        if min_new_tokens:
            kw["min_new_tokens"] = min_new_tokens
        with torch.inference_mode():
            seq = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kw)
        new = seq[:, ids.shape[1]:].tolist()
        for r, i in enumerate(idx):
            out[i] = _cut(new[r], set(stops))
        if bar:
            bar.update(len(idx))
    if bar:
        bar.close()
    return out


def greedy_naive(model, tok, prompt: list, max_new_tokens: int, stop_ids=(), min_new_tokens: int = 0) -> list:
    """Reference for greedy_generate: one prompt, a full forward pass per new token, no cache."""
    eos, _ = _ids(tok, model)
    stops = {eos, *stop_ids}
    device = next(model.parameters()).device
    ids, new = list(prompt), []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            logits = model(torch.tensor([ids], device=device), use_cache=False).logits[0, -1].float()
            if len(new) < min_new_tokens:
                logits[list(stops)] = float("-inf")
            t = int(logits.argmax())
            ids.append(t)
            new.append(t)
            if t in stops:
                break
    return new


def decode(tok, ids: list) -> str:
    return tok.decode(ids, skip_special_tokens=True)


def prompt_budget(model, max_new_tokens: int, max_length: int | None, what: str = "the answers") -> int:
    """The prompt budget: max_length if given, else the model's training length less the answer budget
    (so prompt + answer fit in the length it was trained on)."""
    if max_length is not None:
        if max_length < 2:
            raise UserError(f"--max-length must be at least 2, got {max_length}")
        return max_length
    train = getattr(model.config, "train_length", None) or getattr(model.config, "max_position_embeddings", None)
    if not train:
        raise UserError("the model's config has no train_length; give --max-length")
    if train - max_new_tokens < 2:
        raise UserError(f"the model's training length ({train} tokens) is not longer than the answer budget of "
                        f"{what} ({max_new_tokens} tokens); give --max-length (the prompt budget) explicitly, or "
                        "use a model trained on longer sequences")
    return train - max_new_tokens


def evaluate_generation(model, tokenizer, records: list, metric: str, max_new_tokens: int | None = None,
                        max_length: int | None = None, batch_size: int = 8, progress=None) -> dict:
    """Score a model on {"prompt": str, "response": str} records by greedy generation.

    metric: qa_f1, rouge (ROUGE-L F), code_sim (LongBench's definitions) or exact (stripped strings
    equal). max_new_tokens: default the longest reference response in tokens + 16. max_length: the
    prompt budget in tokens (longer prompts are cut in the middle); default the model's train_length
    less max_new_tokens. Returns {"metric", "score" (100 x the mean), "n", "truncated" (prompts cut),
    "max_new_tokens", "max_length", "mean_new_tokens", "predictions"}.
    """
    from .longbench.metrics import METRICS

    if metric not in GENERATE_METRICS:
        raise UserError(f"unknown --metric {metric!r}; use one of {', '.join(GENERATE_METRICS)}")
    if not records:
        raise UserError("no records to evaluate")
    for n, rec in enumerate(records, 1):
        if not (isinstance(rec, dict) and isinstance(rec.get("prompt"), str) and isinstance(rec.get("response"), str)):
            raise UserError(f"record {n}: needs string fields \"prompt\" and \"response\"")
        if not rec["prompt"]:
            raise UserError(f"record {n}: the prompt is empty")
    if max_new_tokens is None:
        max_new_tokens = max(len(encode(tokenizer, r["response"])) for r in records) + 16
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    budget = prompt_budget(model, max_new_tokens, max_length, "--max-new-tokens")
    prompts, truncated = [], 0
    for rec in records:
        ids = encode_prompt(tokenizer, rec["prompt"])
        truncated += len(ids) > budget
        prompts.append(truncate_middle(ids, budget))
    new = greedy_generate(model, tokenizer, prompts, max_new_tokens, batch_size, progress=progress)
    preds = [decode(tokenizer, ids) for ids in new]
    fn = METRICS[metric]
    scores = [fn(p, r["response"]) for p, r in zip(preds, records)]
    return {"metric": metric, "score": round(100 * sum(scores) / len(scores), 2), "n": len(records),
            "truncated": truncated, "max_new_tokens": max_new_tokens, "max_length": budget,
            "mean_new_tokens": sum(len(x) for x in new) / len(new),
            "predictions": [{"pred": p, "response": r["response"], "score": s}
                            for p, r, s in zip(preds, records, scores)]}


GENERATE_METRICS = ("qa_f1", "rouge", "exact", "code_sim")
