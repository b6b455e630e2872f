"""The HTTP API on a real server (uvicorn in a thread, free 127.0.0.1 port): the openai client for the
normal paths, raw HTTP for the error cases."""
import json
import time

import httpx
import openai
import pytest
import torch
from models.hf_tiny import tiny_model
from serve_helpers import ThreadServer, reference

from ratlm.data.tokenizer import byte_tokenizer
from ratlm.serve.engine import Engine


@pytest.fixture(scope="module")
def server():
    torch.set_num_threads(1)
    engine = Engine(tiny_model("rat-swa"), byte_tokenizer(), cache_memory=1 << 20, max_waiting=64,
                    prefill_chunk=16, max_model_len=256)
    with ThreadServer(engine) as s:
        yield s


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=30) as c:
        yield c


def test_completion_greedy_equals_generate(server, client):
    tok = byte_tokenizer()
    prompt = "def f(x):"
    ref = reference(tiny_model("rat-swa"), tok(prompt).input_ids, 12)
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0)
    assert r.choices[0].text == tok.decode(ref, skip_special_tokens=True)
    assert r.usage.prompt_tokens == len(prompt) and r.usage.completion_tokens == len(ref)
    assert r.choices[0].finish_reason in ("length", "stop")
    # token ids as the prompt, streaming: the same text
    chunks = list(client.completions.create(model="tiny", prompt=tok(prompt).input_ids, max_tokens=12,
                                            temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_chat_plain_template_streaming_and_usage(server, client):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == len("system: be brief\nuser: hi\nassistant:")
    stream = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    # raw SSE ends with [DONE]
    body = {"model": "tiny", "messages": msgs, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=30) as resp:
        lines = [x for x in resp.iter_lines() if x]
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and all(x.startswith("data: ") for x in lines)


def test_sampling_params_seed_stop_logprobs(client):
    kw = dict(model="tiny", prompt="abc", max_tokens=10, temperature=0.8, top_p=0.9, seed=3,
              presence_penalty=0.5, frequency_penalty=0.2, extra_body={"top_k": 40, "repetition_penalty": 1.1,
                                                                        "ignore_eos": True})
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert a.choices[0].text == b.choices[0].text and a.usage.completion_tokens == 10
    r = client.completions.create(model="tiny", prompt="abc", max_tokens=4, temperature=0, logprobs=2,
                                  extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == 4 and all(v <= 0 for v in lp.token_logprobs)
    assert all(len(t) == 2 for t in lp.top_logprobs)
    c = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=3,
                                       temperature=0, logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True})
    assert len(c.choices[0].logprobs.content) == 3
    full = client.completions.create(model="tiny", prompt="abc", max_tokens=10, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    stop = full[4:6]
    if stop and "\ufffd" not in full:
        cut = client.completions.create(model="tiny", prompt="abc", max_tokens=10, temperature=0, stop=[stop])
        assert cut.choices[0].text == full[:full.index(stop)] and cut.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("body,status,param", [
    (b"{not json", 400, None),
    ({"model": "tiny", "prompt": "a", "max_tokens": "many"}, 400, "max_tokens"),
    ({"model": "tiny", "prompt": 5}, 400, "prompt"),
    ({"model": "tiny"}, 400, "prompt"),
    ({"model": "nope", "prompt": "a"}, 404, "model"),
    ({"model": "tiny", "prompt": "a" * 300}, 400, None),  # longer than the model allows
    ({"model": "tiny", "prompt": "a", "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny", "prompt": "a", "temperature": -1}, 400, "temperature"),
    ({"model": "tiny", "prompt": "a", "n": 2}, 400, "n"),
])
def test_errors_are_openai_shaped_4xx_and_the_server_stays_up(server, body, status, param):
    if isinstance(body, bytes):
        r = httpx.post(f"{server.url}/v1/completions", content=body, headers={"content-type": "application/json"})
    else:
        r = httpx.post(f"{server.url}/v1/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param:
        assert err["param"].split(".")[0] == param
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_chat_errors(server):
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "tiny", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "tiny", "messages": [{"content": "x"}]})
    assert r.status_code == 400
    r = httpx.get(f"{server.url}/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()


def test_models_and_metrics(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("ratlm_requests_running", "ratlm_requests_waiting", "ratlm_generated_tokens_total",
                 "ratlm_cache_bytes_in_use", "ratlm_cache_bytes_budget", "ratlm_time_to_first_token_seconds_bucket",
                 "ratlm_inter_token_latency_seconds_bucket"):
        assert name in text
    assert "ratlm_cache_bytes_budget 1.048576e+06" in text


def metric(url, name):
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(name)


def test_disconnect_mid_stream_frees_the_row(server):
    body = {"model": "tiny", "prompt": "abc", "max_tokens": 200, "stream": True, "ignore_eos": True,
            "temperature": 0}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=30) as resp:
        got = 0
        for line in resp.iter_lines():
            got += line.startswith("data: ")
            if got >= 3:
                break
        assert server.engine.num_running == 1
    # the connection is closed: the row must leave at the next step
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (server.engine.num_running or metric(server.url, "ratlm_requests_running")
                                           or metric(server.url, "ratlm_cache_bytes_in_use")):
        time.sleep(0.02)
    assert server.engine.num_running == 0 and server.engine.cache is None
    assert metric(server.url, "ratlm_requests_running") == 0
    assert server.engine.reserved == 0, (server.engine.reserved, server.engine.waiting)
    assert metric(server.url, "ratlm_cache_bytes_in_use") == 0


def test_queue_full_is_429_with_retry_after():
    engine = Engine(tiny_model("rat"), byte_tokenizer(), max_running=1, max_waiting=1, max_model_len=4096)
    with ThreadServer(engine) as s:
        body = {"model": "tiny", "prompt": "abc", "max_tokens": 3000, "stream": True, "ignore_eos": True}
        streams = []
        try:
            codes = []
            for _ in range(3):
                cm = httpx.stream("POST", f"{s.url}/v1/completions", json=body, timeout=30)
                resp = cm.__enter__()
                streams.append(cm)
                codes.append(resp.status_code)
                if resp.status_code == 429:
                    assert resp.headers["retry-after"] == "1"
                    assert json.loads(resp.read())["error"]["type"] == "rate_limit_error"
            assert codes == [200, 200, 429]
        finally:
            for cm in streams:
                cm.__exit__(None, None, None)


def test_chat_uses_the_tokenizers_template():
    tok = byte_tokenizer()
    tok.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    engine = Engine(tiny_model("rnn"), tok, max_running=2, max_model_len=256)
    with ThreadServer(engine) as s, openai.OpenAI(base_url=f"{s.url}/v1", api_key="none", max_retries=0) as client:
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                                           temperature=0)
        assert r.usage.prompt_tokens == len("<user>hi<assistant>")
