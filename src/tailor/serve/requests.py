"""From an OpenAI request body to the jobs that answer it, and from their answers to the response
body: the one translation the server and batch prediction (OpenAI Batch files) share."""

from __future__ import annotations

import random
import re

from .openai_types import (
    ChatChoice,
    ChatCompletion,
    ChatLogprobs,
    ChatMessage,
    ChatRequest,
    Completion,
    CompletionChoice,
    Logprobs,
    TokenLogprob,
    TopLogprob,
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
    if chat and body.top_logprobs is not None and not body.logprobs:
        raise ApiError(400, "top_logprobs is given with logprobs: true (the alternatives of each generated token)",
                       "invalid_request", "top_logprobs")
    top = (body.top_logprobs or 0 if body.logprobs else None) if chat else body.logprobs
    if not chat and body.echo and not echo:
        raise ApiError(400, "echo is served with logprobs (the prompt's own token log-probabilities, then the "
                            "generated tokens'); to generate only, leave echo out", "unsupported_parameter", "echo")
    if not chat and not echo and max_tokens == 0:
        raise ApiError(400, "max_tokens 0 generates nothing: ask for max_tokens >= 1, or send echo with logprobs to "
                            "score the prompt", "unsupported_parameter", "max_tokens")
    if max_tokens > limit:
        raise ApiError(400, f"max_tokens is {max_tokens}; this server generates at most {limit} tokens a choice",
                       "max_tokens_too_large", "max_tokens")
    if top is not None and (max_tokens > 1 or not echo):   # generated tokens' log-probabilities
        why = no_logprobs(arm)
        if why:
            raise ApiError(400, f"{arm.name} {why}, so it has no log-probabilities of generated tokens: leave "
                                f"{'logprobs' if chat else 'logprobs out (or echo with max_tokens 0 or 1)'}",
                           "unsupported_parameter", "logprobs")
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
        jobs += [Job(arm, prompt, max_tokens, body.temperature, body.top_p, seed + i, body.stops(), echo=echo,
                     logprobs=top) for i in range(body.n)]
    return jobs


def no_logprobs(arm) -> str | None:
    """Why `arm`'s answers have no per-token log-probabilities (None: they do): its answer is not
    one sequence sampled token by token from a model here. Asked of what the arm is (its program,
    its kind, its engine), never of its name."""
    from ..decode import supported
    if arm.program is not None:
        return "answers by running its plan-and-execute program (several model calls, one answer put together)"
    if arm.kind == "classify":
        return "answers with the label its option scoring picks (each label's whole log-likelihood), not with tokens " \
               "drawn one at a time"
    if str(arm.engine.weights_id).startswith("openai:"):
        return "runs on a remote base (an OpenAI-compatible endpoint), whose generation this server does not run"
    if not supported(arm.engine.model):
        return "generates through transformers' generate (a prompt-learning adapter or sliding-window attention: " \
               "rows the continuous-batching decoder cannot run), which records no log-probabilities here"
    return None


def _echo_jobs(arm, body, max_tokens: int) -> list[Job]:
    """echo + logprobs: the client's own text (or token ids, exactly as sent) scored token by token
    by the arm's weights (an adapter's, or an arm's own), never wrapped in the arm's instruction or
    chat template: a client counts the tokens it sent (lm-evaluation-harness indexes the answer's
    log-probabilities by its own context length), so the tokens returned are those. An arm that
    adds only a prompt to the base's weights would score exactly as the base: refused, naming it."""
    from ..methods.base import method_class
    if body.stream:
        raise ApiError(400, "echo with logprobs is answered whole: send it without stream", "unsupported_parameter",
                       "stream")
    if body.stop and max_tokens <= 1:
        raise ApiError(400, "echo with logprobs and max_tokens 0 or 1 draws at most one token: stop does not apply; "
                            "leave it out", "unsupported_parameter", "stop")
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
        # past max_tokens 1 the decoder generates after the scored prompt, unwrapped too, recording the
        # generated tokens' log-probabilities
        jobs += [Job(arm, text, max_tokens, body.temperature, body.top_p, seed + i, body.stops(), echo=True,
                     ids=prompt if isinstance(prompt, list) else None, top=body.logprobs,
                     logprobs=body.logprobs if max_tokens > 1 else None) for i in range(body.n)]
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
            ChatChoice(index=i, message=ChatMessage(content=a.text), finish_reason=a.finish_reason,
                       logprobs=None if a.generated is None else chat_logprobs(j.arm.engine.tok, a.generated))
            for i, (j, a) in enumerate(zip(jobs, answers))])
    return Completion(id=rid, created=created, model=body.model, usage=usage(jobs, answers), choices=[
        CompletionChoice(index=i, text=a.text, finish_reason=a.finish_reason, logprobs=_logprobs(j.arm.engine.tok, a))
        for i, (j, a) in enumerate(zip(jobs, answers))])


def _logprobs(tok, a) -> Logprobs | None:
    """An echo's prompt entries, then the generated tokens' (their offsets after the prompt's text)."""
    if a.logprobs is None and a.generated is None:
        return None
    echoed = a.logprobs or []
    out = Logprobs(tokens=[t[0] for t in echoed], token_logprobs=[t[1] for t in echoed],
                   text_offset=[t[2] for t in echoed], top_logprobs=[t[3] for t in echoed])
    if a.generated:
        more = completion_logprobs(tok, a.generated, len(a.text) - sum(len(e[1]) for e in a.generated))
        out.tokens += more.tokens
        out.token_logprobs += more.token_logprobs
        out.text_offset += more.text_offset
        out.top_logprobs += more.top_logprobs
    return out


def completion_logprobs(tok, entries: list, start: int) -> Logprobs:
    """Completions logprobs of generated tokens (decode.covered's entries: token, piece, log-probability,
    alternatives), the first at character `start` of the choice's text. Each token is the text it
    adds, so the tokens join to the text; its alternatives are keyed by their text, and the token
    itself is always among them under its own piece (vLLM's answer: N or N + 1 entries)."""
    names = _names(tok, [a for e in entries for a, _ in e[3]])
    tokens, offsets, tops = [], [], []
    for token, piece, lp, alts in entries:
        ranked = sorted([(names[a], v) for a, v in alts if a != token] + [(piece, lp)], key=lambda x: -x[1])
        top: dict[str, float] = {}
        for name, v in ranked:
            top.setdefault(name, v)
        tokens.append(piece)
        offsets.append(start)
        tops.append(top)
        start += len(piece)
    return Logprobs(tokens=tokens, token_logprobs=[e[2] for e in entries], text_offset=offsets, top_logprobs=tops)


def chat_logprobs(tok, entries: list) -> ChatLogprobs:
    """OpenAI's chat logprobs of generated tokens: per token the text it adds to the content, its
    log-probability and own bytes, and exactly its top_logprobs alternatives, likeliest first."""
    ids = [e[0] for e in entries] + [a for e in entries for a, _ in e[3]]
    names, raw = _names(tok, ids), _bytes(tok, ids)
    return ChatLogprobs(content=[
        TokenLogprob(token=piece, logprob=lp, bytes=raw[token],
                     top_logprobs=[TopLogprob(token=names[a], logprob=v, bytes=raw[a]) for a, v in alts])
        for token, piece, lp, alts in entries])


def _names(tok, ids: list[int]) -> dict[int, str]:
    """Each token's text alone, as the echo path names tokens."""
    unique = sorted(set(ids))
    return {t: tok.convert_tokens_to_string([p]) for t, p in zip(unique, tok.convert_ids_to_tokens(unique))}


def _byte_level() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet (Radford et al. 2019, the `bytes_to_unicode` table every
    byte-level tokenizer shares): each byte is a printable character in a token's string."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


BYTE_LEVEL = _byte_level()
BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")   # sentencepiece's byte fallback


def _bytes(tok, ids: list[int]) -> dict[int, list[int]]:
    """Each token's own UTF-8 bytes: read off a byte-level vocabulary (a token may hold part of a
    character), a sentencepiece byte token (<0xE2>), or else its text encoded."""
    backend = getattr(tok, "backend_tokenizer", None)
    byte_level = "ByteLevel" in str(getattr(backend, "decoder", ""))
    out = {}
    unique = sorted(set(ids))
    for t, p in zip(unique, tok.convert_ids_to_tokens(unique)):
        byte = BYTE_TOKEN.fullmatch(p or "")
        if byte:
            out[t] = [int(byte.group(1), 16)]
        elif byte_level and p and all(c in BYTE_LEVEL for c in p):
            out[t] = [BYTE_LEVEL[c] for c in p]
        else:
            out[t] = list(tok.convert_tokens_to_string([p]).encode("utf-8"))
    return out
