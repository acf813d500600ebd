"""Actions a plan may call, and action mining (PEARL, Sun et al. 2023): the model proposes new
actions for training questions, from a short list of starting actions; proposals are parsed,
merged by name and kept by how many questions asked for them. The final list is saved in the
arm's recipe and shown in the report."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

_PROPOSAL = re.compile(r"^(?:\d+[.)]|[-*•])?\W*([A-Za-z][A-Za-z_]{2,39})\s*\(([^()]*)\)\s*[:\-–—]\s*(.{8,200}?)\s*$")
_PARAM = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,30}$")
MAX_PARAMS = 3


@dataclass(frozen=True)
class Action:
    name: str
    params: tuple[str, ...]
    meaning: str
    source: str = "PEARL"      # "PEARL" (the starting list, after Sun et al. 2023) or "mined"
    votes: int = 0             # mined: how many training questions proposed it

    def signature(self) -> str:
        return f"{self.name}({', '.join(self.params)})"

    def line(self) -> str:
        return f"{self.signature()}: {self.meaning}"

    def to_json(self) -> dict:
        return {**asdict(self), "params": list(self.params)}

    @classmethod
    def from_json(cls, d: dict) -> Action:
        return cls(d["name"], tuple(d["params"]), d["meaning"], d.get("source", "PEARL"), d.get("votes", 0))


# A few general actions in the spirit of the ones PEARL starts its mining from (Sun et al. 2023):
# finding characters, events and facts in the document, and answering from notes.
STARTING_ACTIONS = (
    Action("FIND_CHARACTER", ("document", "name"), "who the character is and what they do in the document"),
    Action("FIND_EVENT", ("document", "event"), "what happens in the event in the document, and why"),
    Action("FIND", ("document", "topic"), "what the document says about the topic"),
    Action("ANSWER", ("question", "notes"), "the answer to the question in one short sentence, from the notes"),
)
# The plan used when no valid plan came within the retries (counted as a fallback).
FALLBACK_PLAN = "answer = ANSWER(question, document)"


def arity(actions) -> dict[str, int]:
    return {a.name: len(a.params) for a in actions}


def parse_proposal(text: str) -> Action | None:
    """The first line of `text` that reads NAME(param, ...): meaning, as a mined action."""
    for line in text.strip().splitlines():
        m = _PROPOSAL.match(line.strip())
        if not m:
            continue
        params = tuple(p.strip().lower() for p in m.group(2).split(",") if p.strip())
        if not params or len(params) > MAX_PARAMS or not all(_PARAM.match(p) for p in params):
            continue
        return Action(m.group(1).upper(), params, m.group(3).rstrip(".").strip(), "mined", 1)
    return None


@dataclass
class Mining:
    """What mining did, counted: the report shows it next to the final list."""
    questions: int = 0
    parsed: int = 0          # replies that held a well-formed proposal
    unparsed: int = 0        # replies that held none
    known: int = 0           # proposals of an action already on the starting list
    merged: int = 0          # duplicates merged into an earlier proposal of the same name
    kept: int = 0
    dropped: int = 0         # distinct proposals beyond `max_mined`, or with too few votes
    examples: list[str] = field(default_factory=list)   # a few raw replies, for the report

    def to_json(self) -> dict:
        return asdict(self)


def merge(proposals: list[Action | None], start=STARTING_ACTIONS, max_mined: int = 4,
          min_votes: int = 1) -> tuple[list[Action], Mining]:
    """The starting actions plus the most proposed new ones (ties: first proposed first)."""
    stats = Mining(questions=len(proposals))
    names = {a.name for a in start}
    found: dict[str, Action] = {}
    for p in proposals:
        if p is None:
            stats.unparsed += 1
            continue
        stats.parsed += 1
        if p.name in names:
            stats.known += 1
        elif p.name in found:
            stats.merged += 1
            old = found[p.name]
            found[p.name] = Action(old.name, old.params, old.meaning, "mined", old.votes + 1)
        else:
            found[p.name] = p
    ranked = sorted(found.values(), key=lambda a: -a.votes)   # stable: first proposed first among ties
    kept = [a for a in ranked if a.votes >= min_votes][:max_mined]
    stats.kept, stats.dropped = len(kept), len(found) - len(kept)
    return list(start) + kept, stats


def mining_messages(actions, question: str) -> list[dict]:
    """The chat that asks for one new action for one training question."""
    listed = "\n".join(f"- {a.line()}" for a in actions)
    system = ("You design actions for answering questions about long stories (PEARL, Sun et al. 2023). "
              "An action is written NAME(argument, argument): what it returns.\nKnown actions:\n" + listed +
              "\nPropose ONE new action, different from the known ones, that would help with the question. "
              "Reply with one line: NAME(argument, argument): what it returns.")
    return [{"role": "system", "content": system}, {"role": "user", "content": f"Question: {question}"}]
