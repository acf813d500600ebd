"""The fine-tuning arms on tiny-test: each trains through the one loop, yields a distinct
weights id and a standard artifact that loads back to the same predictions; merge equivalence;
qlora's behaviour on this machine; soft prompts read back as words."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch

from tailor.datasets import load_task
from tailor.errors import TailorError
from tailor.methods import METHODS, load_adapted, make_method, save_adapted
from tailor.methods.finetune import add_zero_biases, merge_arm

QUICK = {"steps": 4, "batch_size": 8, "max_train_examples": 48}
ARMS = ["full", "lora", "prompt-tuning", "prefix", "ia3", "bitfit"]


@pytest.fixture(scope="module")
def task():
    return load_task("tweet-sentiment")


def _scores(adapted, task, examples):
    engine = adapted.engine(None, progress=False)
    preds = adapted.predict(engine, task, examples)
    return [p.prediction for p in preds], [p.probs for p in preds]


def test_all_arms_are_registered():
    for name in ARMS + ["qlora"]:
        assert name in METHODS
    with pytest.raises(TailorError, match="field 'rank': unknown setting"):
        make_method("lora", {"rank": 4})


@pytest.mark.parametrize("arm", ARMS)
def test_arm_trains_saves_and_reloads_to_the_same_predictions(arm, tiny_base, task, tmp_path):
    before = {n: p.clone() for n, p in tiny_base.model.named_parameters()}
    folder = tmp_path / arm
    adapted = make_method(arm, dict(QUICK)).fit(task, tiny_base, folder, progress=False)
    save_adapted(adapted, folder)
    # the shared base is never modified by an arm
    assert all(torch.equal(p, before[n]) for n, p in tiny_base.model.named_parameters())
    assert adapted.weights_id != tiny_base.weights_id and arm in adapted.weights_id
    assert 0 < adapted.trainable_params <= tiny_base.n_params + (1024 if arm == "bitfit" else 0)
    if arm != "full":
        assert adapted.trainable_params < tiny_base.n_params / 10
    assert adapted.artifact_dir == folder and adapted.artifact_bytes > 0
    assert adapted.train_tokens > 0 and adapted.train_time_s > 0
    # what serving needs, not the training run's logs beside it
    assert adapted.artifact_bytes < sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    examples = task.splits["test"][:12]
    preds, probs = _scores(adapted, task, examples)
    loaded = load_adapted(folder, tiny_base)
    assert loaded.weights_id == adapted.weights_id
    preds2, probs2 = _scores(loaded, task, examples)
    assert preds2 == preds
    for a, b in zip(probs, probs2):
        assert all(abs(a[k] - b[k]) < 1e-5 for k in a)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_adapter_arms_share_the_base_weights_without_changing_them(precision, task):
    """A LoRA arm holds no second copy of the base: its frozen weights are the base's own
    tensors under bf16; training in fp32 upcasts into new tensors and leaves the bf16 base as
    it was."""
    from tailor.models import load_base
    base = load_base("tiny-test", dtype="bf16", device="cpu")
    before = {n: p.clone() for n, p in base.model.named_parameters()}
    adapted = make_method("lora", {**QUICK, "precision": precision}).fit(task, base, progress=False)
    assert all(p.dtype == torch.bfloat16 and torch.equal(p, before[n]) for n, p in base.model.named_parameters())
    base_ptrs = {p.data_ptr() for p in base.model.parameters()}
    frozen = [p for p in adapted.model.parameters() if not p.requires_grad]
    shared = sum(p.data_ptr() in base_ptrs for p in frozen)
    assert shared == (len(frozen) if precision == "bf16" else 0)


def test_weights_id_depends_on_the_trained_weights(tiny_base, task):
    a = make_method("lora", dict(QUICK)).fit(task, tiny_base, progress=False)
    b = make_method("lora", {**QUICK, "seed": 1}).fit(task, tiny_base, progress=False)
    c = make_method("lora", dict(QUICK)).fit(task, tiny_base, progress=False)
    assert a.weights_id != b.weights_id
    assert a.weights_id == c.weights_id  # same seed, same data: same weights, deterministically


def test_lora_adapter_is_a_standard_peft_folder(tiny_base, task, tmp_path):
    import copy

    from peft import PeftModel
    adapted = make_method("lora", dict(QUICK)).fit(task, tiny_base, progress=False)
    save_adapted(adapted, tmp_path / "arm")
    folder = tmp_path / "arm" / "adapter"
    assert (folder / "adapter_config.json").exists() and (folder / "adapter_model.safetensors").exists()
    model = PeftModel.from_pretrained(copy.deepcopy(tiny_base.model), folder).eval()
    ids = torch.tensor([tiny_base.tokenizer("hello there").input_ids])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, adapted.model(input_ids=ids).logits, atol=1e-5)


@pytest.mark.parametrize("arm", ["lora", "bitfit"])
def test_merged_model_predicts_like_the_adapter_on_the_test_split(arm, tiny_base, task, tmp_path):
    from dataclasses import replace

    from transformers import AutoModelForCausalLM
    adapted = make_method(arm, {**QUICK, "lr": 5e-2, "steps": 6}).fit(task, tiny_base, progress=False)
    save_adapted(adapted, tmp_path / "arm")
    out = merge_arm(load_adapted(tmp_path / "arm", tiny_base), tmp_path / "merged")
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    merged = replace(adapted, model=model, weights_id="merged:" + arm)
    examples = task.splits["test"]
    preds, probs = _scores(adapted, task, examples)
    preds_m, probs_m = _scores(merged, task, examples)
    assert preds_m == preds
    assert max(abs(a[k] - b[k]) for a, b in zip(probs, probs_m) for k in a) < 1e-4
    # the merged model really differs from the base (the adapter did something)
    _, base_probs = _scores(replace(adapted, model=tiny_base.model, weights_id=tiny_base.weights_id), task,
                            examples[:20])
    assert base_probs != probs[:20]


def test_soft_prompts_cannot_be_merged(tiny_base, task, tmp_path):
    adapted = make_method("prompt-tuning", dict(QUICK)).fit(task, tiny_base, progress=False)
    with pytest.raises(TailorError, match="cannot be merged"):
        merge_arm(adapted, tmp_path / "merged")
    few = make_method("few-shot", {"k": 2}).fit(task, tiny_base)
    with pytest.raises(TailorError, match="nothing to merge"):
        merge_arm(few, tmp_path / "merged")


def test_prompt_tuning_scores_equal_a_plain_forward(tiny_base, task):
    """The engine cannot share a KV cache across a soft prompt's options; its whole-sequence
    path must give the same log-likelihoods as one plain forward per option."""
    adapted = make_method("prompt-tuning", {**QUICK, "lr": 0.3}).fit(task, tiny_base, progress=False)
    engine = adapted.engine(None, progress=False)
    ex = task.splits["test"][0]
    prompt = adapted.builder.build(ex).text
    options = [adapted.builder.target_text(label) for label in task.labels]
    got = engine.score([prompt], [options])[0].logprobs
    for option, lp in zip(options, got):
        p, o = engine.encode(prompt), engine.encode(option)
        with torch.no_grad():
            logits = adapted.model(input_ids=torch.tensor([p + o])).logits[0].float()
        n = adapted.model.active_peft_config.num_virtual_tokens
        logp = torch.log_softmax(logits[n + len(p) - 1:n + len(p) - 1 + len(o)], -1)
        assert lp == pytest.approx(logp[torch.arange(len(o)), torch.tensor(o)].sum().item(), abs=1e-4)


def test_inspect_prompt_reads_text_init_back(tiny_base, task, tmp_path):
    from tailor.train.soft_prompt import nearest_tokens
    adapted = make_method("prompt-tuning", {**QUICK, "steps": 1, "lr": 1e-9, "n_virtual_tokens": 6}).fit(
        task, tiny_base, progress=False)
    save_adapted(adapted, tmp_path / "pt")
    rows = nearest_tokens(tmp_path / "pt" / "adapter", tiny_base, top=1)
    words = [row[0][0] for row in rows]
    ids = tiny_base.tokenizer(task.instruction).input_ids
    # peft repeats/cuts the init text to n tokens; untrained, each virtual token is its own word
    assert words == [tiny_base.tokenizer.decode([i]) for i in ids[:6]]
    assert all(row[0][1] > 0.999 for row in rows)


def test_bitfit_starts_as_the_base_and_trains_only_biases(tiny_base, task):
    import copy
    model = copy.deepcopy(tiny_base.model)
    added = add_zero_biases(model)
    assert len(added) == 7 * tiny_base.model.config.num_hidden_layers
    ids = torch.tensor([tiny_base.tokenizer("a tweet").input_ids])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, tiny_base.model(input_ids=ids).logits)
    adapted = make_method("bitfit", dict(QUICK)).fit(task, tiny_base, progress=False)
    names = [n for n, p in adapted.model.named_parameters() if p.abs().sum() > 0 and n.endswith(".bias")]
    assert names  # biases moved away from zero


def test_qlora_trains_on_4bit_weights_or_says_clearly_why_not(tiny_base, task):
    try:
        adapted = make_method("qlora", dict(QUICK)).fit(task, tiny_base, progress=False)
    except TailorError as e:
        assert "qlora" in str(e) and "use lora instead" in str(e)
        return
    import bitsandbytes as bnb
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in adapted.model.modules())
    assert adapted.trainable_params > 0


def test_qlora_without_bitsandbytes_is_a_clear_error(tiny_base, task, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(TailorError, match="qlora needs bitsandbytes"):
        make_method("qlora", dict(QUICK)).fit(task, tiny_base, progress=False)


def test_train_command_then_eval_adapter_and_export(tmp_path):
    import json

    from typer.testing import CliRunner

    from tailor.cli import app
    config = tmp_path / "lora.yaml"
    config.write_text("model: tiny-test\ntask: tweet-sentiment\nmethod: lora\ndtype: fp32\neval_limit: 20\n"
                      f"runs_dir: {tmp_path / 'runs'}\ncache: false\n"
                      "options: {steps: 3, batch_size: 4, max_train_examples: 24}\n")
    result = CliRunner().invoke(app, ["train", str(config)])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    trained = json.loads((run / "metrics.json").read_text())
    assert (run / "train_metrics.jsonl").exists() and (run / "recipe.json").exists()
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    result = CliRunner().invoke(app, ["eval", "--model", "tiny-test", "--dtype", "fp32", "--limit", "20",
                                      "--adapter", str(run), "--no-cache", "--runs-dir", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    (ev,) = (tmp_path / "ev").iterdir()
    evaluated = json.loads((ev / "metrics.json").read_text())
    assert evaluated["metrics"]["accuracy"] == trained["metrics"]["accuracy"]
    result = CliRunner().invoke(app, ["export", str(run), "--merge", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "merged").glob("*.safetensors"))
    # the vLLM line for a team that outgrows one machine: the base folder, the adapter, no warnings
    result = CliRunner().invoke(app, ["export", f"tickets={run}", "--serve", "vllm", "--port", "9001"])
    assert result.exit_code == 0, result.output
    line = " ".join(result.output.split())
    assert "vllm serve " in line and "--enable-lora" in line and "--port 9001" in line
    assert f"--lora-modules tickets={(run / 'adapter').resolve()}" in line and "warning" not in line
    # an adapter vLLM would serve wrongly is named with what vLLM would do instead
    odd = tmp_path / "odd"
    shutil.copytree(run, odd)
    cfg = json.loads((odd / "adapter" / "adapter_config.json").read_text())
    cfg.update(use_dora=True, modules_to_save=["lm_head"], r=12)
    (odd / "adapter" / "adapter_config.json").write_text(json.dumps(cfg))
    result = CliRunner().invoke(app, ["export", str(odd), "--serve", "vllm"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "DoRA" in text and "untrained" in text and "rank 12" in text, text
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: tiny-test\nmethod: lora\nbogus: 1\n")
    result = CliRunner().invoke(app, ["train", str(bad)])
    assert isinstance(result.exception, TailorError) and "bogus" in str(result.exception)
