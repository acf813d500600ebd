"""A finished ladder in the team's experiment trackers (tailor.trackers): a tiny ladder logged to
a local MLflow store and to trackio, read back with each tracker's own client."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import write_tickets
from tailor.config import experiment_from_dict
from tailor.errors import DataError, TailorError
from tailor.ladder import run_ladder

TAILOR = os.path.join(os.path.dirname(sys.executable), "tailor")
pytest.importorskip("mlflow")
pytest.importorskip("trackio")


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    """zero-shot and a 4-step LoRA arm with two seeds on tiny-test, logged to MLflow when it ends."""
    tmp = tmp_path_factory.mktemp("tracked")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    exp = experiment_from_dict({
        "model": "tiny-test", "task": str(write_tickets(tmp / "tickets.jsonl", 60)), "name": "tracked",
        "task_options": {"test": 12, "dev": 4}, "runs_dir": str(tmp / "runs"), "latency_requests": 0,
        "forgetting": False, "curate": False, "dtype": "fp32", "report_to": ["mlflow"],
        "arms": ["zero-shot", {"name": "lora", "method": "lora", "steps": 4, "batch_size": 4, "seeds": 2,
                               "log_every": 1}]}, "exp.yaml")
    return run_ladder(exp, progress=False), tmp


def test_the_ladder_is_one_mlflow_run_with_a_child_run_per_arm(ladder):
    from mlflow.tracking import MlflowClient
    results, tmp = ladder
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'runs' / 'mlflow.db'}")   # the default beside the runs
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("tracked").experiment_id])}
    parent = runs[os.path.basename(results.run_dir)]
    assert parent.data.params["model"] == "tiny-test" and parent.data.params["arms.lora"] == "lora"
    assert parent.data.tags["tailor.recommended_arm"] == results.recommendation.arm
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"results.json", "report.html", "config.json"}
    for arm in results.arms:
        child = runs[arm.name]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.metrics["accuracy"] == pytest.approx(arm.metrics["accuracy"])
        assert child.data.metrics["accuracy_ci_low"] == pytest.approx(arm.interval[0])
        assert child.data.metrics["p_best"] == pytest.approx(arm.p_best)
    lora = runs["lora"]
    assert lora.data.params["steps"] == "4"
    # the training curve of each fit: the arm's own and its second seed's, every logged step
    loss = client.get_metric_history(lora.info.run_id, "train.loss")
    seed1 = client.get_metric_history(lora.info.run_id, "seed1.train.loss")
    assert sorted(m.step for m in loss) == [1, 2, 3, 4] and sorted(m.step for m in seed1) == [1, 2, 3, 4]
    logged = [json.loads(line) for line in open(os.path.join(results.arms[1].arm_dir, "train_metrics.jsonl"))]
    assert [m.value for m in sorted(loss, key=lambda m: m.step)] == pytest.approx([r["loss"] for r in logged])


def test_tailor_track_logs_the_same_run_to_trackio_read_back_with_its_api(ladder):
    results, tmp = ladder
    env = {**os.environ, "TRACKIO_DIR": str(tmp / "trackio")}
    done = subprocess.run([TAILOR, "track", results.run_dir, "--to", "trackio"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    read = subprocess.run([sys.executable, "-c", """
import json, sys, trackio
from trackio.sqlite_storage import SQLiteStorage
runs = [r.name for r in trackio.Api().runs("tracked")]
logs = {r: SQLiteStorage.get_logs("tracked", r) for r in runs}
print(json.dumps({"runs": runs, "logs": logs, "config": trackio.Api().runs("tracked")[0].config}, default=str))
"""], capture_output=True, text=True, env=env, timeout=120)
    assert read.returncode == 0, read.stderr
    got = json.loads(read.stdout.strip().splitlines()[-1])
    name = os.path.basename(results.run_dir)
    assert sorted(got["runs"]) == sorted([name, f"{name}/zero-shot", f"{name}/lora"])
    lora = got["logs"][f"{name}/lora"]
    assert next(r for r in lora if r["step"] == 0)["accuracy"] == pytest.approx(results.arms[1].metrics["accuracy"])
    assert sorted(r["step"] for r in lora if "train.loss" in r) == [1, 2, 3, 4]


def test_an_unknown_or_missing_tracker_is_refused_before_any_work(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="report_to"):
        experiment_from_dict({"model": "tiny-test", "arms": ["zero-shot"], "report_to": ["wandb"]}, "exp.yaml")
    import importlib.util

    from tailor import trackers
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else real(name, *a))
    with pytest.raises(TailorError, match=r"report_to: 'trackio' asked for, but the package is not installed"):
        trackers.check_installed(["mlflow", "trackio"])
    done = subprocess.run([TAILOR, "track", str(tmp_path), "--to", "mlflow"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "neither results.json nor metrics.json" in done.stderr
    assert "Traceback" not in done.stderr
