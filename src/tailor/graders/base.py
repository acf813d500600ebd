"""The grader contract, in OpenAI's grader JSON shapes (the graders guide of OpenAI's platform
docs: `{"type": "string_check", "name": ..., "input": "{{ sample.output_text }}", "reference":
"{{ item.reference_answer }}", "operation": "eq"}` and its siblings), so a team's existing specs
load unchanged.

A grader is a typed pydantic spec with `grade(samples, items) -> list[float]`: one score per
sample, `items[i]` the `item` namespace of the row sample i answers (`item_of`). Defining a
subclass with `kind: ClassVar[str] = "name"` registers it (`GRADERS`), as `methods.base.Method`
registers methods: nothing else lists grader kinds.

Templates are Jinja2 in a sandboxed environment (`SandboxedEnvironment`: a spec cannot reach
Python attributes through `{{ }}`) with `StrictUndefined`: a template naming a field a row lacks
is a one-line error naming the grader, the field and the row, never an empty string.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from ..errors import TailorError
from ..task import Example

GRADERS: dict[str, type[Grader]] = {}
_LOADED: dict[str, Grader] = {}   # a task's grader, loaded once per process (a model judge loads its model once)
NAMESPACES = ("item", "sample")   # the only namespaces OpenAI's templates have


def _finalize(value):
    # a dict or list field renders as the JSON a team would write, not as Python's repr
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value


_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
                            finalize=_finalize)


class Grader(BaseModel):
    """One grader spec. Subclasses set `kind` and implement `score` (one row) or `grade` (a batch)."""

    model_config = ConfigDict(extra="forbid")
    kind: ClassVar[str] = ""

    type: str
    name: str = ""
    pass_threshold: float | None = None   # a score at or above it passes (OpenAI's meaning)

    _where: str = PrivateAttr("grader")
    _templates: dict = PrivateAttr(default_factory=dict)
    # samples scored 0 because they could not be graded, by reason: reported, never silent
    _failures: Counter = PrivateAttr(default_factory=Counter)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.kind:
            GRADERS[cls.kind] = cls

    # ------------------------------------------------------------ the contract

    def grade(self, samples: list[str], items: list[dict]) -> list[float]:
        """One score per sample; `items[i]` is the row sample i answers."""
        if len(samples) != len(items):
            raise TailorError(f"{self._where}: grader '{self.name}' got {len(samples)} samples for {len(items)} items")
        out = []
        for s, it in zip(samples, items):
            try:
                out.append(float(self.score(sample_of(s), it)))
            except NotJson:
                out.append(self.not_json())
        return out

    def not_json(self, score: float = 0.0) -> float:
        """The score of an answer that is not the JSON a template reads, counted."""
        self._failures[NOT_JSON] += 1
        return score

    def score(self, sample: dict, item: dict) -> float:
        raise NotImplementedError

    def check(self) -> None:
        """Checks made when the spec is read (templates compile, options agree); raises TailorError."""

    @property
    def failures(self) -> Counter:
        """Samples scored 0 without being graded, by reason (a sandbox stop, an unparsable judge answer)."""
        return self._failures

    def passed(self, score: float) -> bool | None:
        return None if self.pass_threshold is None else score >= self.pass_threshold

    # ------------------------------------------------------------ templates

    def template(self, text: str, field: str):
        """`text` compiled once; a syntax error or a namespace other than item/sample is refused."""
        if text not in self._templates:
            try:
                ast = _ENV.parse(text)
            except TemplateSyntaxError as e:
                raise self.error(field, f"template {text!r}: {e.message}") from None
            unknown = sorted(meta.find_undeclared_variables(ast) - set(NAMESPACES))
            if unknown:
                raise self.error(field, f"template {text!r} names {', '.join(unknown)}; a template reads only "
                                        "{{ item.* }} (the row) and {{ sample.* }} (the answer)")
            self._templates[text] = _ENV.from_string(ast)
        return self._templates[text]

    def render(self, text: str, sample: dict, item: dict, field: str) -> str:
        """`text` with its `{{ item.x }}` / `{{ sample.x }}` filled. A field the row lacks is a
        one-line error naming it and the row's fields."""
        if "{{" not in text and "{%" not in text:
            return text
        try:
            return self.template(text, field).render(item=item, sample=sample)
        except UndefinedError as e:
            missing = re.search(r"attribute '([^']+)'|'([^']+)' is undefined", str(e))
            name = next((g for g in (missing.groups() if missing else ()) if g), str(e))
            if name == "output_json" and "output_json" not in sample:
                raise NotJson from None   # the model's answer is wrong, not the spec: scored 0, counted
            row = item.get("id", "?")
            raise self.error(field, f"template {text!r} reads '{name}', which row {row} lacks "
                                    f"(item has: {', '.join(sorted(item)) or 'nothing'}; sample has: "
                                    f"{', '.join(sorted(sample))})") from None
        except SecurityError as e:   # the sandbox refused a Python internal ({{ item.__class__ }})
            raise self.error(field, f"template {text!r}: {e}") from None

    def error(self, field: str, problem: str) -> TailorError:
        name = f" '{self.name}'" if self.name else ""
        return TailorError(f"{self._where}: grader{name} field '{field}': {problem}")

    def notes(self) -> list[str]:
        """What was scored 0 without being graded, counted by reason."""
        return [f"{self.name or self.kind}: {n} sample(s) scored 0 ({why})" for why, n in sorted(self.failures.items())]


NOT_JSON = "the answer is not JSON and the grader reads sample.output_json"


class NotJson(Exception):
    """A template reads `sample.output_json` of an answer that is not JSON: the answer scores 0 and is
    counted (OpenAI's graders see output_json only under a JSON response format; here a free answer
    may miss it, which is the model's failure, not the spec's)."""


def sample_of(text: str) -> dict:
    """The `sample` namespace of one answer: `output_text`, and `output_json` when the answer is a
    JSON object or array (OpenAI fills it only under a response format; here it is parsed when it parses)."""
    out: dict[str, Any] = {"output_text": text}
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            out["output_json"] = json.loads(stripped)
        except ValueError:
            pass
    return out


def item_of(example: Example) -> dict:
    """The `item` namespace of a task row: its extra fields (what a reinforcement fine-tuning file
    carries beside the messages, e.g. `reference_answer`), then `id`, `input` (the text), `messages`
    (chat rows), `target` and `reference_answer` (the target, unless the row has its own),
    `choices`, and `meta`. Reader bookkeeping (fields starting with '_') is left out."""
    extra = {k: v for k, v in example.meta.items() if not k.startswith("_")}
    item = {**extra, "id": example.id, "input": example.input_text, "target": example.target}
    if isinstance(example.input, list):
        item["messages"] = example.input
    if example.choices is not None:
        item["choices"] = example.choices
    item.setdefault("reference_answer", example.target)
    item["meta"] = extra
    return item


def _one_line(e: ValidationError, where: str, prefix: str = "") -> TailorError:
    err = e.errors()[0]
    loc = prefix + ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "not a field of this grader type"
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return TailorError(f"{where}: field '{loc}': {msg}{more}")


def load_grader(spec: dict | str | Path, where: str | None = None, *, _prefix: str = "") -> Grader:
    """A grader from its spec: a dict, or the path of a JSON file holding one. Errors are one line
    naming the file and the field."""
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        where = where or str(path)
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise TailorError(f"{where}: cannot read the grader file ({e.strerror or e})") from None
        except json.JSONDecodeError as e:
            raise TailorError(f"{where}: line {e.lineno}: not JSON ({e.msg})") from None
    where = where or "grader"
    if not isinstance(spec, dict):
        raise TailorError(f"{where}: {_prefix or 'the grader'} must be a JSON object, got {type(spec).__name__}")
    kind = spec.get("type")
    if kind not in GRADERS:
        what = "has no 'type'" if kind is None else f"'{kind}' is not a grader type"
        raise TailorError(f"{where}: field '{_prefix}type': {what} (known: {', '.join(GRADERS)})")
    cls = GRADERS[kind]
    try:
        grader = cls.model_validate(spec)
    except ValidationError as e:
        raise _one_line(e, where, _prefix) from None
    grader._where = where if not _prefix else f"{where} ({_prefix.rstrip('.')})"
    grader.check()
    return grader


def task_grader(task) -> Grader:
    """The grader of a task (`task.grader`, a spec dict), loaded once and kept."""
    key = json.dumps(task.grader, sort_keys=True)
    if key not in _LOADED:
        _LOADED[key] = load_grader(task.grader, where=f"task {task.name}: grader")
    return _LOADED[key]


def grade_predictions(task, rows, preds) -> dict[str, int]:
    """The task's grader (tailor.graders) scores every answer: `p.grade`, one score per row, which
    the primary metric averages and the verdict resamples (the ladder, tuning and THE loop's dev
    evaluation all grade here). Returns the samples it scored 0 without grading (a sandbox stop, an
    unparsable judge answer), counted by reason."""
    if [p.id for p in preds] != [r.id for r in rows]:
        raise ValueError("predictions are not in the order of their rows")
    grader = task_grader(task)
    before = grader.failures.copy()
    for p, score in zip(preds, grader.grade([p.prediction for p in preds], [item_of(r) for r in rows])):
        p.grade = score
    return {f"grader {grader.name}: {why}": n - before.get(why, 0) for why, n in grader.failures.items()
            if n > before.get(why, 0)}
