"""The arms of the adaptation ladder. A plain dict maps each method name to its class (filled by
the classes themselves as their family files are imported here, see `base.METHODS`); a method
owns its options (typed fields), its `fit`, and its family's saving and loading, and reuses the
shared prompt builder, training loop and engine. Importing this package is light (no torch):
an experiment file is validated against these classes before anything heavy loads."""

from __future__ import annotations

from ..errors import TailorError
from ..schema import validate

# every family, imported for its classes registering themselves in METHODS
from . import distill, external, finetune, longdoc, preference, prompting, retrieval  # noqa: F401
from .base import METHODS, Adapted, Method, load_adapted, save_adapted

# METHODS in the order a ladder climbs (the order errors list them in), whatever order the families
# were imported in: family by family, each family's methods as its file defines them
FAMILIES = ("prompting", "finetune", "preference", "retrieval", "distill", "longdoc", "external")


def _family(cls: type[Method]) -> int:
    name = cls.__module__.rsplit(".", 1)[-1]
    return FAMILIES.index(name) if name in FAMILIES else len(FAMILIES)   # a family not listed: last


_climb = sorted(METHODS.items(), key=lambda item: _family(item[1]))   # stable: a family keeps its file's order
METHODS.clear()
METHODS.update(_climb)


def make_method(name: str, options: dict | None = None) -> Method:
    """The method `name` with `options`, validated (errors name the option)."""
    if name not in METHODS:
        raise TailorError(f"unknown method '{name}' (known: {', '.join(METHODS)})")
    return validate(METHODS[name], options or {}, f"method '{name}'")


__all__ = ["Adapted", "METHODS", "Method", "load_adapted", "make_method", "save_adapted"]
