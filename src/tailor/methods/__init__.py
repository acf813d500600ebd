"""The arms of the adaptation ladder. A plain dict maps each method name to its class; a method
owns its options (dataclass fields) and its `fit`, and reuses the shared prompt builder, training
loop and engine."""

from __future__ import annotations

import dataclasses

from ..errors import TailorError
from .base import Adapted
from .finetune import FINETUNE_METHODS
from .prompting import ICL, FewShot, ZeroShot

METHODS: dict[str, type] = {
    "zero-shot": ZeroShot,
    "few-shot": FewShot,
    "icl": ICL,
}
# Fine-tuning arms (one training loop: tailor.train).
METHODS.update(FINETUNE_METHODS)


def make_method(name: str, options: dict | None = None):
    if name not in METHODS:
        raise TailorError(f"unknown method '{name}' (known: {', '.join(METHODS)})")
    cls = METHODS[name]
    known = {f.name for f in dataclasses.fields(cls)}
    for key in options or {}:
        if key not in known:
            raise TailorError(f"method '{name}' has no option '{key}' (options: {', '.join(sorted(known)) or 'none'})")
    return cls(**(options or {}))


__all__ = ["Adapted", "METHODS", "make_method"]
