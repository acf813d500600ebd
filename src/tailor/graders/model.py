"""`score_model` and `label_model`: a model judges each answer, OpenAI's shapes:

    {"type": "label_model", "name": "sentiment", "model": "smollm2-135m",
     "input": [{"role": "developer", "content": "Is this answer correct? Reply correct or incorrect."},
               {"role": "user", "content": "Question: {{ item.input }}\\nAnswer: {{ sample.output_text }}"}],
     "labels": ["correct", "incorrect"], "passing_labels": ["correct"]}

    {"type": "score_model", "name": "quality", "model": "runs/judge-arm", "range": [0, 10],
     "pass_threshold": 7, "input": [...]}

`model` is a Tailor arm folder (the arm as it was measured: its instruction, shots, weights), a
base a ladder can load (a bundled model, a local folder, a hub id) used zero-shot, or a model
behind an OpenAI-compatible endpoint (`openai:URL#MODEL`). The judge runs through the same path
as every arm (`Adapted.predict`: THE prompt assembly and the engine), so a judge is measured and
served like anything else; no second generation path exists.

label_model: the label is chosen by the engine's option scoring over `labels` (the highest
log-likelihood, as a classify arm answers), so it is always one of them; 1 if it is in
`passing_labels`, else 0. score_model: the judge writes its answer (greedy), and the score is the
`result` (or `score`) of a JSON answer, else the first number in it; an answer with no number
scores the low end of `range` and a number outside `range` is clipped into it, both counted in `failures`.
`sampling_params` are accepted: `max_completions_tokens` caps the answer; the judge decodes
greedily whatever `temperature`, `top_p` or `seed` say (so a grade is a function of its input),
which `notes()` reports.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from ..errors import TailorError
from ..task import Example, Task
from .base import Grader, NotJson, sample_of

NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_BASES: dict[str, Any] = {}   # judges' bases loaded in this process, by name: several graders share one


class Part(BaseModel):
    """A content part of OpenAI's message input ({"type": "input_text", "text": ...})."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["input_text", "output_text", "text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Part]
    type: Literal["message"] | None = None

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


def parse_score(text: str) -> float | None:
    """A judge's score: `result` / `score` of a JSON object, else the first number; None if none."""
    t = text.strip()
    if t.startswith("{"):
        try:
            obj = json.loads(t)
            for key in ("result", "score", "grade"):
                if isinstance(obj, dict) and isinstance(obj.get(key), (int, float)):
                    return float(obj[key])
        except ValueError:
            pass
    m = NUMBER.search(t)
    return float(m.group()) if m else None


class _ModelGrader(Grader):
    input: list[Message] = Field(min_length=1)
    model: str
    sampling_params: dict[str, Any] | None = None

    _judge: Any = PrivateAttr(None)   # (adapted arm, engine), loaded at the first grade
    _notes: list = PrivateAttr(default_factory=list)

    def check(self) -> None:
        for i, m in enumerate(self.input):
            self.template(m.text, f"input.{i}.content")
        if self.input[-1].role != "user":
            raise self.error(f"input.{len(self.input) - 1}.role", "the last message must be the user's (the judge answers it)")
        sp = self.sampling_params or {}
        unknown = sorted(set(sp) - {"temperature", "top_p", "seed", "max_completions_tokens", "reasoning_effort"})
        if unknown:
            raise self.error("sampling_params", f"{', '.join(unknown)}: not a sampling parameter OpenAI's graders take")
        neutral = {"temperature": 0, "top_p": 1}   # the values greedy decoding already honours
        ignored = [k for k in ("temperature", "top_p", "seed", "reasoning_effort")
                   if k in sp and (k not in neutral or sp[k] != neutral[k])]
        if ignored:
            self._notes.append(f"{self.name}: the judge decodes greedily; sampling_params {', '.join(ignored)} not used")

    # ------------------------------------------------------------ the judge

    def judge_task(self) -> Task:
        raise NotImplementedError

    @property
    def max_tokens(self) -> int:
        return int((self.sampling_params or {}).get("max_completions_tokens") or 16)

    def bind(self, base=None, *, cache=None, batch_size: int = 16) -> _ModelGrader:
        """The judge over an already-loaded base (a ladder's, a test's) instead of loading `model`
        by name; an arm folder is rebuilt on it."""
        from ..methods.base import load_adapted
        from ..methods.prompting import ZeroShot
        folder = self._arm_folder()
        adapted = load_adapted(folder, base) if folder else ZeroShot().fit(self.judge_task(), base)
        if folder:
            self._check_arm(adapted)
        self._judge = (adapted, adapted.engine(cache, batch_size=batch_size, progress=False))
        return self

    def _arm_folder(self) -> Path | None:
        path = Path(self.model).expanduser()
        return path if (path / "recipe.json").is_file() else None

    def _check_arm(self, adapted) -> None:
        from ..methods.base import method_class
        cls = method_class(adapted.recipe.method)
        if cls.scorer or cls.own_predict or cls.external:
            raise self.error("model", f"{self.model} is a {adapted.recipe.method} arm; a model grader's judge must "
                                      "answer a prompt (a prompting or fine-tuned arm, a base or an openai: endpoint)")
        prior = adapted.recipe.calibration
        if prior and list((prior.get("log_prior") or {})) != list(self.judge_task().labels or []):
            raise self.error("model", f"{self.model} divides out a label prior over its own labels; a judge with "
                                      "other labels cannot use it (refit it without calibrate)")

    def _load(self) -> None:
        from ..models import load_base, recipe_base
        from ..recipe import read_recipe
        folder = self._arm_folder()
        name = recipe_base(read_recipe(folder)[0], folder) if folder else self.model
        if name not in _BASES:
            try:
                _BASES[name] = load_base(name)
            except TailorError as e:
                raise self.error("model", f"the judge '{self.model}' is neither an arm folder nor a base that "
                                          f"loads ({e})") from None
        self.bind(_BASES[name])

    def messages(self, sample: dict, item: dict) -> list[dict]:
        """The judge's conversation for one answer, templates filled (developer turns are system turns)."""
        out = []
        for i, m in enumerate(self.input):
            role = "system" if m.role == "developer" else m.role
            out.append({"role": role, "content": self.render(m.text, sample, item, f"input.{i}.content")})
        system = [m["content"] for m in out if m["role"] == "system"]
        rest = [m for m in out if m["role"] != "system"]
        return ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + rest

    def answers(self, samples: list[str], items: list[dict]):
        """The judge's predictions (evaluate.Prediction), one per sample, through the arm's predict."""
        if len(samples) != len(items):
            raise TailorError(f"{self._where}: grader '{self.name}' got {len(samples)} samples for {len(items)} items")
        if self._judge is None:
            self._load()
        adapted, engine = self._judge
        examples, asked = [], []
        for i, (s, it) in enumerate(zip(samples, items)):
            try:
                examples.append(Example(str(it.get("id", i)), self.messages(sample_of(s), it), ""))
                asked.append(i)
            except NotJson:   # not asked: None, which the grade scores as failed (counted)
                self.not_json()
        preds: list = [None] * len(samples)
        for i, p in zip(asked, adapted.predict(engine, self.judge_task(), examples, self.max_tokens) if examples else []):
            preds[i] = p
        return preds

    def prompts(self, samples: list[str], items: list[dict]) -> list[str]:
        """The judge's prompts as it reads them (for a report, or to check a template)."""
        if self._judge is None:
            self._load()
        adapted = self._judge[0]
        return adapted.prompts([Example(str(it.get("id", i)), self.messages(sample_of(s), it), "")
                                for i, (s, it) in enumerate(zip(samples, items))])

    def notes(self) -> list[str]:
        return super().notes() + list(self._notes)


class LabelModel(_ModelGrader):
    kind: ClassVar[str] = "label_model"

    type: Literal["label_model"]
    labels: list[str] = Field(min_length=2)
    passing_labels: list[str] = Field(min_length=1)

    def check(self) -> None:
        super().check()
        if len(set(self.labels)) != len(self.labels):
            raise self.error("labels", "a label is listed twice")
        outside = [x for x in self.passing_labels if x not in self.labels]
        if outside:
            raise self.error("passing_labels", f"{', '.join(outside)} not among the labels ({', '.join(self.labels)})")

    def judge_task(self) -> Task:
        return Task(f"judge {self.name}", "classify", "", [], labels=list(self.labels))

    def label(self, samples: list[str], items: list[dict]) -> list[str]:
        """The judge's label of each answer (one of `labels`; None where the judge was not asked)."""
        return [None if p is None else p.prediction for p in self.answers(samples, items)]

    def grade(self, samples: list[str], items: list[dict]) -> list[float]:
        return [float(x in self.passing_labels) for x in self.label(samples, items)]


class ScoreModel(_ModelGrader):
    kind: ClassVar[str] = "score_model"

    type: Literal["score_model"]
    range: tuple[float, float] = (0.0, 1.0)

    def check(self) -> None:
        super().check()
        if not self.range[0] < self.range[1]:
            raise self.error("range", f"{list(self.range)}: the low end must be below the high end")

    def judge_task(self) -> Task:
        return Task(f"judge {self.name}", "generate", "", [])

    def grade(self, samples: list[str], items: list[dict]) -> list[float]:
        lo, hi = self.range
        out = []
        for p in self.answers(samples, items):
            if p is None:   # not asked (counted in answers)
                out.append(lo)
                continue
            score = parse_score(p.prediction)
            if score is None:
                self._failures["judge wrote no number"] += 1
                score = lo
            elif not lo <= score <= hi:
                self._failures["judge's number outside range (clipped)"] += 1
                score = min(max(score, lo), hi)
            out.append(score)
        return out
