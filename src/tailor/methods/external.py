"""`external`: a row for a model Tailor did not build (the closed model a team is leaving), measured
on the same test rows, through the same measurement path and grader, as every other arm, so the
ladder answers "how close does an open arm get to what we had?". Its answers come from one of:

- `completions: FILE`, a JSONL file of the model's outputs on the test rows, one line per row:
  `{"id": ROW_ID, "completion": "..."}`; or keyed by the row's input instead of its id
  (`{"input" | "prompt" | "text": "...", "completion": "..."}`, or the chat `messages` the row
  holds); or OpenAI's Batch API output lines (`custom_id` = the row id, the answer in
  `response.body.choices[0]`). `usage` (prompt and completion tokens), where a line has it, is the
  arm's cost in tokens. `tailor run DATA --plan-only` writes the rows to answer (RUN/test_rows.jsonl).
- `endpoint: openai:URL#MODEL`, the model asked live, zero-shot, through Tailor's remote base
  (tailor.remote: prompts rendered by the one prompt builder, sent to the completions endpoint).
  With `api: chat`, the chat completions endpoint instead (a chat-only model, as OpenAI's
  fine-tuned models are): each test row's zero-shot conversation (the prompt builder's messages:
  the task's instruction as the system turn, the row as the user's) asked once at temperature 0
  when the arm is fitted; the answers and their usage are then the arm's, as a file's would be.

It changes no weights and Tailor cannot serve or export it (`external`): it is a reference row,
never the recommendation (tailor.decide).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ..errors import DataError, TailorError
from ..jsonl import json_type, read_jsonl
from ..recipe import Recipe
from ..task import Example, Task
from ..utils import atomic_write_text, sha256_file
from .base import Adapted, Method, base_recipe, recipe_builder

ANSWERS = "answers.jsonl"   # the arm's artifact: the answer to each test row, resolved from the file when fitted
INPUT_KEYS = ("input", "prompt", "text")   # what a line keyed by the row's input names it by (text rows)
_ENDPOINT = re.compile(r"^openai:https?://[^#\s]+#\S+$")


@dataclass
class Answer:
    completion: str
    line: int
    prompt_tokens: int | None = None       # the file's usage, where the line has it
    completion_tokens: int | None = None


@dataclass
class Completions:
    """A completions file read: each line's answer under the key it names its row by."""
    path: str
    by_id: dict[str, Answer] = field(default_factory=dict)
    by_input: dict[str, Answer] = field(default_factory=dict)   # a text input, or chat messages as JSON
    lines: int = 0        # distinct answers
    duplicates: int = 0   # lines that repeat an earlier line's answer to the same row (read once)

    def find(self, ex: Example) -> Answer | None:
        return self.by_id.get(ex.id) or self.by_input.get(input_key(ex.input))


def input_key(value) -> str:
    """A row's input as a line names it: the text, or the conversation (role and content of each
    turn, a developer turn read as the system turn and a final assistant answer dropped, as the
    task reader does) as JSON."""
    if isinstance(value, str):
        return value
    turns = [{"role": "system" if m.get("role") == "developer" else m.get("role"), "content": m.get("content")}
             for m in value]
    if turns and turns[-1]["role"] == "assistant":
        turns = turns[:-1]
    return json.dumps(turns, ensure_ascii=False, sort_keys=True)


def read_completions(path: str | Path) -> Completions:
    """Every line of a completions file in one of the three shapes, checked: a bad line is one
    DataError naming the file, the line and the field; two different answers to one row too."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "completions file not found" if not path.exists() else "not a file")
    out = Completions(str(path))
    for no, rec in read_jsonl(path):
        key, answer = _line(path, no, rec)
        table = out.by_id if key[0] == "id" else out.by_input
        seen = table.get(key[1])
        if seen is not None and seen.completion != answer.completion:
            raise DataError(path, f"a second, different completion for the same row (first at line {seen.line})", no,
                            key[2])
        if seen is None:
            table[key[1]] = answer
            out.lines += 1
        else:
            out.duplicates += 1
    if not out.lines:
        raise DataError(path, "holds no completions")
    return out


def _line(path: Path, no: int, rec: dict) -> tuple[tuple[str, str, str], Answer]:
    if "custom_id" in rec:   # OpenAI's Batch API output (its own "id" is the request's, not the row's)
        return ("id", _row_id(path, no, rec["custom_id"], "custom_id"), "custom_id"), _batch_answer(path, no, rec)
    if "completion" not in rec:
        raise DataError(path, "missing (each line holds the model's answer as completion, or is a Batch API output "
                              "line with custom_id and response)", no, "completion")
    text = rec["completion"]
    if not isinstance(text, str):
        raise DataError(path, f"expected a string, got {json_type(text)}", no, "completion")
    prompt_tokens, completion_tokens = _usage(path, no, rec.get("usage"), "usage")
    answer = Answer(text, no, prompt_tokens, completion_tokens)
    if rec.get("id") is not None:
        return ("id", _row_id(path, no, rec["id"], "id"), "id"), answer
    if "messages" in rec:
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise DataError(path, f"expected a non-empty array of messages, got {json_type(msgs)}"
                            if not isinstance(msgs, list) else "is empty", no, "messages")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise DataError(path, "expected an object with a string role and content", no, f"messages[{i}]")
        return ("input", input_key(msgs), "messages"), answer
    for name in INPUT_KEYS:
        if name in rec:
            value = rec[name]
            if isinstance(value, list):   # a conversation under "input"
                return _line(path, no, {**{k: v for k, v in rec.items() if k != name}, "messages": value})
            if not isinstance(value, str):
                raise DataError(path, f"expected a string, got {json_type(value)}", no, name)
            return ("input", value, name), answer
    raise DataError(path, "names no row: give the row's id, or its input as input, prompt, text or messages", no, "id")


def _row_id(path: Path, no: int, value, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise DataError(path, f"expected a row id (a string or a whole number), got {json_type(value)}", no, name)
    return str(value)


def _batch_answer(path: Path, no: int, rec: dict) -> Answer:
    response = rec.get("response")
    if not isinstance(response, dict):
        error = rec.get("error")
        why = error.get("message") if isinstance(error, dict) and isinstance(error.get("message"), str) else None
        raise DataError(path, f"the request failed: {why}" if why else f"expected an object, got {json_type(response)}",
                        no, "response")
    status = response.get("status_code")
    body = response.get("body")
    if status != 200:
        message = body.get("error", {}).get("message") if isinstance(body, dict) and isinstance(body.get("error"), dict) \
            else None
        raise DataError(path, f"the request failed with status {status}" + (f": {message}" if message else ""), no,
                        "response.status_code")
    if not isinstance(body, dict):
        raise DataError(path, f"expected an object, got {json_type(body)}", no, "response.body")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise DataError(path, "expected a non-empty array of choices", no, "response.body.choices")
    choice = choices[0]
    if "message" in choice:   # a chat completion
        message = choice["message"]
        text = message.get("content") if isinstance(message, dict) else None
        where = "response.body.choices[0].message.content"
    else:                     # a (legacy) completion
        text, where = choice.get("text"), "response.body.choices[0].text"
    if not isinstance(text, str):
        raise DataError(path, f"expected the answer's text, got {json_type(text)}", no, where)
    prompt_tokens, completion_tokens = _usage(path, no, body.get("usage"), "response.body.usage")
    return Answer(text, no, prompt_tokens, completion_tokens)


def _usage(path: Path, no: int, usage, where: str) -> tuple[int | None, int | None]:
    if usage is None:
        return None, None
    if not isinstance(usage, dict):
        raise DataError(path, f"expected an object, got {json_type(usage)}", no, where)
    out = []
    for name in ("prompt_tokens", "completion_tokens"):
        v = usage.get(name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise DataError(path, f"expected a whole number of tokens >= 0, got {json_type(v)}", no, f"{where}.{name}")
        out.append(v)
    return out[0], out[1]


def check_covers(completions: Completions, rows: list[Example], where: str) -> tuple[dict[str, Answer], int]:
    """Each row's answer, and how many of the file's lines answer none of `rows` (counted, reported).
    A row without an answer is refused with the count and the first ids: a subset is never scored
    in silence."""
    answers, missing = {}, []
    for ex in rows:
        a = completions.find(ex)
        if a is None:
            missing.append(ex.id)
        else:
            answers[ex.id] = a
    if missing:
        first = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise TailorError(f"{where}: {len(missing)} of the {len(rows)} test rows have no completion (first ids: {first});"
                          " answer every row that `tailor run DATA --plan-only` writes to RUN/test_rows.jsonl")
    used = {a.line for a in answers.values()}
    return answers, completions.lines - len(used)


def row_digest(ex: Example) -> str:
    """What the answer was given to: an answered row whose input changed (a robustness
    perturbation, an edited file) is refused, not answered with another input's answer."""
    return hashlib.sha256(input_key(ex.input).encode("utf-8")).hexdigest()[:16]


def label_of(text: str, options: list[str]) -> tuple[str, str | None]:
    """A classify or choice answer as the option it names, and how it was read (None: exactly).
    Case, spaces and closing punctuation are not an answer's content; a longer answer that starts
    with an option ("Positive. The tweet ...") names the longest such option; otherwise the text
    stays as written and is scored wrong."""
    if text in options:
        return text, None
    plain = text.strip().lower().strip(" .!\"'`*")
    norm = {o: o.strip().lower() for o in options}
    same = [o for o, n in norm.items() if n == plain]
    if len(same) == 1:
        return same[0], "answers read as an option after case, spaces and punctuation"
    starts = [o for o, n in norm.items() if n and plain.startswith(n) and not plain[len(n):len(n) + 1].isalnum()]
    if starts:
        return max(starts, key=len), "answers read as the option they start with"
    return text.strip(), "answers that name no option (scored wrong)"


class _Answers:
    """The 'engine' of an arm answered from a file: nothing runs; it carries the counts the
    measurement reports (`notes`)."""

    def __init__(self, notes: dict[str, int]):
        self.notes = dict(notes)


@dataclass
class Answered(Adapted):
    """An arm whose answers were given to Tailor: each test row's answer by id."""
    answers: dict = field(default_factory=dict)   # row id -> {"completion", tokens, "line", "input"}
    fit_notes: dict = field(default_factory=dict)
    timed: bool = False   # answers read from a file: no request to time (tailor.measure skips its latency)

    def engine(self, cache=None, **options):
        return _Answers(self.fit_notes)

    def prompts(self, examples: list[Example]) -> list[str]:
        return ["" for _ in examples]   # the model was prompted outside Tailor

    def predict(self, engine, task: Task, examples: list[Example], max_new_tokens: int = 64) -> list:
        from ..evaluate import Prediction
        missing = [ex.id for ex in examples if ex.id not in self.answers]
        if missing:
            first = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise TailorError(f"{self.recipe.options.get('completions')}: {len(missing)} of the {len(examples)} rows "
                              f"have no completion (first ids: {first})")
        changed = [ex.id for ex in examples if self.answers[ex.id]["input"] != row_digest(ex)]
        if changed:
            raise TailorError(f"row {changed[0]}: its input is not the one the completions file answered ({len(changed)} "
                              "rows differ); an answer from a file cannot answer a perturbed or edited input")
        out, notes = [], engine.notes
        for ex in examples:
            a = self.answers[ex.id]
            text = a["completion"]
            probs = None
            if task.kind in ("classify", "choice"):
                options = list(task.labels if task.kind == "classify" else ex.choices or [])
                text, how = label_of(text, options)
                if how:
                    notes[how] = notes.get(how, 0) + 1
                probs = {**{o: 0.0 for o in options}, text: 1.0}   # a hard answer: all its weight on one option
            else:
                text = text.strip()
            if a["prompt_tokens"] is None:
                notes["answers without token usage (counted as 0 tokens)"] = \
                    notes.get("answers without token usage (counted as 0 tokens)", 0) + 1
            out.append(Prediction(ex.id, text, ex.target, a["prompt_tokens"] or 0, a["completion_tokens"] or 0, 0.0,
                                  probs=probs))
        return out


class External(Method):
    """A model outside Tailor, measured as an arm: its answers from a completions file or an endpoint."""

    method: ClassVar[str] = "external"
    external: ClassVar[bool] = True
    completions: str | None = None   # a JSONL file of the model's answers to the test rows
    endpoint: str | None = None      # openai:http://HOST:PORT/v1#MODEL[?tokenizer=NAME], asked zero-shot
    api: Literal["completions", "chat"] = "completions"   # which endpoint the model answers on
    max_tokens: Annotated[int, Field(ge=1)] = 64          # api chat: the longest answer asked for

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value):
        if value is not None and not _ENDPOINT.match(value):
            raise ValueError("openai:http://HOST:PORT/v1#MODEL")
        return value

    @model_validator(mode="after")
    def _one_source(self):
        if (self.completions is None) == (self.endpoint is None):
            raise ValueError("exactly one of completions (a file of the model's answers) or endpoint (openai:URL#MODEL)")
        if self.api == "chat" and self.endpoint is None:
            raise ValueError("api: chat names how the endpoint is asked; give an endpoint (openai:URL#MODEL)")
        return self

    def fit_inputs(self) -> dict:
        if self.completions and Path(self.completions).is_file():
            return {"completions": sha256_file(self.completions)}
        return {}

    def check_rows(self, task: Task, rows: list[Example]) -> list[str]:
        """Refuses, before any work, measured rows the completions file does not answer (an endpoint
        answers any row); says how many of its lines answer none of them."""
        if self.completions is None:
            return []
        if any(isinstance(ex.meta.get("rejected"), str) for ex in rows):
            raise TailorError(f"{self.completions}: preference pairs are measured by the likelihood an arm gives each "
                              "answer, which a file of completions does not hold")
        _, extra = check_covers(read_completions(self.completions), rows, self.completions)
        return [f"{self.completions}: {extra} completions answer no measured test row (not scored)"] if extra else []

    def fit(self, task: Task, base, out=None, *, cache=None, **_) -> Adapted:
        from ..prompts import builder_for
        if self.endpoint is not None and self.api == "chat":   # asked once, then the arm's answers
            builder = builder_for(task, base.tokenizer)
            answers, notes = ask_chat(self.endpoint, builder, task.splits.get("test") or [], self.max_tokens)
            return _answered(base_recipe(self, task, base, builder), answers, base, builder, notes)
        if self.endpoint is not None:   # the zero-shot prompt, on a base of its own behind the endpoint
            from ..models import load_base
            remote = load_base(self.endpoint)
            builder = builder_for(task, remote.tokenizer)
            return Adapted(base_recipe(self, task, remote, builder), remote.model, remote.tokenizer, remote.weights_id,
                           builder)
        rows = task.splits.get("test") or []
        if any(isinstance(ex.meta.get("rejected"), str) for ex in rows):
            self.check_rows(task, rows)
        completions = read_completions(self.completions)
        # every test row the file answers; a measured row it does not answer is refused when predicted
        found = {ex.id: (ex, a) for ex in rows if (a := completions.find(ex)) is not None}
        answers = {i: {"completion": a.completion, "prompt_tokens": a.prompt_tokens, "completion_tokens": a.completion_tokens,
                       "line": a.line, "input": row_digest(ex)} for i, (ex, a) in found.items()}
        extra = completions.lines - len({a.line for _, a in found.values()})
        notes = {k: n for k, n in (("completions for rows outside the test split (not scored)", extra),
                                   ("completion lines repeating an earlier line's answer (read once)",
                                    completions.duplicates)) if n}
        builder = builder_for(task, base.tokenizer)
        return _answered(base_recipe(self, task, base, builder), answers, base, builder, notes)

    @classmethod
    def save_weights(cls, adapted: Adapted, folder: Path) -> dict | None:
        if not isinstance(adapted, Answered):
            return None
        text = "".join(json.dumps({"id": i, **a}, ensure_ascii=False) + "\n" for i, a in adapted.answers.items())
        atomic_write_text(folder / ANSWERS, text)
        source = adapted.recipe.options.get("completions")
        if source and Path(source).is_file():   # the file as given, beside what was read from it
            shutil.copyfile(source, folder / "completions.jsonl")
        return {"files": [ANSWERS], "digest": sha256_file(folder / ANSWERS), "notes": adapted.fit_notes}

    @classmethod
    def load(cls, recipe: Recipe, pool: list[Example], folder: Path, base) -> Adapted:
        if recipe.options.get("endpoint") and recipe.options.get("api", "completions") == "completions":
            from ..models import load_base
            remote = load_base(recipe.options["endpoint"])
            return Adapted(recipe, remote.model, remote.tokenizer, remote.weights_id,
                           recipe_builder(recipe, remote.tokenizer))
        answers = {}
        for no, rec in read_jsonl(Path(folder) / ANSWERS):
            if not isinstance(rec.get("id"), str) or not isinstance(rec.get("completion"), str):
                raise DataError(Path(folder) / ANSWERS, "expected a row id and its completion", no)
            answers[rec.pop("id")] = rec
        return _answered(recipe, answers, base, recipe_builder(recipe, base.tokenizer),
                         dict((recipe.weights or {}).get("notes") or {}))


def _answered(recipe: Recipe, answers: dict, base, builder, notes: dict) -> Answered:
    digest = hashlib.sha256(json.dumps(answers, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return Answered(recipe, None, base.tokenizer, f"completions:{digest[:16]}", builder, answers=answers,
                    fit_notes=notes)


def ask_chat(spec: str, builder, rows: list[Example], max_tokens: int, concurrency: int = 8) -> tuple[dict, dict]:
    """Each row's zero-shot conversation asked at the chat completions endpoint of `spec`
    (openai:URL#MODEL), temperature 0: {row id: answer} as a completions file's lines read, and
    the counts worth reporting. A request the endpoint refuses stops the arm, naming the row."""
    from concurrent.futures import ThreadPoolExecutor

    import openai

    from ..remote import api_key, parse
    url, model, _ = parse(spec)
    client = openai.OpenAI(base_url=url, api_key=api_key(), max_retries=5)

    def ask(ex: Example) -> dict:
        try:
            r = client.chat.completions.create(model=model, messages=builder.messages(ex), max_tokens=max_tokens,
                                               temperature=0)
        except openai.OpenAIError as e:
            raise TailorError(f"{spec}: row {ex.id}: the chat completions endpoint answered {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:300]}") from None
        usage = r.usage
        return {"completion": r.choices[0].message.content or "", "line": 0, "input": row_digest(ex),
                "prompt_tokens": usage.prompt_tokens if usage else None,
                "completion_tokens": usage.completion_tokens if usage else None,
                "finish_reason": r.choices[0].finish_reason}

    with ThreadPoolExecutor(concurrency) as pool:
        answers = dict(zip([ex.id for ex in rows], pool.map(ask, rows)))
    cut = sum(a.pop("finish_reason") == "length" for a in answers.values())
    return answers, ({f"answers cut at max_tokens {max_tokens}": cut} if cut else {})
