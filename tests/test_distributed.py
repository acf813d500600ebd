"""Several processes, one loop (train/distributed.py): 2 ranks x 1 thread over gloo on loopback
train the parameters one process trains at the same global batch, and a 2-process run killed
mid-way resumes to the parameters of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tailor.train.distributed import World, shard
from tailor.train.launch import launch_local

# Different lengths on purpose: tweets vary, and so do the labels' token counts, so each rank's
# shard holds a different number of target tokens and only a global normalisation agrees.
CONFIG = ("model: tiny-test\ntask: tweet-sentiment\nmethod: lora\ndtype: fp32\neval_split: null\n"
          "options: {steps: 40, batch_size: 8, max_train_examples: 96, save_every: 2, dropout: 0.0, lr: 3.0e-3, "
          "log_every: 1, precision: fp32}\n")
ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _train_cmd(config: Path, runs: Path, *extra: str) -> list[str]:
    return [str(Path(sys.executable).parent / "tailor"), "train", str(config), "--runs-dir", str(runs),
            "--processes", "2", *extra]


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dist") / "train.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def two_process_run(config) -> Path:
    runs = config.parent / "two"
    done = subprocess.run(_train_cmd(config, runs), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs.iterdir()   # rank 1 made no run directory of its own
    return run


def test_shards_cover_the_step_once_and_depend_only_on_the_rank():
    step = [f"x{'y' * (i % 5)}{i}" for i in range(11)]   # strings stand in for examples: len() is their size
    parts = [shard(step, World(rank, 3)) for rank in range(3)]
    assert sorted(x for p in parts for x in p) == sorted(step)
    assert parts == [shard(list(step), World(rank, 3)) for rank in range(3)]
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard(step, World()) == step


def test_processes_inside_a_launched_run_or_below_one_is_refused(monkeypatch):
    from tailor.errors import TailorError
    with pytest.raises(TailorError, match="--processes 0: need at least 1"):
        launch_local(["train", "x.yaml"], 0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TailorError, match="drop --processes"):
        launch_local(["train", "x.yaml"], 2)


@pytest.mark.parametrize("env, message", [
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "FSDP version 1 .* is not wired"),
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed .* is not wired")])
def test_what_the_loop_cannot_honour_from_an_accelerate_config_is_refused_not_ignored(monkeypatch, env, message):
    """FSDP1 or DeepSpeed would silently train full replicas: refused in one line."""
    from tailor.errors import TailorError
    from tailor.train.distributed import world
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    world.cache_clear()
    try:
        with pytest.raises(TailorError, match=message):
            world()
    finally:
        world.cache_clear()


@pytest.mark.parametrize("method", ["lora", "full"])
def test_two_fsdp2_processes_train_what_one_process_trains(tmp_path, method):
    """FSDP2 (train/fsdp.py): the trained weights, gradients and optimiser states sharded between 2
    ranks, examples of different lengths; the saved arm equals a one-process run's."""
    from tailor.arm_run import run_train
    from tailor.config import load_train_config
    config = tmp_path / "train.yaml"
    text = CONFIG.replace("steps: 40", "steps: 8")
    if method == "full":   # no adapter dropout to switch off; a smaller step for every weight
        text = text.replace("method: lora", "method: full").replace("dropout: 0.0, ", "").replace("3.0e-3", "1.0e-3")
    config.write_text(text)
    done = subprocess.run(_train_cmd(config, tmp_path / "two", "--fsdp"), env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (two,) = (tmp_path / "two").iterdir()
    assert "(FSDP2: trained weights, gradients, optimiser states sharded)" in (two / "log.txt").read_text()
    cfg, arm = load_train_config(config, {"runs_dir": str(tmp_path / "one")})
    one = Path(run_train(cfg, arm, progress=False)["run_dir"])
    if method == "lora":
        a, b = _adapter(one), _adapter(two)
    else:
        (fa,), (fb,) = (list((r / "model").glob("*.safetensors")) for r in (one, two))
        a, b = load_file(str(fa)), load_file(str(fb))
    assert a.keys() == b.keys() and len(a) > 0
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert diff < 1e-5, f"max parameter difference {diff:.2e}"
    if method == "lora":   # lora_B starts at zero: nonzero means the sharded run really trained
        assert max(b[k].abs().max().item() for k in b if "lora_B" in k) > 1e-3


def test_two_processes_train_what_one_process_trains(two_process_run, config, tmp_path):
    from tailor.arm_run import run_train
    from tailor.config import load_train_config
    cfg, method = load_train_config(config, {"runs_dir": str(tmp_path)})
    single = run_train(cfg, method, progress=False)
    one, two = _adapter(Path(single["run_dir"])), _adapter(two_process_run)
    assert one.keys() == two.keys() and len(one) > 0
    diff = max((one[k] - two[k]).abs().max().item() for k in one)
    assert diff < 1e-5, f"max parameter difference {diff:.2e}"
    assert max(t.abs().max().item() for t in one.values()) > 1e-2   # the weights really trained
    metrics = json.loads((two_process_run / "metrics.json").read_text())
    assert metrics["train_tokens"] == single["train_tokens"]   # both ranks' tokens counted, once
    assert metrics["final_loss"] == pytest.approx(single["final_loss"], rel=1e-5)
    log = (two_process_run / "log.txt").read_text()
    assert "kernels=none, processes=2" in log   # the CPU kernels are single-process only
    steps = [json.loads(line)["step"] for line in (two_process_run / "train_metrics.jsonl").open()]
    assert steps == list(range(1, 41))   # rank 0 alone writes the metrics


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL to the launcher and every worker (torchrun starts each worker in its own session)."""
    import psutil
    parent = psutil.Process(proc.pid)
    for p in [*parent.children(recursive=True), parent]:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def test_a_killed_two_process_run_resumes_to_the_same_parameters(two_process_run, config):
    runs = config.parent / "killed"
    proc = subprocess.Popen(_train_cmd(config, runs), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, latest = time.time() + 180, None
    while time.time() < deadline and proc.poll() is None:
        found = list(runs.glob("*/checkpoints/latest.json"))
        if found and json.loads(found[0].read_text())["step"] >= 6:
            latest = found[0]
            _kill_tree(proc)
            break
        time.sleep(0.01)
    proc.wait()
    assert latest is not None, "the run ended before it could be killed"
    run = latest.parent.parent
    time.sleep(0.5)
    assert not (run / "metrics.json").exists()   # it really died mid-way
    killed_at = json.loads(latest.read_text())["step"]
    assert killed_at < 40

    resumed = subprocess.run(_train_cmd(config, runs, "--resume", str(run)), env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(list(runs.iterdir())) == 1   # the resumed run continues in its own folder
    train = json.loads((run / "recipe.json").read_text())["train"]
    assert train["resumed_from"] and train["steps"] == 40
    steps = [json.loads(line)["step"] for line in (run / "train_metrics.jsonl").open()]
    assert steps == list(range(1, 41))   # each step logged once across the kill
    straight, again = _adapter(two_process_run), _adapter(run)
    for name in straight:
        assert torch.equal(straight[name], again[name]), name


# ---------------------------------------------------------------- batch prediction in 2 processes

@pytest.fixture(scope="module")
def few_shot_arm(tiny_base, tmp_path_factory) -> Path:
    from conftest import write_tickets
    from tailor.methods import make_method, save_adapted
    from tailor.task import load_task_file
    folder = tmp_path_factory.mktemp("arm")
    tickets = load_task_file(write_tickets(folder / "tickets.jsonl", 60)).split(seed=0)
    save_adapted(make_method("few-shot", {"k": 2}).fit(tickets, tiny_base), folder / "fs")
    return folder / "fs"


def _predict_cmd(arm: Path, rows: Path, out: Path, runs: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "tailor"), "predict", str(arm), "--input", str(rows), "--output", str(out),
            "--model", "tiny-test", "--dtype", "fp32", "--device", "cpu", "--no-cache", "--runs-dir", str(runs),
            "--processes", "2"]


def test_two_process_prediction_killed_and_resumed_equals_one_process(few_shot_arm, tmp_path):
    from tailor.predict import run_predict
    rows = tmp_path / "rows.jsonl"
    n = 3000
    rows.write_text("".join(json.dumps({"id": f"r{i}", "text": f"ticket {i}: words {i % 97}"}) + "\n" for i in range(n)))
    want = tmp_path / "one.jsonl"
    run_predict(few_shot_arm, rows, want, model="tiny-test", dtype="fp32", device="cpu", runs_dir=str(tmp_path / "r1"),
                progress=False, cache=False)

    out, runs = tmp_path / "two.jsonl", tmp_path / "r2"
    proc = subprocess.Popen(_predict_cmd(few_shot_arm, rows, out, runs), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline, killed = time.time() + 180, False
    while time.time() < deadline and proc.poll() is None:
        parts = list(tmp_path.glob("two.jsonl.partial*"))
        if len(parts) == 2 and sum(p.read_text().count("\n") for p in parts) >= 600:
            _kill_tree(proc)
            killed = True
            break
        time.sleep(0.02)
    proc.wait()
    assert killed, "the run ended before it could be killed"
    assert not out.exists()
    done = [json.loads(line)["i"] for p in tmp_path.glob("two.jsonl.partial*")
            for line in p.read_text().splitlines()[1:] if line.endswith("}")]
    assert len(done) == len(set(done)) > 0   # each rank journaled its own rows, none twice

    resumed = subprocess.run(_predict_cmd(few_shot_arm, rows, out, runs), env=ENV, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got, expected = ([json.loads(line) for line in p.read_text().splitlines()] for p in (out, want))
    assert [g["id"] for g in got] == [f"r{i}" for i in range(n)]   # every row once, in input order
    # as one process predicts it (probabilities to float rounding: the ranks' batches hold other rows)
    assert [g["prediction"] for g in got] == [e["prediction"] for e in expected]
    assert all(g["probs"] == pytest.approx(e["probs"], abs=1e-4) for g, e in zip(got, expected))
    (summary,) = [json.loads(p.read_text()) for p in runs.glob("*/predict.json")]   # rank 0 wrote the run
    assert summary["from_journal"] >= len(done) and summary["computed"] == n - summary["from_journal"]
    assert not list(tmp_path.glob("two.jsonl.partial*"))
