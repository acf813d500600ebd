"""Shared fixtures: a tiny random Llama (fast) and, for tests marked `real`, SmolLM2-135M."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)  # one test process owns the 2 cores; see DEVELOPERS.md on contention


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Each test session gets its own result cache and fit memos (no test replays another
    session's results), sharing only the converted models and embeddings, which are pure
    functions of installed packages."""
    import os

    from tailor.utils import cache_dir
    shared = cache_dir()
    private = tmp_path_factory.mktemp("tailor-cache")
    for name in ("models", "gguf", "hashes", "embeddings"):
        (shared / name).mkdir(exist_ok=True)
        (private / name).symlink_to(shared / name, target_is_directory=True)
    os.environ["TAILOR_CACHE"] = str(private)
    yield private


@pytest.fixture(scope="session")
def tiny_base():
    from tailor.models import load_base
    return load_base("tiny-test", dtype="fp32", device="cpu")


@pytest.fixture(scope="session")
def smol_base():
    from tailor.models import load_base
    return load_base("smollm2-135m", device="cpu")


@pytest.fixture
def engine_cache(tmp_path):
    from tailor.engine import ResultCache
    return ResultCache(tmp_path / "engine.sqlite")


WORDS = {"billing": "invoice charge refund", "bug": "crash error freeze", "other": "hello thanks question"}


def write_tickets(path, rows: int, labels=("billing", "bug"), seed: int = 0):
    """A small support-ticket classification file (text, label) whose words give the label away."""
    import json
    import random
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(rows):
            label = rng.choice(labels)
            f.write(json.dumps({"text": f"ticket {i}: {WORDS[label]} {rng.randint(0, 999)}", "label": label}) + "\n")
    return path
