"""`python`: the team's `grade(sample, item) -> float` (OpenAI's shape: `{"type": "python", "name",
"source", "image_tag"}`), run in a separate process with a time limit per sample, a memory limit,
no network and writes only under a temporary folder (the layers are in sandbox.py).

A grader that breaks a limit is stopped; its sample scores 0 and the reason (timeout, memory,
network, write outside folder, process) is counted in `failures` and logged; a fresh process
grades the next sample, so the run goes on. A sample whose `grade` raises scores 0 too, counted
as `error: <ExceptionType>`.

Limits: OpenAI documents code under 256 kB, no network, 2 GB of memory, 1 GB of disk and a
2-minute run; the same are the defaults here (`timeout_s` per sample, `memory_mb`, `file_mb` the
largest file it may write). `image_tag` names OpenAI's runtime image; it is accepted and
ignored: the grader runs on this machine's Python and its installed packages.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, PrivateAttr

from .base import Grader, sample_of

log = logging.getLogger("tailor")
CHILD = Path(__file__).with_name("sandbox.py")
MAX_SOURCE = 256 * 1024


class _Worker:
    """One sandboxed process grading samples one at a time."""

    def __init__(self, grader: PythonGrader, folder: str):
        self.grader = grader
        cpu = int(grader.timeout_s) + 2
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}   # no secrets of ours in its environment
        # its prints and tracebacks: a file, not a pipe nobody drains (a chatty grader would block on a full pipe)
        self.err = tempfile.TemporaryFile("w+")
        # -I: no user site, no PYTHONPATH, no current folder on sys.path; -B: writes no bytecode
        self.proc = subprocess.Popen([sys.executable, "-I", "-B", str(CHILD), folder, str(grader.memory_mb),
                                      str(grader.file_mb), str(cpu)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     cwd=folder, env=env, start_new_session=True, text=True, bufsize=1)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.proc.stdin.write(json.dumps(grader.source) + "\n")
        self.proc.stdin.flush()
        self.ready = self.read(max(grader.timeout_s, 30.0))   # start-up: the interpreter and the team's imports

    def read(self, timeout: float) -> dict:
        if not self.sel.select(timeout):
            self.kill()
            return {"stopped": "timeout", "detail": f"no answer within {timeout:g} s"}
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.err.seek(0)
            err = (self.err.read() or "").strip().splitlines()[-1:] or [""]
            if code in (-signal.SIGXCPU, -signal.SIGKILL):
                return {"stopped": "timeout", "detail": f"CPU limit (signal {-code})"}
            if "MemoryError" in err[0]:
                return {"stopped": "memory", "detail": err[0][:200]}
            return {"stopped": "crashed", "detail": f"exit {code}: {err[0][:200]}"}
        return json.loads(line)

    def grade(self, sample: dict, item: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps({"sample": sample, "item": item}, default=str) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return self.read(1.0)
        return self.read(self.grader.timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, OSError):
            self.kill()
        self.sel.close()
        for f in (self.proc.stdout, self.err):
            f.close()


class PythonGrader(Grader):
    kind: ClassVar[str] = "python"

    type: Literal["python"]
    source: str
    image_tag: str | None = None                  # OpenAI's runtime image: accepted, not used (see above)
    timeout_s: float = Field(120.0, gt=0)         # per sample
    memory_mb: int = Field(2048, ge=64)
    file_mb: int = Field(1024, ge=1)

    _isolation: str = PrivateAttr("")   # how the last process was cut off the network

    @property
    def isolation(self) -> str:
        """'namespace' (a network namespace of its own) or 'audit hook only' (the kernel refused one)."""
        return self._isolation

    def check(self) -> None:
        if len(self.source.encode()) > MAX_SOURCE:
            raise self.error("source", f"{len(self.source.encode())} bytes; a python grader is at most 256 kB")
        try:
            tree = ast.parse(self.source, "grader.py")
        except SyntaxError as e:
            raise self.error("source", f"line {e.lineno}: {e.msg}") from None
        fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "grade"), None)
        if fn is None:
            raise self.error("source", "defines no top-level function grade(sample, item)")
        if len(fn.args.args) + len(fn.args.posonlyargs) < 2 and fn.args.vararg is None:
            raise self.error("source", f"line {fn.lineno}: grade must take (sample, item)")

    def grade(self, samples: list[str], items: list[dict]) -> list[float]:
        if len(samples) != len(items):
            return super().grade(samples, items)
        scores: list[float] = []
        with tempfile.TemporaryDirectory(prefix="tailor-grader-") as folder:
            worker = None
            try:
                for text, item in zip(samples, items):
                    if worker is None:
                        worker = _Worker(self, folder)
                        if "fatal" in worker.ready:
                            raise self.error("source", f"the grader failed to load: {worker.ready['fatal']}")
                        if "stopped" in worker.ready:
                            raise self.error("source", f"the grader was stopped while loading ({worker.ready['stopped']}: "
                                                       f"{worker.ready.get('detail', '')})")
                        self._isolation = worker.ready.get("ready", "")
                    started = time.perf_counter()
                    answer = worker.grade(sample_of(text), item)
                    if "score" in answer:
                        scores.append(answer["score"])
                        continue
                    scores.append(0.0)
                    if "stopped" in answer:
                        reason = answer["stopped"]
                        worker.kill()
                        worker.close()
                        worker = None
                        log.warning("python grader '%s' stopped on row %s after %.1f s: %s (%s); scored 0",
                                    self.name, item.get("id", "?"), time.perf_counter() - started, reason,
                                    answer.get("detail", ""))
                    else:
                        reason = "error: " + answer.get("error", "?").split(":", 1)[0]
                        log.warning("python grader '%s' raised on row %s: %s; scored 0", self.name, item.get("id", "?"),
                                    answer.get("error"))
                    self._failures[reason] += 1
            finally:
                if worker is not None:
                    worker.close()
        return scores
