"""From an OpenAI request body to the jobs that answer it, and from their answers to the response
body: the one translation the server and batch prediction (OpenAI Batch files) share."""

from __future__ import annotations

import random

from .openai_types import (
    ChatChoice,
    ChatCompletion,
    ChatMessage,
    ChatRequest,
    Completion,
    CompletionChoice,
    Logprobs,
    Usage,
)
from .scheduler import Job


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers


def request_jobs(arm, body, limit: int) -> list[Job]:
    """One job per choice (n) and prompt, after the checks a request must pass: at most `limit`
    new tokens a choice, and prompt + answer within the arm's context."""
    chat = isinstance(body, ChatRequest)
    max_tokens = body.limit(default=min(256, limit)) if chat else body.max_tokens
    echo = not chat and body.scores_prompt()
    if not chat and not echo and (body.echo or body.logprobs is not None or max_tokens == 0):
        raise ApiError(400, "echo and logprobs are served together, with max_tokens 0 or 1 (the prompt's own token "
                            "log-probabilities, then the token drawn after it); to generate, leave them out and ask "
                            "for max_tokens >= 1", "unsupported_parameter", "logprobs")
    if max_tokens > limit:
        raise ApiError(400, f"max_tokens is {max_tokens}; this server generates at most {limit} tokens a choice",
                       "max_tokens_too_large", "max_tokens")
    if arm.program is not None:
        return _program_jobs(arm, body, chat, max_tokens, echo)
    if echo:
        return _echo_jobs(arm, body, max_tokens)
    if chat and arm.builder is not None and all(t["role"] == "system" for t in body.turns()):
        # the arm's recipe frames a user's message (its instruction, shots, passages retrieved for it)
        raise ApiError(400, f"{arm.name} answers a user's message: this request has only system messages",
                       "invalid_request", "messages")
    # a token-id prompt is generated from as its text: an arm's recipe wraps text
    prompts = [arm.prompt(body.turns())] if chat else [arm.prompt(_text(arm, p)) for p in body.prompts()]
    # n choices draw from seeds seed, seed+1, ...: reproducible with a seed, independent without one
    seed = body.seed if body.seed is not None else random.getrandbits(31)
    jobs = []
    for prompt in prompts:
        n_prompt = len(arm.engine.encode(prompt))
        if n_prompt + max_tokens > arm.context:
            raise ApiError(400, f"This model's context is {arm.context} tokens; the request has {n_prompt} in its "
                                f"prompt and asks for {max_tokens} more", "context_length_exceeded",
                           "messages" if chat else "prompt")
        jobs += [Job(arm, prompt, max_tokens, body.temperature, body.top_p, seed + i, body.stops(), echo=echo)
                 for i in range(body.n)]
    return jobs


def _echo_jobs(arm, body, max_tokens: int) -> list[Job]:
    """echo + logprobs: the client's own text (or token ids, exactly as sent) scored token by token
    by the arm's weights (an adapter's, or an arm's own), never wrapped in the arm's instruction or
    chat template: a client counts the tokens it sent (lm-evaluation-harness indexes the answer's
    log-probabilities by its own context length), so the tokens returned are those. An arm that
    adds only a prompt to the base's weights would score exactly as the base: refused, naming it."""
    from ..methods.base import method_class
    if max_tokens > 1:
        raise ApiError(400, f"echo with logprobs scores the prompt and draws at most one token after it (max_tokens 0 "
                            f"or 1; this request asks for {max_tokens})", "unsupported_parameter", "max_tokens")
    if body.stream:
        raise ApiError(400, "echo with logprobs is answered whole: send it without stream", "unsupported_parameter",
                       "stream")
    if body.stop:
        raise ApiError(400, "echo with logprobs draws at most one token: stop does not apply; leave it out",
                       "unsupported_parameter", "stop")
    if arm.method is not None and arm.adapter is None and not method_class(arm.method).changes_weights:
        raise ApiError(400, f"{arm.name} is a {arm.method} arm: it adds a prompt to {arm.parent}'s weights, and echo "
                            f"scores the text as sent, unwrapped; score it against model '{arm.parent}'",
                       "unsupported_parameter", "echo")
    jobs = []
    for prompt in body.prompts():
        n_prompt = len(_known_ids(arm, prompt)) if isinstance(prompt, list) else len(arm.engine.encode(prompt))
        if n_prompt == 0:
            raise ApiError(400, "prompt: an empty prompt has no tokens to score", "invalid_request", "prompt")
        if n_prompt + max_tokens > arm.context:
            raise ApiError(400, f"This model's context is {arm.context} tokens; the request has {n_prompt} in its "
                                f"prompt and asks for {max_tokens} more", "context_length_exceeded", "prompt")
        seed = body.seed if body.seed is not None else random.getrandbits(31)
        text = prompt if isinstance(prompt, str) else arm.engine.tok.decode(prompt)
        jobs += [Job(arm, text, max_tokens, body.temperature, body.top_p, seed + i, echo=True,
                     ids=prompt if isinstance(prompt, list) else None, top=body.logprobs) for i in range(body.n)]
    return jobs


def _vocab(engine) -> int:
    """Token ids the model can embed and the tokenizer can name."""
    size = len(engine.tok)
    embeddings = getattr(engine.model, "get_input_embeddings", None)
    if embeddings is not None and embeddings() is not None:
        size = min(size, embeddings().num_embeddings)
    return size


def _known_ids(arm, ids: list[int]) -> list[int]:
    vocab = _vocab(arm.engine)
    bad = next((t for t in ids if t >= vocab), None)
    if bad is not None:
        raise ApiError(400, f"prompt: token id {bad} is outside this model's vocabulary (0 to {vocab - 1})",
                       "invalid_request", "prompt")
    return ids


def _text(arm, prompt: str | list[int]) -> str:
    return prompt if isinstance(prompt, str) else arm.engine.tok.decode(_known_ids(arm, prompt))


def _program_jobs(arm, body, chat: bool, max_tokens: int, echo: bool) -> list[Job]:
    """A plan-and-execute arm: each prompt (or the chat's last user message) is a question, its
    metadata the row's other fields (the document it is about); the program runs per question as
    the ladder ran it, so sampling settings do not apply and n is 1."""
    from ..errors import TailorError
    from ..task import Example
    if echo or body.n != 1:
        raise ApiError(400, f"{arm.name} answers by running its plan-and-execute program: one answer per question "
                            "(n 1), no echo or logprobs", "unsupported_parameter", "n" if body.n != 1 else "echo")
    if chat:
        turns = body.turns()
        if len(turns) != 1 or turns[0]["role"] != "user":   # other turns would be dropped unread: refused
            raise ApiError(400, f"{arm.name} answers one question by running its program: send it as a single "
                                f"user message (this request has {len(turns)} messages)", "invalid_request", "messages")
        questions = [turns[0]["content"]]
    else:
        questions = [_text(arm, p) for p in body.prompts()]
    jobs = []
    for i, question in enumerate(questions):
        example = Example(f"request-{i}", question, "", meta=dict(body.metadata or {}))
        try:
            arm.program.check_request(example)
        except TailorError as e:
            raise ApiError(400, str(e), "invalid_request", "metadata") from None
        jobs.append(Job(arm, question, max_tokens, 0.0, 1.0, body.seed, body.stops(), example=example))
    return jobs


def usage(jobs: list[Job], answers) -> Usage:
    prompts: dict[str, int] = {}
    for job, a in zip(jobs, answers):   # a prompt counts once however many choices it has (as OpenAI counts n)
        prompts.setdefault(job.prompt, a.prompt_tokens)
    prompt, completion = sum(prompts.values()), sum(a.completion_tokens for a in answers)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def response_body(body, jobs: list[Job], answers, rid: str, created: int) -> ChatCompletion | Completion:
    if isinstance(body, ChatRequest):
        return ChatCompletion(id=rid, created=created, model=body.model, usage=usage(jobs, answers), choices=[
            ChatChoice(index=i, message=ChatMessage(content=a.text), finish_reason=a.finish_reason)
            for i, a in enumerate(answers)])
    return Completion(id=rid, created=created, model=body.model, usage=usage(jobs, answers), choices=[
        CompletionChoice(index=i, text=a.text, finish_reason=a.finish_reason, logprobs=_logprobs(a.logprobs))
        for i, a in enumerate(answers)])


def _logprobs(tokens: list | None) -> Logprobs | None:
    if tokens is None:
        return None
    return Logprobs(tokens=[t[0] for t in tokens], token_logprobs=[t[1] for t in tokens],
                    text_offset=[t[2] for t in tokens], top_logprobs=[t[3] for t in tokens])
