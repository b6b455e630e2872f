"""The OpenAI-compatible HTTP API over an `Engine` (FastAPI).

Routes: POST /v1/completions, POST /v1/chat/completions (both with `stream: true` as server-sent
events ending in `data: [DONE]`), GET /v1/models, GET /health, GET /metrics (Prometheus).
Errors use OpenAI's shape, {"error": {"message", "type", "param", "code"}}, with a 4xx status for
anything the client can fix; 429 with Retry-After when the waiting queue is full; 503 while draining.

Chat prompts use the tokenizer's chat template when it has one, else the plain template
(PLAIN_TEMPLATE): every message as "<role>: <content>" on its own line, then "assistant:".
Extensions beyond OpenAI's fields (as in vLLM): top_k, repetition_penalty, ignore_eos.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .engine import Draining, Engine, QueueFull
from .sampling import MAX_LOGPROBS, SamplingParams

PLAIN_TEMPLATE = "<role>: <content>\\n for every message, then 'assistant:'"
RETRY_AFTER_S = 1


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers


def error_response(status, message, type_="invalid_request_error", param=None, code=None, headers=None):
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class APIKeyMiddleware:
    """Every route but /health answers 401 without `Authorization: Bearer KEY`. A plain ASGI middleware:
    Starlette's `@app.middleware("http")` would relay every streamed chunk through an extra task."""

    def __init__(self, app, api_key: str):
        self.app, self.expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] != "/health":
            if dict(scope["headers"]).get(b"authorization", b"") != self.expected:
                response = error_response(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                          "authentication_error", code="invalid_api_key")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------------ request bodies
class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # fields we do not use are accepted and ignored

    model: str
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: str | list[str] | None = None
    seed: int | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    ignore_eos: bool = False

    def sampling(self, max_tokens: int, logprobs: int | None) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        p = SamplingParams(max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p,
                           top_k=self.top_k, stop=stop, seed=self.seed, repetition_penalty=self.repetition_penalty,
                           presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
                           logprobs=logprobs, ignore_eos=self.ignore_eos)
        try:
            p.check()
        except ValueError as e:
            raise APIError(400, str(e), param=str(e).split()[0]) from None
        return p


class CompletionBody(_Body):
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = 16
    logprobs: int | None = None
    echo: bool = False


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatBody(_Body):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None


# ------------------------------------------------------------------------------------ the app
def create_app(engine: Engine, model_name: str, api_key: str | None = None, metrics=None) -> FastAPI:
    """The FastAPI app; the engine's background thread must be running (see `serve`)."""
    app = FastAPI(title="ratlm serve", docs_url=None, redoc_url=None, openapi_url=None)
    tok = engine.tok
    created = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(request, e: APIError):
        return error_response(e.status, e.message, e.type, e.param, e.code, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        errs = e.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            return error_response(400, "the request body is not valid JSON", code="invalid_json")
        where = ".".join(loc) or "body"
        return error_response(400, f"{where}: {first.get('msg', 'invalid value')}", param=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return error_response(e.status_code, str(e.detail), kind)

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):
        return error_response(500, f"internal error: {type(e).__name__}: {e}", "server_error")

    if api_key is not None:
        app.add_middleware(APIKeyMiddleware, api_key=api_key)

    @app.get("/health")
    async def health():
        if engine.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "ratlm", "max_model_len": engine.max_model_len}]}

    @app.get("/metrics")
    async def metrics_route():
        if metrics is None:
            return Response("", media_type="text/plain")
        from prometheus_client import CONTENT_TYPE_LATEST
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    def check_model(name):
        if name != model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves {model_name!r}",
                           param="model", code="model_not_found")

    def check_n(body):
        if body.n != 1:
            raise APIError(400, f"n must be 1 (one choice per request), got {body.n}", param="n")

    def encode(text):
        return tok(text, add_special_tokens=False).input_ids

    def submit(prompt_ids, params, queue, loop):
        def sink(req, event):
            loop.call_soon_threadsafe(queue.put_nowait, event)
        try:
            return engine.submit(prompt_ids, params, sink)
        except QueueFull as e:
            raise APIError(429, f"{e}; retry later", "rate_limit_error", code="queue_full",
                           headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        except Draining as e:
            raise APIError(503, str(e), "server_error", code="draining") from None
        except ValueError as e:
            code = "context_length_exceeded" if "context length" in str(e) or "cache memory" in str(e) else None
            raise APIError(400, str(e), code=code) from None

    def default_max_tokens(n_prompt):
        return max(1, engine.max_model_len - n_prompt)

    def token_text(t):
        return tok.decode([t], skip_special_tokens=False)

    def top_dict(pairs):
        """{text: logprob}; tokens whose text is already taken (e.g. bytes that decode to U+FFFD)
        are keyed by their vocabulary piece."""
        out = {}
        for t, v in pairs:
            key = token_text(t)
            out[key if key not in out else tok.convert_ids_to_tokens(t)] = v
        return out

    async def run(request, prompt_ids, params, body, make_chunk, make_final, logprob_fmt):
        stream = body.stream
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        req = submit(prompt_ids, params, queue, loop)
        rid = uuid.uuid4().hex[:24]

        def usage():
            n = len(req.output_ids)
            return {"prompt_tokens": req.num_prompt_tokens, "completion_tokens": n,
                    "total_tokens": req.num_prompt_tokens + n}

        if not stream:
            text, lps = [], []
            try:
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), 0.25)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            engine.cancel(req)
                            return Response(status_code=499)
                        continue
                    text.append(event.text)
                    lps.extend(event.logprobs or [])
                    if event.finish_reason is not None:
                        break
            except asyncio.CancelledError:
                engine.cancel(req)
                raise
            if event.finish_reason == "error":
                raise APIError(500, f"generation failed: {req.error}", "server_error")
            if event.finish_reason == "cancelled":
                raise APIError(503, "the request was cancelled (server shutting down)", "server_error")
            return make_final(rid, "".join(text), event.finish_reason, usage(),
                              logprob_fmt(lps) if params.logprobs is not None else None)

        include_usage = bool((body.stream_options or {}).get("include_usage"))

        async def events():
            try:
                first = True
                while True:
                    event = await queue.get()
                    if event.finish_reason == "error":
                        yield _sse({"error": {"message": f"generation failed: {req.error}", "type": "server_error",
                                              "param": None, "code": None}})
                        break
                    lp = logprob_fmt(event.logprobs) if params.logprobs is not None and event.logprobs else None
                    if event.token_ids or event.text or event.finish_reason:  # one chunk per token
                        yield _sse(make_chunk(rid, event.text, event.finish_reason, lp, first))
                        first = False
                    if event.finish_reason is not None:
                        if include_usage:
                            yield _sse(make_chunk(rid, None, None, None, False, usage()))
                        break
                yield "data: [DONE]\n\n"
            finally:
                if not req.done.is_set():
                    engine.cancel(req)  # the client went away: its row leaves at the next step

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -------------------------------------------------------------------------------- completions
    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: Request):
        check_model(body.model)
        check_n(body)
        if body.echo:
            raise APIError(400, "echo is not supported", param="echo")
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise APIError(400, "one prompt per request (a list of several prompts is not supported)",
                               param="prompt")
            prompt = prompt[0]
        ids = encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise APIError(400, "the prompt is empty", param="prompt")
        if body.max_tokens is None:
            body.max_tokens = default_max_tokens(len(ids))
        params = body.sampling(body.max_tokens, body.logprobs)

        def lp_fmt(lps):
            tokens = [token_text(x["token_id"]) for x in lps]
            offsets, pos = [], 0
            for t in tokens:
                offsets.append(pos)
                pos += len(t)
            return {"tokens": tokens, "token_logprobs": [x["logprob"] for x in lps],
                    "top_logprobs": [top_dict(x["top"]) for x in lps], "text_offset": offsets}

        def chunk(rid, text, finish, lp, first, usage=None):
            out = {"id": f"cmpl-{rid}", "object": "text_completion", "created": int(time.time()),
                   "model": model_name, "choices": []}
            if usage is not None:
                out["usage"] = usage
            else:
                out["choices"] = [{"index": 0, "text": text, "logprobs": lp, "finish_reason": finish}]
            return out

        def final(rid, text, finish, usage, lp):
            return {"id": f"cmpl-{rid}", "object": "text_completion", "created": int(time.time()),
                    "model": model_name, "choices": [{"index": 0, "text": text, "logprobs": lp,
                                                      "finish_reason": finish}], "usage": usage}

        return await run(request, ids, params, body, chunk, final, lp_fmt)

    # -------------------------------------------------------------------------------- chat
    def chat_prompt(messages):
        msgs = []
        for m in messages:
            content = m.content
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if p.get("type") == "text")
            msgs.append({"role": m.role, "content": content or ""})
        if getattr(tok, "chat_template", None):
            try:
                return tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            except Exception as e:  # noqa: BLE001 - a template that rejects these messages
                raise APIError(400, f"the chat template rejects these messages: {e}", param="messages") from None
        return "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, request: Request):
        check_model(body.model)
        check_n(body)
        ids = encode(chat_prompt(body.messages))
        max_tokens = body.max_completion_tokens or body.max_tokens
        if max_tokens is None:
            max_tokens = default_max_tokens(len(ids))
        if body.top_logprobs is not None and not 0 <= body.top_logprobs <= MAX_LOGPROBS:
            raise APIError(400, f"top_logprobs must be between 0 and {MAX_LOGPROBS}", param="top_logprobs")
        params = body.sampling(max_tokens, (body.top_logprobs or 0) if body.logprobs else None)

        def lp_fmt(lps):
            def entry(t, v):
                s = token_text(t)
                return {"token": s, "logprob": v, "bytes": list(s.encode("utf-8"))}
            return {"content": [{**entry(x["token_id"], x["logprob"]),
                                 "top_logprobs": [entry(t, v) for t, v in x["top"]]} for x in lps]}

        def chunk(rid, text, finish, lp, first, usage=None):
            out = {"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk", "created": int(time.time()),
                   "model": model_name, "choices": []}
            if usage is not None:
                out["usage"] = usage
            else:
                delta = {"role": "assistant", "content": text or ""} if first else (
                    {"content": text} if text else {})
                out["choices"] = [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}]
            return out

        def final(rid, text, finish, usage, lp):
            return {"id": f"chatcmpl-{rid}", "object": "chat.completion", "created": int(time.time()),
                    "model": model_name, "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                      "logprobs": lp, "finish_reason": finish}], "usage": usage}

        return await run(request, ids, params, body, chunk, final, lp_fmt)

    return app


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
