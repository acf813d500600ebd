"""One progress display for long work: items done, tokens/s and ETA, on stderr.

On a terminal it is a live bar. Elsewhere (a log file, CI) a bar would vanish, so plain lines
are printed instead, at most every `TAILOR_PROGRESS_SECONDS` (default 30) and once at the end;
the same lines go to the run's log.txt.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .status import note_progress

console = Console(stderr=True, soft_wrap=True)   # messages stay one line each in logs
log = logging.getLogger("tailor")


class Meter:
    """Counts items and tokens; shows progress when enabled."""

    def __init__(self, total: int, description: str, enabled: bool = True, unit: str = "rows"):
        self.total, self.description, self.unit = total, description, unit
        self.tokens, self.done = 0, 0
        self.start = time.perf_counter()
        self._progress = None
        self._plain = enabled and total > 0 and not sys.stderr.isatty()
        self._every = float(os.environ.get("TAILOR_PROGRESS_SECONDS", "30"))
        self._last = self.start
        if enabled and total > 0 and not self._plain:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console)
            self._progress.start()
            self._task = self._progress.add_task(description, total=total, rate="")

    def update(self, items: int, tokens: int = 0, **extra) -> None:
        self.done += items
        self.tokens += tokens
        # work that counts no tokens (chunking, embedding) shows its own unit's rate, not "0 tok/s"
        rate = (f"{self.tokens / max(self.elapsed, 1e-9):,.0f} tok/s" if self.tokens else
                f"{self.done / max(self.elapsed, 1e-9):,.1f} {self.unit}/s") + "".join(f"  {k} {v}" for k, v in extra.items())
        left = (self.total - self.done) * self.elapsed / max(self.done, 1) if self.done else None
        note_progress(self.description, self.done, self.total, self.unit, rate, left)   # RUN/status.json
        if self._progress is not None:
            self._progress.update(self._task, advance=items, rate=rate)
        elif self._plain and (time.perf_counter() - self._last >= self._every or self.done >= self.total):
            self._last = time.perf_counter()
            self._line(rate)

    def _line(self, rate: str) -> None:
        left = (self.total - self.done) * self.elapsed / max(self.done, 1)
        text = (f"{self.description}: {self.done:,}/{self.total:,} {self.unit} ({self.done / self.total:.0%}), "
                f"{rate}, {'done in ' + _clock(self.elapsed) if self.done >= self.total else 'ETA ' + _clock(left)}")
        console.print(text, highlight=False, markup=False)
        log.info("%s", text)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"
