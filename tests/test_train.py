"""The training loop on tiny-test: target-only loss, packing without leaks, the prompt prefix
shared with inference, schedules, over-long policy, NaN stop, and exact resume after SIGKILL."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tailor.datasets import load_task
from tailor.errors import TailorError
from tailor.prompts import builder_for
from tailor.train.data import encode_examples, pack, padded, step_examples
from tailor.train.loop import lr_factor, train
from tailor.train.losses import SFT
from tailor.train.options import TrainConfig


def batch_loss(model, batch) -> torch.Tensor:
    return SFT()(model, batch)[0]


@pytest.fixture(scope="module")
def task():
    return load_task("tweet-sentiment")


@pytest.fixture(scope="module")
def builder(task, tiny_base):
    return builder_for(task, tiny_base.tokenizer, tiny_base.model.config)


def reference_loss(model, enc) -> float:
    """Plain HF forward of one example alone with prompt labels masked (-100): the textbook
    target-only loss, summed over target tokens."""
    ids = torch.tensor([enc.prompt + enc.target])
    labels = torch.tensor([[-100] * len(enc.prompt) + enc.target])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    return torch.nn.functional.cross_entropy(logits, labels[0, 1:], reduction="sum", ignore_index=-100).item()


def test_packed_loss_is_target_only_and_has_no_cross_example_leak(tiny_base, task, builder):
    data, _ = encode_examples(builder, task.splits["train"][:12], seq_len=512)
    batches = pack(data, seq_len=512, pad_id=tiny_base.tokenizer.pad_token_id, max_rows=8)
    assert sum(len(b.examples) for b in batches) == 12
    assert any(len(b.examples) > 1 for b in batches)  # several examples really share a row
    # positions restart only where an example starts: padding continues its row's last example
    assert sum(int((b.position_ids == 0).sum()) for b in batches) == 12
    packed = sum(batch_loss(tiny_base.model, b).item() for b in batches)
    alone = sum(reference_loss(tiny_base.model, e) for e in data)
    # Equal only if no example attends to another one and only target tokens carry loss.
    assert packed == pytest.approx(alone, rel=1e-5)
    # Labels are exactly the target tokens, in order.
    labels = torch.cat([b.labels for b in batches]).tolist()
    assert sorted(labels) == sorted(t for e in data for t in e.target)


def test_padded_layout_matches_reference(tiny_base, task, builder):
    data, _ = encode_examples(builder, task.splits["train"][:6], seq_len=512)
    batches = padded(data, tiny_base.tokenizer.pad_token_id, max_rows=6)
    assert batches[0].padded_tokens > 0
    got = sum(batch_loss(tiny_base.model, b).item() for b in batches)
    assert got == pytest.approx(sum(reference_loss(tiny_base.model, e) for e in data), rel=1e-5)


def test_training_prefix_equals_inference_prefix(tiny_base, task, builder):
    """Training encodes exactly the prompt the engine is given at inference: same builder, same
    text, same token ids; the target is the option text the engine scores."""
    from tailor.engine import Engine
    from tailor.evaluate import predict
    examples = task.splits["test"][:5]
    data, _ = encode_examples(builder, examples, seq_len=512)
    engine = Engine(tiny_base.model, tiny_base.tokenizer, tiny_base.weights_id, None, progress=False)
    preds = predict(engine, builder, task, examples)
    for ex, enc, pred in zip(examples, data, preds):
        assert enc.prompt == engine.encode(pred.prompt)
        assert enc.target == engine.encode(builder.target_text(ex.target))
        assert builder.target_text(ex.target).endswith(tiny_base.tokenizer.eos_token)


def test_overlong_examples_are_counted_and_dropped_or_raise(task, builder):
    examples = task.splits["train"][:20]
    lengths = sorted(len(e) for e in encode_examples(builder, examples, 10_000)[0])
    cut = lengths[len(lengths) // 2]
    kept, report = encode_examples(builder, examples, seq_len=cut)
    assert len(report.too_long) == sum(n > cut for n in lengths) > 0
    assert len(kept) + len(report.too_long) == 20
    with pytest.raises(TailorError, match="over seq_len"):
        encode_examples(builder, examples, seq_len=cut, overlong="error")


def test_data_order_is_a_function_of_seed_and_step(task, builder):
    data, _ = encode_examples(builder, task.splits["train"][:40], 512)
    a = [e.id for e in step_examples(data, 8, seed=1, step=7)]
    assert a == [e.id for e in step_examples(data, 8, seed=1, step=7)]
    assert a != [e.id for e in step_examples(data, 8, seed=2, step=7)]
    epoch = {e.id for s in range(5) for e in step_examples(data, 8, seed=1, step=s)}
    assert len(epoch) == 40  # one epoch sees every example once


def test_lr_schedule_warms_up_then_decays():
    f = [lr_factor(s, 100, 10, "cosine", 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] == pytest.approx(0.1, abs=1e-3)
    lin = [lr_factor(s, 100, 0, "linear", 0.0) for s in range(100)]
    assert lin[50] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="bogus")


def test_loss_goes_down_and_only_trainable_weights_move(tiny_base, task, builder):
    model = copy.deepcopy(tiny_base.model)
    for n, p in model.named_parameters():
        p.requires_grad_("layers.1." in n)
    frozen_before = model.model.layers[0].self_attn.q_proj.weight.clone()
    cfg = TrainConfig(steps=1, batch_size=8, lr=0.0, max_train_examples=64, log_every=1,
                      warmup_ratio=0.0, precision="fp32")
    initial = train(copy.deepcopy(model), tiny_base.tokenizer, builder, task, cfg, progress=False).final_loss
    cfg = cfg.model_copy(update={"steps": 25, "lr": 1e-2})
    result = train(model, tiny_base.tokenizer, builder, task, cfg, progress=False)
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, frozen_before)
    assert result.steps == 25 and result.final_loss < initial - 0.3
    assert 0 <= result.padding_fraction < 0.2
    assert result.train_tokens > 25 * 8 * 30


def test_nan_loss_stops_with_a_clear_error(tiny_base, task, builder):
    model = copy.deepcopy(tiny_base.model)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    model.model.norm.weight.requires_grad_(True)
    cfg = TrainConfig(steps=3, batch_size=4, max_train_examples=16, precision="fp32")
    with pytest.raises(TailorError, match="loss is nan at step 1"):
        train(model, tiny_base.tokenizer, builder, task, cfg, progress=False)


def _train_cmd(config: Path, runs: Path, resume: Path | None = None) -> list[str]:
    cmd = [str(Path(sys.executable).parent / "tailor"), "train", str(config), "--runs-dir", str(runs)]
    return cmd + (["--resume", str(resume)] if resume else [])


def test_resume_after_sigkill_gives_the_same_final_loss(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(
        "model: tiny-test\ntask: tweet-sentiment\nmethod: lora\ndtype: fp32\neval_split: null\n"
        "options: {steps: 120, batch_size: 4, max_train_examples: 96, save_every: 5, dropout: 0.1, "
        "lr: 3.0e-3, log_every: 1}\n")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"}

    straight = subprocess.run(_train_cmd(config, tmp_path / "a"), env=env, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-2000:]
    (run_a,) = (tmp_path / "a").iterdir()
    expected = json.loads((run_a / "metrics.json").read_text())["final_loss"]

    proc = subprocess.Popen(_train_cmd(config, tmp_path / "b"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    latest = None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "b").glob("*/checkpoints/latest.json"))
        if found and json.loads(found[0].read_text())["step"] >= 15:
            latest = found[0]
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert latest is not None, "the run ended before it could be killed"
    run_b = latest.parent.parent
    assert not (run_b / "metrics.json").exists()  # it really died mid-way

    resumed = subprocess.run(_train_cmd(config, tmp_path / "c", resume=run_b), env=env, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (tmp_path / "c").exists()  # the resumed run continues in its own folder
    result = json.loads((run_b / "metrics.json").read_text())
    state = json.loads((run_b / "recipe.json").read_text())["train"]
    assert state["resumed_from"] and state["steps"] == 120
    steps = [json.loads(line)["step"] for line in (run_b / "train_metrics.jsonl").open()]
    assert steps == list(range(1, 121))  # each step logged once across the kill
    assert result["final_loss"] == expected


@pytest.mark.parametrize("text, message", [
    ("model: tiny-test\nepochs: 2\n", r"train.yaml:line 2: field 'epochs': unknown setting \(known: .*options"),
    ("model: tiny-test\noptions: 5\n", r"train.yaml:line 2: field 'options': expected a valid dictionary, got 5"),
    ("model: tiny-test\noptions: {steps: all}\n", r"train.yaml:line 2: field 'options.steps': expected a valid integer"),
    ("model: tiny-test\noptions:\n  lr: 1e-3\n  rank: 4\n", r"train.yaml:line 4: field 'options.rank': unknown setting"),
    ("model: tiny-test\nmethod: few-shot\n", r"train.yaml:line 2: field 'method': method 'few-shot' does not train"),
    ("model: [tiny-test\n", r"train.yaml:line \d+: invalid YAML"),
    ("- just a list\n", r"train.yaml: expected a mapping of training settings at the top level"),
])
def test_train_config_errors_name_the_file_and_field(tmp_path, text, message):
    from tailor.config import load_train_config
    from tailor.errors import DataError
    path = tmp_path / "train.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_train_config(path)


def test_metrics_rewind_keeps_each_step_once_and_drops_a_torn_line(tmp_path):
    """A SIGKILL can land mid-write: the resumed run must not choke on half a JSON line."""
    from tailor.train.logs import MetricsLog
    path = tmp_path / "train_metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "dev_accuracy": 0.5}\n{"step": 3}\n{"step": 4, "lo')
    MetricsLog(path).rewind(2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_an_empty_train_split_is_an_error_not_a_fallback_to_all_rows(tiny_base):
    from tailor.task import Example, Task
    rows = [Example(str(i), f"text {i}", "a" if i % 2 else "b") for i in range(6)]
    task = Task("t", "classify", "Classify.", rows, labels=["a", "b"])
    task.splits = {"train": [], "dev": rows[:3], "test": rows[3:]}
    builder = builder_for(task, tiny_base.tokenizer)
    with pytest.raises(TailorError, match="t: the train split is empty, so there is nothing to train on"):
        train(copy.deepcopy(tiny_base.model), tiny_base.tokenizer, builder, task, TrainConfig(steps=1), progress=False)


class Pairwise:
    """A DPO-shaped loss without a reference model: -log sigmoid(beta (log p(chosen) - log p(rejected))),
    the mean over the step's pairs."""

    beta = 0.5

    def units(self, examples):
        return len(examples)

    def __call__(self, model, batch):
        from tailor.train.losses import sequence_logprobs
        lp = sequence_logprobs(model, batch)
        at = {seq: k for k, seq in enumerate(batch.sequences)}
        pairs = range(len(batch.examples))
        margin = lp[[at[(i, 0)] for i in pairs]] - lp[[at[(i, 1)] for i in pairs]]
        return -torch.nn.functional.logsigmoid(self.beta * margin).sum(), {"margin": margin.sum().item()}


def _pairs(task, builder, n):
    from tailor.train.data import Encoded
    out = []
    for ex in task.splits["train"][:n]:
        wrong = next(label for label in task.labels if label != ex.target)
        out.append(Encoded(ex.id, builder.encode(builder.build(ex).text),
                           [builder.encode(builder.target_text(ex.target)), builder.encode(builder.target_text(wrong))]))
    return out


def test_a_pairwise_loss_through_the_loop_has_the_gradient_of_a_direct_computation(tiny_base, task, builder):
    """Chosen and rejected share their prompt in one packed row (tree mask); several micro-batches
    accumulate; the loop's gradient is that of the mean pairwise loss computed pair by pair."""
    from tailor.train.loop import Trainer
    pairs = _pairs(task, builder, 10)
    model = copy.deepcopy(tiny_base.model)
    for p in model.parameters():
        p.requires_grad_(True)
    cfg = TrainConfig(steps=1, batch_size=10, pack_len=128, micro_batch_tokens=256, precision="fp32")
    trainer = Trainer(model, tiny_base.tokenizer, builder, task, cfg, None, loss=Pairwise(), data=pairs,
                      layout="packed", soft_tokens=0, tag="pairs", progress=False, resume=None, budget_s=None)
    batches, units = trainer.batches(0)
    assert units == 10 and len(batches) > 1                          # accumulation over micro-batches
    assert all(b.attention_mask is not None and b.attention_mask.dim() == 3 for b in batches)
    assert max(len(b.examples) for b in batches) > 1                 # pairs packed together
    trainer.forward_backward(batches, units)
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    total = 0
    for enc in pairs:
        lps = []
        for target in enc.targets:   # each side alone, a plain forward
            ids = torch.tensor([enc.prompt + target])
            logits = model(input_ids=ids).logits[0, len(enc.prompt) - 1:-1].float()
            lps.append(torch.log_softmax(logits, -1)[torch.arange(len(target)), torch.tensor(target)].sum())
        total = total - torch.nn.functional.logsigmoid(Pairwise.beta * (lps[0] - lps[1]))
    (total / len(pairs)).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-6)

    result = train(copy.deepcopy(tiny_base.model).requires_grad_(True), tiny_base.tokenizer, builder, task,
                   TrainConfig(steps=12, batch_size=10, lr=1e-2, warmup_ratio=0, precision="fp32", log_every=1),
                   loss=Pairwise(), data=pairs, progress=False)
    assert result.steps == 12 and result.final_loss < 0.6   # ln 2 = 0.693 at the start


def test_a_budget_sizes_the_steps_and_says_what_it_chose(tiny_base, task, builder, monkeypatch, tmp_path, capsys):
    from tailor.train.loop import Trainer
    monkeypatch.setattr(Trainer, "_probe", lambda self: 1.0)    # one second a step, as if measured
    monkeypatch.setenv("TAILOR_PROGRESS_SECONDS", "0")           # a plain progress line on every step
    cfg = TrainConfig(steps=25, batch_size=4, max_train_examples=40, budget_minutes=5 / 60, precision="fp32")
    result = train(copy.deepcopy(tiny_base.model).requires_grad_(True), tiny_base.tokenizer, builder, task, cfg,
                   tmp_path, progress=True)
    assert (result.steps, result.planned_steps, result.budget_s, result.probe_s_per_step) == (5, 25, 5.0, 1.0)
    err = capsys.readouterr().err
    assert "train: 5 steps of 4 examples, about 5 s" in err and "budget 0.1 min: 5 of 25 steps" in err
    # not a terminal: plain lines with rate and ETA instead of a bar that would vanish
    assert "training train: 1/5 steps (20%)" in err and "ETA" in err and "5/5 steps (100%)" in err
