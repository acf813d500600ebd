"""`tailor serve`: an OpenAI-compatible HTTP server (FastAPI) over one base and its arms.

Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions, POST /v1/completions (both
non-streaming and streaming as server-sent events ending with `data: [DONE]`). The arm is the
request's `model`. Errors come in OpenAI's shape with the status a client expects: 400 for a bad
request (an over-long prompt too), 401 without the key, 404 for an unknown model, 413 for an
over-sized body, 429 when the queue is full (the official client retries it); 5xx only for the
server's own faults. Every bad request leaves the server serving.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from .openai_types import (
    ChatCompletion,
    ChatRequest,
    Completion,
    CompletionRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from .requests import ApiError, request_jobs, response_body, usage
from .scheduler import Job, QueueFull, Scheduler

LOOPBACK = ("127.0.0.1", "localhost", "::1")
ERRORS = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error"}
ERROR_CODES = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429)}
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
               max_tokens: int = 2048) -> FastAPI:
    """`max_tokens`: the most tokens one choice may generate (a request asking for more gets a
    400), so no request can hold the decoder for long."""
    app = FastAPI(title="Tailor", description="OpenAI-compatible endpoints over one base model and its arms",
                  version="1")
    created = int(time.time())

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path.startswith("/v1/"):
            if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
                return error_response(401, "Incorrect or missing API key: send Authorization: Bearer KEY",
                                      "invalid_api_key")
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > max_body):
                return error_response(413, f"The request body is larger than {max_body} bytes", "request_too_large")
        return await call_next(request)

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
        jobs = request_jobs(_arm(arms, body.model), body, max_tokens)
        return await _answer(request, scheduler, jobs, body, chat=True)

    @app.post("/v1/completions", response_model=Completion, responses=STREAMING)
    async def completions(body: CompletionRequest, request: Request):
        jobs = request_jobs(_arm(arms, body.model), body, max_tokens)
        return await _answer(request, scheduler, jobs, body, chat=False)

    return app


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
    except QueueFull as e:
        raise ApiError(429, f"The server is busy: {e}; retry shortly", "rate_limit_exceeded",
                       headers={"Retry-After": "1"}) from None


async def _wait(request: Request, jobs: list[Job]) -> list:
    """The jobs' answers; a client that leaves cancels its jobs (their slots go to others)."""
    futures = [asyncio.wrap_future(j.future) for j in jobs]
    while True:
        done, pending = await asyncio.wait(futures, timeout=0.25)
        if not pending:
            return [f.result() for f in futures]
        if await request.is_disconnected():
            for job in jobs:
                job.cancel()
            raise asyncio.CancelledError


def _wire(jobs: list[Job]) -> asyncio.Queue:
    """Events (choice index, text) of the jobs, on this event loop; text None: a job ended."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    for i, job in enumerate(jobs):
        job.on_text = lambda text, i=i: loop.call_soon_threadsafe(events.put_nowait, (i, text))
        job.future.add_done_callback(lambda f, i=i: loop.call_soon_threadsafe(events.put_nowait, (i, None)))
    return events


async def _stream(jobs: list[Job], events: asyncio.Queue, body, chat: bool, rid: str, created: int):
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices: list[dict], **extra) -> str:
        return "data: " + json.dumps({"id": rid, "object": kind, "created": created, "model": body.model,
                                      "choices": choices, **extra}) + "\n\n"

    def choice(i: int, text: str | None, finish: str | None) -> dict:
        if chat:
            delta = {} if text is None else {"content": text}
            return {"index": i, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {"index": i, "text": text or "", "finish_reason": finish, "logprobs": None}

    try:
        if chat:
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None,
                          "logprobs": None} for i in range(len(jobs))])
        left = len(jobs)
        while left:
            i, text = await events.get()
            if text is not None:
                yield chunk([choice(i, text, None)])
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
