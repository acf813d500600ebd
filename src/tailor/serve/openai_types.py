"""The OpenAI API shapes Tailor speaks (the parts of chat completions, completions and models
that a small local server can honour), as pydantic models: requests are validated against them
(an unknown or unsupported parameter is a 400, never silently ignored) and responses are built
from them, so the OpenAPI schema FastAPI publishes is what the server really returns."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_unicode(text: str) -> str:
    """JSON may carry lone UTF-16 surrogates, which no tokenizer can encode: they become U+FFFD."""
    return SURROGATE.sub("\ufffd", text) if not text.isascii() else text

MAX_N = 8
MAX_STOP = 4
MAX_STOP_CHARS = 256
# a seed is a 64-bit integer, as OpenAI's is: larger ones would overflow torch's generator
Seed = Annotated[int, Field(ge=-(1 << 63), le=(1 << 63) - 1)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    seed: Seed | None = None
    user: str | None = None
    # OpenAI's request metadata (string pairs). A plan-and-execute arm reads the document the question
    # is about from it ({"document": ID}), as its rows name theirs.
    metadata: Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
                        Field(max_length=16)] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_lengths(cls, v):
        # an empty stop string would end every answer before it starts (the decoder and transformers
        # disagree on it); a long one costs transformers' stop-string matcher (vocabulary x length
        # tables) on every static-path request
        for stop in [v] if isinstance(v, str) else v or []:
            if not 1 <= len(stop) <= MAX_STOP_CHARS:
                raise ValueError(f"a stop string has 1 to {MAX_STOP_CHARS} characters; this one has {len(stop)}")
        return v

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str

    _clean = field_validator("text")(classmethod(lambda cls, v: _valid_unicode(v)))


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _clean(cls, v):
        return _valid_unicode(v) if isinstance(v, str) else v

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Request):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    # the generated tokens' log-probabilities, each with its top_logprobs likeliest alternatives (0 to
    # 20, OpenAI's limit; only with logprobs: true)
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None

    def turns(self) -> list[dict]:
        # a developer message is a system message for the models served here
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]

    def limit(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=1 << 17)]


class CompletionRequest(_Request):
    # text, texts, token ids or lists of token ids, as OpenAI and vLLM accept them
    # (lm-evaluation-harness's local-completions sends token ids)
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=64)] | TokenIds | \
        Annotated[list[TokenIds], Field(min_length=1, max_length=64)]
    max_tokens: Annotated[int, Field(ge=0)] = 16   # OpenAI's default for completions; 0 with echo: score only
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None

    def scores_prompt(self) -> bool:
        """echo + logprobs: the prompt's own token log-probabilities, with max_tokens 0 (remote
        scoring) or 1 (lm-evaluation-harness: the prompt's tokens, then the one drawn after it)."""
        return self.echo and self.logprobs is not None

    @field_validator("prompt", mode="before")
    @classmethod
    def _shape(cls, v):
        # one message naming the four shapes, instead of pydantic's per-branch union errors ("prompt.str: ...")
        def ids(p):
            return isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in p)
        if not (isinstance(v, str) or ids(v) or isinstance(v, list) and v and (
                all(isinstance(p, str) for p in v) or all(ids(p) for p in v))):
            raise ValueError("a prompt is a text, a list of texts, a list of token ids (whole numbers >= 0) or a list "
                             "of such lists, none of them empty")
        return v

    @field_validator("prompt")
    @classmethod
    def _clean(cls, v):
        if isinstance(v, str):
            return _valid_unicode(v)
        return [_valid_unicode(p) if isinstance(p, str) else p for p in v]

    def prompts(self) -> list[str | list[int]]:
        """Each prompt: a text, or a list of token ids."""
        if isinstance(self.prompt, str) or isinstance(self.prompt[0], int):
            return [self.prompt]
        return list(self.prompt)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None   # the token's own UTF-8 bytes (a character split between tokens: part of it)


class TokenLogprob(TopLogprob):
    """OpenAI's chat logprobs entry: a generated token (`token`: the text it adds to the content, so
    the entries join to it), its log-probability and its likeliest alternatives, likeliest first."""
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: Literal["stop", "length"]
    logprobs: ChatLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Logprobs(BaseModel):
    """OpenAI's completions logprobs: per token its text, log-probability (None for an echoed
    prompt's first), character offset in the choice's text, and its likeliest alternatives
    ({token: log-probability}, likeliest first, the token itself always among them as vLLM
    answers; None for the first)."""
    tokens: list[str]
    token_logprobs: list[float | None]
    text_offset: list[int]
    top_logprobs: list[dict[str, float] | None] | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: Logprobs | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tailor"
    parent: str | None = None    # the base an adapter or prompt recipe runs on
    method: str | None = None    # how the arm adapts it (lora, few-shot, ...); None for the base


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
