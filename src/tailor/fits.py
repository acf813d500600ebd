"""Reusing an earlier identical fit instead of training again.

Training is deterministic, so the same base weights, method options, training and dev rows, and
the same code on the same library versions give the same weights. The key holds all of it:
- the content of the train and dev rows actually split off (ids, inputs, targets), so two
  experiments that split one file differently never share a fit (one's test rows would be the
  other's training rows);
- the method's resolved options and the wall-clock budget it was fitted under, and what else it
  reads by content (`Method.fit_inputs`: a teacher's or SFT arm's weights, an unlabelled file);
- torch, transformers and peft versions;
- a fingerprint of every Tailor module the method's code can import (found by reading the
  imports of its module, transitively: engine, models, task splitting, the loop, ...).
"""

from __future__ import annotations

import ast
import functools
import json
import logging
from importlib import metadata
from pathlib import Path

from .errors import TailorError
from .task import Task, hash_examples
from .utils import atomic_write_json, cache_dir, sha256_text

log = logging.getLogger("tailor")
LIBRARIES = ("torch", "transformers", "peft")


def fit_key(method, task: Task, base_weights_id: str, budget_s: float | None = None) -> str:
    splits = {name: hash_examples(task.splits.get(name) or []) for name in ("train", "dev")}
    return sha256_text(json.dumps({
        "base": base_weights_id, "method": method.method, "options": method.model_dump(), "budget_s": budget_s,
        "inputs": method.fit_inputs(),
        "task": {"kind": task.kind, "instruction": task.instruction, "labels": task.labels, "splits": splits},
        "libraries": {name: _version(name) for name in LIBRARIES},
        "code": code_fingerprint(type(method).__module__)}, sort_keys=True, default=str))


def reuse(key: str, base):
    """The arm an identical earlier fit saved, or None (with a warning when it was recorded but
    can no longer be loaded, or its folder no longer holds what was recorded: a memo names a
    folder, and a folder can be deleted, rewritten by another run or edited by hand)."""
    memo = cache_dir("fits") / f"{key}.json"
    if not memo.exists():
        return None
    try:
        saved = json.loads(memo.read_text(encoding="utf-8"))
        folder, digest = saved["arm"], saved["digest"]
        if not isinstance(folder, str) or not isinstance(digest, str):
            raise TypeError("expected strings")
    except (OSError, ValueError, KeyError, TypeError) as e:   # damaged, or written by an older Tailor
        log.warning("%s: not a fit memo this Tailor wrote (%s: %s); training again", memo, type(e).__name__, e)
        return None
    try:
        from .label import arm_digest
        from .methods import load_adapted
        now = arm_digest(Path(folder))
        if now != digest:
            log.warning("cannot reuse the fit in %s: its recipe, pool or weights changed since it was recorded; "
                        "training again", folder)
            return None
        return load_adapted(folder, base)
    except (TailorError, OSError) as e:  # the run directory was deleted or moved: train again
        log.warning("cannot reuse the fit in %s (%s); training again", folder, e)
        return None


def remember(key: str, folder: Path) -> None:
    """Records the arm folder a fit with this key saved, with its content digest (`label.arm_digest`):
    reuse checks the folder still holds exactly that."""
    from .label import arm_digest
    atomic_write_json(cache_dir("fits") / f"{key}.json", {"arm": str(Path(folder).resolve()),
                                                           "digest": arm_digest(Path(folder))})


@functools.cache
def code_fingerprint(module: str) -> str:
    """Hash of the source of `module` and of every `tailor` module it imports, at any depth and
    wherever the import stands (inside functions too)."""
    root = Path(__file__).resolve().parent
    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or not (name == "tailor" or name.startswith("tailor.")):
            continue
        path = _source(root, name)
        if path is None:
            continue
        text = path.read_text(encoding="utf-8")
        seen[name] = sha256_text(text)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]   # importing a module runs its packages
        package = parts if path.name == "__init__.py" else parts[:-1]
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else (node.module or "")
                todo += [base] + [f"{base}.{a.name}" for a in node.names]   # a name may be a submodule
    return sha256_text(json.dumps(sorted(seen.items())))[:16]


def _source(root: Path, name: str) -> Path | None:
    parts = name.split(".")[1:]
    if not parts:
        return root / "__init__.py"
    rel = Path(*parts)
    for path in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
        if path.is_file():
            return path
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
