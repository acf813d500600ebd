"""Errors a user can act on. The CLI prints them as one line and exits 2, never a traceback."""

from __future__ import annotations


class TailorError(Exception):
    """Something the user can fix: bad input, bad config, a missing model."""


class DataError(TailorError):
    """A problem in a data file, located as precisely as the format allows."""

    def __init__(self, path, problem: str, line: int | None = None, field: str | None = None,
                 unit: str = "line"):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = self.path if line is None else f"{self.path}:{unit} {line}"
        what = f"field '{field}': {problem}" if field else problem
        super().__init__(f"{where}: {what}")
