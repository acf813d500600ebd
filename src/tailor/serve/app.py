"""`tailor serve`: an OpenAI-compatible HTTP server (FastAPI) over one base and its arms.

Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions, POST /v1/completions (both
non-streaming and streaming as server-sent events ending with `data: [DONE]`). The arm is the
request's `model`. Errors come in OpenAI's shape with the status a client expects: 400 for a bad
request (an over-long prompt too, or one larger than the server could ever hold), 401 without
the key, 404 for an unknown model or path, 405 for a wrong method, 408 for a body that does not
arrive in time, 413 for an over-sized body (counted as it arrives, with or without a
Content-Length), 429 when the queue is full (the official client retries it); 5xx only for the
server's own faults. Every bad request leaves the server serving.

With an API key every path but /health needs it, /openapi.json included, and the browsable
docs (/docs, /redoc) are off: they would publish the API to anyone who can reach the port.
A request's preparation (chat template, a RAG arm's retrieval, tokenisation) runs in a worker
thread, never on the event loop, so a slow one does not stall the other connections.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .openai_types import (
    ChatCompletion,
    ChatRequest,
    Completion,
    CompletionRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from .requests import ApiError, chat_logprobs, completion_logprobs, request_jobs, response_body, usage
from .scheduler import Job, NeverFits, QueueFull, Scheduler

log = logging.getLogger("tailor")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ERRORS = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          405: "invalid_request_error", 408: "invalid_request_error", 413: "invalid_request_error",
          429: "rate_limit_error", 500: "server_error"}
ERROR_CODES = {code: {"model": ErrorResponse} for code in (400, 401, 404, 408, 413, 429)}
HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
OPEN = ("/health",)          # the one path that needs no key (a load balancer's probe)
BODY_SECONDS = 30.0          # a request body must arrive within this (a client trickling it holds no slot for long)
# with "stream": true the answer is a stream of server-sent events
# (each event's data is one JSON chunk, the last one `[DONE]`)
SSE_EVENT = {"type": "object", "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
             "required": ["data"]}
STREAMING = {200: {"content": {"text/event-stream": {"schema": SSE_EVENT}}}, **ERROR_CODES}


def error_response(status: int, message: str, code: str | None = None, param: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": ERRORS.get(status, "server_error"), "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(arms: dict, scheduler: Scheduler, api_key: str | None = None, max_body: int = 1 << 20,
               max_tokens: int = 2048, body_seconds: float = BODY_SECONDS) -> FastAPI:
    """`max_tokens`: the most tokens one choice may generate (a request asking for more gets a
    400), so no request can hold the decoder for long; `max_body` the largest body in bytes,
    `body_seconds` the longest a body may take to arrive."""
    docs = {} if api_key is None else {"docs_url": None, "redoc_url": None}
    app = FastAPI(title="Tailor", description="OpenAI-compatible endpoints over one base model and its arms",
                  version="1", **docs)
    app.add_middleware(Guard, api_key=api_key, max_body=max_body, body_seconds=body_seconds)
    created = int(time.time())

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc)
        message = "Unrecognized request argument supplied: " + where if err.get("type") == "extra_forbidden" \
            else f"{where + ': ' if where else ''}{err.get('msg')}"
        return error_response(400, message, "invalid_request", where or None)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.code, exc.param, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # an unknown path, a wrong method, a body FastAPI could not parse: OpenAI's shape too
        code = HTTP_CODES.get(exc.status_code, "invalid_request" if exc.status_code < 500 else "server_error")
        return error_response(exc.status_code, str(exc.detail), code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def fault(request: Request, exc: Exception):
        log.error("request failed: %r", exc, exc_info=exc)
        return error_response(500, "The server failed to answer this request", "server_error")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "waiting": scheduler.waiting, "models": len(arms),
                "prompt_tokens": scheduler.prompt_tokens}

    @app.get("/v1/models", response_model=ModelList, responses=ERROR_CODES)
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=name, created=created, parent=arm.parent, method=arm.method)
                               for name, arm in arms.items()])

    @app.post("/v1/chat/completions", response_model=ChatCompletion, responses=STREAMING)
    async def chat(body: ChatRequest, request: Request):
        # templates, retrieval and tokenising in a thread: the event loop keeps serving the others
        jobs = await run_in_threadpool(request_jobs, _arm(arms, body.model), body, max_tokens)
        return await _answer(request, scheduler, jobs, body, chat=True)

    @app.post("/v1/completions", response_model=Completion, responses=STREAMING)
    async def completions(body: CompletionRequest, request: Request):
        jobs = await run_in_threadpool(request_jobs, _arm(arms, body.model), body, max_tokens)
        return await _answer(request, scheduler, jobs, body, chat=False)

    return app


class Guard:
    """Pure ASGI, before anything reads the request: the API key (compared in constant time) and
    the body limit, counted as the body arrives, so a chunked body (no Content-Length) is held to
    it too, and a body that trickles in is cut off after BODY_SECONDS. The body is read whole
    here, at most `max_body` bytes, and handed on."""

    def __init__(self, app, api_key: str | None, max_body: int, body_seconds: float = BODY_SECONDS):
        self.app, self.max_body, self.body_seconds = app, max_body, body_seconds
        self.want = None if api_key is None else f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])   # lower-cased names, raw bytes (a repeated header: its last value)
        if self.want is not None and scope["path"] not in OPEN and \
                not hmac.compare_digest(headers.get(b"authorization", b""), self.want):
            return await error_response(401, "Incorrect or missing API key: send Authorization: Bearer KEY",
                                        "invalid_api_key")(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await self._too_large(scope, receive, send)
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.body_seconds
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except asyncio.TimeoutError:
                return await error_response(408, f"The request body did not arrive within {self.body_seconds:g} s",
                                            "request_timeout", headers={"Connection": "close"})(scope, receive, send)
            if message["type"] == "http.disconnect":
                return None   # the client left before its request was whole: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await self._too_large(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, given = b"".join(chunks), False

        async def replay():
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()   # after the body: the client's disconnect, as before
        return await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        # No "Connection: close": uvicorn then discards the rest of the body as it arrives, so the
        # client, still sending, reads its 413 instead of a reset connection.
        return await error_response(413, f"The request body is larger than {self.max_body} bytes",
                                    "request_too_large")(scope, receive, send)


def _arm(arms: dict, name: str):
    if name not in arms:
        raise ApiError(404, f"The model '{name}' does not exist (served: {', '.join(arms)})", "model_not_found",
                       "model")
    return arms[name]


async def _answer(request: Request, scheduler: Scheduler, jobs: list[Job], body, chat: bool):
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    created = int(time.time())
    if body.stream:
        events = _wire(jobs)   # before submitting: the first tokens may come at once
        _submit(scheduler, jobs)
        return StreamingResponse(_stream(jobs, events, body, chat, rid, created), media_type="text/event-stream")
    _submit(scheduler, jobs)
    return response_body(body, jobs, await _wait(request, jobs), rid, created)


def _submit(scheduler: Scheduler, jobs: list[Job]) -> None:
    try:
        scheduler.submit(jobs)
    except NeverFits as e:   # no retry would ever succeed: a 400 that says why, not a 429 forever
        raise ApiError(400, str(e), "request_too_large", "n") from None
    except QueueFull as e:
        raise ApiError(429, f"The server is busy: {e}; retry shortly", "rate_limit_exceeded",
                       headers={"Retry-After": "1"}) from None


async def _wait(request: Request, jobs: list[Job]) -> list:
    """The jobs' answers; a client that leaves cancels its jobs (their slots go to others)."""
    futures = [asyncio.wrap_future(j.future) for j in jobs]
    while True:
        done, pending = await asyncio.wait(futures, timeout=0.25)
        if not pending:
            failed = next((f.exception() for f in futures if f.exception() is not None), None)
            if failed is not None:   # the worker logged it; answered here, the connection stays open
                raise ApiError(500, f"The model failed on this request: {failed}", "server_error")
            return [f.result() for f in futures]
        if await request.is_disconnected():
            for job in jobs:
                job.cancel()
            raise asyncio.CancelledError


def _wire(jobs: list[Job]) -> asyncio.Queue:
    """Events (choice index, text, its tokens' logprobs entries or None) of the jobs, on this event
    loop; text None: a job ended."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    for i, job in enumerate(jobs):
        job.on_text = lambda text, entries=None, i=i: loop.call_soon_threadsafe(events.put_nowait, (i, text, entries))
        job.future.add_done_callback(lambda f, i=i: loop.call_soon_threadsafe(events.put_nowait, (i, None, None)))
    return events


async def _stream(jobs: list[Job], events: asyncio.Queue, body, chat: bool, rid: str, created: int):
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices: list[dict], **extra) -> str:
        return "data: " + json.dumps({"id": rid, "object": kind, "created": created, "model": body.model,
                                      "choices": choices, **extra}) + "\n\n"

    sent = [0] * len(jobs)   # characters streamed per choice: the offsets of its tokens

    def choice(i: int, text: str | None, finish: str | None, entries: list | None = None) -> dict:
        # a chunk carries the log-probabilities of the tokens its text adds (decode.Decoder joins them)
        tok = jobs[i].arm.engine.tok
        if chat:
            delta = {} if text is None else {"content": text}
            logprobs = None if entries is None else chat_logprobs(tok, entries).model_dump()
            return {"index": i, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        logprobs = None if entries is None else completion_logprobs(tok, entries, sent[i]).model_dump()
        sent[i] += len(text or "")
        return {"index": i, "text": text or "", "finish_reason": finish, "logprobs": logprobs}

    try:
        if chat:
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None,
                          "logprobs": None} for i in range(len(jobs))])
        left = len(jobs)
        while left:
            i, text, entries = await events.get()
            if text is not None:
                yield chunk([choice(i, text, None, entries)])
                continue
            left -= 1
            error = jobs[i].future.exception()
            if error is not None:
                yield "data: " + json.dumps({"error": {"message": str(error), "type": "server_error"}}) + "\n\n"
                return
            yield chunk([choice(i, None if chat else "", jobs[i].future.result().finish_reason)])
        if body.stream_options and body.stream_options.include_usage:
            yield chunk([], usage=usage(jobs, [j.future.result() for j in jobs]).model_dump())
        yield "data: [DONE]\n\n"
    finally:   # the client left (or the stream ended): free what is still running
        for job in jobs:
            job.cancel()
