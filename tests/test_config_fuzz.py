"""Experiment files, `tailor train` configs and `tailor advise --answers` files: whatever they hold
(values of the wrong type anywhere, nesting thousands deep, aliases that expand exponentially,
names that are not text, arms that would share a folder, numbers no setting means) gives a
validated object or one TailorError naming file, line and field: never another exception, never
a hang. Fuzzed with hypothesis over YAML text and over value trees, and the cases found kept."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tailor.advise import check_answers
from tailor.config import Experiment, load_experiment, load_train_config
from tailor.errors import DataError, TailorError
from tailor.schema import read_yaml

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
TAILOR = str(Path(sys.executable).with_name("tailor"))


def _cli(*args, cwd=None, timeout=30) -> subprocess.CompletedProcess:
    return subprocess.run([TAILOR, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def _refused(path: Path, message: str, reader=load_experiment) -> None:
    with pytest.raises(DataError) as e:
        reader(path)
    assert str(e.value) == f"{path}:{message}", str(e.value)


# ---------------------------------------------------------------- the cases, by hand


LAUGHS = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] +
                   [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)] +
                   ["arms: [zero-shot]", "advice: *a8", ""])


def test_billion_laughs_is_refused_at_once_by_the_cli(tmp_path):
    """Nine levels of ten aliases: 10^9 values in 541 bytes. It hung `tailor run` (the line index
    walked every expanded value)."""
    path = tmp_path / "laughs.yaml"
    path.write_text(LAUGHS)
    assert len(LAUGHS) < 600
    started = time.perf_counter()
    r = _cli("run", path, timeout=30)
    assert time.perf_counter() - started < 10
    assert (r.returncode, r.stderr) == (2, f"error: {path}:line 5: more than 100,000 values once its aliases "
                                           "(*name) are expanded\n")


def test_aliases_that_stay_small_still_read(tmp_path):
    path = tmp_path / "alias.yaml"
    path.write_text("arms:\n- &base {method: lora, steps: 2, lr: 1.0e-3}\n- {method: icl, name: icl, k: 2}\n"
                    "tune: {budget_minutes: 1}\nadvice: &a {custom_style: yes}\n")
    exp = load_experiment(path)
    assert exp.arms[0].options.lr == 1e-3 and exp.advice == {"custom_style": "yes"}


@pytest.mark.parametrize("name,content,message", [
    ("deep.yaml", "arms: " + "[" * 5000 + "]" * 5000 + "\n", "line 1: nested more than 64 levels deep"),
    ("deepmap.yaml", "arms:\n- " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", "line 2: nested more than 64 levels deep"),
    ("method.yaml", "arms:\n- {method: [lora]}\n", "line 2: field 'arms[0].method': unknown method ['lora'] (known: "),
    ("method_map.yaml", "arms:\n- method: {a: 1}\n", "line 2: field 'arms[0].method': unknown method {'a': 1}"),
    ("intkey.yaml", "1: 2\narms: [zero-shot]\n", "line 1: a setting's name must be text, got '1' (quote it)"),
    ("nullkey.yaml", "arms:\n- {method: lora, null: 2}\n",
     "line 2: field 'arms[0]': a setting's name must be text, got 'null' (quote it)"),
    ("listkey.yaml", "? [a, b]\n: 1\narms: [zero-shot]\n", "line 1: a setting's name must be text, got 'a sequence'"),
    ("case.yaml", "arms:\n- {method: zero-shot, name: Base}\n- {method: zero-shot, name: base}\n",
     "line 3: field 'arms[1].name': arm names 'Base' and 'base' share the folder 'base'; give each arm a distinct "
     "name (letters, digits, _ . -)"),
    ("slug.yaml", "arms:\n- {method: zero-shot, name: 'a/b'}\n- {method: zero-shot, name: 'a?b'}\n",
     "line 3: field 'arms[1].name': arm names 'a/b' and 'a?b' share the folder 'a-b'"),
    ("dots.yaml", "arms:\n- {method: zero-shot, name: '..'}\n",
     "line 2: field 'arms[0].name': arm name '..' cannot name a folder (it would name the run's own folders)"),
    ("seedname.yaml", "arms:\n- {method: lora, name: lora, seeds: 2}\n- {method: lora, name: lora.seed1}\n",
     "line 3: field 'arms[1].name': arm name 'lora.seed1' cannot name a folder ('.seedN' and '.rowsN' name the "
     "ladder's repeated fits of an arm)"),
    ("longname.yaml", f"arms:\n- {{method: zero-shot, name: {'x' * 300}}}\n",
     "line 2: field 'arms[0].name': arm name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
    ("lr_nan.yaml", "arms:\n- {method: lora, lr: .nan}\n", "line 2: field 'arms[0].lr': expected a finite number, got nan"),
    ("batch0.yaml", "arms:\n- {method: lora, batch_size: 0}\n",
     "line 2: field 'arms[0].batch_size': expected at least 1, got 0"),
    ("dpo_lr.yaml", "arms:\n- {method: dpo, lr: -1.0}\n", "line 2: field 'arms[0].lr': expected at least 0, got -1.0"),
    ("warmup.yaml", "arms:\n- {method: lora, warmup_ratio: 1.5}\n",
     "line 2: field 'arms[0].warmup_ratio': expected less than 1, got 1.5"),
    ("budget_inf.yaml", "budget_minutes: .inf\narms: [zero-shot]\n",
     "line 1: field 'budget_minutes': expected a finite number, got inf"),
    ("price_inf.yaml", "price_per_1k_tokens: 1e999\narms: [zero-shot]\n",
     "line 1: field 'price_per_1k_tokens': expected a finite number, got inf"),
    ("seed.yaml", "seed: 100000000000000000000000000000\narms: [zero-shot]\n",
     "line 1: field 'seed': expected less than 4294967296, got 100000000000000000000000000000"),
    ("seed_neg.yaml", "seed: -1\narms: [zero-shot]\n", "line 1: field 'seed': expected greater than or equal to 0, got -1"),
    ("advice_value.yaml", "arms: [zero-shot]\nadvice:\n  labelled_examples: [1]\n",
     "line 3: field 'advice.labelled_examples': expected one of none, under-100, 100-1000, over-1000, got [1]"),
    ("advice_key.yaml", "arms: [zero-shot]\nadvice: {tone: yes}\n", "line 2: field 'advice.tone': unknown question 'tone'"),
    ("advice_null.yaml", "arms: [zero-shot]\nadvice: {custom_style: }\n",
     "line 2: field 'advice.custom_style': expected one of yes, no, got None"),
    ("tune_list.yaml", "tune: [1]\narms: [zero-shot]\n",
     "line 1: field 'tune': expected a valid dictionary or instance of TuneOptions, got [1]"),
    ("bundled_dev.yaml", "task: asdiv\ntask_options:\n  dev: 80\narms: [zero-shot]\n",
     "line 3: field 'task_options.dev': asdiv is a bundled task with its own fixed split and fields: task_options.dev "
     "applies to task files only"),   # not dropped in silence: the run would tune on 100 dev rows
    ("date.yaml", "name: 2020-13-45\narms: [zero-shot]\n", " invalid YAML value (month must be in 1..12)"),
    ("int_tag.yaml", "seed: !!int ''\narms: [zero-shot]\n", " invalid YAML value (string index out of range)"),
    ("nul_char.yaml", "arms: [zero-shot]\n\x00\n", "line 2: invalid YAML (character U+0000 is not allowed in YAML)"),
    ("nul.yaml", 'runs_dir: "runs\\0x"\narms: [zero-shot]\n',
     "line 1: field 'runs_dir': expected text without NUL characters, got 'runs\\x00x'"),
    ("surrogate2.yaml", 'arms: [zero-shot]\nname: "a\\ud800"\n',
     "line 2: field 'name': expected text without unpaired surrogates (not valid Unicode), got 'a\\ud800'"),
])
def test_experiment_file_errors_are_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as e:
        load_experiment(path)
    assert str(e.value).startswith(f"{path}:{message}"), str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("content,message", [
    ("options: [1]\n", "line 2: field 'options': expected a valid dictionary, got [1]"),
    ("method: [lora]\n", "line 2: field 'method': expected a valid string, got ['lora']"),
    ("options: {steps: -1}\n", "line 2: field 'options.steps': expected at least 0, got -1"),
    ("options: {max_grad_norm: 0.0}\n", "line 2: field 'options.max_grad_norm': expected more than 0, got 0.0"),
    ("seed: 4294967296\n", "line 2: field 'seed': expected less than 4294967296, got 4294967296"),
    ("options: {keep_checkpoints: 0}\n", "line 2: field 'options.keep_checkpoints': expected at least 1, got 0"),
    ("eval_limit: 0\n", "line 2: field 'eval_limit': expected greater than 0, got 0"),
])
def test_train_config_errors_are_one_line(tmp_path, content, message):
    path = tmp_path / "train.yaml"
    path.write_text("task: x.jsonl\n" + content)
    with pytest.raises(DataError) as e:
        load_train_config(path)
    assert str(e.value).startswith(f"{path}:{message}"), str(e.value)


@pytest.mark.parametrize("content,message", [
    ("advice: [1]\n", "line 1: field 'advice': expected a mapping of question: answer pairs"),
    ("advice: yes\n", "line 1: field 'advice': expected a mapping of question: answer pairs"),
    ("labelled_examples:\n", "line 1: field 'labelled_examples': expected one of none, under-100, 100-1000, over-1000, "
                             "got None"),
    ("custom_style: [maybe]\n", "line 1: field 'custom_style': expected one of yes, no, got ['maybe']"),
    ("task_count: 1\n", "line 1: field 'task_count': expected one of one, a-few, many, got 1"),
    ("advice:\n  external_knowledge: yes\n  colour: blue\n", "line 3: field 'advice.colour': unknown question 'colour'"),
])
def test_advise_answers_of_the_wrong_shape_are_one_line(tmp_path, content, message):
    """`tailor advise --answers` crashed with AttributeError on a list or a boolean under advice:."""
    path = tmp_path / "answers.yaml"
    path.write_text(content)
    r = _cli("advise", "--answers", path)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {path}:{message}"), r.stderr
    assert r.stderr.count("\n") == 1


def test_advise_answers_that_are_right_still_advise(tmp_path):
    path = tmp_path / "answers.yaml"
    path.write_text("labelled_examples: Over-1000\ncustom_style: true\nexternal_knowledge: no\n")
    r = _cli("advise", "--answers", path)
    assert r.returncode == 0 and "Suggested arms:" in r.stdout and "lora" in r.stdout, r.stderr


# ---------------------------------------------------------------- fuzzing


def _read(path: Path, reader) -> None:
    """A valid object or a TailorError, in bounded time; any other exception fails the test."""
    started = time.perf_counter()
    try:
        got = reader(path)
        if reader is load_experiment:
            assert isinstance(got, Experiment) and got.arms
    except TailorError as e:
        assert "\n" not in str(e) and str(e).startswith(str(path)), str(e)
    assert time.perf_counter() - started < 5


KEYS = sorted(Experiment.model_fields) + ["method", "name", "k", "lr", "steps", "seeds", "tune", "knobs",
                                          "labelled_examples", "custom_style", "arm", "fractions", "<<"]
names = st.one_of(st.sampled_from(KEYS), st.text(max_size=5), st.integers(-2, 2), st.none(), st.booleans())
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=6), st.sampled_from(["zero-shot", "lora", "icl", "LoRA", "..", "a/b", "yes",
                                                          "over-1000", "1e-3", "2020-01-01", "\ud800", "\x00"]))
trees = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(names, inner, max_size=4)), max_leaves=20)
arms = st.lists(st.one_of(st.sampled_from(["zero-shot", "lora", "icl", "few-shot", "dpo"]),
                          st.dictionaries(st.sampled_from(["method", "name", "k", "lr", "steps", "seeds", "tune",
                                                           "batch_size", "selector"]),
                                          st.one_of(st.sampled_from(["lora", "icl", "zero-shot", "A", "a", "a/b"]),
                                                    scalars, trees), max_size=5),
                          trees), max_size=4)
experiments = st.one_of(trees, st.fixed_dictionaries({"arms": arms}, optional={k: trees for k in KEYS[:12] if k != "arms"}))


def _dump(value) -> str | None:
    try:
        return yaml.safe_dump(value, allow_unicode=True)
    except (yaml.YAMLError, UnicodeEncodeError):
        return None


@FUZZ
@given(value=experiments, reader=st.sampled_from([load_experiment, load_train_config, read_yaml]))
def test_any_value_tree_gives_a_setting_or_a_one_line_error(tmp_path_factory, value, reader):
    text = _dump(value)
    if text is None:
        return
    path = tmp_path_factory.mktemp("tree") / "exp.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _read(path, reader)


PIECES = [b"arms:", b" ", b"\n", b"- ", b"[", b"]", b"{", b"}", b",", b":", b"&a ", b"*a", b"&b ", b"*b", b"<<: ",
          b"!!str ", b"!!int ", b"!!python/object:os.system ", b"? ", b"method: ", b"lora", b"zero-shot", b"name: ",
          b"advice: ", b"yes", b".nan", b"1e999", b"'", b'"', b"\t", b"#", b"---\n", b"\xff", b"\x00", b"%YAML 1.1\n",
          b"9" * 50]


@FUZZ
@given(data=st.one_of(st.binary(max_size=120), st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join)),
       reader=st.sampled_from([load_experiment, load_train_config, read_yaml]))
def test_any_bytes_give_a_setting_or_a_one_line_error(tmp_path_factory, data, reader):
    path = tmp_path_factory.mktemp("bytes") / "exp.yaml"
    path.write_bytes(data)
    _read(path, reader)


@FUZZ
@given(answers=trees)
def test_any_answers_give_advice_or_a_one_line_error(answers):
    try:
        out = check_answers(answers, "answers.yaml", {}, ("advice",))
        assert all(isinstance(v, str) for v in out.values())
    except TailorError as e:
        assert str(e).startswith("answers.yaml") and "\n" not in str(e)
