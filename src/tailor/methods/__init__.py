"""The arms of the adaptation ladder. A plain dict maps each method name to its class (filled by
the classes themselves as their family files are imported here, see `base.METHODS`); a method
owns its options (typed fields), its `fit`, and its family's saving and loading, and reuses the
shared prompt builder, training loop and engine. Importing this package is light (no torch):
an experiment file is validated against these classes before anything heavy loads."""

from __future__ import annotations

from ..errors import TailorError
from ..schema import validate

# every family, imported for its classes registering themselves in METHODS
from . import distill, finetune, longdoc, preference, prompting, retrieval  # noqa: F401
from .base import METHODS, Adapted, Method, load_adapted, save_adapted


def make_method(name: str, options: dict | None = None) -> Method:
    """The method `name` with `options`, validated (errors name the option)."""
    if name not in METHODS:
        raise TailorError(f"unknown method '{name}' (known: {', '.join(METHODS)})")
    return validate(METHODS[name], options or {}, f"method '{name}'")


__all__ = ["Adapted", "METHODS", "Method", "load_adapted", "make_method", "save_adapted"]
