"""Shared fixtures: a tiny random Llama (fast) and, for tests marked `real`, SmolLM2-135M."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)  # one test process owns the 2 cores; see DEVELOPERS.md on contention


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
