"""Graders in OpenAI's JSON shapes, against hand-computed values (specs as OpenAI's graders guide
writes them), their templates, and their one-line errors."""

from __future__ import annotations

import json

import pytest

from tailor.errors import TailorError
from tailor.graders import GRADERS, item_of, load_grader
from tailor.task import Example

SAMPLE = "{{ sample.output_text }}"


def sim(metric: str, **extra) -> dict:
    return {"type": "text_similarity", "name": metric, "input": SAMPLE, "reference": "{{ item.reference_answer }}",
            "evaluation_metric": metric, "pass_threshold": 0.5, **extra}


def test_every_kind_registers_itself():
    assert {"string_check", "text_similarity"} <= set(GRADERS)


def test_string_check_operations_as_the_guide_defines_them():
    # the guide's example: the answer against the row's label, each operation
    items = [{"label": "Paris"}] * 4
    samples = ["Paris", "paris", "It is Paris.", "Lyon"]
    expect = {"eq": [1, 0, 0, 0], "ne": [0, 1, 1, 1], "like": [1, 0, 1, 0], "ilike": [1, 1, 1, 0]}
    for op, want in expect.items():
        g = load_grader({"type": "string_check", "name": "Example string check grader", "input": SAMPLE,
                         "reference": "{{ item.label }}", "operation": op})
        assert g.grade(samples, items) == want, op
    assert g.type == "string_check" and g.name == "Example string check grader" and g.pass_threshold is None


def test_text_similarity_against_hand_computations():
    items = [{"reference_answer": "a b c e"}, {"reference_answer": "the cat ran"}]
    samples = ["a b c d", "the cat sat"]
    got = {m: load_grader(sim(m)).grade(samples, items) for m in ("bleu", "gleu", "fuzzy_match", "rouge_1",
                                                                    "rouge_2", "rouge_l", "rouge_3")}
    # BLEU "a b c d" | "a b c e": precisions 3/4, 2/3, 1/2 and 0/1 smoothed to 1/2 (sacreBLEU's exp
    # smoothing), brevity penalty 1: (3/4 * 2/3 * 1/2 * 1/2) ** (1/4)
    assert got["bleu"][0] == pytest.approx((0.75 * (2 / 3) * 0.5 * 0.5) ** 0.25)
    # GLEU: min(precision, recall) over all 1-4-grams: 6 of 10 match; 3 of 6 for the cat
    assert got["gleu"] == pytest.approx([0.6, 0.5])
    # fuzzy: Indel distance 2 over 14 characters; 4 over 22
    assert got["fuzzy_match"] == pytest.approx([1 - 2 / 14, 1 - 4 / 22])
    # ROUGE-1 F: 3 of 4 words; 2 of 3. ROUGE-2: 2 of 3 bigrams; 1 of 2. ROUGE-L: LCS 3 of 4; 2 of 3
    assert got["rouge_1"] == pytest.approx([0.75, 2 / 3])
    assert got["rouge_2"] == pytest.approx([2 / 3, 0.5])
    assert got["rouge_l"] == pytest.approx([0.75, 2 / 3])
    assert got["rouge_3"] == pytest.approx([0.5, 0.0])   # trigrams: "a b c" of 2; none of 1
    g = load_grader(sim("rouge_1"))
    assert g.passed(0.5) and not g.passed(0.49)


def test_meteor_is_refused_in_one_line_not_faked():
    with pytest.raises(TailorError, match=r"^grader: grader 'meteor' field 'evaluation_metric': meteor needs "
                                          r"NLTK's WordNet data") as e:
        load_grader(sim("meteor"))
    assert "\n" not in str(e.value)


def test_templates_render_item_and_sample_fields():
    ex = Example("r1", [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}], "4",
                 meta={"reference_answer": "four", "tags": ["math", "easy"], "_line": 3})
    item = item_of(ex)
    assert item["reference_answer"] == "four" and item["target"] == "4" and item["input"] == "2+2?"
    assert "_line" not in item and item["messages"][1]["content"] == "2+2?"
    g = load_grader({"type": "string_check", "name": "t", "operation": "eq",
                     "input": "{{ sample.output_json.answer }}|{{ item.tags }}|{{item.meta.tags[0]}}",
                     "reference": "4|[\"math\", \"easy\"]|math"})
    assert g.grade(['{"answer": 4}'], [item]) == [1.0]
    plain = item_of(Example("r2", "What is 2+2?", "4", choices=["3", "4"]))
    assert plain["reference_answer"] == "4" and plain["choices"] == ["3", "4"] and "messages" not in plain


def test_an_answer_that_is_not_json_scores_0_and_is_counted_while_a_row_missing_a_field_is_an_error():
    """A grader reading sample.output_json on a free-text answer: the model failed the format, the
    spec is fine, so the sample scores 0 (counted by reason), for every kind that renders templates."""
    items = [{"id": "a", "compliant": "yes"}, {"id": "b", "compliant": "no"}, {"id": "c", "compliant": "no"}]
    answers = ['{"compliant": "yes"}', "yes, it is", '{"compliant": "yes"}']
    check = load_grader({"type": "string_check", "name": "c", "operation": "eq",
                         "input": "{{ sample.output_json.compliant }}", "reference": "{{ item.compliant }}"})
    similar = load_grader({"type": "text_similarity", "name": "s", "evaluation_metric": "fuzzy_match",
                           "pass_threshold": 0.5, "input": "{{ sample.output_json.compliant }}",
                           "reference": "{{ item.compliant }}"})
    assert check.grade(answers, items) == [1.0, 0.0, 0.0] and similar.grade(answers, items) == [1.0, 0.0, 0.0]
    for g in (check, similar):
        assert dict(g.failures) == {"the answer is not JSON and the grader reads sample.output_json": 1}
    with pytest.raises(TailorError, match="reads 'compliant', which row d lacks"):
        check.grade(['{"compliant": "yes"}'], [{"id": "d"}])


def test_template_errors_are_one_line_naming_file_field_and_row(tmp_path):
    path = tmp_path / "grader.json"
    path.write_text(json.dumps({"type": "string_check", "name": "g", "operation": "eq", "input": SAMPLE,
                                "reference": "{{ item.answer }}"}))
    g = load_grader(path)
    with pytest.raises(TailorError) as e:
        g.grade(["x"], [{"id": "row7", "reference_answer": "x"}])
    msg = str(e.value)
    assert msg.startswith(f"{path}: grader 'g' field 'reference': template '{{{{ item.answer }}}}' reads 'answer', "
                          "which row row7 lacks") and "\n" not in msg
    bad = [({"type": "string_check", "name": "g", "operation": "eq", "input": "{{ sample.output_text ",
             "reference": "x"}, "field 'input': template"),
           ({"type": "string_check", "name": "g", "operation": "eq", "input": "{{ row.x }}", "reference": "x"},
            "names row; a template reads only"),
           ({"type": "string_check", "name": "g", "operation": "startswith", "input": "a", "reference": "x"},
            "field 'operation': Input should be 'eq', 'ne', 'like' or 'ilike'"),
           ({"type": "string_check", "name": "g", "operation": "eq", "input": "a", "reference": "x", "extra": 1},
            "field 'extra': not a field of this grader type"),
           ({"type": "regex", "name": "g"}, "field 'type': 'regex' is not a grader type (known: "),
           ({"type": "text_similarity", "name": "g", "input": "a", "reference": "b", "evaluation_metric": "bleu"},
            "field 'pass_threshold': Field required")]
    for spec, want in bad:
        path.write_text(json.dumps(spec))
        with pytest.raises(TailorError) as e:
            load_grader(path)
        assert str(e.value).startswith(str(path)) and want in str(e.value) and "\n" not in str(e.value), str(e.value)
    path.write_text('{"type": "string_check",\n "name": }')
    with pytest.raises(TailorError, match=r"grader.json: line 2: not JSON"):
        load_grader(path)


def test_sandboxed_templates_reach_no_python_internals():
    g = load_grader({"type": "string_check", "name": "g", "operation": "eq",
                     "input": "{{ item.__class__.__mro__ }}", "reference": ""})
    with pytest.raises(TailorError, match=r"field 'input': template .*access to attribute '__class__' of 'dict' "
                                          r"object is unsafe"):
        g.grade(["x"], [{"a": 1}])


# ------------------------------------------------------------ python: the sandbox

MISBEHAVING = '''
import socket, time
def grade(sample, item):
    t = sample["output_text"]
    if t == "sleep":
        time.sleep(60)
    if t == "memory":
        hoard = []
        while True:
            hoard.append(bytearray(64 << 20))
    if t == "socket":
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    if t == "escape":
        open(ESCAPE, "w").write("x")
    if t == "inside":
        with open("scratch.txt", "w") as f:
            f.write("x")
        return 0.5
    if t == "raise":
        raise ValueError("bad row")
    return float(t == item["reference_answer"])
'''


def test_python_grader_stops_each_misbehaviour_reports_it_and_the_run_goes_on(tmp_path, caplog):
    escape = tmp_path / "escaped.txt"
    g = load_grader({"type": "python", "name": "py", "image_tag": "2025-05-08", "timeout_s": 1.5, "memory_mb": 512,
                     "source": MISBEHAVING.replace("ESCAPE", repr(str(escape)))})
    samples = ["4", "sleep", "4", "memory", "socket", "escape", "inside", "raise", "5", "4"]
    items = [{"id": f"r{i}", "reference_answer": "4"} for i in range(len(samples))]
    with caplog.at_level("WARNING", logger="tailor"):
        scores = g.grade(samples, items)
    assert scores == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 1.0]
    assert dict(g.failures) == {"timeout": 1, "memory": 1, "network": 1, "write outside folder": 1,
                                "error: ValueError": 1}
    assert not escape.exists()
    assert "stopped on row r1" in caplog.text and "stopped on row r5" in caplog.text
    assert g.isolation in ("namespace", "audit hook only")
    assert any("5 sample(s)" not in n and "timeout" in n for n in g.notes())


def test_python_grader_spec_errors_are_one_line():
    for source, want in [("def grade(sample, item)\n  return 1", "field 'source': line 1: expected ':'"),
                         ("def score(sample, item):\n  return 1", "defines no top-level function grade"),
                         ("def grade(sample):\n  return 1", r"line 1: grade must take \(sample, item\)")]:
        with pytest.raises(TailorError, match=want):
            load_grader({"type": "python", "name": "p", "source": source})


# ------------------------------------------------------------ multi: a formula over graders

def test_multi_grader_the_guides_tool_call_example_and_a_formula_that_is_never_eval():
    spec = {"type": "multi", "name": "tool call", "calculate_output": "0.5 * name + 0.5 * arguments", "graders": {
        "name": {"name": "name", "type": "string_check", "input": "{{ sample.output_json.name }}",
                 "reference": "{{ item.name }}", "operation": "eq"},
        "arguments": {"name": "arguments", "type": "string_check", "input": "{{ sample.output_json.arguments }}",
                      "reference": "{{ item.arguments }}", "operation": "eq"}}}
    items = [{"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}] * 3
    samples = ['{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
               '{"name": "get_weather", "arguments": "{}"}', '{"name": "search", "arguments": "{}"}']
    assert load_grader(spec).grade(samples, items) == [1.0, 0.5, 0.0]
    one = [samples[0]], [items[0]]
    for formula, want in [("2 ^ 3 - name", 7.0), ("max(name, 0.2) * sqrt(4) / 4", 0.5), ("-abs(-name) + floor(1.7)", 0.0)]:
        assert load_grader({**spec, "calculate_output": formula}).grade(*one) == [want], formula
    g = load_grader({**spec, "calculate_output": "log(name - 1)"})
    assert g.grade(*one) == [0.0] and g.failures == {"formula: ValueError": 1}
    for formula, want in [("__import__('os').system('true')", "is not allowed"), ("name.real", "is not allowed"),
                          ("name if name else 1", "is not allowed"), ("args", "'args' is neither one of the graders"),
                          ("0.5 *", "not a formula")]:
        with pytest.raises(TailorError, match=rf"^grader: grader 'tool call' field 'calculate_output': .*{want}"):
            load_grader({**spec, "calculate_output": formula})
    bad = {**spec, "graders": {**spec["graders"], "name": {**spec["graders"]["name"], "operation": "is"}}}
    with pytest.raises(TailorError, match=r"^g.json: field 'graders.name.operation': Input should be"):
        load_grader(bad, "g.json")


def test_the_example_grader_files_load_and_grade():
    from pathlib import Path
    folder = Path(__file__).parent.parent / "examples" / "graders"
    graders = {p.stem: load_grader(p) for p in sorted(folder.glob("*.json"))}   # model judges load no model until they grade
    assert {"string_check", "text_similarity", "tool_call_multi", "python_numeric", "label_model_judge"} <= set(graders)
    item = {"reference_answer": "42", "name": "f", "arguments": "{}"}
    assert graders["string_check"].grade(["42", "41"], [item] * 2) == [1.0, 0.0]
    assert graders["python_numeric"].grade(["so the answer is 42", "about 41.5"], [item] * 2) == [1.0, 0.0]
    assert graders["tool_call_multi"].grade(['{"name": "f", "arguments": "{}"}'], [item]) == [1.0]
