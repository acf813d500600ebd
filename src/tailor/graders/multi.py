"""`multi`: named graders combined by a formula, OpenAI's shape:

    {"type": "multi", "name": "tool call",
     "graders": {"name": {"type": "string_check", ...}, "arguments": {"type": "string_check", ...}},
     "calculate_output": "0.5 * name + 0.5 * arguments"}

The formula is parsed with `ast` and evaluated by walking the tree: numbers, the graders' names,
+ - * / and ^ (a power, as OpenAI's formulas write it; Python's ** is accepted too), unary minus,
and the functions min, max, abs, floor, ceil, exp, sqrt and log. Nothing else parses; it is never
passed to eval. Division by zero, or the log of a non-positive number, scores that sample 0 and
is counted, as a grader failure is.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any, ClassVar, Literal

from pydantic import PrivateAttr

from .base import Grader, load_grader

BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.Pow: operator.pow}
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
FUNCTIONS = {"min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil, "exp": math.exp,
             "sqrt": math.sqrt, "log": math.log}


def parse_formula(text: str, names: set[str]) -> ast.Expression:
    """The formula's tree, or ValueError naming what is not allowed."""
    try:
        tree = ast.parse(text.replace("^", "**"), mode="eval")   # OpenAI's ^ is a power, not Python's xor
    except SyntaxError as e:
        raise ValueError(f"not a formula ({e.msg})") from None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.Load, *BINARY, *UNARY)):
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in BINARY or isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
            continue
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            continue
        if isinstance(node, ast.Name):
            if node.id not in names and node.id not in FUNCTIONS:
                raise ValueError(f"'{node.id}' is neither one of the graders ({', '.join(sorted(names))}) nor a function")
            continue
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
                and not node.keywords and node.args):
            continue
        raise ValueError(f"'{ast.unparse(node)}' is not allowed (numbers, grader names, + - * / ^, "
                         f"{', '.join(FUNCTIONS)})")
    return tree


def evaluate(node: ast.AST, values: dict[str, float]) -> float:
    if isinstance(node, ast.Expression):
        return evaluate(node.body, values)
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.BinOp):
        return BINARY[type(node.op)](evaluate(node.left, values), evaluate(node.right, values))
    if isinstance(node, ast.UnaryOp):
        return UNARY[type(node.op)](evaluate(node.operand, values))
    if isinstance(node, ast.Call):
        return float(FUNCTIONS[node.func.id](*(evaluate(a, values) for a in node.args)))
    raise ValueError(ast.dump(node))   # parse_formula admits nothing else


class Multi(Grader):
    kind: ClassVar[str] = "multi"

    type: Literal["multi"]
    graders: dict[str, Any]
    calculate_output: str

    _graders: dict = PrivateAttr(default_factory=dict)
    _tree: Any = PrivateAttr(None)

    def check(self) -> None:
        if not self.graders:
            raise self.error("graders", "names no grader")
        where = self._where
        for key, spec in self.graders.items():
            if not key.isidentifier():
                raise self.error(f"graders.{key}", "a grader's key must be a name a formula can use (letters, digits, _)")
            self._graders[key] = load_grader(spec, where, _prefix=f"graders.{key}.")
        try:
            self._tree = parse_formula(self.calculate_output, set(self._graders))
        except ValueError as e:
            raise self.error("calculate_output", str(e)) from None

    @property
    def parts(self) -> dict[str, Grader]:
        """The named graders, loaded."""
        return dict(self._graders)

    def grade_parts(self, samples: list[str], items: list[dict]) -> dict[str, list[float]]:
        return {key: g.grade(samples, items) for key, g in self._graders.items()}

    def grade(self, samples: list[str], items: list[dict]) -> list[float]:
        if len(samples) != len(items):
            return super().grade(samples, items)
        parts = self.grade_parts(samples, items)
        out = []
        for i in range(len(samples)):
            try:
                out.append(float(evaluate(self._tree, {k: v[i] for k, v in parts.items()})))
            except (ZeroDivisionError, ValueError, OverflowError) as e:
                self._failures[f"formula: {type(e).__name__}"] += 1
                out.append(0.0)
        return out

    @property
    def failures(self):
        total = self._failures.copy()
        for key, g in self._graders.items():
            for why, n in g.failures.items():
                total[f"{key}: {why}"] += n
        return total
