"""Saved things edited or corrupted: an arm folder's recipe.json and pool.jsonl, a checkpoint's
latest.json and state.json, a run's results.json. Each is one error naming the file and field,
exit 2 and no traceback from the CLI, before anything is loaded or written; and fuzzed: any bytes
or any JSON value where a recipe's part or the checkpoint pointer belongs gives an arm or a
TailorError, never another exception."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_tickets
from tailor.cli import main
from tailor.errors import DataError, TailorError
from tailor.methods import make_method, save_adapted
from tailor.recipe import read_recipe
from tailor.task import load_task_file
from tailor.train.checkpoint import latest_checkpoint

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def saved_arm(tmp_path_factory, tiny_base):
    """A real few-shot arm folder, as `tailor eval` and the ladder save one."""
    root = tmp_path_factory.mktemp("arm")
    task = load_task_file(write_tickets(root / "tickets.jsonl", 40, ("billing", "bug"), seed=1)).split(
        seed=0, test=10, dev=5)
    save_adapted(make_method("few-shot", {"k": 2}).fit(task, tiny_base), root / "arm")
    return root / "arm"


def _copy(saved_arm: Path, tmp: Path) -> Path:
    folder = tmp / f"arm{len(list(tmp.iterdir()))}"
    shutil.copytree(saved_arm, folder)
    return folder


def _edit_recipe(folder: Path, edit) -> None:
    path = folder / "recipe.json"
    if isinstance(edit, (bytes, str)):
        path.write_bytes(edit if isinstance(edit, bytes) else edit.encode())
        return
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def run_main(args, capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["tailor", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "300")
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


def _set(path: tuple, value):
    def edit(data):
        for key in path[:-1]:
            data = data.setdefault(key, {})
        data[path[-1]] = value
    return edit


RECIPE_CASES = [
    ("not_object", "[1, 2]", ": expected a JSON object, got an array"),
    ("not_utf8", b'{"method": "\xff"}', ": cannot read the recipe ("),
    ("deep", "[" * 5000 + "]" * 5000, ": cannot read the recipe (nested deeper than 100 levels"),
    ("kind", _set(("kind",), "poem"), ": field 'kind': expected 'classify', 'generate' or 'choice', got 'poem'"),
    ("method", _set(("method",), "telepathy"), ": field 'method': unknown method 'telepathy' (known: "),
    ("option_type", _set(("options", "k"), "three"), ": field 'options.k': expected a valid integer, got 'three'"),
    ("option_range", _set(("options", "k"), -2), ": field 'options.k': expected at least 0, got -2"),
    ("option_unknown", _set(("options", "colour"), 1), ": field 'options.colour': unknown setting"),
    ("files", _set(("weights",), {"files": ["../../../outside.bin"]}),
     ": field 'weights.files[0]': '../../../outside.bin' is not a file inside the arm folder"),
    ("files_abs", _set(("weights",), {"files": ["/etc/passwd"]}), ": field 'weights.files[0]': '/etc/passwd' is not"),
    ("digest", _set(("weights",), {"digest": ["x"]}), ": field 'weights.digest': expected a valid string"),
    ("shots_k", _set(("shots", "k"), -1), ": field 'shots.k': expected at least 0, got -1"),
    ("shots_ids", _set(("shots", "ids"), ["nowhere"]),
     ": field 'shots.ids': names 1 examples that pool.jsonl beside it lacks (e.g. 'nowhere')"),
    ("shots_ids_type", _set(("shots", "ids"), "abc"), ": field 'shots.ids': expected a valid list, got 'abc'"),
    ("base", _set(("base", "name"), 3), ": field 'base.name': expected a valid string, got 3"),
    ("calibration", _set(("calibration",), {"method": "content-free"}), ": field 'calibration.labels': missing"),
    ("prior", _set(("calibration",), {"method": "content-free", "labels": ["bug", "billing"], "log_prior": {"bug": -1}}),
     ": field 'calibration.log_prior': no prior for label 'billing'"),
    ("selector", _set(("shots", "selector"), "psychic"), ": field 'shots.selector': unknown selector 'psychic' (known: "
                                                           "fixed, similarity"),
    ("train", _set(("train",), {"train_time_s": "soon"}), ": field 'train.train_time_s': expected a valid number"),
    ("schema", _set(("schema_version",), [1]), ": field 'schema_version': recipe schema [1] is not the 1"),
    ("budget", _set(("max_prompt_tokens",), 0), ": field 'max_prompt_tokens': expected greater than or equal to 1"),
]


@pytest.mark.parametrize("edit,message", [c[1:] for c in RECIPE_CASES], ids=[c[0] for c in RECIPE_CASES])
def test_an_edited_recipe_is_one_line_naming_its_field(saved_arm, tmp_path, capsys, monkeypatch, edit, message):
    """Through `tailor predict`, which reads the arm before anything else: exit 2, one line."""
    folder = _copy(saved_arm, tmp_path)
    _edit_recipe(folder, edit)
    out = tmp_path / "out.jsonl"
    code, err = run_main(["inspect-prompt", folder] if "options" in message or "'method'" in message else
                         ["predict", folder, "--input", tmp_path / "missing.jsonl", "--output", out],
                         capsys, monkeypatch)
    assert code == 2 and err.startswith(f"error: {folder / 'recipe.json'}{message}"), err
    assert err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("command", [["eval", "--model", "/nonexistent/base", "--adapter", "{arm}"],
                                     ["serve", "--base", "/nonexistent/base", "--adapter", "a={arm}"]])
def test_eval_and_serve_read_the_arm_before_the_model(saved_arm, tmp_path, capsys, monkeypatch, command):
    """An arm's recipe is checked first: a missing base would otherwise be the error, after loading."""
    folder = _copy(saved_arm, tmp_path)
    _edit_recipe(folder, _set(("options", "k"), "three"))
    code, err = run_main([c.format(arm=folder) for c in command], capsys, monkeypatch)
    assert (code, err) == (2, f"error: {folder / 'recipe.json'}: field 'options.k': expected a valid integer, got "
                              "'three'\n")


POOL_CASES = [
    ('{"id": 5, "input": "a", "target": "bug"}', "line 1: field 'id': expected a string, got a number"),
    ('{"id": "a", "input": {"x": 1}, "target": "bug"}', "line 1: field 'input': expected a string or chat messages"),
    ('{"id": "a", "input": [{"role": 1}], "target": "bug"}', "line 1: field 'input': expected a string or chat"),
    ('{"id": "a", "input": "x", "target": ["bug"]}', "line 1: field 'target': expected a string, got an array"),
    ('{"id": "a", "input": "x", "target": "bug", "choices": "ab"}', "line 1: field 'choices': expected a list of"),
    ('{"id": "a", "input": "x", "target": "bug"}\n{"id": "a", "input": "y", "target": "bug"}',
     "line 2: field 'id': duplicate id 'a'"),
]


@pytest.mark.parametrize("content,message", POOL_CASES)
def test_an_edited_pool_is_one_error_naming_line_and_field(saved_arm, tmp_path, content, message):
    folder = _copy(saved_arm, tmp_path)
    (folder / "pool.jsonl").write_text(content + "\n")
    with pytest.raises(DataError) as e:
        read_recipe(folder)
    assert str(e.value).startswith(f"{folder / 'pool.jsonl'}:{message}"), str(e.value)


# ---------------------------------------------------------------- checkpoints


def _checkpoint_run(tmp: Path) -> Path:
    """A run directory with a checkpoint as save_checkpoint writes it."""
    import torch

    from tailor.train.checkpoint import save_checkpoint
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    run = tmp / "run"
    save_checkpoint(run / "checkpoints", model, opt, {"step": 4})
    return run


LATEST_CASES = [
    ("[1]", "expected a JSON object {step, dir}, got an array"),
    ('{"step": 4, "dir": 7}', "field 'dir': expected a checkpoint folder beside it (step-0000012), got 7"),
    ('{"step": 4, "dir": "../../../etc"}',
     "field 'dir': expected a checkpoint folder beside it (step-0000012), got '../../../etc'"),
    ('{"step": 9, "dir": "step-0000009"}', "field 'dir': names step-0000009, which holds no state.json"),
    ('{"step": 4, "dir"', "cannot read the checkpoint pointer (Expecting ':' delimiter"),
    (b"\xff\xfe", "cannot read the checkpoint pointer ("),
]


@pytest.mark.parametrize("content,message", LATEST_CASES)
def test_an_edited_latest_json_stops_tailor_train_resume_in_one_line(tmp_path, capsys, monkeypatch, content, message):
    run = _checkpoint_run(tmp_path)
    pointer = run / "checkpoints" / "latest.json"
    pointer.write_bytes(content if isinstance(content, bytes) else content.encode())
    config = tmp_path / "train.yaml"
    config.write_text(f"model: tiny-test\ntask: {tmp_path / 'tickets.jsonl'}\nmethod: lora\nruns_dir: {tmp_path / 'runs'}\n")
    code, err = run_main(["train", config, "--resume", run], capsys, monkeypatch)
    assert code == 2 and err.startswith(f"error: {pointer}: {message}"), err
    assert err.count("\n") == 1 and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.pop("optimizer_scalars"), "field 'optimizer_scalars': missing"),
    (lambda s: s.update(step="four"), "field 'step': expected a number, got a string"),
    (lambda s: s.update(rng={"python": 3}), "field 'rng.python': expected [version, state, gauss]"),
    (lambda s: s.update(optimizer_scalars={"x": 1}), "field 'optimizer_scalars': expected PARAM_INDEX.NAME keys, got 'x'"),
])
def test_an_edited_checkpoint_state_is_one_error_before_any_weight_is_loaded(tmp_path, edit, message):
    import torch

    from tailor.train.checkpoint import load_checkpoint
    run = _checkpoint_run(tmp_path)
    state = run / "checkpoints" / "step-0000004" / "state.json"
    data = json.loads(state.read_text())
    edit(data)
    state.write_text(json.dumps(data))
    model = torch.nn.Linear(3, 2)
    before = model.weight.detach().clone()
    with pytest.raises(DataError) as e:
        load_checkpoint(run, model, torch.optim.AdamW(model.parameters(), lr=0.1))
    assert str(e.value).startswith(f"{state}: {message}"), str(e.value)
    assert torch.equal(model.weight, before)


@pytest.mark.parametrize("name", ["trainable.safetensors", "optimizer.safetensors", "rng.safetensors"])
def test_a_truncated_tensor_file_of_a_checkpoint_is_one_error_naming_it(tmp_path, name):
    import torch

    from tailor.train.checkpoint import load_checkpoint
    run = _checkpoint_run(tmp_path)
    file = run / "checkpoints" / "step-0000004" / name
    file.write_bytes(file.read_bytes()[:20])
    model = torch.nn.Linear(3, 2)
    before = model.weight.detach().clone()
    with pytest.raises(DataError) as e:
        load_checkpoint(run, model, torch.optim.AdamW(model.parameters(), lr=0.1))
    assert str(e.value).startswith(f"{file}: cannot read the tensors ("), str(e.value)
    assert torch.equal(model.weight, before)


@pytest.mark.parametrize("content,message", [
    (b"\xff{", "cannot read results ("),
    ("[" * 5000 + "]" * 5000, "cannot read results (nested deeper than 100 levels"),
])
def test_a_corrupted_results_json_is_one_line_from_tailor_debug(tmp_path, capsys, monkeypatch, content, message):
    (tmp_path / "results.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    code, err = run_main(["debug", tmp_path], capsys, monkeypatch)
    assert code == 2 and err.startswith(f"error: {tmp_path / 'results.json'}: {message}"), err
    assert err.count("\n") == 1


def test_an_edited_bench_result_to_compare_to_is_one_line_before_any_model_loads(tmp_path, capsys, monkeypatch):
    """compare() indexed the reference's fields: a KeyError or TypeError after the suite had run."""
    bench = {"n": 2, "accuracy": "high", "ci_low": 0.0, "ci_high": 1.0, "ece": 0.1, "chance": 0.5, "wall_s": 0.1,
             "cached_share": 0.0, "items_hash": "abc", "correct": "10"}
    file = tmp_path / "results.json"
    file.write_text(json.dumps({"result": {"suite": "general", "weights_id": "w", "wall_s": 1.0, "items": 2,
                                           "benchmarks": {"boolq": bench}}}))
    code, err = run_main(["bench", "--model", "/nonexistent/base", "--compare-to", file], capsys, monkeypatch)
    assert (code, err) == (2, f"error: {file}: field 'result.benchmarks.boolq.accuracy': expected a valid number, "
                              "got 'high'\n")


# ---------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=6), st.sampled_from(["step-0000004", "../x", "/etc", "few-shot", "classify", "", "a"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5) | st.sampled_from(
        ["dir", "step", "files", "digest", "ids", "k", "selector", "name", "labels", "log_prior", "method"]),
        inner, max_size=3)), max_leaves=10)
RECIPE_KEYS = ["method", "options", "kind", "instruction", "labels", "list_options", "max_prompt_tokens",
               "chat_template", "shots", "retriever", "base", "weights", "task", "train", "trainable_params",
               "program", "calibration", "schema_version", "extra"]


def _bounded(read, folder: Path) -> None:
    started = time.perf_counter()
    try:
        read(folder)
    except TailorError as e:
        assert "\n" not in str(e) and str(e).startswith(str(folder)), str(e)
    assert time.perf_counter() - started < 5


def _read_arm(folder: Path) -> None:
    from tailor.methods.base import arm_options
    recipe, _ = read_recipe(folder)
    arm_options(recipe, folder)


@FUZZ
@given(key=st.sampled_from(RECIPE_KEYS), value=json_values)
def test_any_value_in_any_part_of_a_recipe_gives_an_arm_or_one_error(saved_arm, tmp_path_factory, key, value):
    folder = _copy(saved_arm, tmp_path_factory.mktemp("fuzz"))
    _edit_recipe(folder, _set((key,), value))
    _bounded(_read_arm, folder)


@FUZZ
@given(data=st.one_of(st.binary(max_size=80), json_values.map(lambda v: json.dumps(v).encode())))
def test_any_bytes_as_recipe_or_pointer_give_an_arm_a_checkpoint_or_one_error(saved_arm, tmp_path_factory, data):
    folder = _copy(saved_arm, tmp_path_factory.mktemp("fuzz"))
    (folder / "recipe.json").write_bytes(data)
    _bounded(_read_arm, folder)
    (folder / "checkpoints" / "step-0000004").mkdir(parents=True)
    (folder / "checkpoints" / "step-0000004" / "state.json").write_text("{}")
    (folder / "checkpoints" / "latest.json").write_bytes(data)
    _bounded(latest_checkpoint, folder)
