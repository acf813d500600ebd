"""The plan grammar of PEARL (Sun et al. 2023), small and formal so a parser can check a plan
before anything runs, and tell the model exactly what is wrong:

    plan  := step (NEWLINE step)*
    step  := VAR "=" ACTION "(" [arg ("," arg)*] ")"
    arg   := "question" | "document" | VAR (assigned on an earlier line) | "a quoted phrase"

The last step's variable is the answer. Errors are one line naming the plan line, because they
are sent back to the model as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

INPUTS = ("question", "document")
MAX_STEPS = 8
_STEP = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ARG = re.compile(r'\s*("(?:[^"\\]|\\.)*"|[^,"]+)\s*(?:,|$)')


class PlanError(ValueError):
    """A plan that does not parse or does not validate; the message is one line."""


@dataclass(frozen=True)
class Arg:
    kind: str     # "input" (question, document), "var", or "text" (a quoted phrase)
    value: str

    def __str__(self) -> str:
        return f'"{self.value}"' if self.kind == "text" else self.value


@dataclass(frozen=True)
class Step:
    var: str
    action: str
    args: tuple[Arg, ...]

    def __str__(self) -> str:
        return f"{self.var} = {self.action}({', '.join(map(str, self.args))})"


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)   # where each step was written, for error messages

    @property
    def answer(self) -> str:
        return self.steps[-1].var

    def text(self) -> str:
        return "\n".join(map(str, self.steps))


def _clean(text: str) -> list[tuple[int, str]]:
    """The plan's lines with their numbers: a code fence or a leading 'Plan:' header is not part
    of the plan (models write them), blank lines are skipped."""
    out = []
    for no, line in enumerate(text.strip("\n").splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("```") or (not out and s.lower().rstrip(":") == "plan"):
            continue
        out.append((no, s))
    return out


def _args(no: int, raw: str) -> tuple[Arg, ...]:
    raw = raw.strip()
    if not raw:
        return ()
    args, pos = [], 0
    while pos < len(raw):
        m = _ARG.match(raw, pos)
        if not m or m.end() == pos:
            raise PlanError(f"line {no}: cannot read the arguments '{raw}' (use question, document, a variable, "
                            'or "a quoted phrase", separated by commas)')
        token = m.group(1).strip()
        pos = m.end()
        if token.startswith('"'):
            args.append(Arg("text", token[1:-1].replace('\\"', '"')))
        elif token in INPUTS:
            args.append(Arg("input", token))
        elif _NAME.match(token):
            args.append(Arg("var", token))
        else:
            raise PlanError(f"line {no}: argument '{token}' is not question, document, a variable "
                            'or "a quoted phrase"')
    return tuple(args)


def parse_plan(text: str) -> Plan:
    """The plan in `text`, by the grammar alone (see `validate_plan` for the actions)."""
    lines = _clean(text)
    if not lines:
        raise PlanError("the plan is empty: write one step per line, as VAR = ACTION(arguments)")
    steps = []
    for no, line in lines:
        m = _STEP.match(line)
        if not m:
            raise PlanError(f"line {no}: '{line[:80]}' is not a step of the form VAR = ACTION(arguments)")
        steps.append((no, Step(m.group(1), m.group(2).upper(), _args(no, m.group(3)))))
    return Plan([s for _, s in steps], [no for no, _ in steps])


def validate_plan(plan: Plan, arity: dict[str, int], max_steps: int = MAX_STEPS) -> Plan:
    """Checks a parsed plan against the actions (name -> number of arguments): known actions,
    the right number of arguments, variables assigned before use and not reassigned."""
    lines = plan.lines or list(range(1, len(plan.steps) + 1))
    if len(plan.steps) > max_steps:
        raise PlanError(f"the plan has {len(plan.steps)} steps; at most {max_steps} are allowed")
    known: set[str] = set()
    for no, step in zip(lines, plan.steps):
        if step.action not in arity:
            raise PlanError(f"line {no}: unknown action {step.action} (known: {', '.join(sorted(arity))})")
        if len(step.args) != arity[step.action]:
            raise PlanError(f"line {no}: {step.action} takes {arity[step.action]} arguments, "
                            f"the step gives {len(step.args)}")
        for a in step.args:
            if a.kind == "var" and a.value not in known:
                raise PlanError(f"line {no}: variable {a.value} is used before it is assigned")
        if step.var in INPUTS or step.var in known:
            raise PlanError(f"line {no}: variable {step.var} is already taken; give each step a new name")
        known.add(step.var)
    return plan


def read_plan(text: str, arity: dict[str, int], max_steps: int = MAX_STEPS) -> Plan:
    """Parsed and validated, or a PlanError with a one-line message."""
    return validate_plan(parse_plan(text), arity, max_steps)
