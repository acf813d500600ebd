"""The ladder: experiment validation, arms on the same rows, failures, cache, recommendation."""

from __future__ import annotations

import json

import pytest

from conftest import write_tickets
from tailor.advise import advise
from tailor.config import experiment_from_dict, load_experiment
from tailor.errors import DataError, TailorError
from tailor.ladder import run_ladder
from tailor.results import read_results


@pytest.fixture
def task_file(tmp_path):
    return write_tickets(tmp_path / "tickets.jsonl", 60)


def _exp(task_file, tmp_path, **over):
    data = {"model": "tiny-test", "task": str(task_file), "task_options": {"test": 12, "dev": 4},
            "arms": ["zero-shot", {"name": "fs2", "method": "few-shot", "k": 2},
                     {"name": "icl-ngram", "method": "icl", "k": 2, "selector": "ngram"},
                     {"name": "broken", "method": "lora", "steps": 1, "target_modules": ["no_such_layer"]}],
            "runs_dir": str(tmp_path / "runs"), "curate": False, "report": False, "dtype": "fp32"}
    data.update(over)
    return experiment_from_dict(data, "exp.yaml")


def test_ladder_runs_every_arm_on_the_same_rows_and_reports_failures(task_file, tmp_path):
    results = run_ladder(_exp(task_file, tmp_path), progress=False)
    arms = {a.name: a for a in results.arms}
    assert [a.status for a in results.arms] == ["ok", "ok", "ok", "failed"]
    assert "no_such_layer" in arms["broken"].error
    run = tmp_path / "runs" / next(p.name for p in (tmp_path / "runs").iterdir())
    ids = {name: [json.loads(l)["id"] for l in (run / f"predictions-{name}.jsonl").open()]
           for name in ("zero-shot", "fs2", "icl-ngram")}
    assert ids["zero-shot"] == ids["fs2"] == ids["icl-ngram"] and len(ids["fs2"]) == 12
    # in-context examples make prompts longer, and the cost model sees it
    assert arms["fs2"].cost.prompt_tokens_per_request > arms["zero-shot"].cost.prompt_tokens_per_request
    assert arms["fs2"].cost.cost_per_1k_requests > arms["zero-shot"].cost.cost_per_1k_requests
    assert all(a.cost.latency_requests == 8 and a.cost.latency_p50_s > 0 for a in results.ok_arms)
    saved = read_results(run)
    assert saved.recommendation.arm in arms and saved.manifest["data_hashes"] and saved.schema_version == 1
    assert saved.model_dump() == results.model_dump()
    assert {"config.json", "manifest.json", "log.txt"} <= {p.name for p in run.iterdir()}
    # every finished arm is saved as measured, prompting arms included
    assert sorted(p.name for p in (run / "arms").iterdir()) == ["fs2", "icl-ngram", "zero-shot"]


def test_second_run_is_served_from_the_engine_cache(task_file, tmp_path, monkeypatch):
    monkeypatch.setenv("TAILOR_CACHE", str(tmp_path / "cache"))
    exp = _exp(task_file, tmp_path, arms=["zero-shot", {"method": "few-shot", "k": 2}])
    first = run_ladder(exp, progress=False)
    second = run_ladder(exp, progress=False)
    assert all(a.cost.cached_share == 0 for a in first.arms)
    assert all(a.cost.cached_share == 1 for a in second.arms)
    assert [a.metrics for a in first.arms] == [a.metrics for a in second.arms]


def test_forgetting_runs_the_base_suite_once_and_each_weight_changing_arm(task_file, tmp_path, monkeypatch):
    import tailor.benchmarks as benchmarks
    calls = []
    real = benchmarks.run_suite
    monkeypatch.setattr(benchmarks, "run_suite", lambda model, tok, wid, **kw: calls.append(wid) or real(model, tok, wid, **kw))
    quick = {"steps": 2, "batch_size": 4}
    exp = _exp(task_file, tmp_path, arms=["zero-shot", {"method": "lora", **quick}, {"method": "bitfit", **quick}],
               forgetting_size=6, cache=False)
    results = run_ladder(exp, progress=False)
    arms = {a.name: a for a in results.arms}
    assert arms["zero-shot"].forgetting is None
    for name in ("lora", "bitfit"):
        f = arms[name].forgetting
        assert f.adapted == arms[name].weights_id and f.base == calls[0]
        assert set(f.benchmarks) == {"mmlu", "boolq", "openbookqa", "commonsenseqa", "piqa"}
        assert all(r.n == 6 and r.ci_low <= r.delta <= r.ci_high for r in f.benchmarks.values())
    assert len(calls) == 3 and calls[0].startswith("tiny-test")  # the base once, then each arm


@pytest.mark.parametrize("data,field,message", [
    ({"arms": ["zero-shot"], "modle": "x"}, "modle", "unknown setting"),
    ({"arms": ["telepathy"]}, "arms[0].method", "unknown method 'telepathy'"),
    ({"arms": [{"method": "few-shot", "kk": 3}]}, "arms[0].kk",
     "unknown setting (known: balanced, calibrate, calibrate_rows, k, seed)"),
    ({"arms": [{"method": "icl", "selector": "nope"}]}, "arms[0].selector", "expected 'similarity', 'mmr',"),
    ({"arms": [{"method": "lora", "lr": "fast"}]}, "arms[0].lr", "expected a valid number, got 'fast'"),
    ({"arms": ["zero-shot", "zero-shot"]}, "arms[1].name", "duplicate arm name 'zero-shot'"),
    ({"arms": ["zero-shot"], "limit": "all"}, "limit", "expected a valid integer, got 'all'"),
    ({"arms": ["zero-shot"], "limit": True}, "limit", "expected a valid integer, got True"),
    ({"arms": ["zero-shot"], "tolerance": "high"}, "tolerance", "expected a valid number, got 'high'"),
    ({"arms": ["zero-shot"], "forgetting_size": 0}, "forgetting_size", "expected greater than 0, got 0"),
    ({"arms": ["zero-shot"], "task_options": {"tset": 10}}, "task_options.tset", "unknown setting"),
    ({"arms": ["zero-shot"], "task_options": {"test": 1.5}}, "task_options.test", "expected"),
    ({"arms": []}, "arms", "needs a list of at least one arm"),
])
def test_experiment_errors_name_the_field(data, field, message):
    with pytest.raises(DataError) as e:
        experiment_from_dict(data, "exp.yaml")
    assert str(e.value).startswith(f"exp.yaml: field '{field}': {message}")


def test_errors_in_a_file_name_the_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model: tiny-test\nlimit: all\narms:\n  - zero-shot\n")
    with pytest.raises(DataError, match=r"exp.yaml:line 2: field 'limit': expected a valid integer, got 'all'"):
        load_experiment(path)
    path.write_text("model: tiny-test\narms:\n  - zero-shot\n  - method: lora\n    steps: 3\n    rnak: 4\n")
    with pytest.raises(DataError, match=r"exp.yaml:line 6: field 'arms\[1\].rnak': unknown setting"):
        load_experiment(path)
    path.write_text("arms:\n  - {method: lora, lr: 1e-3}\n")   # YAML 1.1 reads 1e-3 as a string
    assert load_experiment(path).arms[0].options.lr == 1e-3


def test_reading_an_experiment_imports_no_torch(tmp_path):
    import subprocess
    import sys
    path = tmp_path / "exp.yaml"
    path.write_text("model: tiny-test\narms: [zero-shot, {method: lora, r: 8}]\n")
    code = (f"import sys; from tailor.config import load_experiment; load_experiment({str(path)!r}); "
            "print(sorted(m for m in ('torch', 'peft', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model: tiny-test\narms:\n  - zero-shot\n  - {method: few-shot, k: [\n")
    with pytest.raises(DataError, match=r"exp.yaml:line \d+: invalid YAML"):
        load_experiment(path)


def test_advice_follows_the_flow_chart():
    few = advise({"labelled_examples": "under-100", "custom_style": "no"})
    assert few["suggested_arms"] == ["zero-shot", "few-shot", "icl"]
    style = advise({"labelled_examples": "100-1000", "custom_style": "yes"})
    assert "lora" in style["suggested_arms"]
    rag = advise({"external_knowledge": "yes", "labelled_examples": "none"})
    assert rag["suggested_arms"] == ["zero-shot", "rag"] and any("RAG" in n for n in rag["notes"])
    with pytest.raises(TailorError, match="field 'transparency': expected one of yes, no, got 'maybe'"):
        advise({"transparency": "maybe"})


def test_a_real_ladder_end_to_end_and_its_report_from_its_own_results(task_file, tmp_path):
    """Curation on, a prompting arm and a trained arm, forgetting on a tiny subset, the report on;
    results.json reads back as the typed result and renders to the same report."""
    from tailor.report import render_html
    exp = _exp(task_file, tmp_path, curate=True, report=True, forgetting_size=4, continue_on_data_problems=True,
               arms=["zero-shot", {"name": "lora", "method": "lora", "steps": 3, "batch_size": 4}])
    results = run_ladder(exp, progress=False)
    run = tmp_path / "runs" / next(p.name for p in (tmp_path / "runs").iterdir())
    zero, lora = results.arms
    assert zero.ok and lora.ok and lora.changes_weights and not zero.changes_weights
    assert lora.train["steps"] == 3 and lora.cost.train_time_s > 0 and lora.cost.trainable_params > 0
    assert lora.forgetting and all(d.n == 4 for d in lora.forgetting.benchmarks.values()) and zero.forgetting is None
    assert results.curation and results.curation.summary and "tailor-curation" in results.curation.html
    assert (run / "curation.json").exists() and (run / "arms" / "lora" / "adapter" / "adapter_model.safetensors").exists()
    saved = read_results(run)
    html = (run / "report.html").read_text(encoding="utf-8")
    assert render_html(saved) == html
    assert "lora" in html and 'id="forgetting"' in html and "one at a time" in html
