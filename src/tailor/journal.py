"""The journal of a resumable batch job: OUT.partial, whose entries are flushed chunk by chunk,
so a job killed at any moment and started again computes each row once. `tailor predict`,
`tailor label` and a distillation's teacher labelling keep their rows in one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from .errors import DataError, TailorError
from .jsonl import read_jsonl
from .progress import Meter
from .utils import fsync_folder


class Journal:
    """OUT.partial: a first line naming what the rows are computed from (`made_of`: the input's
    hash, the arm, the options), then one JSON line per finished row ({"i", "line"} or {"i", "error"}).
    A journal made of anything else is refused, never mixed in."""

    def __init__(self, output: Path, made_of: dict, path: Path | None = None):
        self.path = path or self.path_of(output)   # path: a rank's own (predict_shards.py)
        self.done: dict[int, dict] = {}
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append([{"journal": made_of}])
            fsync_folder(self.path.parent)   # the journal's name too survives a power cut, not only its lines
            return
        try:
            # a kill mid-write leaves a torn last line: cut it, or the next entry would be glued to it
            # (its rows run again)
            lines = read_jsonl(self.path, torn="cut")
        except DataError as e:
            raise TailorError(f"{e}; delete the file to start over") from None
        first = lines[0][1].get("journal") if lines else None
        if first != made_of:
            changed = [k for k in made_of if isinstance(first, dict) and k in first and first[k] != made_of[k]]
            why = ("the arm was edited since it was left (its recipe, pool or weights are not those its rows were "
                   "computed with)" if changed == ["arm_digest"] else "left by a prediction of another input, arm or options")
            raise TailorError(f"{self.path}: {why}; rerun with those, or delete it to start over")
        for no, entry in lines[1:]:
            i = entry.get("i")
            if not isinstance(i, int) or isinstance(i, bool) or i < 0 or not (
                    isinstance(entry.get("line"), dict) or "error" in entry):
                raise TailorError(f"{self.path}:line {no}: not a journal entry; delete the file to start over")
            self.done[i] = entry

    @staticmethod
    def path_of(output: Path) -> Path:
        """The journal of the output `output` (OUT.partial)."""
        return output.with_name(output.name + ".partial")

    def add(self, entries: list[dict]) -> None:
        self._append(entries)
        for e in entries:
            self.done[e["i"]] = e

    def _append(self, entries: list[dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
            f.flush()
            os.fsync(f.fileno())


def fill(journal: Journal, todo: list[int], compute: Callable[[list[int]], tuple[list[dict], int]], chunk: int,
         meter: Meter | None = None) -> int:
    """Computes the rows `todo` (their indices) `chunk` at a time: `compute(indices)` returns their
    journal entries and the tokens it computed, and each chunk's entries are flushed to `journal`
    before the next chunk starts. Returns the tokens computed."""
    tokens = 0
    for start in range(0, len(todo), chunk):
        indices = todo[start:start + chunk]
        entries, n = compute(indices)
        journal.add(entries)
        tokens += n
        if meter is not None:
            meter.update(len(indices), n)
    return tokens
