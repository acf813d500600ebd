"""tailor curate: planted faults, each counted exactly."""

from __future__ import annotations

import json
import random

import pytest

from tailor.curate import (
    CurateOptions,
    CurationReport,
    apply_fixes,
    apply_fixes_logged,
    curate_task,
    curated_task,
    parse_expected,
    write_clean,
)
from tailor.curate.text import near_groups
from tailor.errors import TailorError
from tailor.task import Example, Task, load_task_file

WORDS_RNG = random.Random(1234)


def sentence(n_words: int = 30) -> str:
    """Random letter-string words: two such sentences share (almost) no character 5-grams."""
    return " ".join("".join(WORDS_RNG.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(WORDS_RNG.randint(4, 7)))
                    for _ in range(n_words))


def near_copy(text: str) -> str:
    """Last word replaced: character 5-gram Jaccard about 0.9 for a 30-word sentence."""
    return text.rsplit(" ", 1)[0] + " zzqxw"


def planted_classify() -> Task:
    """Train: 40 distinct rows (30 pos, 8 neg, 2 neu) plus planted faults; dev: 5 distinct rows;
    test: 10 rows, one an exact (case/space) copy of a train input and one a near copy."""
    base = [sentence() for _ in range(40)]
    labels = ["pos"] * 30 + ["neg"] * 8 + ["neu"] * 2
    train = [Example(f"u{i}", t, l) for i, (t, l) in enumerate(zip(base, labels))]
    train += [Example(f"exact{i}", "  " + base[i].upper().replace(" ", "   ") + " ", labels[i]) for i in range(3)]
    train += [Example(f"near{i}", near_copy(base[i]), labels[i]) for i in (3, 4)]
    train += [Example("conflict-exact", base[5].title(), "neg"),        # u5 is pos
              Example("conflict-near", near_copy(base[6]), "neg")]      # u6 is pos
    train += [Example(f"long{i}", sentence(400), "neu") for i in range(2)]
    dev = [Example(f"d{i}", sentence(), "neg") for i in range(5)]
    test = [Example("t-exact", base[7].upper(), labels[7]), Example("t-near", near_copy(base[8]), labels[8])]
    test += [Example(f"t{i}", sentence(), "pos") for i in range(8)]
    task = Task("planted", "classify", "Classify the text. Answer with exactly one of: pos, neg, neu.",
                train + dev + test, labels=["pos", "neg", "neu"])
    task.splits = {"train": train, "dev": dev, "test": test}
    return task


@pytest.fixture(scope="module")
def tok():
    from tailor.models import load_tokenizer
    return load_tokenizer("tiny-test")


@pytest.fixture(scope="module")
def planted():
    return planted_classify()


@pytest.fixture(scope="module")
def report(planted, tok) -> CurationReport:
    return curate_task(planted, tokenizer=tok, max_tokens=256)


def test_duplicates_counted_exactly(report):
    d = report.duplicates
    assert (d["train"]["rows"], d["train"]["exact"], d["train"]["near"]) == (49, 3, 2)
    assert sorted(a for a, _ in d["train"]["exact_pairs"]) == ["exact0", "exact1", "exact2"]
    assert sorted(a for a, _ in d["train"]["near_pairs"]) == ["near3", "near4"]
    assert (d["dev"]["exact"], d["dev"]["near"], d["test"]["exact"], d["test"]["near"]) == (0, 0, 0, 0)


def test_leakage_counted_exactly(report):
    tt = report.leakage["train-test"]
    assert (tt["rows"], tt["exact"], tt["near"]) == (10, 1, 1)
    assert tt["exact_pairs"] == [["t-exact", "u7"]] and tt["near_pairs"] == [["t-near", "u8"]]
    assert report.leakage["train-dev"]["exact"] + report.leakage["train-dev"]["near"] == 0
    assert report.leakage["dev-test"]["exact"] + report.leakage["dev-test"]["near"] == 0


def test_conflicts_counted_exactly(report):
    c = report.conflicts
    assert (c["groups"], c["rows"], c["exact_groups"], c["near_groups"], c["train_rows"]) == (2, 4, 1, 1, 4)
    assert sorted(sorted(g["ids"]) for g in c["list"]) == [["conflict-exact", "u5"], ["conflict-near", "u6"]]


def test_lengths_over_limit_and_policies(report):
    L = report.lengths
    assert L["max_tokens"] == 256 and L["over"] == 2
    assert sorted(i for i, _, _ in L["over_ids"]) == ["long0", "long1"]
    assert L["policies"]["truncate_end"]["answer_lost"] == 2   # the answer comes last: cut first
    assert L["policies"]["truncate_input"]["unsaveable"] == 0
    assert L["by_split"]["train"]["over"] == 2 and L["by_split"]["test"]["over"] == 0


def test_lengths_match_the_prompt_builder(planted, tok):
    """The batch count equals builder.build(ex).n_tokens + the encoded target_text."""
    from tailor.curate.lengths import token_lengths
    from tailor.prompts import builder_for
    builder = builder_for(planted, tok)
    rows = [("train", ex) for ex in planted.splits["train"][:6]] + [("train", planted.splits["train"][-1])]
    per_row = token_lengths(rows, builder, 256)["_per_row"]
    for _, ex in rows:
        assert per_row[ex.id] == (builder.build(ex).n_tokens, len(builder.encode(builder.target_text(ex.target))))


def test_imbalance_against_uniform_and_expected(planted, tok, report):
    b = report.balance
    counts = {r["label"]: r["count"] for r in b["labels"]}
    assert counts == {"pos": 35, "neg": 10, "neu": 4}
    assert b["flagged"] == ["pos", "neg", "neu"] and b["imbalance_ratio"] == 8.75
    opts = CurateOptions(expected=parse_expected("pos=0.7,neg=0.2,neu=0.1"))
    again = curate_task(planted, options=opts)
    assert again.balance["flagged"] == []
    assert again.lengths is None and any("no tokenizer" in s for s in again.skipped)


def test_blocking_reasons(report):
    def blocking(max_leakage, max_conflicts):   # the limits travel with the options the report was made with
        report.options.update(max_leakage=max_leakage, max_conflicts=max_conflicts)
        return report.blocking()
    assert blocking(0.5, 0.5) == []
    reasons = blocking(0.1, 0.05)   # 2/10 leaked; 4/49 conflicted
    assert len(reasons) == 2
    assert reasons[0].startswith("train/test leakage: 2 of 10 test rows")
    assert reasons[1].startswith("conflicting labels: 4 of 49 train rows")
    assert blocking(2, 4) == []       # counts, not shares
    assert len(blocking(1, 3)) == 2


def test_one_default_for_the_stop_limits():
    """The ladder, `tailor curate` and the report stop at the same limits unless told otherwise."""
    import inspect

    from tailor.commands.curate import curate
    from tailor.config import Experiment
    params = inspect.signature(curate).parameters
    for name in ("max_leakage", "max_conflicts"):
        default = getattr(CurateOptions(), name)
        assert Experiment.model_fields[name].default == default == params[name].default.default


def test_report_views(report):
    data = report.to_json()
    json.dumps(data)  # serialisable
    assert data["counts"]["exact_duplicates"] == 3 and data["counts"]["leaked_test_rows"] == 2
    html = report.html_section()
    assert html.startswith('<section class="tailor-curation">') and html.endswith("</section>")
    assert "http" not in html and "<script" not in html and "<svg" in html   # no external assets
    rows = dict(report.summary_rows())
    assert rows["exact duplicates"] == "train 3, dev 0, test 0"
    assert rows["leakage train->test"].startswith("2 of 10 test rows")
    assert "label-noise candidates: no model engine given" in report.skipped


def test_apply_fixes_drops_exactly_and_keeps_held_out(planted, report):
    rows, log = apply_fixes_logged(planted, report)
    assert log == {"input also in dev/test": 2, "conflicting targets": 4, "exact duplicate": 3,
                   "near duplicate": 2, "over max tokens": 2, "synthetic rows added": 0}
    train = [ex for ex in rows if ex.meta["split"] == "train"]
    assert len(train) == 49 - 13
    held = [ex.id for ex in rows if ex.meta["split"] != "train"]
    assert held == [ex.id for ex in planted.splits["dev"] + planted.splits["test"]]
    assert planted.splits["train"][0].meta == {}   # the task's examples are not modified
    kept = apply_fixes(planted, report, CurateOptions(conflicts="keep", drop_leaked=False,
                                                      length_policy="keep", drop_near_duplicates=False))
    assert sum(ex.meta["split"] == "train" for ex in kept) == 49 - 3
    balanced = apply_fixes(planted, report, CurateOptions(balance="downsample"))
    counts = {l: sum(ex.target == l for ex in balanced if ex.meta["split"] == "train") for l in ("pos", "neg", "neu")}
    assert len(set(counts.values())) == 1   # downsampled to uniform


def test_write_clean_roundtrip_and_never_overwrites_input(tmp_path, planted, report):
    rows = apply_fixes(planted, report)
    out = write_clean(tmp_path / "clean.jsonl", rows, planted)
    back = load_task_file(out).split()
    assert {k: len(v) for k, v in back.splits.items()} == {"train": 36, "dev": 5, "test": 10}
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": ex.input, "label": ex.target}) + "\n" for ex in planted.examples))
    before = src.read_bytes()
    task = load_task_file(src).split(test=10, dev=5)
    with pytest.raises(TailorError, match="refusing to overwrite the input file"):
        write_clean(src, apply_fixes(task, curate_task(task)), task)
    assert src.read_bytes() == before
    ct = curated_task(planted, rows)
    assert [ex.id for ex in ct.splits["test"]] == [ex.id for ex in planted.splits["test"]]


def planted_generate() -> Task:
    good = [Example(f"g{i}", sentence(12), sentence(8).capitalize() + ".") for i in range(10)]
    faults = [Example("blank0", sentence(12), ""), Example("blank1", sentence(12), "   "),
              Example("dot", sentence(12), "."),
              Example("pad0", sentence(12), "  " + sentence(6) + "\n"), Example("pad1", sentence(12), sentence(6) + " "),
              *[Example(f"refuse{i}", sentence(12), "I'm sorry, I can't answer that.") for i in range(3)]]
    return Task("gen", "generate", "Answer.", good + faults)


def test_output_checks_blank_near_empty_refusals():
    task = planted_generate()
    r = curate_task(task)
    o = r.outputs
    assert (o["blank"], o["near_empty"], o["padded"]) == (2, 1, 2)
    assert sorted(o["blank_ids"]) == ["blank0", "blank1"] and o["near_empty_ids"] == ["dot"]
    d = o["dominant"]
    assert d["refusals"] == 3 and d["top"][0]["count"] == 3 and len(d["flags"]) == 1
    assert r.duplicates["train"]["exact"] == 0 and r.conflicts["groups"] == 0
    rows, log = apply_fixes_logged(task, r, CurateOptions(standardize_outputs=True))
    assert log["blank or near-empty output"] == 3 and log["output standardized"] == 2
    assert len(rows) == 15 and all(ex.target == ex.target.strip() for ex in rows)


def test_label_variants_standardized():
    exs = [Example(f"x{i}", sentence(), lab) for i, lab in enumerate(["pos"] * 4 + ["Pos", "POS"] + ["neg"] * 3)]
    task = Task("v", "classify", "c", exs, labels=["pos", "neg", "Pos", "POS"])
    r = curate_task(task)
    assert r.outputs["variants"] == {"rows": 2, "map": {"Pos": "pos", "POS": "pos"}}
    rows = apply_fixes(task, r, CurateOptions(standardize_outputs=True))
    assert sorted({ex.target for ex in rows}) == ["neg", "pos"]


def test_near_groups_verified_threshold():
    a = sentence()
    keys = [a, near_copy(a), sentence(), "", "ab"]
    comp, pairs = near_groups(keys, 0.8)
    assert pairs == 1 and comp[0] == comp[1] and len(set(comp)) == 4
    assert near_groups(keys, 1.0) == ([0, 1, 2, 3, 4], 0)


def test_options_are_validated():
    with pytest.raises(TailorError, match="conflicts must be one of"):
        CurateOptions(conflicts="vote")
    with pytest.raises(TailorError, match="LABEL=SHARE"):
        parse_expected("pos:0.5")


def test_model_checks_through_the_engine(tiny_base, planted):
    from tailor.engine import Engine
    from tailor.evaluate import predict
    from tailor.prompts import builder_for
    engine = Engine(tiny_base.model, tiny_base.tokenizer, tiny_base.weights_id, None, progress=False)
    r = curate_task(planted, engine=engine, options=CurateOptions(sample=None, noise_confidence=0.0, max_tokens=256))
    train = planted.splits["train"]
    preds = predict(engine, builder_for(planted, tiny_base.tokenizer, tiny_base.model.config), planted, train)
    assert r.noise["scored"] == 49
    assert r.noise["candidates"] == sum(p.prediction != p.target for p in preds) > 0
    assert r.noise["candidate_ids"] == [c["id"] for c in r.noise["list"]][:len(r.noise["candidate_ids"])]
    none = curate_task(planted, engine=engine, options=CurateOptions(sample=10, noise_confidence=1.01))
    assert none.noise["scored"] == 10 and none.noise["candidates"] == 0
    dropped = apply_fixes_logged(planted, r, CurateOptions(drop_noise=True))[1]
    assert dropped.get("label-noise candidate", 0) > 0


def test_paraphrase_accounting_with_tiny_model(tiny_base):
    """A random tiny model rarely stops, so its outputs are rejected; every attempt is counted."""
    from tailor.engine import Engine
    engine = Engine(tiny_base.model, tiny_base.tokenizer, tiny_base.weights_id, None, progress=False)
    train = [Example(f"s{i}", sentence(4), "pos" if i % 3 else "neg") for i in range(6)]
    task = Task("small", "classify", "c", train, labels=["pos", "neg"])
    r = curate_task(task, engine=engine, options=CurateOptions(model_checks=False, augment=2))
    a = r.augmentation
    assert a["attempted"] == 2 and a["kept"] + sum(a["rejected"].values()) == 2 == len(r.synthetic) + sum(a["rejected"].values())
    assert "label-noise candidates: model checks turned off" in r.skipped


def test_synthetic_rows_are_marked_and_follow_their_source(planted, report):
    from tailor.curate.model import synthetic_row
    src = planted.splits["train"][0]
    syn = synthetic_row(src, "a paraphrase of the first row")
    assert syn.meta == {"synthetic": True, "source_id": "u0", "split": "train"} and syn.target == src.target
    gone = synthetic_row(planted.splits["train"][40], "a paraphrase of a dropped exact duplicate")
    report.synthetic = [syn, gone]
    try:
        rows, log = apply_fixes_logged(planted, report)
    finally:
        report.synthetic = []
    assert [ex.id for ex in rows if ex.meta.get("synthetic")] == ["u0-para"]
    assert log["synthetic rows added"] == 1 and log["synthetic rows dropped with their source"] == 1


@pytest.mark.real
def test_paraphrase_with_smollm2(smol_base):
    from tailor.engine import Engine
    engine = Engine(smol_base.model, smol_base.tokenizer, smol_base.weights_id, None, progress=False)
    texts = ["I love my new phone, the camera is amazing!", "The flight was delayed three hours, awful service.",
             "Watching the game tonight with friends.", "This update broke everything on my laptop."]
    task = Task("tw", "classify", "c", [Example(f"r{i}", t, l) for i, (t, l) in
                                       enumerate(zip(texts, ["positive", "negative", "neutral", "negative"]))],
                labels=["negative", "neutral", "positive"])
    r = curate_task(task, engine=engine, options=CurateOptions(model_checks=False, augment=4))
    assert r.augmentation["kept"] >= 1
    for s in r.synthetic:
        assert s.meta["synthetic"] is True and s.input.strip() and s.input not in texts


def test_cli_writes_report_and_clean_file(tmp_path, planted):
    from typer.testing import CliRunner

    from tailor.cli import app
    src = tmp_path / "data.jsonl"
    src.write_text("".join(json.dumps({"id": ex.id, "text": ex.input, "label": ex.target,
                                       "split": s}) + "\n" for s, items in planted.splits.items() for ex in items))
    before = src.read_bytes()
    result = CliRunner().invoke(app, ["curate", str(src), "--model", "tiny-test", "--no-model-checks",
                                      "--max-tokens", "256", "--write", str(tmp_path / "clean.jsonl"),
                                      "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "would stop the ladder: train/test leakage: 2 of 10 test rows" in result.output.replace("\n", " ")
    assert src.read_bytes() == before
    assert len((tmp_path / "clean.jsonl").read_text().splitlines()) == 36 + 5 + 10
    run = next((tmp_path / "runs").iterdir())
    data = json.loads((run / "curation.json").read_text())
    assert data["counts"]["train_exact_duplicates"] == 3 and data["counts"]["over_max_tokens"] == 2
    assert (run / "curation.html").exists() and (run / "manifest.json").exists()


def test_context_plus_question_is_not_a_duplicate():
    """Two questions about one passage: near-identical overall, different rows."""
    passage = sentence(120)
    rows = [Example("q1", f"{passage}\n\nQuestion: is the sky green?", "no"),
            Example("q2", f"{passage}\n\nQuestion: does the river flow north?", "yes"),
            Example("q3", f"{passage}\n\nQuestion: is the sky green ?", "yes")]
    r = curate_task(Task("qa", "classify", "c", rows, labels=["no", "yes"]))
    assert r.duplicates["train"]["near"] == 0
    assert r.conflicts["groups"] == 1 and sorted(r.conflicts["list"][0]["ids"]) == ["q1", "q3"]


def test_html_escapes_row_text():
    evil = "<script>alert(1)</script> " + sentence(10)
    rows = [Example("a", evil, "x"), Example("b", evil.upper(), "y"), Example("c", sentence(), "x")]
    html = curate_task(Task("e", "classify", "c", rows, labels=["x", "y"])).html_section()
    assert "<script" not in html and "&lt;script&gt;" in html.lower()
