"""`tailor predict --processes N` (or under torchrun / accelerate launch): the rows not done yet
are dealt out between ranks, each rank journals its own rows to its own file (rank 0:
OUT.partial, rank r: OUT.partial.r), and rank 0 merges every journal in input order at the end.

Resumable like one process: a rerun, with any number of processes, first reads every journal
left (a killed 4-process run's rows count in a 2-process rerun), so no row is computed twice.
Barriers keep the reading and the writing apart: every rank cleans its own journal (a torn last
line), then all read all, then they write.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from types import SimpleNamespace

import torch

from .journal import Journal
from .models import load_base
from .train.distributed import World


def journal_path(output: Path, w: World) -> Path | None:
    """This rank's journal (None: the single-process default, OUT.partial)."""
    return output.with_name(f"{output.name}.partial.{w.rank}") if w.rank else None


def journals(output: Path) -> list[Path]:
    """OUT.partial and OUT.partial.R, matched literally: a name with glob characters ([, *, ?) is no
    pattern, and a user's own OUT.partial.bak or OUT.partial-old is never read, nor deleted."""
    mine = re.compile(re.escape(f"{output.name}.partial") + r"(\.[1-9][0-9]*)?")
    if not output.parent.is_dir():
        return []
    return sorted(p for p in output.parent.iterdir() if mine.fullmatch(p.name) and p.is_file())


def barrier(w: World) -> None:
    if w.distributed:
        torch.distributed.barrier()


def done_everywhere(output: Path, made_of: dict, mine: Journal, w: World) -> dict[int, dict]:
    """Every finished row in every journal left (`mine`: this rank's open Journal)."""
    barrier(w)   # every rank's own journal is clean before anyone reads it
    done = read_all(output, made_of, mine)
    barrier(w)   # nobody appends before everyone has read
    return done


def read_all(output: Path, made_of: dict, mine: Journal) -> dict[int, dict]:
    done: dict[int, dict] = {}
    for path in journals(output):
        done.update(mine.done if path == mine.path else Journal(output, made_of, path=path).done)
    return done


@contextlib.contextmanager
def rank_context(model: str, dtype: str, device: str):
    """What a rank other than 0 predicts with: the base, no run directory (rank 0 writes it) and
    no result cache (one SQLite file written by N processes at once is not worth the locking)."""
    yield SimpleNamespace(base=load_base(model, dtype, device), cache=None)


def my_rows(todo: list[int], w: World) -> list[int]:
    """This rank's share of the rows left: contiguous blocks in turn would be as good; every
    w.size-th row keeps the ranks' shares alike when row lengths drift along the file."""
    return todo[w.rank::w.size]


def remove_journals(output: Path) -> None:
    for path in journals(output):
        path.unlink()
