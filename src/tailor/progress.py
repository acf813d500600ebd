"""One progress display for long work: items done, tokens/s and ETA, on stderr."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True)


class Meter:
    """Counts items and tokens; shows a live bar when enabled (rich prints nothing on a closed
    stream, so CI logs stay clean)."""

    def __init__(self, total: int, description: str, enabled: bool = True):
        self.total, self.description = total, description
        self.tokens, self.done = 0, 0
        self.start = time.perf_counter()
        self._progress = None
        if enabled and total > 0:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                console=console, transient=not sys.stderr.isatty())
            self._progress.start()
            self._task = self._progress.add_task(description, total=total, rate="")

    def update(self, items: int, tokens: int = 0, **extra) -> None:
        self.done += items
        self.tokens += tokens
        if self._progress is not None:
            rate = f"{self.tokens / max(self.elapsed, 1e-9):,.0f} tok/s"
            rate += "".join(f"  {k} {v}" for k, v in extra.items())
            self._progress.update(self._task, advance=items, rate=rate)

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
