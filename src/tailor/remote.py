"""A model behind an OpenAI-compatible endpoint, as a base: `openai:http://HOST:PORT/v1#MODEL`.

Prompts are rendered locally by the one prompt builder with MODEL's tokenizer (a bundled model
or a local folder; `openai:URL#MODEL?tokenizer=NAME` names another), and sent as text to the
completions endpoint, so a prompting arm, a distillation teacher or a labelling step measures
the remote model on exactly the prompts it would measure a local one on.

Options are scored by log-likelihood when the endpoint returns the prompt's log-probabilities
(`echo` + `logprobs` with `max_tokens: 0`, as vLLM and Tailor's own server do); otherwise the
engine generates the answer and matches it to an option, and says so (counted in `notes`).
The API key comes from OPENAI_API_KEY (or TAILOR_REMOTE_API_KEY).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import parse_qs

import torch

from .engine import ChoiceScores, Engine, Generation
from .errors import TailorError

PREFIX = "openai:"
# openai (the client library) is imported where requests are sent, not by every importer of this module


@dataclass
class RemoteModel:
    url: str
    name: str

    @property
    def weights_id(self) -> str:
        return f"{PREFIX}{self.url}#{self.name}"


def parse(spec: str) -> tuple[str, str, str]:
    """openai:URL#MODEL[?tokenizer=NAME] -> (url, model, tokenizer)."""
    rest = spec[len(PREFIX):]
    url, sep, model = rest.partition("#")
    model, _, query = model.partition("?")
    if not sep or not url.startswith(("http://", "https://")) or not model:
        raise TailorError(f"model '{spec}': expected openai:http://HOST:PORT/v1#MODEL")
    tokenizer = parse_qs(query).get("tokenizer", [model])[0]
    return url.rstrip("/"), model, tokenizer


def api_key() -> str:
    return os.environ.get("TAILOR_REMOTE_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none"


class RemoteEngine(Engine):
    """The engine over an OpenAI-compatible endpoint: the same scoring and generation calls, the
    same result cache (keyed by the endpoint and model), requests sent `concurrency` at a time."""

    def __init__(self, model: RemoteModel, tokenizer, weights_id: str, cache=None, batch_size: int = 16,
                 progress: bool = True, concurrency: int = 8, **_):
        import openai
        super().__init__(model, tokenizer, weights_id, cache, batch_size=batch_size, progress=progress)
        self.concurrency = concurrency
        self.client = openai.OpenAI(base_url=model.url, api_key=api_key(), max_retries=5)
        self.logprobs: bool | None = None   # does the endpoint score prompts? (found out on first use)

    @property
    def device(self):
        return torch.device("cpu")

    def _score(self, prompts, options, names, todo, meter) -> list[ChoiceScores]:
        return self._map(lambda i: self._score_one(prompts[i], options[i]), todo, meter)

    def _generate(self, prompts, names, todo, per_row, meter) -> list[Generation]:
        """`per_row`: each request's settings (Engine.generate: a seed per request)."""
        return self._map(lambda i: self._generate_one(prompts[i], per_row[i]["max_new_tokens"], per_row[i]["temperature"],
                                                      per_row[i]["top_p"], per_row[i]["stop"], per_row[i]["seed"]),
                         todo, meter)

    def _map(self, fn, todo: list[int], meter):
        out = []
        with ThreadPoolExecutor(self.concurrency) as pool:
            for r in pool.map(fn, todo):
                out.append(r)
                meter.update(1, r.prompt_tokens)
        return out

    def _score_one(self, prompt: str, options: list[str]) -> ChoiceScores:
        t0 = time.perf_counter()
        if self.logprobs is not False:
            try:
                sums = [self._option_logprob(prompt, o) for o in options]
                self.logprobs = True
                return ChoiceScores(sums, [len(self.encode(o)) for o in options], len(self.encode(prompt)),
                                    time.perf_counter() - t0)
            except _NoLogprobs:
                self.logprobs = False
        # No log-probabilities: generate the answer and match it to an option (counted)
        # room to spare: the model may spell an option in more tokens than its own tokenisation
        longest = max(len(self.encode(o)) for o in options)
        text = self._generate_one(prompt, 2 * longest + 4, 0.0, 1.0, [], 0).text.strip()
        # the longest option the answer starts with ("Yes, partly" over "Yes")
        hits = [(len(self._plain(o)), j) for j, o in enumerate(options) if self._plain(o) and text.startswith(self._plain(o))]
        hit = max(hits)[1] if hits else None
        notes = ["scored by matching generated text (the endpoint returns no log-probabilities)"]
        if hit is None:
            notes.append("generated answers that matched no option (counted as the first option)")
        sums = [0.0 if j == (hit or 0) else float("-inf") for j in range(len(options))]
        return ChoiceScores(sums, [len(self.encode(o)) for o in options], len(self.encode(prompt)),
                            time.perf_counter() - t0, notes=notes)

    def _option_logprob(self, prompt: str, option: str) -> float:
        import openai
        try:
            r = self.client.completions.create(model=self.model.name, prompt=prompt + option, max_tokens=0,
                                               echo=True, logprobs=1, temperature=0)
        except openai.BadRequestError as e:
            raise _NoLogprobs() from e
        lp = r.choices[0].logprobs
        if lp is None or not lp.token_logprobs:
            raise _NoLogprobs()
        # tokens that start inside the option are its tokens (one straddling the boundary too)
        return float(sum(x for x, offset, token in zip(lp.token_logprobs, lp.text_offset, lp.tokens)
                         if x is not None and offset + len(token) > len(prompt)))

    def _generate_one(self, prompt: str, max_new_tokens: int, temperature: float, top_p: float, stop: list[str],
                      seed: int) -> Generation:
        t0 = time.perf_counter()
        r = self.client.completions.create(model=self.model.name, prompt=prompt, max_tokens=max_new_tokens,
                                           temperature=temperature, top_p=top_p, stop=stop or None,
                                           seed=(seed or 0) if temperature > 0 else None)
        choice = r.choices[0]
        usage = r.usage
        return Generation(choice.text, usage.prompt_tokens if usage else len(self.encode(prompt)),
                          usage.completion_tokens if usage else len(self.encode(choice.text)),
                          time.perf_counter() - t0, choice.finish_reason or "stop")

    def _plain(self, option: str) -> str:
        return self.tok.decode(self.encode(option), skip_special_tokens=True).strip()


class _NoLogprobs(Exception):
    pass
