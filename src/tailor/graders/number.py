"""A strict numeric answer check: the final number of an output, compared with the reference's
number (the `number_check` grader; asdiv's primary metric, `number_match`).

What counts as the answer, in this order:
  1. the number after the last answer marker ("the answer is", "answer:", "####", "\\boxed{...}",
     "=" as the last step of a worked line), if one is followed by a number;
  2. otherwise the last number of the output.
A number is an integer, a decimal ("3.5", ".5", "3." at the end of a sentence), a number with
thousands separators in groups of three ("4,200", "1,000,000"), a fraction ("1/2"), a mixed number
("3 1/2"), negative ("-3", "−3"), with a currency sign or a unit after it ("$4.50", "9 apples",
"50%"). Words are not numbers ("nine" is no answer): the check is of what the output wrote.

Strict where a lenient parser would hand out credit: an answer that offers alternatives ("42 or
43", "42-43", "between 42 and 43", "42, 43", "3:30") is no single number, so it scores 0 against
any reference, and an output without a number scores 0. Two numbers match when they are equal as
fractions, or within the relative tolerance; a decimal written with two or more places also
matches the reference rounded to those places ("0.33" for 1/3), as a person grading would accept.

As a grader spec (OpenAI's shape; every field but `type` optional):
    {"type": "number_check", "name": "number_match", "input": "{{ sample.output_text }}",
     "reference": "{{ item.reference_answer }}", "rel_tol": 1e-6}
scores 1.0 or 0.0 per sample, so its mean is an accuracy and each row's score is what the
verdict's intervals and paired tests resample.

Rational arithmetic throughout (fractions.Fraction), so "0.1" is 1/10 and "4,200" is exactly 4200.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import ClassVar, Literal

from pydantic import Field

from .base import Grader

# A number as written: sign, then digits with thousands groups, or plain digits, or a leading
# point; an optional decimal part; an optional exponent; an optional "/denominator".
_NUM = re.compile(r"""
    (?P<sign>[-−–])?                                   # ASCII hyphen, Unicode minus, en dash
    (?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)?           # 4,200 | 42
    (?:(?P<point>\.)(?P<frac>\d+)?)?                   # .5 | 3.5 | "3." (period after a number)
    (?:[eE](?P<exp>[-+]?\d+))?
    (?:\s?/\s?(?P<den>\d+)(?![\d.,]\d))?               # 1/2 | 1 / 2
""", re.VERBOSE)
_MARKERS = re.compile(
    r"(?:answer\s*(?:is|:|=)|answer\s+would\s+be|final\s+answer|result\s+is|####|\\boxed\s*\{|=)",
    re.IGNORECASE)
# What joins two numbers into alternatives or a compound that is no single number.
_JOINER = re.compile(r"^\s*(?:,|or|and/or|and|to|-|–|:|/)\s*$", re.IGNORECASE)
_BETWEEN = re.compile(r"between\s*$", re.IGNORECASE)


class _Found:
    __slots__ = ("value", "start", "end", "places")

    def __init__(self, value: Fraction, start: int, end: int, places: int):
        self.value, self.start, self.end, self.places = value, start, end, places


def _numbers(text: str) -> list[_Found]:
    out: list[_Found] = []
    for m in _NUM.finditer(text):
        whole, frac, den = m.group("int"), m.group("frac"), m.group("den")
        if whole is None and frac is None:
            continue
        start, sign = m.start(), m.group("sign")
        if sign and start and (text[start - 1].isalnum() or text[start - 1] in ".)"):
            sign = None   # "5-3", "x-3": a range or a subtraction, not a negative number
            start += 1
        elif not sign and start and (text[start - 1].isalnum() or text[start - 1] == "_"):
            continue      # glued to a word on the left: an identifier (A4, x2), not a quantity
        value = Fraction(int((whole or "0").replace(",", "")))
        places = 0
        if frac:
            value += Fraction(int(frac), 10 ** len(frac))
            places = len(frac)
        if m.group("exp"):
            exp = int(m.group("exp"))
            if abs(exp) > 300:
                continue
            value *= Fraction(10) ** exp
            places = 0
        if den is not None:
            if int(den) == 0 or frac:
                continue   # "1/0" or "1.5/2": not a fraction anyone writes as an answer
            value /= int(den)
            places = 0
        if sign:
            value = -value
        out.append(_Found(value, start, m.end(), places))
    return _mixed(text, out)


def _mixed(text: str, found: list[_Found]) -> list[_Found]:
    """'3 1/2' is one number, seven halves: a whole number followed by a space and a proper
    fraction of positive integers."""
    out: list[_Found] = []
    for f in found:
        prev = out[-1] if out else None
        if (prev is not None and text[prev.end:f.start] == " " and prev.value.denominator == 1 and prev.places == 0
                and "/" in text[f.start:f.end] and 0 < f.value < 1 and "." not in text[prev.start:f.end]):
            sign = -1 if prev.value < 0 else 1
            out[-1] = _Found(prev.value + sign * f.value, prev.start, f.end, 0)
            continue
        out.append(f)
    return out


def _hedged(text: str, found: list[_Found], i: int) -> bool:
    """Whether number i is one of alternatives or a compound: joined to the number before it by
    'or', ',', 'to', '-', ':' ... ('42 or 43'), or after 'between' ('between 42 and 43'), or
    joined so to the number after it ('42 or 43' read from the first)."""
    if i > 0 and _JOINER.match(text[found[i - 1].end:found[i].start]):
        return True
    if i + 1 < len(found) and _JOINER.match(text[found[i].end:found[i + 1].start]):
        return True
    return bool(_BETWEEN.search(text[max(0, found[i].start - 12):found[i].start]))


def _answer(text: str) -> _Found | None:
    found = _numbers(text)
    if not found:
        return None
    pick = None
    for marker in reversed(list(_MARKERS.finditer(text))):   # the last marker followed by a number
        after = [i for i, f in enumerate(found) if f.start >= marker.end()]
        if after:
            # the first number after it; more numbers joined to it ("the answer is 42 or 43")
            # are alternatives, caught below
            pick = after[0]
            break
    if pick is None:
        pick = len(found) - 1
    return None if _hedged(text, found, pick) else found[pick]


def final_number(text: str) -> Fraction | None:
    """The answer's number (see the module's docstring), or None: no number, or alternatives."""
    found = _answer(text) if isinstance(text, str) else None
    return found.value if found else None


def parse_reference(text) -> Fraction | None:
    """A reference answer's number: the whole of it must be one number, with an optional unit
    after it ('9 apples', '3.5 dollars', '5/2'); anything else (a ratio, a time, several answers,
    a name) is None."""
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return Fraction(text) if text == text and abs(text) != float("inf") else None
    if not isinstance(text, str):
        return None
    s = text.strip().lstrip("$€£").strip()
    found = _numbers(s)
    if len(found) != 1 or found[0].start != 0:
        return None
    rest = s[found[0].end:]
    # a unit after a space, or a percent sign; "6th" or "3rd" is a position, not a quantity
    if rest.strip() and not re.fullmatch(r"\s*%|\s+[A-Za-z][A-Za-z .'/\-]*", rest):
        return None
    return found[0].value


def numbers_match(output: str, reference, rel_tol: float = 1e-6) -> bool:
    """Whether the output's answer is the reference's number (see the module's docstring)."""
    ref = parse_reference(reference)
    got = _answer(output) if isinstance(output, str) else None
    if ref is None or got is None:
        return False
    if got.value == ref:
        return True
    if abs(got.value - ref) <= Fraction(str(rel_tol)) * max(abs(ref), Fraction(1, 10 ** 9)):   # 1e-6 exactly
        return True
    # a decimal written to d >= 2 places matches the reference rounded to d places (0.33 for 1/3)
    return got.places >= 2 and round(ref, got.places) == got.value


def canonical(value: Fraction) -> str:
    """A number as a reference text: '9', '3.5', '5/2' (a fraction without a short decimal)."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    twos = fives = 0
    while d % 2 == 0:
        d //= 2
        twos += 1
    while d % 5 == 0:
        d //= 5
        fives += 1
    if d == 1:   # a terminating decimal
        places = max(twos, fives)
        return f"{value.numerator * 10 ** places // value.denominator / 10 ** places:.{places}f}"
    return f"{value.numerator}/{value.denominator}"


class NumberCheck(Grader):
    """1.0 when the rendered input's answer is the rendered reference's number, else 0.0."""

    kind: ClassVar[str] = "number_check"

    type: Literal["number_check"]
    name: str = "number_match"
    input: str = "{{ sample.output_text }}"
    reference: str = "{{ item.reference_answer }}"
    rel_tol: float = Field(1e-6, ge=0.0, le=1.0)

    def check(self) -> None:
        self.template(self.input, "input")
        self.template(self.reference, "reference")

    def score(self, sample: dict, item: dict) -> float:
        ref = self.render(self.reference, sample, item, "reference")
        if parse_reference(ref) is None:
            self._failures[f"reference {ref[:40]!r} is not one number"] += 1
            return 0.0
        return float(numbers_match(self.render(self.input, sample, item, "input"), ref, self.rel_tol))
