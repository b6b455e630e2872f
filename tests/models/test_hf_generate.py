"""model.generate() and friends on tiny random models (transformers 5.x), plus incremental == full."""
import functools

import pytest
import torch
from hf_tiny import CHUNK, KINDS, NON_ASCII, cache_of, encode, reference_greedy, tiny_model, tokenizer
from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TextStreamer, pipeline
from transformers.cache_utils import Cache

from ratlm import RATCache
from ratlm.models.modeling_rat import CACHE_FIELD

PROMPTS = ["The quick brown fox", "hi", "a b c d e f g"]


# ------------------------------------------------------------------------- incremental == full
@pytest.mark.parametrize("kind", list(KINDS))
def test_incremental_equals_full_around_chunk_boundaries(kind):
    """Prefill of several lengths around multiples of the chunk (and window), then single steps and a
    multi-token continuation, with a left-padded row whose chunk boundaries fall elsewhere."""
    m = tiny_model(kind)
    T = 3 * CHUNK + 2
    ids = torch.randint(0, 259, (2, T), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, T, dtype=torch.long)
    mask[0, :1] = 0  # every row padded: columns fed != real tokens of any row
    mask[1, :3] = 0
    real = mask.bool()
    with torch.no_grad():
        full = m(ids, attention_mask=mask, use_cache=False).logits
        for P in (CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK):
            out = m(ids[:, :P], attention_mask=mask[:, :P], use_cache=True)
            cache = cache_of(out)
            parts = [out.logits]
            for t in range(P, T - 3):  # generate-style calls: the mask covers past + current columns
                parts.append(m(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache).logits)
            parts.append(m(ids[:, T - 3 :], attention_mask=mask, cache=cache).logits)
            inc = torch.cat(parts, 1)
            torch.testing.assert_close(inc[real], full[real], rtol=1e-5, atol=1e-5, msg=f"prefill {P}")
            assert cache.get_seq_length() == T and cache.seen.tolist() == [T - 1, T - 3]
        # the row alone, unpadded, gives the same logits
        alone = m(ids[1:, 3:], use_cache=False).logits[0]
        torch.testing.assert_close(full[1, 3:], alone, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------- greedy, batches
@pytest.mark.parametrize("kind", list(KINDS))
def test_left_padded_batch_equals_each_prompt_alone(kind):
    m = tiny_model(kind)
    enc = encode(PROMPTS)
    assert (enc["attention_mask"][:, 0] == 0).any()  # really left padded
    n = 2 * CHUNK + 3
    batched = m.generate(**enc, max_new_tokens=n, do_sample=False)
    P = enc["input_ids"].shape[1]
    for i, p in enumerate(PROMPTS):
        single = m.generate(**encode([p]), max_new_tokens=n, do_sample=False)
        assert batched[i, P:].tolist() == single[0, -n:].tolist(), (kind, p)
    assert torch.equal(batched, m.generate(**enc, max_new_tokens=n, do_sample=False, use_cache=False))


def test_greedy_equals_reference_loop():
    m = tiny_model("rat-swa")
    enc = encode(["hello world"])
    g = m.generate(**enc, max_new_tokens=12, do_sample=False)
    assert torch.equal(g, reference_greedy(m, enc["input_ids"], 12))
    assert len(set(g[0, -12:].tolist())) > 1  # the test model does not just repeat one token


def test_forward_kwargs_from_generate():
    """What generate passes to forward (transformers 5.24): no cache at prefill, the full-length mask."""
    m = tiny_model("rat")
    calls = []
    orig = m.forward

    @functools.wraps(orig)  # generate inspects forward's signature
    def record(*a, **k):
        calls.append(dict(k))
        return orig(*a, **k)

    m.forward = record
    try:
        m.generate(**encode(["probe", "p"]), max_new_tokens=3, do_sample=False)
    finally:
        del m.forward
    first, second = calls[0], calls[1]
    assert CACHE_FIELD not in first and isinstance(second[CACHE_FIELD], RATCache)
    assert first["logits_to_keep"] == 1 and second["input_ids"].shape[1] == 1
    assert second["attention_mask"].shape[1] == first["attention_mask"].shape[1] + 1
    assert second["position_ids"].shape == (2, 1)


# ------------------------------------------------------------------------- sampling and processors
def test_sampling_cache_path_equals_no_cache_path():
    m = tiny_model("rat-swa")
    enc = encode(["sample me", "x"])
    kw = dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=15)
    runs = []
    for use_cache in (True, True, False):
        torch.manual_seed(123)
        runs.append(m.generate(**enc, **kw, use_cache=use_cache))
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    assert runs[0].shape == (2, enc["input_ids"].shape[1] + 15)
    torch.manual_seed(124)
    other = m.generate(**enc, **kw)
    assert not torch.equal(other, runs[0])  # it really samples
    torch.manual_seed(7)
    assert m.generate(**enc, **kw, num_return_sequences=3).shape[0] == 6


def test_top_k_one_is_greedy():
    m = tiny_model("rat")
    enc = encode(["top k"])
    torch.manual_seed(0)
    sampled = m.generate(**enc, do_sample=True, top_k=1, temperature=1.5, max_new_tokens=10)
    assert torch.equal(sampled, m.generate(**enc, do_sample=False, max_new_tokens=10))


def test_repetition_penalty():
    m = tiny_model("rat")
    enc = encode(["Once upon"])
    plain = m.generate(**enc, max_new_tokens=15, do_sample=False)
    assert len(set(plain[0, -15:].tolist())) < 15  # this model repeats itself here
    g = m.generate(**enc, max_new_tokens=15, do_sample=False, repetition_penalty=1.8)
    ref = reference_greedy(m, enc["input_ids"], 15, LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.8)]))
    assert torch.equal(g, ref) and not torch.equal(g, plain)


def test_stop_strings():
    m = tiny_model("rat-swa")
    tok = tokenizer()
    enc = encode(["Once upon"])
    P = enc["input_ids"].shape[1]
    kw = dict(do_sample=False, suppress_tokens=NON_ASCII)
    text = tok.decode(m.generate(**enc, max_new_tokens=20, **kw)[0, P:])
    assert len(text) == 20
    stop = text[6:8]
    end = text.index(stop) + len(stop)
    stopped = m.generate(**enc, max_new_tokens=20, stop_strings=[stop], tokenizer=tok, **kw)
    assert tok.decode(stopped[0, P:]) == text[:end]


def test_text_streamer(capsys):
    m = tiny_model("rat")
    tok = tokenizer()
    enc = encode(["stream"])
    P = enc["input_ids"].shape[1]
    out = m.generate(**enc, max_new_tokens=12, do_sample=False, suppress_tokens=NON_ASCII,
                     streamer=TextStreamer(tok, skip_prompt=True))
    assert capsys.readouterr().out.rstrip("\n") == tok.decode(out[0, P:])


def test_eos_stops_and_pads_finished_rows():
    m = tiny_model("attention-swa")
    enc = encode(PROMPTS)
    free = m.generate(**enc, max_new_tokens=6, do_sample=False)
    P = enc["input_ids"].shape[1]
    eos = int(free[0, P + 1])  # pretend row 0's second new token is the end of text
    out = m.generate(**enc, max_new_tokens=6, do_sample=False, eos_token_id=eos, pad_token_id=256)
    assert out[0, P + 1] == eos and (out[0, P + 2 :] == 256).all()
    for i in range(1, 3):  # other rows are unaffected until they emit it themselves
        row, ref = out[i, P:].tolist(), free[i, P:].tolist()
        cut = ref.index(eos) + 1 if eos in ref else len(ref)
        assert row[:cut] == ref[:cut]


# ------------------------------------------------------------------------- pipeline, beams, caches
def test_pipeline_text_generation(tmp_path):
    m = tiny_model("rat-swa")
    tok = tokenizer()
    m.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    gen = pipeline("text-generation", model=str(tmp_path))  # loads through the Auto classes
    assert type(gen.model) is type(m)
    prompt = "pipeline test"
    res = gen(prompt, max_new_tokens=8, do_sample=False, suppress_tokens=NON_ASCII)
    expected = m.generate(**encode([prompt]), max_new_tokens=8, do_sample=False, suppress_tokens=NON_ASCII)
    assert res[0]["generated_text"] == tok.decode(expected[0], skip_special_tokens=True)
    res2 = gen([prompt, "ab"], max_new_tokens=5, do_sample=False, batch_size=2, suppress_tokens=NON_ASCII)
    assert len(res2) == 2 and res2[0][0]["generated_text"].startswith(prompt)
    alone = gen("ab", max_new_tokens=5, do_sample=False, suppress_tokens=NON_ASCII)
    assert res2[1][0]["generated_text"] == alone[0]["generated_text"]


@pytest.mark.parametrize("kind", ["rat-swa", "rnn"])
def test_beam_search_reorders_the_cache(kind):
    m = tiny_model(kind)
    enc = encode(["beam me up", "ok"])
    kw = dict(num_beams=3, do_sample=False, max_new_tokens=8, early_stopping=True)
    assert torch.equal(m.generate(**enc, **kw), m.generate(**enc, **kw, use_cache=False))
    assert m.generate(**enc, **kw, num_return_sequences=2).shape[0] == 4


@pytest.mark.parametrize("prompts", [["resume from here"], ["resume from here", "r"]])
def test_return_and_resume_cache(prompts):
    m = tiny_model("rat-swa")
    enc = encode(prompts)
    out = m.generate(**enc, max_new_tokens=5, do_sample=False, return_dict_in_generate=True)
    cache = cache_of(out)
    assert isinstance(cache, RATCache) and isinstance(cache, Cache)
    assert cache.get_seq_length() == out.sequences.shape[1] - 1  # columns; the last token is not fed back
    assert cache.seen.tolist() == (enc["attention_mask"].sum(1) + 4).tolist()
    assert cache.nbytes() > 0
    mask = torch.cat([enc["attention_mask"], torch.ones(len(prompts), 5, dtype=torch.long)], 1)
    resumed = m.generate(input_ids=out.sequences, attention_mask=mask, max_new_tokens=4, do_sample=False,
                         **{CACHE_FIELD: cache})
    assert torch.equal(resumed, m.generate(**enc, max_new_tokens=9, do_sample=False))


def test_user_made_cache_and_inputs_embeds():
    m = tiny_model("rat")
    enc = encode(PROMPTS)
    plain = m.generate(**enc, max_new_tokens=6, do_sample=False)
    cache = m.make_cache(3)
    assert torch.equal(m.generate(**enc, max_new_tokens=6, do_sample=False, **{CACHE_FIELD: cache}), plain)
    emb = m.get_input_embeddings()(enc["input_ids"])
    new = m.generate(inputs_embeds=emb, attention_mask=enc["attention_mask"], max_new_tokens=6, do_sample=False)
    assert torch.equal(new, plain[:, -6:])


def test_assisted_generation_is_refused():
    m = tiny_model("rat")
    with pytest.raises(ValueError, match="stateful"):
        m.generate(**encode(["x"]), max_new_tokens=3, prompt_lookup_num_tokens=2)


def test_bfloat16_generation_runs():
    m = tiny_model("rat-swa")
    half = type(m)(m.config).to(torch.bfloat16).eval()
    half.load_state_dict(m.state_dict())
    out = half.generate(**encode(PROMPTS), max_new_tokens=5, do_sample=False)
    assert out.shape[1] == encode(PROMPTS)["input_ids"].shape[1] + 5
