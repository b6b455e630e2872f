"""The engine without HTTP: exactness inside a busy, changing batch, admission, cancellation, sampling."""
import random

import pytest
import torch
from models.hf_tiny import KINDS, tiny_model
from serve_helpers import EOS, reference

from ratlm.data.tokenizer import byte_tokenizer
from ratlm.models import decode_state_bytes
from ratlm.serve.engine import Engine, QueueFull
from ratlm.serve.sampling import SamplingParams


def busy_run(engine, jobs, rng, extra=()):
    """Submit jobs (prompt, params) at random steps while the engine steps; `extra` requests are
    submitted too and cancelled at random. Returns the requests of `jobs`."""
    pending, reqs, noise = list(jobs), [], []
    extra = list(extra)
    for _ in range(10000):
        if pending and rng.random() < 0.5:
            reqs.append(engine.submit(*pending.pop(0)))
        if extra and rng.random() < 0.3:
            noise.append(engine.submit(*extra.pop(0)))
        for r in noise:
            if rng.random() < 0.1:
                engine.cancel(r)
        engine.step()
        if not pending and not extra and all(r.done.is_set() for r in reqs + noise):
            return reqs
    raise AssertionError("the engine did not finish")


@pytest.mark.parametrize("kind", list(KINDS))
def test_greedy_in_a_busy_batch_equals_generate_alone(kind):
    model, tok, rng = tiny_model(kind), byte_tokenizer(), random.Random(kind)
    prompts = [[rng.randrange(32, 127) for _ in range(rng.randrange(1, 30))] for _ in range(8)]
    lengths = [rng.randrange(1, 25) for _ in prompts]
    refs = [reference(model, p, n) for p, n in zip(prompts, lengths)]
    # sampled noise requests share the batch and are cancelled at random
    noise = [([rng.randrange(32, 127) for _ in range(rng.randrange(1, 30))],
              SamplingParams(max_tokens=rng.randrange(1, 30), temperature=1.0, seed=i)) for i in range(8)]
    engine = Engine(model, tok, max_running=6, prefill_chunk=5, max_model_len=512)
    reqs = busy_run(engine, [(p, SamplingParams(max_tokens=n, temperature=0)) for p, n in zip(prompts, lengths)],
                    rng, noise)
    assert [r.output_ids for r in reqs] == refs
    for r, ref in zip(reqs, refs):
        assert r.finish_reason == ("stop" if ref[-1] == EOS else "length")
        assert r.text == tok.decode(ref, skip_special_tokens=True)
    assert engine.num_running == 0 and engine.reserved == 0 and engine.cache is None


def test_bf16_smoke():
    model = tiny_model("rat-swa")
    m16 = type(model)(model.config).to(torch.bfloat16).eval()
    m16.load_state_dict(model.state_dict())
    tok, rng = byte_tokenizer(), random.Random(1)
    prompts = [[rng.randrange(32, 127) for _ in range(rng.randrange(1, 20))] for _ in range(4)]
    refs = [reference(m16, p, 12) for p in prompts]
    engine = Engine(m16, tok, max_running=3, prefill_chunk=64, max_model_len=512)
    reqs = busy_run(engine, [(p, SamplingParams(max_tokens=12, temperature=0)) for p in prompts], rng)
    same = sum(r.output_ids == ref for r, ref in zip(reqs, refs))
    assert same >= 3  # bf16 batched vs alone may round differently; most match exactly
    assert all(len(r.output_ids) >= 1 for r in reqs)


def test_admission_by_memory_and_queue_bound():
    model, tok = tiny_model("attention"), byte_tokenizer()
    one = decode_state_bytes(model.config, 10 + 6)
    engine = Engine(model, tok, cache_memory=2 * one, max_waiting=3, max_model_len=512)
    reqs = [engine.submit([65] * 10, SamplingParams(max_tokens=6, temperature=0)) for _ in range(3)]
    with pytest.raises(QueueFull):
        engine.submit([65] * 10, SamplingParams(max_tokens=6, temperature=0))
    engine.step()
    assert engine.num_running == 2 and engine.num_waiting == 1 and engine.reserved == 2 * one
    with pytest.raises(ValueError, match="cache memory"):
        engine.submit([65] * 30, SamplingParams(max_tokens=6))
    with pytest.raises(ValueError, match="maximum context length"):
        engine.submit([65] * 500, SamplingParams(max_tokens=60))
    with pytest.raises(ValueError, match="max_tokens"):
        engine.submit([65], SamplingParams(max_tokens=0))
    while not all(r.done.is_set() for r in reqs):
        engine.step()
    assert engine.reserved == 0


def test_time_and_tokens_by_phase():
    """The engine counts prompt tokens prefilled and output tokens of decode steps (a request's first
    token comes from its prefill), and the time of each phase, in itself and in its metrics."""
    from ratlm.serve.metrics import Metrics

    model, tok, metrics = tiny_model("rat"), byte_tokenizer(), Metrics()
    engine = Engine(model, tok, max_running=2, prefill_chunk=7, max_model_len=512, metrics=metrics)
    prompts = [[65] * 5, [66] * 12, [67] * 3]
    reqs = engine.generate(prompts, SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))
    assert engine.phase_tokens == {"prefill": 20, "decode": sum(len(r.output_ids) - 1 for r in reqs)}
    assert engine.phase_tokens["decode"] == 3 * 5
    assert all(s > 0 for s in engine.phase_seconds.values())
    for phase in ("prefill", "decode"):
        assert metrics.step_tokens.labels(phase)._value.get() == engine.phase_tokens[phase]
        assert metrics.step_seconds.labels(phase)._value.get() == pytest.approx(engine.phase_seconds[phase])
    text = metrics.exposition().decode()
    assert 'ratlm_engine_tokens_total{phase="prefill"} 20.0' in text
    assert 'ratlm_engine_seconds_total{phase="decode"}' in text


def test_cancel_frees_the_row_at_the_next_step():
    model, tok = tiny_model("rat"), byte_tokenizer()
    engine = Engine(model, tok, max_running=4, max_model_len=512)
    a = engine.submit([65] * 5, SamplingParams(max_tokens=100, temperature=0, ignore_eos=True))
    b = engine.submit([66] * 5, SamplingParams(max_tokens=100, temperature=0, ignore_eos=True))
    for _ in range(3):
        engine.step()
    assert engine.cache.batch_size == 2
    engine.cancel(a)
    engine.step()
    assert a.done.is_set() and a.finish_reason == "cancelled"
    assert engine.rows == [b] and engine.cache.batch_size == 1
    engine.cancel(b)
    engine.step()
    assert engine.cache is None and engine.reserved == 0


def test_sampling_seed_stop_logprobs_penalties():
    model, tok = tiny_model("rat-swa"), byte_tokenizer()
    engine = Engine(model, tok, max_running=8, max_model_len=512)
    p = SamplingParams(max_tokens=20, temperature=0.9, top_p=0.9, top_k=50, seed=7, ignore_eos=True,
                       presence_penalty=0.5, frequency_penalty=0.5, repetition_penalty=1.2)
    r1, r2 = engine.generate([[65, 66, 67]] * 2, p)
    assert r1.output_ids == r2.output_ids and len(r1.output_ids) == 20  # same seed, same tokens
    greedy = engine.generate([[65, 66, 67]], SamplingParams(max_tokens=20, temperature=0, ignore_eos=True))[0]
    text = greedy.text
    stop = text[5:7]
    cut = engine.generate([[65, 66, 67]], SamplingParams(max_tokens=20, temperature=0, stop=[stop]))[0]
    assert cut.finish_reason == "stop" and cut.text == text[:text.index(stop)]
    lp = []
    engine2 = Engine(model, tok, max_running=2, max_model_len=512)
    req = engine2.submit([65, 66, 67], SamplingParams(max_tokens=3, temperature=0, logprobs=2, ignore_eos=True),
                         sink=lambda req, ev: lp.extend(ev.logprobs or []))
    while not req.done.is_set():
        engine2.step()
    assert [x["token_id"] for x in lp] == req.output_ids
    for x in lp:
        assert len(x["top"]) == 2 and x["top"][0][0] == x["token_id"] and x["logprob"] <= 0


@pytest.mark.parametrize("kind", list(KINDS))
def test_append_and_keep_rows_match_rows_alone(kind):
    """Rows prefilled alone to different lengths, joined into one cache, decode one batched step with the
    same logits as each row alone; after dropping a row the others still do (values, fp32 tolerance)."""
    model, rng = tiny_model(kind), random.Random(5)
    lengths = [3, 17, 9]
    prompts = [torch.tensor([[rng.randrange(32, 127) for _ in range(n)]]) for n in lengths]
    nxt = torch.tensor([[70], [71], [72]])
    with torch.no_grad():
        alone, caches = [], []
        for p, t in zip(prompts, nxt):
            c = model.make_cache(1)
            model(p, cache=c, use_cache=True)
            c2 = model.make_cache(1)
            model(p, cache=c2, use_cache=True)
            alone.append(model(t[None], cache=c2, use_cache=True).logits[0, -1])
            caches.append(c)
        batch = caches[0]
        for c in caches[1:]:
            batch.append_rows(c)
        assert batch.seen.tolist() == lengths
        joined = model(nxt, cache=batch, use_cache=True).logits[:, -1]
        for i in range(3):
            torch.testing.assert_close(joined[i], alone[i], rtol=1e-5, atol=1e-5)
        batch.keep_rows(torch.tensor([2, 0]))
        assert batch.seen.tolist() == [10, 4]
        step2 = model(torch.tensor([[80], [81]]), cache=batch, use_cache=True).logits[:, -1]
        for row, i, tok in ((0, 2, 80), (1, 0, 81)):
            c = model.make_cache(1)
            ref = model(torch.cat([prompts[i], nxt[i][None], torch.tensor([[tok]])], 1), cache=c,
                        use_cache=True).logits[0, -1]
            torch.testing.assert_close(step2[row], ref, rtol=1e-5, atol=1e-5)
