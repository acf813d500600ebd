"""The arms of the adaptation ladder. A plain dict maps each method name to its class; a method
owns its options (typed fields), its `fit`, and its family's saving and loading, and reuses the
shared prompt builder, training loop and engine. Importing this package is light (no torch):
an experiment file is validated against these classes before anything heavy loads."""

from __future__ import annotations

from ..errors import TailorError
from .base import Adapted, Method, load_adapted, save_adapted
from .distill import Distill
from .finetune import FINETUNE_METHODS
from .longdoc import LONGDOC_METHODS
from .preference import PREFERENCE_METHODS
from .prompting import ICL, FewShot, ZeroShot
from .retrieval import RAG, RAGLoRA

METHODS: dict[str, type[Method]] = {cls.method: cls for cls in (ZeroShot, FewShot, ICL)}
METHODS.update(FINETUNE_METHODS)
METHODS.update(PREFERENCE_METHODS)
METHODS.update({cls.method: cls for cls in (RAG, RAGLoRA, Distill)})
METHODS.update(LONGDOC_METHODS)


def make_method(name: str, options: dict | None = None) -> Method:
    """The method `name` with `options`, validated (errors name the option)."""
    from ..schema import validate
    if name not in METHODS:
        raise TailorError(f"unknown method '{name}' (known: {', '.join(METHODS)})")
    return validate(METHODS[name], options or {}, f"method '{name}'")


__all__ = ["Adapted", "METHODS", "Method", "load_adapted", "make_method", "save_adapted"]
