"""`tailor label`: rows pre-labelled by an arm into a review file (JSONL and CSV, least certain
first), reviewed rows merged into a task file by the stated rules with every choice counted,
bad review rows refused with file, line and field, and an interrupted labelling run resumed
without labelling a row twice."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from conftest import write_tickets
from tailor.commands.label import label
from tailor.errors import TailorError
from tailor.label import accept, label_file
from tailor.methods import make_method, save_adapted
from tailor.task import load_task_file

OPTS = {"model": "tiny-test", "dtype": "fp32", "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def arm(tiny_base, tmp_path_factory):
    folder = tmp_path_factory.mktemp("arm")
    tickets = load_task_file(write_tickets(folder / "tickets.jsonl", 40)).split(seed=0)
    save_adapted(make_method("zero-shot").fit(tickets, tiny_base), folder / "zs")
    return folder / "zs"


def _rows_file(path: Path, n: int, gold_every: int = 2) -> Path:
    """n ticket rows r0..r{n-1}; every `gold_every`-th has a label (a target to score against)."""
    rows = []
    for i in range(n):
        label = "bug" if i % 3 else "billing"
        row = {"id": f"r{i}", "text": f"ticket {i}: {'crash error' if label == 'bug' else 'invoice refund'} {i * 7 % 13}"}
        if i % gold_every == 0:
            row["label"] = label
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def labelled(arm, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("labelled")
    rows = _rows_file(tmp / "rows.jsonl", 24)
    s = label_file(arm, rows, tmp / "review.jsonl", keep_above=0.5005, runs_dir=str(tmp / "runs"), cache=False, **OPTS)
    return tmp, s


def test_the_review_file_lists_the_least_certain_rows_first_with_each_label_s_probability(labelled):
    tmp, s = labelled
    review = _lines(tmp / "review.jsonl")
    assert sorted(r["id"] for r in review) == sorted(f"r{i}" for i in range(24))
    confs = [r["confidence"] for r in review]
    assert confs == sorted(confs) and len(set(confs)) > 1
    for r in review:
        assert set(r["probs"]) == {"billing", "bug"} and sum(r["probs"].values()) == pytest.approx(1.0)
        assert r["label"] == max(r["probs"], key=r["probs"].get) and r["confidence"] == max(r["probs"].values())
        assert r["review"] == "" and r["kept"] == (r["confidence"] >= 0.5005)
        assert ("gold" in r) == (int(r["id"][1:]) % 2 == 0)
    gold = [r for r in review if "gold" in r]
    kept = [r for r in gold if r["kept"]]
    assert s["rows"] == s["labelled"] == s["computed"] == 24 and s["from_journal"] == 0
    assert s["kept"] == sum(r["kept"] for r in review) and s["gold_rows"] == 12
    assert s["accuracy"] == pytest.approx(sum(r["label"] == r["gold"] for r in gold) / 12)
    assert s["accuracy_kept"] == (pytest.approx(sum(r["label"] == r["gold"] for r in kept) / len(kept)) if kept else None)
    assert s["mean_confidence"] == pytest.approx(sum(confs) / 24)
    assert json.loads((Path(s["run_dir"]) / "label.json").read_text())["kept"] == s["kept"]
    assert not list(tmp.glob("review.predictions*"))      # the predictions were folded into the review

    with open(tmp / "review.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [c["id"] for c in table] == [r["id"] for r in review]
    for c, r in zip(table, review):
        assert float(c["p_billing"]) == r["probs"]["billing"] and float(c["p_bug"]) == r["probs"]["bug"]
        assert c["label"] == r["label"] and c["input"] == r["input"] and c["review"] == ""
        assert float(c["confidence"]) == r["confidence"] and c["kept"] == ("true" if r["kept"] else "false")


def _reviewed(review: list[dict]) -> tuple[list[dict], float, dict]:
    """The review with rows 0-3 reviewed (a correction, an accept, a reject, a correction equal to
    the model's label), the rest left; a threshold between the other rows' confidences; and
    the counts the rules give."""
    other = {"billing": "bug", "bug": "billing"}
    review = [dict(r) for r in review]
    review[0]["review"] = other[review[0]["label"]]
    review[1]["review"] = "Accept"
    review[2]["review"] = "reject"
    review[3]["review"] = review[3]["label"]
    rest = sorted(r["confidence"] for r in review[4:])
    threshold = rest[len(rest) // 2]
    kept = sum(c >= threshold for c in rest)
    assert 0 < kept < len(rest)      # both sides of the threshold are tried
    return review, threshold, {"edited": 1, "accepted": 2, "rejected": 1, "kept_unreviewed": kept,
                               "dropped_unreviewed": len(rest) - kept}


def test_accepting_a_review_adds_the_reviewed_rows_by_the_rules_and_counts_every_choice(labelled, tmp_path):
    tmp, _ = labelled
    review, threshold, want = _reviewed(_lines(tmp / "review.jsonl"))
    edited = tmp_path / "review.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in review))
    into = tmp_path / "task.jsonl"
    before = [{"id": "x1", "text": "an old row", "label": "bug"}, {"id": review[1]["id"], "text": "already here",
                                                                   "label": "billing"}]
    into.write_text("".join(json.dumps(r) + "\n" for r in before))

    s = accept(edited, into, threshold=threshold)
    added = [review[0], review[3]] + [r for r in review[4:] if r["confidence"] >= threshold]
    assert {k: s[k] for k in want} == want and s["already_present"] == 1 and s["added"] == len(added)
    assert s["rows"] == 24 and s["format"] == "text_label"
    expected = before + [{"id": r["id"], "text": r["input"], "label": r["review"] or r["label"]} for r in added]
    assert _lines(into) == expected
    assert expected[2]["label"] != review[0]["label"]            # the reviewer's correction won
    task = load_task_file(into)
    assert len(task.examples) == len(expected) and set(task.labels) == {"billing", "bug"}

    again = accept(edited, into, threshold=threshold)
    assert again["added"] == 0 and again["already_present"] == 1 + len(added) and _lines(into) == expected

    # the CSV, edited the same way, gives the same rows in a new file
    with open(tmp / "review.csv", newline="") as f:
        table = list(csv.DictReader(f))
    for c, r in zip(table, review):
        c["review"] = r["review"]
    with open(tmp_path / "review.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    fresh = tmp_path / "fresh.jsonl"
    s2 = accept(tmp_path / "review.csv", fresh, threshold=threshold)
    assert {k: s2[k] for k in want} == want and s2["already_present"] == 0
    fresh_rows = [review[0], review[1], review[3], *added[2:]]      # review[1] is new to this file
    assert _lines(fresh) == [{"id": r["id"], "text": r["input"], "label": r["review"] if r is review[0] else r["label"]}
                             for r in fresh_rows]


def test_a_bad_review_row_is_one_line_naming_file_line_and_field_and_the_task_file_is_untouched(labelled, tmp_path):
    tmp, _ = labelled
    review = _lines(tmp / "review.jsonl")
    into = tmp_path / "task.jsonl"
    into.write_text('{"id": "x1", "text": "an old row", "label": "bug"}\n')
    cases = [({"review": "spam"}, "field 'review': 'spam' is not one of the labels ['billing', 'bug'], nor accept or reject"),
             ({"label": "spam"}, "field 'label': 'spam' is not one of ['billing', 'bug']"),
             ({"confidence": 1.5}, "field 'confidence': expected a number from 0 to 1, got 1.5"),
             ({"probs": {"billing": 0.5}}, "field 'probs': expected a probability for each of ['billing', 'bug']"),
             ({"id": review[0]["id"]}, f"field 'id': duplicate id '{review[0]['id']}' (first at line 1)")]
    for change, message in cases:
        bad = [dict(r) for r in review]
        bad[6].update(change)
        path = tmp_path / "bad.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in bad))
        with pytest.raises(TailorError) as e:
            accept(path, into, threshold=0.5)
        assert str(e.value) == f"{path}:line 7: {message}"
        assert into.read_text() == '{"id": "x1", "text": "an old row", "label": "bug"}\n'
    # the CSV: its line numbers count the header
    with open(tmp / "review.csv", newline="") as f:
        table = list(csv.DictReader(f))
    table[4]["review"] = "bugs"
    path = tmp_path / "bad.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    with pytest.raises(TailorError, match=r"^.*bad\.csv:line 6: field 'review': 'bugs' is not one of the labels"):
        accept(path, into, threshold=0.5)
    assert into.read_text() == '{"id": "x1", "text": "an old row", "label": "bug"}\n'


class Killed(BaseException):
    """Stands in for SIGKILL: the run stops after a journal flush, leaving what it flushed."""


def test_an_interrupted_labelling_run_resumes_and_never_labels_a_row_twice(arm, tmp_path, monkeypatch):
    from tailor.engine import Engine
    from tailor.predict import Journal
    rows = _rows_file(tmp_path / "rows.jsonl", 20)
    review, journal = tmp_path / "review.jsonl", tmp_path / "review.predictions.jsonl.partial"
    scored: list[str] = []
    score, add = Engine.score, Journal.add

    def counting_score(self, prompts, options, adapters=None):
        scored.extend(prompts)
        return score(self, prompts, options, adapters)

    flushes = []

    def add_then_die(self, entries):
        add(self, entries)
        flushes.append(len(entries))
        if len(flushes) == 2:
            raise Killed()

    monkeypatch.setattr(Engine, "score", counting_score)
    monkeypatch.setattr(Journal, "add", add_then_die)
    opts = {**OPTS, "batch_size": 4, "cache": False, "runs_dir": str(tmp_path / "runs")}
    with pytest.raises(Killed):
        label_file(arm, rows, review, **opts)
    assert len(scored) == 8 and not review.exists()
    first = {e["line"]["id"]: e["line"]["probs"] for e in map(json.loads, journal.read_text().splitlines()) if "line" in e}
    assert sorted(first) == [f"r{i}" for i in range(8)]

    monkeypatch.setattr(Journal, "add", add)
    scored.clear()
    s = label_file(arm, rows, review, **opts)
    assert s["computed"] == 12 and s["from_journal"] == 8 and len(scored) == 12   # only the missing rows ran
    out = {r["id"]: r for r in _lines(review)}
    assert sorted(out, key=lambda i: int(i[1:])) == [f"r{i}" for i in range(20)]
    assert all(out[i]["probs"] == p for i, p in first.items())                  # the journaled labels, as they were
    assert not journal.exists()

    # a journal left by an interrupted run on other rows is refused, not mixed in
    flushes.clear()
    monkeypatch.setattr(Journal, "add", add_then_die)
    with pytest.raises(Killed):
        label_file(arm, _rows_file(tmp_path / "other.jsonl", 20, gold_every=3), review, **opts)
    monkeypatch.setattr(Journal, "add", add)
    with pytest.raises(TailorError, match=rf"^{journal}: .*delete it to start over"):
        label_file(arm, rows, review, **opts)


def test_the_command_labels_and_accepts_and_refuses_a_wrong_combination(arm, tmp_path):
    app = typer.Typer()
    app.command()(label)
    runner = CliRunner()
    rows = _rows_file(tmp_path / "rows.jsonl", 6)
    common = ["--model", "tiny-test", "--dtype", "fp32", "--device", "cpu", "--runs-dir", str(tmp_path / "runs")]
    r = runner.invoke(app, [str(rows), "--with", str(arm), "--out", str(tmp_path / "rev.jsonl"), "--keep-above", "0.5",
                            *common])
    assert r.exit_code == 0, r.output
    assert "rows labelled" in r.output and "6 (6 computed now, 0 resumed" in r.output
    assert "kept (confidence >= 0.5)" in r.output and "6 of 6" in r.output     # two labels: the top one is >= 0.5
    r = runner.invoke(app, ["--accept", str(tmp_path / "rev.jsonl"), "--into", str(tmp_path / "task.jsonl"),
                            "--threshold", "0"])
    assert r.exit_code == 0, r.output
    assert "added 6 rows" in r.output and len(_lines(tmp_path / "task.jsonl")) == 6
    for args, message in (
            (["--accept", "rev.jsonl"], "tailor label --accept REVIEW needs --into TASK_FILE"),
            (["--accept", "rev.jsonl", "--into", "t.jsonl", "--with", "arm"],
             "tailor label --accept REVIEW --into TASK_FILE takes no --with"),
            ([str(rows), "--with", str(arm)], "tailor label needs --out: tailor label FILE --with ARM --out REVIEW.jsonl, "
                                              "or tailor label --accept REVIEW --into TASK_FILE"),
            ([str(rows), "--with", str(arm), "--out", "r.jsonl", "--threshold", "0.5"],
             "--into and --threshold go with --accept REVIEW"),
            ([str(rows), "--with", str(arm), "--out", "r.csv"], "r.csv: the review file must end in .jsonl "
                                                                 "(its CSV copy is written beside it)")):
        r = runner.invoke(app, args)
        assert isinstance(r.exception, TailorError) and str(r.exception) == message
