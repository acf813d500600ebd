"""A schema the model proposes and the team confirms, mined the way PEARL mines actions (Sun et
al. 2023): for each of a few training questions, shown its document's opening, the model names
the one field a record would need to answer it (`field_name: what it holds`); proposals are
merged by name and kept by how many questions asked for them, `name` first. The result is a
schema of extract.py's format, validated by it; the extract arm runs with it (marked unconfirmed
in its results) and writes it beside its recipe, for the team to edit and pass as `schema_file`.

Everything the replies held is counted: fields kept, replies that named no field, replies that
repeated the worked example (small models do), fields over the limit; with no field left the
default schema runs, and says so."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field

from .extract import DEFAULT_SCHEMA, Schema

MAX_FIELDS = 6
_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])?\s*[`\"']?([A-Za-z][A-Za-z0-9 _-]{0,40}?)[`\"']?\s*[:=–—]\s*(.+?)\s*$")
_BARE = re.compile(r"^\s*[`\"']?([A-Za-z][A-Za-z _-]{0,30}?)[`\"'.]?\s*$")   # a field name alone
# A field's type from its name and the question that asked for it: most story facts are text;
# several of them, a list.
_LIST = re.compile(r"\b(list|facts|events|actions|relations|relationships|traits|members|items|names)\b|(?<![su])s$", re.I)
_NUMBER = re.compile(r"\b(number|age|count|year|amount|how many|how much|how old|price)\b", re.I)
_BOOLEAN = re.compile(r"^(is|are|was|were|does|did|do|has|have|can|will)\b", re.I)

# A worked example from another domain, so a small model sees the reply format once.
_DEMO_ASK = ("Document: Order 1182: the blender arrived with a cracked jug. Priya asked for a refund on 3 May; "
             "the shop offered a new jug instead.\nQuestion: What did the shop offer Priya?")
_DEMO_FIELD, _DEMO_ANSWER = "offer", "offer: what the shop offered the customer"
_SYSTEM = ("A team stores a short record about each person, place or object in a document, so that questions "
           "can be answered from the records alone. Name the one field a record needs to answer the question: "
           "a field name of one to three words, a colon, and what the field holds. Write only that line.")


@dataclass
class Proposal:
    schema: Schema
    model: str
    documents: int
    questions: int
    replies: list[str] = field(default_factory=list)   # the model's replies, as they came
    fields_kept: int = 0
    votes: dict[str, int] = field(default_factory=dict)   # kept field -> questions that asked for it
    not_fields: int = 0                # replies that named no field
    copied_example: int = 0            # replies that repeated the worked example's field
    over_limit: int = 0                # distinct fields past MAX_FIELDS, left out
    fallback: bool = False             # no field: the default schema runs
    meanings: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        out = asdict(self)
        out["schema"] = self.schema.spec
        return out

    def yaml(self) -> str:
        """The proposal as a schema file, each field's meaning as a comment, to review and confirm."""
        import yaml
        head = [f"# Proposed by {self.model} from {self.documents} documents and {self.questions} training "
                "questions" + (" (nothing usable came back: this is the default schema)" if self.fallback else "") + ".",
                "# Review it (rename, retype, drop or add fields), then confirm it with schema_file: THIS_FILE.",
                *(f"#   {n}: {m}" + (f" (asked for by {self.votes[n]} of the questions)" if n in self.votes else "")
                  for n, m in self.meanings.items())]
        return "\n".join(head) + "\n" + yaml.safe_dump(self.schema.spec, sort_keys=False, allow_unicode=True)


def messages(opening: str, question: str) -> list[dict]:
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _DEMO_ASK},
            {"role": "assistant", "content": _DEMO_ANSWER},
            {"role": "user", "content": f"Document: {opening}\nQuestion: {question}"}]


def parse(replies: list[str], questions: list[str], model: str, documents: int, source: str) -> Proposal:
    """The schema the replies (one per question) propose."""
    p = Proposal(Schema(DEFAULT_SCHEMA), model, documents, len(questions), replies=list(replies))
    votes: Counter = Counter()
    meanings: dict[str, str] = {}
    asked: dict[str, str] = {}
    for reply, question in zip(replies, questions):
        first = next((line for line in reply.splitlines() if line.strip()), "")
        m = _LINE.match(first) or _BARE.match(first)
        name = re.sub(r"[^a-z0-9]+", "_", m.group(1).strip().lower()).strip("_") if m else ""
        if not name or name[0].isdigit() or name == "name" or len(name.split("_")) > 3:
            p.not_fields += 1
            continue
        if name == _DEMO_FIELD:
            p.copied_example += 1
            continue
        votes[name] += 1
        meanings.setdefault(name, m.group(2) if m.re is _LINE else f"asked by: {question}")
        asked.setdefault(name, question)
    kept = [n for n, _ in votes.most_common()][: MAX_FIELDS - 1]   # most_common keeps first-seen order on ties
    p.over_limit = len(votes) - len(kept)
    p.fields_kept, p.votes = len(kept), {n: votes[n] for n in kept}
    if not kept:
        p.fallback = True
        p.schema = Schema(DEFAULT_SCHEMA, f"the default schema (no reply of {model} named a field)")
        return p
    fields = {"name": {"type": "string", "required": True}}
    for n in kept:
        fields[n] = {"type": "number" if _NUMBER.search(f"{n.replace('_', ' ')} {asked[n]}") else
                     "boolean" if _BOOLEAN.match(asked[n]) else "list" if _LIST.search(n) else "string"}
    p.meanings = {"name": "who or what the record is about", **{n: meanings[n] for n in kept}}
    # The default schema's worked example, cut to the names: it shows a small model the JSON-line
    # format (without one, smollm2-135m wrote no valid record at all); the fields are in the prompt.
    demo = DEFAULT_SCHEMA["example"]
    example = {"passage": demo["passage"], "records": [{"name": r["name"]} for r in demo["records"]]}
    p.schema = Schema({"record": "a person, place or object of the document", "fields": fields,
                       "example": example}, source)
    return p


def propose(engine, builder, model: str, openings: dict[str, str], questions: list[tuple[str, str]],
            source: str, max_new_tokens: int = 24) -> Proposal:
    """`openings`: document id -> its opening; `questions`: (document id, question) pairs. One
    batched engine call: a reply per question."""
    gens = engine.generate([builder.render(messages(openings[d], q)) for d, q in questions],
                           max_new_tokens=max_new_tokens, stop=["\n"])
    return parse([g.text for g in gens], [q for _, q in questions], model, len(openings), source)
