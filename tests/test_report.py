"""The ladder's HTML report: self-contained, escaped, complete, and it renders in headless
Chromium without console errors (skipped only where no Chromium binary exists)."""

from __future__ import annotations

import re
import struct

import pytest

from tailor.errors import TailorError
from tailor.report import console_errors, find_chromium, render, write_report
from tailor.results import LadderResult, read_results

LABELS = ["negative", "neutral", "positive"]
EVIL = '<script>alert("pwned")</script> & <b>bold</b>'

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="no Chromium binary installed")


def _arm(name, method, confusion, cost, forgetting=None, preds=None):
    n = sum(map(sum, confusion))
    correct = sum(confusion[i][i] for i in range(len(confusion)))
    f1s = []
    for i in range(len(LABELS)):
        tp = confusion[i][i]
        fp = sum(confusion[g][i] for g in range(len(LABELS))) - tp
        fn = sum(confusion[i]) - tp
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    inputs = [EVIL, "I love this phone, battery lasts forever", "Meeting moved to 3pm",
              "worst customer service ever", "ok I guess", "@user thanks!!! best day"]
    targets = ["negative", "positive", "neutral", "negative", "neutral", "positive"]
    preds = preds or targets
    return {
        "name": name, "method": method, "status": "ok", "error": None,
        "metrics": {"accuracy": correct / n, "macro_f1": sum(f1s) / len(f1s), "ece": 0.04 + 0.1 / (1 + correct / n)},
        "cost": cost, "confusion": confusion, "labels": LABELS,
        "examples": [{"id": f"t{i}", "input": x, "target": t, "prediction": p}
                     for i, (x, t, p) in enumerate(zip(inputs, targets, preds))],
        "forgetting": forgetting,
    }


def _forgetting():
    """A real `compare` result: MMLU unchanged but for two items, BoolQ down 5.9 points."""
    from tailor.benchmarks import compare

    def suite(wid, bits):
        return {"weights_id": wid, "benchmarks": {
            name: {"n": len(b), "accuracy": b.count("1") / len(b), "ece": 0.1, "items_hash": name, "correct": b}
            for name, b in bits.items()}}
    mmlu = "1100" * 100
    boolq = "1" * 230 + "0" * 110
    return compare(suite("base", {"mmlu": mmlu, "boolq": boolq}),
                   suite("lora", {"mmlu": "01" + mmlu[2:], "boolq": "0" * 20 + boolq[20:]}))


def _cost(prompt, p50, p95, train_s=0.0, params=0, artifact=0, price=0.0005):
    return {"prompt_tokens_per_request": prompt, "completion_tokens_per_request": 2.0,
            "latency_p50_s": p50, "latency_p95_s": p95, "train_time_s": train_s,
            "train_tokens": params and 412_000, "trainable_params": params, "artifact_bytes": artifact,
            "cost_per_1k_requests": (prompt + 2) * price, "eval_wall_s": p50 * 300, "cached_share": 0.0}


def realistic_results() -> LadderResult:
    arms = [
        _arm("zero_shot", "zero_shot", [[40, 50, 10], [30, 55, 15], [20, 45, 35]], _cost(64, 0.031, 0.052),
             preds=["neutral", "neutral", "neutral", "negative", "neutral", "neutral"]),
        _arm("few_shot", "few_shot", [[58, 30, 12], [22, 60, 18], [12, 30, 58]], _cost(412, 0.118, 0.190),
             preds=["negative", "positive", "neutral", "neutral", "neutral", "positive"]),
        _arm("icl_similar", "icl", [[66, 24, 10], [18, 64, 18], [9, 24, 67]], _cost(430, 0.125, 0.201),
             preds=["negative", "positive", "neutral", "negative", "positive", "positive"]),
        _arm("lora", "lora", [[74, 18, 8], [14, 70, 16], [6, 19, 75]],
             _cost(66, 0.033, 0.058, train_s=512.4, params=1_843_200, artifact=7_391_232),
             forgetting=_forgetting()),
        {"name": "full_ft", "method": "full", "status": "failed",
         "error": "TailorError: out of memory while allocating optimiser state <oom> for 134M params",
         "metrics": {}, "cost": {}, "confusion": None, "labels": None, "examples": [], "forgetting": None},
    ]
    return LadderResult.model_validate({
        "experiment": {"name": "tweet-sentiment ladder", "model": "smollm2-135m", "task": "tweet-sentiment",
                       "created": "2025-11-21T17:40:00", "price_per_1k_tokens": 0.0005,
                       "requests_per_month": 2_000_000},
        "task": {"name": "tweet-sentiment", "kind": "classify", "rows": 38000, "labels": LABELS,
                 "train_rows": 37500, "dev_rows": 200, "test_rows": 300,
                 "label_counts": {"negative": 11210, "neutral": 15380, "positive": 11410},
                 "notes": ["12 rows dropped: empty text", "labels normalised to lower case"]},
        "curation": {"summary": [["exact duplicates", 41], ["near duplicates", 117],
                                 ["train/test leakage", 0], ["conflicting labels", 3]],
                     "html": '<section class="curate-report"><h3>Curation</h3><p id="cur-marker">'
                             "3 conflicting labels found</p></section>"},
        "primary_metric": "accuracy",
        "arms": arms,
        "recommendation": {"arm": "lora", "text": "lora reaches 0.730 accuracy, 7.3 points above "
                           "icl_similar at a sixth of its prompt tokens per request. Its 8.5 minutes of "
                           "training pay back after about 40k requests."},
        "advice": {"answers": {"external_knowledge": "no", "labelled_rows": "38000", "tone": "no"},
                   "suggested_arms": ["few_shot", "icl", "lora"],
                   "text": "Plenty of labelled data and no external knowledge: try ICL, then LoRA."},
        "manifest": {"seed": 0, "git_commit": "abc123", "versions": {"torch": "2.13.0"},
                     "data_hashes": {"tweet-sentiment": "9f2c" * 16}, "note": "</pre><script>x()</script>"},
    })


@pytest.fixture
def report(tmp_path):
    return write_report(realistic_results(), tmp_path)


def test_report_is_one_self_contained_file(report):
    html = report.read_text(encoding="utf-8")
    assert report.name == "report.html" and html.startswith("<!doctype html>")
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"<link\b|@import|url\(", html, re.IGNORECASE)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert "script-src 'none'" in html


def test_user_text_is_escaped(report):
    html = report.read_text(encoding="utf-8")
    assert "<script" not in html.lower()  # the report has no scripts; any is an injection
    # the quote as the template engine spells it (markupsafe: &#34;) or as html.escape did (&quot;)
    assert re.search(r"&lt;script&gt;alert\((&quot;|&#34;)pwned(&quot;|&#34;)\)&lt;/script&gt;", html)
    assert "&lt;oom&gt;" in html  # the failure reason
    assert "&lt;/pre&gt;&lt;script&gt;" in html  # the manifest


def test_report_shows_every_part(report):
    html = report.read_text(encoding="utf-8")
    table = html[html.index('id="comparison"'):html.index('id="quality-cost"')]
    for name in ("zero_shot", "few_shot", "icl_similar", "lora", "full_ft"):
        assert name in table
    assert table.count('<tr class="failure">') == 1 and "full_ft failed:" in table
    assert 'class="recommended"' in table and "0.730" in table  # lora's accuracy, 219/300
    assert "forgetting (worst)" in table and "-5.9 pt" in table  # BoolQ, the significant drop
    forgetting = html[html.index('id="forgetting"'):html.index('id="confusion"')]
    assert "boolq" in forgetting and "0.676" in forgetting and "significant drop" in forgetting
    assert "mmlu" in forgetting and "mean of all" in forgetting
    assert "cost / month" in table
    assert "lora reaches 0.730 accuracy" in html
    assert html.count('<figure class="cm">') == 4  # one per finished classify arm
    assert html.count("<svg") == 3  # scatter, latency bars, forgetting intervals
    assert '<p id="cur-marker">3 conflicting labels found</p>' in html  # embedded verbatim
    assert "near duplicates" in html and "label balance" in html
    assert "<details><summary>Versions, seeds" in html
    examples = html[html.index('id="examples"'):html.index('id="data"')]
    assert examples.count("<tr>") == 1 + 6 and "✗" in examples and "✓" in examples


def test_report_renders_odd_values_and_refuses_what_is_not_a_result(tmp_path):
    results = LadderResult.model_validate(
        {"primary_metric": "rougeL", "task": {"kind": "generate"},
         "arms": [{"name": "zero", "method": "zero-shot", "metrics": {"rougeL": float("nan")},
                   "cost": {"latency_p50_s": None}},
                  {"name": "ft", "method": "full", "status": "failed", "error": None}]})
    html = write_report(results, tmp_path).read_text(encoding="utf-8")
    assert "no reason recorded" in html and "No recommendation" in html
    assert write_report(LadderResult(), tmp_path / "empty").is_file()
    with pytest.raises(TailorError, match="expected a ladder result"):
        write_report({"arms": []}, tmp_path)
    bad = tmp_path / "results.json"
    bad.write_text('{"schema_version": 1, "arms": [{"name": "x"}]}')
    with pytest.raises(TailorError, match=r"results.json: field 'arms\[0\].method': missing"):
        read_results(bad)
    bad.write_text('{"arms": []}')
    with pytest.raises(TailorError, match="results schema None is not the 1"):
        read_results(bad)


@needs_chromium
def test_report_renders_in_chromium_without_console_errors(report, tmp_path):
    png = tmp_path / "report.png"
    page = render(report, png, width=1280)
    assert page.errors == []
    tbody = page.dom[page.dom.index('id="comparison"'):]
    tbody = tbody[tbody.index("<tbody>"):tbody.index("</tbody>")]
    assert tbody.count("<tr") == 5 + 1  # five arms and the failed arm's reason
    assert "<script" not in page.dom.lower()  # the escaped input stayed text
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width == 1280 and height == page.height > 1500  # the full page, not one viewport
    assert len(data) > 50_000


@needs_chromium
def test_console_error_check_catches_real_errors(tmp_path):
    """Guards the test above against passing vacuously: a broken page must be reported."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><html><body><img src="https://example.invalid/x.png">'
                   '<script>console.error("boom"); notDefined();</script></body></html>')
    errors = console_errors(bad)
    assert any("boom" in e for e in errors)
    assert any("notDefined" in e for e in errors)
    assert any("example.invalid" in e for e in errors)


def rag_results() -> LadderResult:
    """A knowledge-base ladder: a closed-book baseline, two RAG arms and rag+lora with its probe."""
    def retrieval(kind, recall, ms, closed=None):
        return {"kb": "/data/kb <evil>", "kb_chunks": 13094, "kb_bytes": 25_300_000, "retriever": kind, "k": 4,
                "ms_per_query": ms, "queries": 300, "passages_per_request": 4.0, "passages_dropped": 3,
                "gold_rows": 300, "recall_at_k": recall, "hit_at_k": recall, "mrr": recall * 0.8,
                "closed_book": closed}

    def arm(name, method, acc, prompt, r=None, vs=None):
        return {"name": name, "method": method, "metrics": {"accuracy": acc}, "cost": _cost(prompt, 0.05, 0.08),
                "retrieval": r, "versus_closed_book": vs}
    vs = lambda helped, hurt: {"baseline": "zero-shot", "rows": 300, "helped": helped, "hurt": hurt,  # noqa: E731
                               "unchanged": 300 - helped - hurt, "erased_share": hurt / 180}
    return LadderResult.model_validate({
        "primary_metric": "accuracy", "task": {"name": "boolq-rag", "kind": "choice"},
        "arms": [arm("zero-shot", "zero-shot", 0.60, 40),
                 arm("rag-bm25", "rag", 0.64, 610, retrieval("bm25", 0.71, 3.2), vs(50, 38)),
                 arm("rag-hybrid", "rag", 0.66, 612, retrieval("hybrid", 0.83, 14.5), vs(57, 39)),
                 arm("lora", "lora", 0.63, 40, None, vs(30, 21)),
                 arm("rag+lora", "rag+lora", 0.71, 612, retrieval("hybrid", 0.83, 14.9, {"accuracy": 0.62}), vs(70, 37))],
        "recommendation": {"arm": "rag+lora", "text": "rag+lora"}})


@needs_chromium
def test_report_has_a_retrieval_section_with_helped_and_hurt(tmp_path):
    html = write_report(rag_results(), tmp_path).read_text(encoding="utf-8")
    section = html[html.index('id="retrieval"'):]
    section = section[:section.index("</section>")]
    assert section.count("<tr><td>") == 4, "every arm with retrieval or a helped/hurt count, not the baseline"
    assert "83.0%" in section and "14.9 ms" in section and "0.620" in section   # recall, retrieval time, the probe
    assert "<evil>" not in section and "&lt;evil&gt;" in section
    assert section.count("<svg") == 1 and "rows helped and hurt against zero-shot" in section
    assert 'href="#retrieval"' in html
    page = render(tmp_path / "report.html", tmp_path / "r.png", width=1280)
    assert page.errors == []


def test_the_rewards_section_tells_a_format_reward_that_rose_from_a_correctness_reward_that_did_not():
    from tailor.report.html import render_html
    from tailor.results import ArmResult
    history = [{"step": i + 1, "reward/format": 0.1 * (i + 1), "reward/exact": 0.2, "reward": 0.05 * (i + 1) + 0.2,
                "response_length": 40 - i} for i in range(8)]
    grpo = ArmResult(name="grpo", method="grpo", metrics={"accuracy": 0.3}, train={
        "history": history, "rewards": [{"name": "format", "kind": "format", "weight": 0.5},
                                        {"name": "exact", "kind": "correctness", "weight": 1.0}]})
    html = render_html(LadderResult(arms=[grpo, ArmResult(name="zero-shot", method="zero-shot")]))
    section = html.split('<section id="rewards"')[1].split("</section>")[0]
    rows = section.split("<tr>")[2:]
    assert "<td>format</td><td>format</td><td>0.5</td><td>0.150</td><td>0.750</td><td>+0.600</td>" in rows[0]
    assert "<td>exact</td><td>correctness</td><td>1.0</td><td>0.200</td><td>0.200</td><td>+0.000</td>" in rows[1]
    assert "<td>total</td>" in rows[2] and "+0.300" in rows[2] and "39.5 → 33.5" in rows[0]
    assert '<a href="#rewards">' in html


HOSTILE = ['<script>alert(1)</script>', '"><img src=x>']


def test_hostile_names_labels_and_texts_stay_text_in_every_section(tmp_path):
    """Arm names, labels, example inputs, targets and predictions with markup in them: the page has
    them as text (in tables, titles and the SVG charts alike) and never as an element."""
    from html.parser import HTMLParser

    from tailor.breakeven import break_even
    results = realistic_results()
    evil = "".join(HOSTILE)
    for i, a in enumerate(results.arms):
        a.name = f"arm{i}{evil}"
        a.labels = [f"{l}{evil}" for l in a.labels] if a.labels else None
        for ex in a.examples:
            ex.input, ex.target, ex.prediction = ex.input + evil, ex.target + evil, f"{ex.prediction}{evil}"
    results.recommendation.arm = results.arms[3].name
    results.arms[3].cost.train_cost = 0.5
    results.break_even = break_even(results.arms, results.experiment.requests_per_month)   # a chart of arm names
    results.arms[1].calibration = {"method": evil, "rows": 300, "changed": 4, "prior": {f"negative{evil}": 0.5},
                                   "shares_before": {}, "shares_after": {}}
    results.task["labels"] = [f"{l}{evil}" for l in LABELS]
    results.task["label_counts"] = {f"{l}{evil}": 10 for l in LABELS}
    results.experiment.name = f"exp{evil}"
    results.debug = {results.arms[3].name: {
        "failures": 1, "predictions": 2, "options": {"near": evil},
        "clusters": [{"size": 1, "typical": [evil], "confusion": [[evil, 1]], "nearby_training_rows": 0,
                      "teaching_the_mistake": 0, "gap": True, "add": evil}],
        "likely_label_errors": [{"id": evil, "input": evil, "label": evil, "suggested": evil, "failures": [],
                                 "similarity": 0.9}],
        "output_kinds": [{"kind": evil, "training_share": 0.5, "gold_share": 0.5, "predicted_share": 0.5,
                          "over_predicted": False, "over_taught": False}]}}
    html = write_report(results, tmp_path).read_text(encoding="utf-8")

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.text = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self.text += [v or "" for _, v in attrs]

        def handle_data(self, data):
            self.text.append(data)
    page = Page()
    page.feed(html)
    assert "script" not in page.tags and "img" not in page.tags
    assert {"svg", "section", "table", "pre"} <= set(page.tags)   # the parse saw the page, charts included
    text = "\n".join(page.text)
    for section in ("comparison", "break-even", "calibration", "forgetting", "confusion", "debug", "examples", "data"):
        assert f'id="{section}"' in html, section
    assert text.count(evil) >= 40 and f"arm3{evil}" in text and f"negative{evil}" in text
    for s in HOSTILE:   # escaped where it appears in the file, not merely dropped
        assert s not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&gt;&lt;img src=x&gt;" in html


def test_a_template_naming_a_value_its_context_lacks_fails():
    """StrictUndefined: a missing value is an error where it is rendered, never an empty cell."""
    from jinja2 import UndefinedError

    from tailor.report.templating import ENV, render
    rows = [{"name": "a", "method": "contextual", "prior": "0.50", "before": "0.60", "after": "0.40", "gold": "—",
             "changed": 4}]
    assert "<td>contextual</td>" in render("calibration.html", labels=["x"], rows=rows)
    with pytest.raises(UndefinedError, match="labels"):
        render("calibration.html", rows=rows)
    with pytest.raises(UndefinedError, match="changed"):
        render("calibration.html", labels=["x"], rows=[{k: v for k, v in rows[0].items() if k != "changed"}])
    assert ENV.autoescape("report.html") and ENV.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"


def test_the_judging_section_shows_agreement_and_flags_a_judge_that_reads_the_order():
    from tailor.report.html import render_html
    from tailor.results import ArmResult, JudgeAgreement, Judging, PairwiseJudged
    judging = Judging(grader="helpful", trusted_by_setting=True, pairwise_judge="ab.json", agreement=[
        JudgeAgreement(grader="helpful", statistic="kappa", value=0.31, lo=0.12, hi=0.52, rows=40, threshold=0.4,
                       trusted=False, confusion={"yes": {"yes": 15, "no": 5}, "no": {"yes": 9, "maybe": 11}})],
        pairwise=[PairwiseJudged(arm="lora", versus="zero", pairs=50, win_rate=0.62, win_lo=0.53, win_hi=0.71,
                                 lc_win_rate=0.55, length_coef=0.8, flips=0.40, first_position=0.70)])
    html = render_html(LadderResult(arms=[ArmResult(name="zero", method="zero-shot")], judging=judging))
    section = html.split('<section id="judging"')[1].split("</section>")[0]
    assert "<td>helpful</td><td>kappa</td><td class=\"num\">0.31</td><td class=\"num\">0.12 to 0.52</td>" in section
    assert '<span class="badge bad">no</span>' in section and "only because trust_judge is set" in section
    # the confusion's columns: every label the judge gave, sorted; a missing cell is 0
    assert "<th class=\"num\">maybe</th><th class=\"num\">no</th><th class=\"num\">yes</th>" in section
    assert "<tr><td>no</td><td class=\"num\">11</td><td class=\"num\">0</td><td class=\"num\">9</td></tr>" in section
    assert "0.620</td><td class=\"num\">0.530 to 0.710</td><td class=\"num\">0.550</td>" in section
    assert 'class="num warn">40.0%</td>' in section and "reading the position more than the answers" in section
    assert '<a href="#judging">' in html
    assert 'id="judging"' not in render_html(LadderResult(arms=[ArmResult(name="zero", method="zero-shot")]))
