"""PPO on the training scaffold's contract (tiny-test): a wall-clock budget stops it after the
iteration that passes it, says so in its result and leaves a checkpoint a resumed run continues
from exactly; progress lines with an ETA as THE loop prints them; a non-finite loss stops it in
one line; and the options of THE loop that PPO never reads are refused when a file is read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tailor.errors import DataError, TailorError

# THE loop's options PPO reads, and those it refuses; a new TrainConfig option fails the test below
# until someone decides which it is for PPO (never inherited and silently ignored)
PPO_READS = {"steps", "lr", "weight_decay", "pack_len", "max_train_examples", "train_prompts", "max_grad_norm",
             "precision", "seed", "save_every", "keep_checkpoints", "report_to", "budget_minutes"}
PPO_REFUSES = {"epochs", "warmup_ratio", "schedule", "min_lr_ratio", "batch_size", "micro_batch_tokens", "seq_len",
               "pack", "overlong", "grad_checkpointing", "kernels", "eval_every", "eval_examples", "patience",
               "load_best", "log_every"}


@pytest.fixture(scope="module")
def pair_task(tmp_path_factory):
    from tailor.preference.data import load_preference_task
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"question {i % 8}: say something {i}", "chosen": f"yes indeed {i % 3}",
                                        "rejected": f"no way never {i % 5}"}) + "\n" for i in range(24)))
    return load_preference_task(path, test=2, dev=1)


@pytest.fixture(scope="module")
def reward_arm(tiny_base, pair_task, tmp_path_factory):
    from tailor.methods import make_method, save_adapted
    folder = tmp_path_factory.mktemp("rm") / "rm"
    rm = make_method("reward-model", {"steps": 2, "batch_size": 8, "precision": "fp32"}).fit(
        pair_task, tiny_base, folder, progress=False)
    save_adapted(rm, folder)
    return folder


def _ppo(reward_arm, **options):
    from tailor.methods import make_method
    return make_method("ppo", {"reward_model": str(reward_arm), "rollout_prompts": 4, "minibatch_prompts": 2,
                               "max_new_tokens": 5, "precision": "fp32", **options})


def test_a_budget_stops_ppo_after_the_iteration_that_passes_it_and_a_resumed_run_equals_a_straight_one(
        tiny_base, pair_task, reward_arm, tmp_path):
    straight = _ppo(reward_arm, steps=3).fit(pair_task, tiny_base, tmp_path / "straight", progress=False)
    assert (straight.recipe.train["stopped"], straight.recipe.train["iterations"]) == ("steps", 3)
    # the ladder's share of the budget (budget_s to fit): one iteration takes longer than 1 ms
    cut = _ppo(reward_arm, steps=3, save_every=2).fit(pair_task, tiny_base, tmp_path / "cut", progress=False,
                                                      budget_s=0.001)
    train = cut.recipe.train
    assert (train["stopped"], train["iterations"], train["planned_steps"], train["budget_s"]) == ("budget", 1, 3, 0.001)
    assert train["iterations"] < train["planned_steps"] and train["train_time_s"] > 0.001
    rows = [json.loads(line) for line in (tmp_path / "cut" / "train_metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [1]
    # saved where it stopped, though save_every is 2: the run can be continued
    assert json.loads((tmp_path / "cut" / "checkpoints" / "latest.json").read_text())["step"] == 1
    # resumed with the same budget: already spent, nothing more runs, and it says so again
    again = _ppo(reward_arm, steps=3, save_every=2).fit(pair_task, tiny_base, tmp_path / "cut", progress=False,
                                                        budget_s=0.001, resume=str(tmp_path / "cut"))
    assert (again.recipe.train["stopped"], again.recipe.train["iterations"]) == ("budget", 1)
    # resumed without one: iterations 2 and 3 are those of the straight run, to the bit
    resumed = _ppo(reward_arm, steps=3, save_every=2).fit(pair_task, tiny_base, tmp_path / "cut", progress=False,
                                                          resume=str(tmp_path / "cut"))
    assert (resumed.recipe.train["stopped"], resumed.recipe.train["iterations"]) == ("steps", 3)
    a, b = straight.recipe.train["history"], resumed.recipe.train["history"]
    assert [r["step"] for r in b] == [1, 2, 3]
    for key in ("reward", "kl", "policy_loss", "value_loss", "grad_norm", "response_length", "beta"):
        assert [r[key] for r in b] == [r[key] for r in a], key
    assert resumed.weights_id == straight.weights_id
    # the option does the same as the ladder's share
    by_option = _ppo(reward_arm, steps=3, budget_minutes=1e-6).fit(pair_task, tiny_base, None, progress=False)
    assert (by_option.recipe.train["stopped"], by_option.recipe.train["iterations"]) == ("budget", 1)


def test_ppo_prints_what_it_will_do_and_progress_lines_with_an_eta(tiny_base, pair_task, reward_arm, monkeypatch,
                                                                   capsys):
    monkeypatch.setenv("TAILOR_PROGRESS_SECONDS", "0")   # a plain line on every iteration (not a terminal)
    _ppo(reward_arm, steps=2).fit(pair_task, tiny_base, None, progress=True)
    err = capsys.readouterr().err
    assert "ppo: 2 iterations of 4 rollouts of at most 5 tokens, 2 epochs over minibatches of 2" in err
    first = next(line for line in err.splitlines() if "training ppo: 1/2 iterations (50%)" in line)
    assert "tok/s" in first and "reward " in first and "kl " in first and "ETA " in first
    assert "training ppo: 2/2 iterations (100%)" in err and "done in" in err
    _ppo(reward_arm, steps=3).fit(pair_task, tiny_base, None, progress=True, budget_s=0.001)
    err = capsys.readouterr().err
    assert "budget 0.0 min: stops after the iteration that passes it" in err
    assert "training ppo: 1/3 iterations (33%)" in err and "ppo: stopped after iteration 1 of 3:" in err
    assert "2/3 iterations" not in err


def test_a_nan_loss_stops_ppo_in_one_line_saying_where(tiny_base, pair_task, reward_arm):
    from tailor.methods import load_adapted
    from tailor.preference.ppo import PolicyWithValue, PPOTrainer
    from tailor.prompts import builder_for
    opts = _ppo(reward_arm, steps=1)
    model = PolicyWithValue(opts.trainable_model(None, tiny_base), tiny_base.model.config.hidden_size)
    with torch.no_grad():
        model.value_head.bias.fill_(float("nan"))   # every value, advantage and loss nan
    builder = builder_for(pair_task, tiny_base.tokenizer, tiny_base.model.config)
    rm = load_adapted(reward_arm, tiny_base)
    trainer = PPOTrainer(model, tiny_base.tokenizer, builder, pair_task.splits["train"], rm.engine(None, progress=False),
                         opts, None)
    with pytest.raises(TailorError) as info:
        trainer.run()
    assert str(info.value).startswith("loss is nan at iteration 1, minibatch update 1: training stopped; weights "
                                      "are left as after iteration 0; last good checkpoint: none saved")
    assert "\n" not in str(info.value)


def test_every_option_of_the_loop_is_either_read_by_ppo_or_refused():
    from tailor.methods import METHODS
    from tailor.train.options import TrainConfig
    ppo = set(METHODS["ppo"].model_fields)
    assert set(TrainConfig.model_fields) & ppo == PPO_READS
    assert set(TrainConfig.model_fields) - ppo == PPO_REFUSES
    assert PPO_REFUSES <= set(METHODS["dpo"].model_fields) and PPO_REFUSES <= set(METHODS["lora"].model_fields)


@pytest.mark.parametrize("option, value", [("epochs", 2.0), ("eval_every", 5), ("kernels", "off"), ("batch_size", 8),
                                           ("patience", 2), ("warmup_ratio", 0.1), ("log_every", 1)])
def test_an_option_ppo_does_not_use_is_refused_when_the_experiment_is_read(tmp_path, option, value):
    from tailor.config import load_experiment
    path = tmp_path / "experiment.yaml"
    path.write_text("task: factual-summary-pairs\narms:\n  - {name: sft, method: lora, epochs: 2}\n"
                    f"  - {{name: dpo, method: dpo, after: sft, {option}: {json.dumps(value)}}}\n"
                    "  - name: ppo\n    method: ppo\n    reward_model: rm\n    steps: 4\n"
                    f"    {option}: {json.dumps(value)}\n")
    with pytest.raises(DataError) as info:
        load_experiment(path)
    message = str(info.value)
    assert message.startswith(f"{path}:line 9: field 'arms[2].{option}': unknown setting (known: ")
    assert "\n" not in message and " steps," in message and f" {option}," not in message
    # the same option on the lora and dpo arms (THE loop reads it there) is fine
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    exp = load_experiment(path)
    assert getattr(exp.arms[1].options, option) == value and exp.arms[2].options.steps == 4


def test_the_shipped_preference_ladder_still_reads():
    from tailor.config import load_experiment
    exp = load_experiment(Path(__file__).parent.parent / "examples" / "preference-ladder.yaml")
    assert exp.arms[-1].method == "ppo" and exp.arms[-1].options.save_every == 2


def test_tailor_train_refuses_an_sft_option_on_a_ppo_config_in_one_line(tmp_path):
    config = tmp_path / "ppo.yaml"
    config.write_text("model: tiny-test\ntask: tweet-sentiment\nmethod: ppo\n"
                      "options:\n  reward_model: rm\n  eval_every: 10\n")
    tailor = str(Path(sys.executable).parent / "tailor")
    proc = subprocess.run([tailor, "train", str(config), "--runs-dir", str(tmp_path / "runs")], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "ppo.yaml:line 6: field 'options.eval_every': unknown setting" in lines[0], lines
    assert not (tmp_path / "runs").exists()   # refused before anything ran
