"""`tune:` settings and the search space of an arm: what `tailor.tune` searches on the dev rows.

A family declares the knobs worth turning for its arms (`Method.knobs()`: learning rate, rank and
steps for weight arms; `k` and the selector for ICL; ...), as ranges around the arm's written
values, so the written arm is always a point of its own space: the default trial (trial 0). A
team's `knobs:` replaces that space by name (a range, a list of choices, or `default` for the
family's range of that knob). Everything is checked when the experiment is read: a knob that is
not an option of the arm, a choice the arm's options refuse, a range that leaves out the arm's own
value. Light: pydantic only, no torch, no optuna.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .errors import DataError
from .schema import Options, located_error

Choice = bool | int | float | str   # what a study stores (optuna's categorical values)


class Knob(Options):
    """A range (`low`, `high`, `log` for scale-like knobs: learning rates, temperatures) or a
    list of `choices`. Whole-number options get whole-number ranges."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    choices: list[Choice] | None = None
    default: bool = False   # `lr: default`: the family's range for it (resolved by `resolve_space`)

    @model_validator(mode="after")
    def _one_kind(self):
        # messages read after "expected" in the one-line error (schema.located_error)
        if self.default:
            if self.low is not None or self.high is not None or self.log or self.choices is not None:
                raise PydanticCustomError("knob", "default alone, or a range or choices")
            return self
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise PydanticCustomError("knob", "either low/high or choices, not both")
            if not self.choices:
                raise PydanticCustomError("knob", "at least one choice")
            if len({repr(c) for c in self.choices}) < len(self.choices):
                raise PydanticCustomError("knob", "distinct choices")
            return self
        if self.low is None or self.high is None:
            raise PydanticCustomError("knob", "low and high (a range), or choices: [...]")
        if not self.low < self.high:
            raise PydanticCustomError("knob", "low below high")
        if self.log and self.low <= 0:
            raise PydanticCustomError("knob", "low > 0 for a log range")
        return self

    def contains(self, value: Any) -> bool:
        if self.choices is not None:   # True == 1 in Python; not here
            return any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in self.choices)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> str:
        if self.choices is not None:
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        return f"[{self.low:g}, {self.high:g}]" + (" log" if self.log else "")

    def to_json(self) -> dict:
        return self.model_dump(exclude_none=True, exclude_defaults=True)


def around(value: float, factor: float, whole: bool = False) -> Knob:
    """A range from value / factor to value x factor, on a log scale (a learning rate, a beta)."""
    if whole:
        return Knob(low=max(1, int(value // factor)), high=int(value * factor))
    return Knob(low=value / factor, high=value * factor, log=True)


def choices(written: Choice, *others: Choice) -> Knob:
    """Choices that always hold the arm's written value (first, then the others in order)."""
    return Knob(choices=[written] + [c for c in others if not Knob(choices=[written]).contains(c)])


class TuneOptions(Options):
    """`tune:` for the whole experiment, or per arm (an arm's settings win; `tune: false` on an
    arm leaves it out of an experiment's tuning). Every tuned arm gets the same wall-clock budget
    for its trials on the dev rows; the best trial's options are then measured once on the test rows."""

    budget_minutes: Annotated[float, Field(gt=0)] = 10.0   # wall clock for the arm's trials (the study's,
    #                                                         whatever the number of workers)
    trials: Annotated[int, Field(gt=0)] | None = None      # at most this many trials in the study
    knobs: dict[str, Knob] | None = None                  # per arm: the space (default: the family's)
    pruner: Literal["successive-halving", "hyperband", "none"] = "successive-halving"
    dev_rows: Annotated[int, Field(gt=0)] | None = None    # dev rows each trial is measured on (all if None)
    startup_trials: Annotated[int, Field(ge=1)] = 4        # random trials before TPE models the results
    seed: int = 0                                          # of the sampler
    storage: str | None = None         # a database URL shared by workers: sqlite:///PATH, postgresql://...
    study: Annotated[str, Field(min_length=1)] | None = None   # default: EXPERIMENT:ARM

    @field_validator("knobs", mode="before")
    @classmethod
    def _shorthands(cls, value):
        # `k: [2, 4, 8]` is a list of choices, `lr: default` the family's range; a range is {low: .., high: ..}
        if isinstance(value, dict):
            return {k: {"choices": v} if isinstance(v, list) else {"default": True} if v == "default" else v
                    for k, v in value.items()}
        return value

    @field_validator("storage")
    @classmethod
    def _url(cls, value):
        if value is not None and not re.match(r"^[a-z][a-z0-9]*(\+[a-z0-9_]+)?://", value):
            raise PydanticCustomError("storage", "a database URL such as sqlite:///tune.db or postgresql://host/db")
        return value


def read_tune(raw: Any, path, lines: dict, at: tuple) -> TuneOptions | Literal[False] | None:
    """An arm's or the experiment's `tune:`: a mapping, true (the defaults) or false."""
    from .schema import validate
    if raw is None:
        return None
    if raw is False:
        return False
    if raw is True:
        return TuneOptions()
    if not isinstance(raw, dict):
        raise DataError(path, f"expected a mapping (budget_minutes, trials, knobs, ...), true or false, got {raw!r}",
                        lines.get(at), _name(at))
    return validate(TuneOptions, raw, path, lines, at)


def arm_tune(experiment: TuneOptions | None, arm: TuneOptions | Literal[False] | None, options: Options,
             path, lines: dict, at: tuple) -> TuneOptions | None:
    """The settings an arm is tuned with (the experiment's, overridden by the arm's) and its
    space resolved against its options; None when the arm is not tuned."""
    if arm is False or (arm is None and experiment is None):
        return None
    where = at + ("tune",)
    if arm is None:   # the experiment's tuning reaches every arm that declares knobs, and says so of others
        if not options.knobs() or type(options).scorer:
            return None
        settings = experiment
    else:
        settings = experiment.model_copy(update={k: getattr(arm, k) for k in arm.model_fields_set}) \
            if experiment is not None else arm
    if type(options).scorer:
        raise DataError(path, f"a {options.method} arm is a scorer measured on pairs, not on the task's dev metric; "
                              "it cannot be tuned", lines.get(where), _name(where))
    space = resolve_space(options, settings.knobs, path, lines, where + ("knobs",))
    return settings.model_copy(update={"knobs": space})


def resolve_space(options: Options, written: dict | None, path, lines: dict, at: tuple) -> dict[str, Knob]:
    family = options.knobs()
    if written is None:
        space = dict(family)
    else:
        space = {}
        for knob, spec in written.items():
            if spec.default:
                if knob not in family:
                    raise DataError(path, f"a {options.method} arm declares no range for '{knob}' (its knobs: "
                                          f"{', '.join(family) or 'none'}): give low/high or choices",
                                    lines.get(at + (knob,), lines.get(at)), _name(at + (knob,)))
                spec = family[knob]
            space[knob] = spec
    if not space:
        raise DataError(path, f"a {options.method} arm declares no knobs to tune: list them under knobs: "
                              "(option: {low, high} or [choices])", lines.get(at, lines.get(at[:-1])), _name(at))
    cls = type(options)
    written_options = options.model_dump(exclude_unset=True)
    for knob, spec in space.items():
        where, line = _name(at + (knob,)), lines.get(at + (knob,), lines.get(at))
        if knob not in cls.model_fields:
            raise DataError(path, f"not an option of a {options.method} arm (options: "
                                  f"{', '.join(sorted(cls.model_fields))})", line, where)
        value = getattr(options, knob)
        if spec.choices is None and isinstance(value, int) and not isinstance(value, bool) and not (
                float(spec.low).is_integer() and float(spec.high).is_integer()):
            raise DataError(path, f"{knob} is a whole number: low and high must be whole numbers", line, where)
        if spec.choices is None:   # the option's own type: whole numbers drawn as such, floats as floats
            kind = int if isinstance(value, int) and not isinstance(value, bool) else float
            spec = space[knob] = spec.model_copy(update={"low": kind(spec.low), "high": kind(spec.high)})
        for candidate in spec.choices if spec.choices is not None else [spec.low, spec.high]:
            try:
                cls.model_validate({**written_options, knob: candidate})
            except ValidationError as e:
                problem = located_error(e, cls, {**written_options, knob: candidate}, path, {}).problem
                raise DataError(path, f"{candidate!r} is not a valid {knob} ({problem})", line, where) from None
        if not spec.contains(value):
            raise DataError(path, f"the arm's own {knob} {value!r} is outside {spec.describe()}: the arm as written is "
                                  "the default trial (trial 0), so its value must be in the space", line, where)
    return space


def _name(at: tuple) -> str:
    out = ""
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def study_name(experiment: str, arm: str, settings: TuneOptions) -> str:
    return settings.study or f"{experiment}:{arm}"


def safe_url(url: str | None) -> str | None:
    """A storage URL without its password (results.json and the report show where the study is)."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url) if url else url
