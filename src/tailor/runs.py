"""The one place that writes run directories: resolved config, manifest, logs, metrics,
predictions and artifacts of one command, so its results reproduce."""

from __future__ import annotations

import json
import logging
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from .utils import atomic_write_json, atomic_write_text

PACKAGES = ("llm-tailor", "torch", "transformers", "peft", "accelerate", "safetensors",
            "sentence-transformers", "rouge-score", "sacrebleu", "numpy")


class RunDir:
    def __init__(self, root: str | Path = "runs", command: str = "run", label: str = ""):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-")[:60]
        base = Path(root) / "-".join(x for x in (stamp, command, slug) if x)
        path, n = base, 1
        while path.exists():  # two runs in the same second get distinct folders
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        path.mkdir(parents=True)
        self.path = path
        self._attach_log()

    @classmethod
    def reopen(cls, path: str | Path) -> "RunDir":
        """An existing run directory, continued (a resumed training run keeps its folder, its
        checkpoints, best weights and metrics log)."""
        run = cls.__new__(cls)
        run.path = Path(path)
        run._attach_log()
        return run

    def _attach_log(self) -> None:
        self._handler = logging.FileHandler(self.path / "log.txt", encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger = logging.getLogger("tailor")
        logger.setLevel(logging.INFO)
        logger.addHandler(self._handler)

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj) -> Path:
        atomic_write_json(self.path / name, obj)
        return self.path / name

    def read_json(self, name: str):
        return json.loads((self.path / name).read_text(encoding="utf-8"))

    def write_jsonl(self, name: str, rows) -> Path:
        text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
        atomic_write_text(self.path / name, text)
        return self.path / name

    def write_config(self, config: dict) -> None:
        self.write_json("config.json", config)

    def write_manifest(self, seed: int, data_hashes: dict[str, str], extra: dict | None = None) -> None:
        self.write_json("manifest.json", {
            "command": sys.argv, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seed": seed,
            "data_hashes": data_hashes, "git_commit": git_commit(), "versions": versions(),
            "python": sys.version.split()[0], "platform": platform.platform(),
            "machine": machine(), **(extra or {})})

    def close(self) -> None:
        logging.getLogger("tailor").removeHandler(self._handler)
        self._handler.close()


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict:
    import torch
    info = {"cpu_count": __import__("os").cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
