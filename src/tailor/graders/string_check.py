"""`string_check`: 1 or 0 from comparing the rendered `input` with the rendered `reference`.
OpenAI's operations: eq (equal, case-sensitive), ne (not equal), like (the input contains the
reference, case-sensitive), ilike (contains, ignoring case). No whitespace is stripped: the
comparison is of the strings exactly as rendered, as OpenAI's is."""

from __future__ import annotations

from typing import ClassVar, Literal

from .base import Grader


class StringCheck(Grader):
    kind: ClassVar[str] = "string_check"

    type: Literal["string_check"]
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"]

    def check(self) -> None:
        self.template(self.input, "input")
        self.template(self.reference, "reference")

    def score(self, sample: dict, item: dict) -> float:
        text = self.render(self.input, sample, item, "input")
        ref = self.render(self.reference, sample, item, "reference")
        if self.operation == "eq":
            return float(text == ref)
        if self.operation == "ne":
            return float(text != ref)
        if self.operation == "like":
            return float(ref in text)
        return float(ref.casefold() in text.casefold())
