"""Small shared helpers: atomic durable writes, hashing, cache location."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import TailorError


def cache_dir(*parts: str) -> Path:
    """Tailor's user cache (converted models, engine results). TAILOR_CACHE overrides it."""
    base = os.environ.get("TAILOR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tailor")
    path = Path(base, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """THE atomic, durable file write: `write(tmp)` writes a temporary file beside `path` (same
    suffix, so writers that add one, like np.save, add none); it is fsynced, renamed over `path`,
    and the folder fsynced, so a crash, even of the machine, leaves the old file or the new one,
    never half of one, and a finished write survives."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are meant to be shared like any file
    try:
        write(Path(tmp))
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """The same for a folder: the block writes into a temporary folder beside `path`; when it ends
    without an error every file in it is fsynced, a `path` already there is removed, the folder
    renamed to `path` and its parent fsynced. On an error the temporary folder is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)   # left by a killed run
    tmp.mkdir()
    try:
        yield tmp
        for folder, _, files in os.walk(tmp):
            for name in files:
                _fsync(os.path.join(folder, name))
            _fsync(folder)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync(path: str | Path) -> None:
    """Flushes a file's or a folder's contents to disk (a folder: the names in it, so a rename
    is durable). Windows cannot open a folder to fsync it; there the rename itself is all."""
    if os.name == "nt" and os.path.isdir(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(path: str | Path) -> None:
    """Makes the names in a folder durable (a file created in it, a rename)."""
    _fsync(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: any spelling (./x and x, ../d/x), through symlinks, and
    hard links of a file that exists."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:   # one of them does not exist (yet): then only the resolved names can clash
        return False


def check_outputs(inputs: dict[str, str | Path | None], outputs: dict[str, str | Path | None]) -> None:
    """Refuses, before anything is written, an output that is one of the inputs or another output
    (`inputs`, `outputs`: what each path is, for the error -> the path; None: there is none)."""
    outs = [(name, Path(p)) for name, p in outputs.items() if p is not None]
    for i, (name, path) in enumerate(outs):
        if path.is_dir():
            raise TailorError(f"{path}: the {name} is a folder; name a file")
        for other, src in inputs.items():
            if src is not None and same_file(path, src):
                raise TailorError(f"{path}: the {name} would overwrite the {other} ({src}); choose another name")
        for other, dst in outs[:i]:
            if same_file(path, dst):
                raise TailorError(f"{path}: the {name} and the {other} are one file; choose another name")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
