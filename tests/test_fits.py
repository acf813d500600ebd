"""Reusing an earlier fit only when it is the identical fit: same rows, options, code, libraries."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_tickets
from tailor.config import experiment_from_dict
from tailor.fits import code_fingerprint, fit_key
from tailor.ladder import run_ladder


@pytest.fixture
def task_file(tmp_path):
    return write_tickets(tmp_path / "tickets.jsonl", 120, seed=1)


def _lora_ladder(task_file, tmp_path, test: int, dev: int):
    return experiment_from_dict({
        "model": "tiny-test", "task": str(task_file), "task_options": {"test": test, "dev": dev},
        "arms": [{"name": "lora", "method": "lora", "steps": 2, "batch_size": 4}], "runs_dir": str(tmp_path / "runs"),
        "curate": False, "report": False, "forgetting": False, "dtype": "fp32", "latency_requests": 0}, "exp.yaml")


def test_a_fit_is_reused_only_on_the_same_split(task_file, tmp_path, monkeypatch):
    """Experiment A (test 20, dev 10) trains on rows that are test rows of B (test 60, dev 10):
    B must train its own adapter, never score A's on A's training rows."""
    monkeypatch.setenv("TAILOR_CACHE", str(tmp_path / "cache"))
    a = run_ladder(_lora_ladder(task_file, tmp_path, 20, 10), progress=False).arms[0]
    b = run_ladder(_lora_ladder(task_file, tmp_path, 60, 10), progress=False).arms[0]
    again = run_ladder(_lora_ladder(task_file, tmp_path, 20, 10), progress=False).arms[0]
    assert a.ok and b.ok and a.fit_reused_from is None
    assert b.fit_reused_from is None and b.weights_id != a.weights_id      # trained twice
    assert again.fit_reused_from == a.arm_dir and again.weights_id == a.weights_id
    assert again.metrics == a.metrics
    # the reusing run holds its own copy of the arm it measured
    assert again.arm_dir != a.arm_dir and (Path(again.arm_dir) / "adapter" / "adapter_model.safetensors").exists()


def test_the_key_holds_rows_options_budget_and_code(tiny_base):
    from tailor.datasets import load_task
    from tailor.methods import make_method
    task = load_task("tweet-sentiment")
    lora = make_method("lora", {"steps": 2})
    key = fit_key(lora, task, tiny_base.weights_id)
    assert key == fit_key(make_method("lora", {"steps": 2}), task, tiny_base.weights_id)
    assert key != fit_key(make_method("lora", {"steps": 3}), task, tiny_base.weights_id)
    assert key != fit_key(lora, task, tiny_base.weights_id, budget_s=60.0)
    assert key != fit_key(lora, task, tiny_base.weights_id + "x")
    relabelled = load_task("tweet-sentiment")
    ex = relabelled.splits["train"][0]
    ex.target = "positive" if ex.target != "positive" else "negative"   # same ids, other content
    assert key != fit_key(lora, relabelled, tiny_base.weights_id)


def test_the_code_fingerprint_covers_what_a_fit_imports():
    import tailor.fits as fits
    seen = {}
    real = fits.sha256_text

    def spy(text):
        digest = real(text)
        seen[digest] = text
        return digest
    code_fingerprint.cache_clear()
    try:
        fits.sha256_text = spy
        code_fingerprint("tailor.methods.finetune")
    finally:
        fits.sha256_text = real
        code_fingerprint.cache_clear()
    sources = "\n".join(seen.values())
    # the loop, the engine, model loading and task splitting are all part of a fit
    for marker in ("class Trainer", "class Engine", "def load_base", "def split(self, seed"):
        assert marker in sources, marker
    assert "def render_html" not in sources   # the report is not
