"""A run's live state, in RUN/status.json, for `tailor ui` (and anyone who polls a run directory).

`open_run` starts it when a run directory is made and ends it as `finished` or `failed` (with the
error's one line); the ladder says which arm it is on and what each arm measured; and every
progress meter (tailor.progress.Meter: training steps, scoring rows, labelling) reports its count,
rate and ETA through `note_progress`, at most once a second, whether or not the terminal shows a
bar. Written atomically, so a reader never sees half a file. A run killed outright cannot say so:
its status stays `running` with the pid of a process that is gone, which a reader checks
(`is_alive`)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from .utils import atomic_write_json

STATUS = "status.json"
_open: list[RunStatus] = []   # the innermost open run gets the progress (a run inside a run keeps its own)
_EVERY_S = 1.0


class RunStatus:
    def __init__(self, run_dir: Path, command: str):
        self.path = Path(run_dir) / STATUS
        self.state = {"state": "running", "command": command, "pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.time(), "updated": time.time(), "arm": None, "arms_total": None,
                      "arms_done": [], "progress": None, "error": None}
        self._last = 0.0
        self.write()

    def write(self) -> None:
        self.state["updated"] = time.time()
        self._last = time.monotonic()
        atomic_write_json(self.path, self.state)

    def arm(self, index: int, total: int, name: str, method: str) -> None:
        self.state.update(arm={"index": index, "name": name, "method": method, "started": time.time()},
                          arms_total=total, progress=None)
        self.write()

    def arm_done(self, name: str, method: str, ok: bool, metric: str, value: float | None) -> None:
        started = (self.state["arm"] or {}).get("started") or time.time()
        self.state["arms_done"].append({"name": name, "method": method, "ok": ok, "metric": metric,
                                        "value": value, "wall_s": time.time() - started})
        self.state.update(arm=None, progress=None)
        self.write()

    def progress(self, description: str, done: int, total: int, unit: str, rate: str, eta_s: float | None) -> None:
        self.state["progress"] = {"what": description, "done": done, "total": total, "unit": unit, "rate": rate,
                                  "eta_s": eta_s}
        if done >= total or time.monotonic() - self._last >= _EVERY_S:
            self.write()

    def end(self, error: str | None = None) -> None:
        self.state.update(state="failed" if error else "finished", error=error, arm=None, progress=None)
        self.write()


def start(run_dir: Path, command: str) -> RunStatus:
    _open.append(RunStatus(run_dir, command))
    return _open[-1]


def end(status: RunStatus, error: str | None = None) -> None:
    status.end(error)
    if status in _open:
        _open.remove(status)


def current() -> RunStatus | None:
    return _open[-1] if _open else None


def note_progress(description: str, done: int, total: int, unit: str, rate: str, eta_s: float | None) -> None:
    if _open:
        _open[-1].progress(description, done, total, unit, rate, eta_s)


def is_alive(state: dict) -> bool:
    """Whether a `running` status's process still runs (on this host; another host's run is
    taken at its word while it keeps writing: updated within the last 10 minutes)."""
    if state.get("host") != socket.gethostname():
        return time.time() - float(state.get("updated") or 0) < 600
    try:
        os.kill(int(state.get("pid") or 0), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:   # alive, another user's
        return True
    return bool(state.get("pid"))
