"""The experiment schema: validated with errors that name the file and the field, YAML loading."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import DataError


@dataclass
class Arm:
    name: str
    method: str
    options: dict = field(default_factory=dict)


@dataclass
class Experiment:
    model: str = "smollm2-135m"
    task: str = "tweet-sentiment"
    name: str = ""
    arms: list[Arm] = field(default_factory=list)
    task_options: dict = field(default_factory=dict)
    limit: int | None = None          # evaluate on the first N test rows (all if None)
    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = 16
    max_new_tokens: int = 64
    cache: bool = True
    reuse_fits: bool = True           # reuse an identical earlier training run (same data, options, seed)
    runs_dir: str = "runs"
    # Cost model (seed 000's arithmetic): tokens are billed per 1k, training per hour.
    price_per_1k_tokens: float = 0.0002
    price_per_train_hour: float = 1.0
    requests_per_month: int = 100_000
    tolerance: float = 0.02           # "as good as the best" within this much primary metric
    curate: bool = True
    continue_on_data_problems: bool = False
    max_leakage: float = 0.01         # share of test rows also in train that stops the run
    max_conflicts: float = 0.02       # share of train rows with conflicting labels that stops it
    forgetting: bool = True           # run the general suite for every weight-changing arm
    forgetting_size: int | None = None  # items per general benchmark (default: each one's fixed
                                        # subset, about +-3 points; smaller is faster and wider)
    report: bool = True
    advice: dict = field(default_factory=dict)


def read_yaml_mapping(path: str | Path, what: str = "settings") -> dict:
    """A YAML file whose top level is a mapping; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError(path, f"invalid YAML ({getattr(e, 'problem', None) or e})",
                        mark.line + 1 if mark else None) from None
    except UnicodeDecodeError:
        raise DataError(path, "not valid UTF-8") from None
    if not isinstance(data, dict):
        raise DataError(path, f"expected a mapping of {what} at the top level")
    return data


def checked_fields(cls, data: dict, path: str | Path, skip: tuple = ()) -> dict:
    """`data`'s settings for dataclass `cls`: unknown names and wrong types are errors naming
    the field."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise DataError(path, f"unknown setting (known: {', '.join(sorted(fields))})", field=key)
    values = {}
    for key, value in data.items():
        if key in skip:
            continue
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        values[key] = _check_type(path, key, value, default)
    return values


def load_experiment(path: str | Path) -> Experiment:
    return experiment_from_dict(read_yaml_mapping(path, "experiment settings"), path)


def experiment_from_dict(data: dict, path: str | Path = "<experiment>") -> Experiment:
    from .methods import METHODS
    values = checked_fields(Experiment, data, path, skip=("arms",))
    size = values.get("forgetting_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise DataError(path, f"expected a positive number of items per benchmark, got {size!r}",
                        field="forgetting_size")
    arms_raw = data.get("arms") or []
    if not isinstance(arms_raw, list) or not arms_raw:
        raise DataError(path, "needs a list of at least one arm, e.g. [zero-shot, {method: icl, k: 4}]", field="arms")
    arms, names = [], set()
    for i, raw in enumerate(arms_raw):
        where = f"arms[{i}]"
        if isinstance(raw, str):
            raw = {"method": raw}
        if not isinstance(raw, dict) or "method" not in raw:
            raise DataError(path, "expected a method name or a mapping with 'method'", field=where)
        raw = dict(raw)
        method = raw.pop("method")
        if method not in METHODS:
            raise DataError(path, f"unknown method '{method}' (known: {', '.join(METHODS)})", field=f"{where}.method")
        name = str(raw.pop("name", method))
        if name in names:
            raise DataError(path, f"duplicate arm name '{name}'; give each arm a distinct name", field=f"{where}.name")
        names.add(name)
        known = {f.name for f in dataclasses.fields(METHODS[method])}
        for key in raw:
            if key not in known:
                raise DataError(path, f"method '{method}' has no option '{key}' (options: "
                                f"{', '.join(sorted(known)) or 'none'})", field=f"{where}.{key}")
        arms.append(Arm(name, method, raw))
    exp = Experiment(**values, arms=arms)
    exp.name = exp.name or f"{Path(str(exp.task)).stem}-ladder"
    return exp


def _check_type(path, key, value, default):
    if default is None or value is None:
        return value
    want = type(default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise DataError(path, f"expected {want.__name__}, got {type(value).__name__}", field=key)
    return value
