"""The child process that runs a team's `grade(sample, item)` (the `python` grader). Run as a
script (`python -I -B sandbox.py FOLDER MEMORY_MB FILE_MB`), never imported by the grader
package for its effects: importing it only defines functions.

Layers, each guarding something the others do not:
1. The parent (python.py) runs this in its own process with a wall-clock limit per sample and
   kills its process group past it: the only guard against a grader that sleeps or loops.
2. RLIMIT_AS caps the address space: an allocation past it is a MemoryError here instead of the
   machine swapping; RLIMIT_FSIZE caps any one file it writes; RLIMIT_CPU backs the wall clock.
3. A new network namespace (unshare(CLONE_NEWNET), where the kernel permits it: as root or with
   user namespaces) leaves the process only a loopback that is down: no packet leaves, whatever
   the code does, ctypes included.
4. An audit hook (PEP 578) sees socket creation and connection, opening files for writing,
   removing and renaming, and starting processes: it stops the grader at the first one (a
   network use, a write outside FOLDER, a process spawned to escape the hook) and reports which.
   Audit hooks are not a boundary against code written to escape them (PEP 578 says so: ctypes
   can reach libc directly), which is why layers 2 and 3 are the kernel's; the hook makes the
   report exact and stops the common cases where the namespace is not available.
Protocol: one JSON line per sample on stdin ({"sample", "item"}), one line back on the original
stdout ({"score"} | {"error"} | {"stopped", "detail"}); the grader's own prints go to stderr.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys

CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
SPAWN_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                "pty.spawn", "os.startfile")
PATH_EVENTS = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
               "os.link", "os.symlink", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile",
               "sqlite3.connect")   # a database file is written outside Python's open()


def isolate_network() -> str:
    """A network namespace of its own: 'namespace', or 'audit hook only' where the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    for flags in (CLONE_NEWNET, CLONE_NEWUSER | CLONE_NEWNET):
        if libc.unshare(flags) == 0:
            return "namespace"
    return "audit hook only"


def limit(memory_mb: int, file_mb: int, cpu_s: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb << 20, file_mb << 20))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def make_hook(folder: str, report):
    folder = os.path.realpath(folder)

    def inside(path) -> bool:
        if isinstance(path, int):   # an fd already open: its opening was checked
            return True
        p = os.path.realpath(os.fsdecode(path))
        return p == folder or p.startswith(folder + os.sep) or p == os.devnull

    def stop(reason: str, detail: str):
        report({"stopped": reason, "detail": detail})
        os._exit(3)

    def hook(event: str, args) -> None:
        if event.startswith("socket.") and event != "socket.gethostname":
            stop("network", f"{event}{tuple(a for a in args if isinstance(a, (str, int, tuple)))!r}"[:200])
        elif event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS)
            if writing and path is not None and not inside(path):
                stop("write outside folder", f"open({os.fsdecode(path)!r}, {mode or flags!r})")
        elif event in PATH_EVENTS:
            for path in args[:2]:
                if isinstance(path, (str, bytes, os.PathLike)) and not inside(path):
                    stop("write outside folder", f"{event}({os.fsdecode(path)!r})")
        elif event in SPAWN_EVENTS or event.startswith("os.exec"):
            stop("process", event)
        elif event == "ctypes.dlopen":
            stop("native code", f"ctypes.dlopen{args!r}"[:200])

    return hook


def main() -> None:
    folder, memory_mb, file_mb, cpu_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    out = os.fdopen(os.dup(1), "w", buffering=1)   # the protocol's channel; fd 1 becomes stderr
    os.dup2(2, 1)

    def report(obj) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    network = isolate_network()
    limit(memory_mb, file_mb, cpu_s)
    os.chdir(folder)
    os.environ.update({"HOME": folder, "TMPDIR": folder})
    source = sys.stdin.readline()
    namespace: dict = {"__name__": "grader"}
    sys.addaudithook(make_hook(folder, report))   # from here on, the team's code
    try:
        exec(compile(json.loads(source), "grader.py", "exec"), namespace)
        grade = namespace["grade"]
    except MemoryError:
        report({"stopped": "memory", "detail": "while loading the grader"})
        return
    except BaseException as e:   # the grader failed to load: every sample is reported so
        report({"fatal": f"{type(e).__name__}: {e}"[:300]})
        return
    report({"ready": network})
    for line in sys.stdin:
        job = json.loads(line)
        try:
            score = grade(job["sample"], job["item"])
        except MemoryError:
            report({"stopped": "memory", "detail": f"over {memory_mb} MB of address space"})
            os._exit(4)
        except RecursionError as e:
            report({"error": f"RecursionError: {e}"[:300]})
            continue
        except BaseException as e:   # the team's bug in one sample: that sample scores 0, counted
            report({"error": f"{type(e).__name__}: {e}"[:300]})
            continue
        try:
            report({"score": float(score)})
        except (TypeError, ValueError):
            report({"error": f"grade returned {type(score).__name__}, not a number"})


if __name__ == "__main__":
    main()
