"""`tailor run DATA_FILE`: from a data file to a ladder that fits a time budget, with no YAML to
write first. Reads and checks the file, repairs what curation can repair in the run's copy (never
the user's file), summarises the task, times the base on the data, asks `tailor.plan` for the
experiment, and writes it into the run directory as `RUN/experiment.yaml`, which is what runs (and
what the team edits and runs again)."""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import yaml

from .errors import DataError, TailorError
from .plan import DataSummary, Plan, Speed, max_new_tokens, plan_experiment, plan_split
from .progress import console

log = logging.getLogger("tailor")

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
EXPERIMENT_SUFFIXES = (".yaml", ".yml")
SUMMARY_SAMPLE = 256       # rows whose prompts are counted in tokens for the summary
# What the run's copy repairs: exact duplicates and train rows whose input is also a test or dev row
# (leakage). Everything else curation finds (conflicts, near duplicates, lengths) is left to the team.
REPAIRS = {"drop_exact_duplicates": True, "drop_leaked": True, "drop_near_duplicates": False, "conflicts": "keep",
           "drop_blank": False, "length_policy": "keep", "standardize_outputs": False, "balance": "none",
           "drop_noise": False}


def check_inputs(data: str, kb: str | None, model: str, grader: str | None = None,
                 completions: str | None = None) -> None:
    """The one-line errors a data-file run gives before anything is read or loaded."""
    path = Path(data)
    if completions is not None:   # every line checked now; which rows it answers once the split is known
        from .methods.external import read_completions
        read_completions(completions)
    if grader is not None:
        from .graders import load_grader
        load_grader(grader, where=f"--grader {grader}")   # a bad spec is refused before the model loads
    if not path.is_file():
        raise DataError(path, "file not found" if not path.exists() else "not a file")
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise DataError(path, f"tailor run takes an experiment ({', '.join(EXPERIMENT_SUFFIXES)}) or a data file "
                              f"({', '.join(DATA_SUFFIXES)}), not '{path.suffix or path.name}'")
    if kb is not None:
        from .datasets.knowledge import BUNDLED_KBS
        if kb not in BUNDLED_KBS and not Path(kb).exists():
            raise TailorError(f"--kb {kb}: not found (a folder of .txt/.md/.html files, a .jsonl of {{id, title, text}} "
                              f"records, a knowledge base built by tailor index, or a bundled one: {', '.join(BUNDLED_KBS)})")
    if model.startswith("openai:"):
        raise TailorError(f"--model {model}: tailor run DATA_FILE times and trains a local model; for a model behind an "
                          "endpoint write an experiment YAML with prompting arms")


def prepare(data: str, *, model: str, kb: str | None, budget_s: float, runs_dir: str, limit: int | None,
            started: float, grader: str | None = None, completions: str | None = None,
            closed_name: str = "closed") -> tuple[Path, Plan]:
    """The run directory with the experiment written into it, ready for `run_ladder(..., run_dir=)`,
    and the test rows every arm is measured on (RUN/test_rows.jsonl, to have a closed model answer).
    `started`: the command's start (time.perf_counter), since the budget counts from there.
    `grader`: a grader JSON file, every arm's primary metric (and the reward of an RFT file's grpo arm).
    `completions`: a closed model's answers to the test rows, its arm `closed_name` added to the plan
    (tailor.methods.external), refused before any model loads unless it answers every test row."""
    from .curate import curated_task, write_clean
    from .models import load_tokenizer
    from .runs import RunDir
    from .utils import atomic_write_json
    path = Path(data)
    grader = str(Path(grader).resolve()) if grader else None
    task, preference, split = read_task(path, grader)
    # the test rows are the split's (repairs drop train rows only): a closed model's answers checked before any model
    closed = closed_arm(completions, closed_name, task) if completions else None
    try:
        tokenizer = load_tokenizer(model)
    except (OSError, ValueError) as e:   # transformers' own errors for a name it cannot resolve
        raise TailorError(f"--model {model}: not a bundled model, a local folder or a hub id this machine can load "
                          f"({str(e).splitlines()[0]})") from None
    repaired, rows, counts = repair(task, tokenizer, preference)
    if repaired:
        task = curated_task(task, rows)
    summary = summarise(task, tokenizer, preference, split, str(path.resolve()), grader)
    run = RunDir(runs_dir, "ladder", summary_name(path))
    run.close()   # the ladder reopens it
    task_path = str(path.resolve())
    if repaired:
        copy = write_clean(run.path / "data" / f"{path.stem}.jsonl", rows, task)
        task_path = str(copy.resolve())
        console.print(f"[bold]repaired[/] in the run's copy {copy} (your file is unchanged): {repaired_text(counts)}",
                      highlight=False)
    kb_spec, chunk = resolve_kb(kb, run.path, model, tokenizer)
    speed = probe_speed(model, task, max_new_tokens(summary))
    left = budget_s - (time.perf_counter() - started)
    plan = plan_experiment(summary, model=model, budget_s=left, speed=speed, task=task_path, kb=kb_spec,
                           kb_chunk_tokens=chunk, runs_dir=runs_dir, limit=limit)
    if closed is not None:   # answered already: it costs the plan nothing
        spec, why = closed
        if spec["name"] in {a if isinstance(a, str) else a["name"] for a in plan.experiment["arms"]}:
            raise TailorError(f"--closed-name {spec['name']}: the plan has an arm of that name; choose another")
        plan.experiment["arms"].append(spec)
        plan.reasons[spec["name"]] = why
    write_test_rows(run.path / "test_rows.jsonl", task)
    write_experiment(run.path / "experiment.yaml", plan, data=str(path), budget_s=budget_s, left_s=left,
                     repairs=counts)
    atomic_write_json(run.path / "plan.json", {
        "data": str(path.resolve()), "budget_s": budget_s, "planned_from_s": left, "summary": asdict(summary),
        "speed": asdict(speed), "repairs": counts, "task": task_path, "reasons": plan.reasons,
        "notes": plan.notes, "estimate_s": plan.estimate, "advice": plan.advice})
    return run.path, plan


def closed_arm(completions: str, name: str, task) -> tuple[dict, str]:
    """The arm of a closed model's answers (tailor.methods.external), checked against the task's whole
    test split now, before any model loads: a test row without an answer is refused."""
    from .config import read_arms
    spec = {"name": name, "method": "external", "completions": str(Path(completions).resolve())}
    (arm,) = read_arms([spec], "--closed-name", {})   # the name as an experiment's arm names are checked
    for note in arm.options.check_rows(task, task.splits.get("test") or []):
        console.print(f"[yellow]{name}:[/] {note}", highlight=False)
    return spec, (f"{name}'s answers read from {completions}, measured on the same test rows as every arm: how close "
                  "each arm comes to it (a reference row, never the recommendation)")


def write_test_rows(path: Path, task) -> Path:
    """The test rows every arm is measured on, as a closed model is asked them: each row's id and
    its input (the conversation for chat rows, the options for choice rows), no answers. A file
    of `{"id": ..., "completion": ...}` lines answering them is what `--completions` reads."""
    from .utils import atomic_write_text

    def row(ex) -> dict:
        out = {"id": ex.id, **({"messages": ex.input} if isinstance(ex.input, list) else {"input": ex.input})}
        return {**out, "choices": ex.choices} if ex.choices else out
    atomic_write_text(path, "".join(json.dumps(row(ex), ensure_ascii=False) + "\n"
                                    for ex in task.splits.get("test") or []))
    return path


def check_arms(exp, task=None) -> list[str]:
    """Before any model loads (or, from the ladder, before the first arm runs): every arm's check of
    the rows it will be measured on (an external arm's completions must answer each one); returns
    what the checks found worth saying. `task`: the task already read (default: read it now)."""
    from .methods.base import Method
    arms = [a for a in exp.arms if type(a.options).check_rows is not Method.check_rows]   # the task read only if one checks
    if not arms:
        return []
    if task is None:
        from .datasets import load_task
        task = load_task(exp.task, **exp.task_options.loader_options(exp.seed))
    rows = task.splits["test"][: exp.limit] if exp.limit else task.splits["test"]
    notes = []
    for arm in arms:
        if exp.robustness is not None and type(arm.options).external and getattr(arm.options, "completions", None):
            raise TailorError(f"arm {arm.name}: robustness measures every arm on perturbed inputs, which a file of "
                              "completions does not answer; give the arm an endpoint, or drop robustness")
        notes += arm.options.check_rows(task, rows)
    return notes


def repaired_text(counts: dict) -> str:
    return (f"{sum(counts.values())} train rows dropped ("
            + ", ".join(f"{what}: {n}" for what, n in counts.items()) + "); dev and test rows unchanged")


def summary_name(path: Path) -> str:
    return path.stem or "data"


def read_task(path: Path, grader: str | None = None):
    """The task of a data file, split as the planner splits files of its size. Returns the task,
    its preference shape ("pairs", "unpaired" or None) and the split options. OpenAI's fine-tuning
    files are read as they are: chat (SFT), DPO (pairs) and reinforcement fine-tuning (prompts and
    reference fields, graded by `grader`)."""
    from .datasets import load_task
    from .preference.data import preference_shape
    from .task import is_rft_record, read_records
    records, _ = read_records(path)
    if grader is None and is_rft_record(records[0][1]):   # said first: before the split, before any model loads
        raise TailorError(f"{path}: a reinforcement fine-tuning file (messages ending with the user's turn) is graded, "
                          "not imitated: give its grader with --grader grader.json (OpenAI's grader JSON)")
    shape = preference_shape(records[0][1])
    preference = {"pair": "pairs", "ranking": "pairs", "unpaired": "unpaired", "openai_pair": "pairs"}.get(shape) \
        if shape else None
    if preference:
        prompts = len({json.dumps(rec.get("input") if shape == "openai_pair" else rec.get("prompt"), sort_keys=True)
                       for _, rec in records})
        split = plan_split(prompts, preference=True)
    else:
        split = plan_split(len(records))
    return load_task(str(path), seed=0, **split, **({"grader": grader} if grader else {})), preference, split


def repair(task, tokenizer, preference: str | None):
    """Exact duplicates and leaked train rows dropped (dev and test rows never change), counted.
    Problems curation cannot repair stop the run here, with the line that fixes them. Preference
    data is not repaired: two pairs of one prompt and answer differ in their rejected answer, which
    the checks do not read, and splits are by prompt already."""
    if preference:
        return False, None, {}
    from .curate import CurateOptions, apply_fixes_logged, curate_task, curated_task
    options = CurateOptions(model_checks=False, progress=False, **REPAIRS)
    report = curate_task(task, tokenizer=tokenizer, options=options)
    rows, counts = apply_fixes_logged(task, report, options)
    counts = {what: n for what, n in counts.items() if n}
    if counts:
        report = curate_task(curated_task(task, rows), tokenizer=tokenizer, options=options)
    problems = report.blocking()
    if problems:
        raise TailorError(f"{task.source}: data checks found problems the run cannot repair ({'; '.join(problems)}); "
                          f"see and fix them with tailor curate {task.source} --write CLEAN.jsonl, then tailor run "
                          "CLEAN.jsonl")
    return bool(counts), rows, counts


def summarise(task, tokenizer, preference: str | None, split: dict, path: str, grader: str | None = None) -> DataSummary:
    from .prompts import builder_for
    builder = builder_for(task, tokenizer)
    train = task.splits.get("train") or []
    sample = (train or task.examples)[:SUMMARY_SAMPLE]
    answered = [ex for ex in sample if ex.target] or sample
    prompts = [builder.build(ex).n_tokens for ex in sample]
    inputs = [builder.count(ex.input_text) for ex in sample]
    targets = sorted(builder.count(builder.target_text(ex.target)) for ex in answered)
    options = 0.0
    if task.kind == "classify" and task.labels:
        options = float(sum(builder.count(builder.target_text(label)) for label in task.labels))
    elif task.kind == "choice":
        options = statistics.mean(sum(builder.count(builder.target_text(c)) for c in ex.choices or []) for ex in sample)
    counts = task.summary().get("label_counts") if task.kind == "classify" else None
    distinct = len({ex.meta.get("prompt_key") for ex in task.examples}) if preference else None
    reinforcement = any(ex.meta.get("_rft") for ex in task.examples[:1])   # read as task.py's "rft" format
    return DataSummary(path=path, kind=task.kind, rows=len(task.examples), train=len(train),
                       dev=len(task.splits.get("dev") or []), test=len(task.splits.get("test") or []),
                       labels=list(task.labels) if task.labels else None, label_counts=counts, preference=preference,
                       prompts=distinct, prompt_tokens=statistics.mean(prompts), input_tokens=statistics.mean(inputs),
                       target_tokens=statistics.mean(targets), target_tokens_p95=float(targets[int(0.95 * (len(targets) - 1))]),
                       option_tokens=options, split=dict(split), grader=grader,
                       reinforcement=reinforcement, answered=sum(1 for ex in train if ex.target) if reinforcement else None)


def resolve_kb(kb: str | None, run_path: Path, model: str, tokenizer) -> tuple[str | None, int]:
    """The knowledge base the rag arms name, and its chunk size in tokens: a bundled one by name, a
    folder `tailor index` built as it is, or documents (a folder of text files or a .jsonl), built
    into RUN/kb with the base's tokenizer, as `tailor index` builds them."""
    if kb is None:
        return None, 256
    from .datasets.knowledge import BUNDLED_KBS
    from .retrieval.kb import read_manifest
    if kb in BUNDLED_KBS:
        return kb, 256
    folder = Path(kb)
    manifest = read_manifest(folder) if folder.is_dir() else None
    if manifest is not None:
        return str(folder.resolve()), int(manifest.get("chunker", {}).get("chunk_tokens", 256))
    from .retrieval import Chunker, build, read_documents
    docs = read_documents(folder)
    out = run_path / "kb"
    console.print(f"[bold]knowledge base[/] {len(docs)} documents from {kb} -> {out}")
    chunker = Chunker(tokenizer)
    build(docs, out, chunker, source=str(folder.resolve()))
    return str(out.resolve()), chunker.size


def probe_speed(model: str, task, max_new_tokens: int = 64, rows: int = 16) -> Speed:
    """The base timed on the task's own rows, as the training loop times one step before it trains:
    zero-shot on test rows through the measurement path (a batch, then requests one at a time); a
    forward of one prompt (the fixed cost of a call) and of a batch of `rows` prompts (the cost of
    each further token of a longer prompt); a forward and backward of `rows` prompts with their
    answers (what a training step costs a token; the gradient flows through every layer, as a LoRA
    step's does). The forwards are the fastest of two, after a warm-up."""
    import torch

    from .measure import measure
    from .methods import make_method
    from .models import load_base
    from .prompts import builder_for
    t0 = time.perf_counter()
    base = load_base(model)
    load_s = time.perf_counter() - t0
    builder = builder_for(task, base.tokenizer, getattr(base.model, "config", None))
    examples = (task.splits.get("train") or task.examples)[:rows]   # no train rows left: any rows time the same
    prompts = [builder.build(ex).text for ex in examples]
    answered = [p + builder.target_text(ex.target) for p, ex in zip(prompts, examples)]
    tok, net = base.tokenizer, base.model
    side, tok.padding_side = tok.padding_side, "left"

    def encode(batch: list[str]):
        return tok(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(base.device)

    def forward(batch: list[str]) -> tuple[float, int]:
        enc = encode(batch)
        start = time.perf_counter()
        with torch.inference_mode():
            net(**enc, logits_to_keep=1)
        return time.perf_counter() - start, int(enc["attention_mask"].sum())

    def forward_backward(batch: list[str]) -> tuple[float, int]:
        enc = encode(batch)
        start = time.perf_counter()
        embeds = net.get_input_embeddings()(enc["input_ids"]).detach().requires_grad_(True)
        out = net(inputs_embeds=embeds, attention_mask=enc["attention_mask"], logits_to_keep=1)
        out.logits.float().logsumexp(-1).mean().backward()
        return time.perf_counter() - start, int(enc["attention_mask"].sum())

    try:
        forward(prompts[:1])
        one = min(forward(prompts[:1]) for _ in range(2))
        many = min(forward(prompts) for _ in range(2))
        forward_backward(answered)
        trained = min(forward_backward(answered) for _ in range(2))
    finally:
        tok.padding_side = side
    token_s = max((many[0] - one[0]) / max(many[1] - one[1], 1), 1e-7)
    forward_s = max(one[0] - token_s * one[1], 1e-4)
    # generation is the slow path: fewer rows then, still a batch
    probe = (task.splits.get("test") or task.examples)[: rows if task.kind != "generate" else max(rows // 2, 1)]
    m = measure(make_method("zero-shot").fit(task, base), task, probe, cache=None, batch_size=16,
                max_new_tokens=max_new_tokens, progress=False, latency_requests=2)
    speed = Speed(forward_s=forward_s, token_s=token_s, train_token_s=trained[0] / max(trained[1], 1), load_s=load_s,
                  params=base.n_params, row_s=m.cost.eval_wall_s / len(probe), request_s=m.cost.latency_p50_s or 0.0)
    log.info("speed of %s on %s: %.3f s a zero-shot row, %.3f s a request, %.4f s a forward call, %.2e s a token, "
             "%.2e s a trained token, loaded in %.1f s", model, task.name, speed.row_s, speed.request_s,
             speed.forward_s, speed.token_s, speed.train_token_s, load_s)
    return speed


def write_experiment(path: Path, plan: Plan, *, data: str, budget_s: float, left_s: float, repairs: dict) -> Path:
    """The plan as an experiment YAML `tailor run` reads, commented with how it was chosen."""
    from .utils import atomic_write_text
    exp = dict(plan.experiment)
    arms = exp.pop("arms")
    head = [f"# Planned by `tailor run {data}` for a budget of {budget_s / 60:.1f} min "
            f"({left_s / 60:.1f} min left after reading, checking and timing; the plan estimates "
            f"{plan.estimate['total'] / 60:.1f} min).",
            "# Arms by the rules of Meta's guide to adapting LLMs (tailor advise); edit and run it again with",
            f"#   tailor run {path}"]
    if repairs:
        head.append(f"# The task is the run's repaired copy of {data}: {repaired_text(repairs)}.")
    head += [f"# {note}" for note in plan.notes]
    body = yaml.safe_dump(exp, sort_keys=False, allow_unicode=True, width=110)
    lines = ["arms:"]
    for arm in arms:
        text = arm if isinstance(arm, str) else yaml.safe_dump(arm, default_flow_style=True, sort_keys=False,
                                                                 width=10_000).strip()
        why = plan.reasons.get(arm if isinstance(arm, str) else arm["name"], "")
        lines.append(f"  # {why}" if why else "")
        lines.append(f"  - {text}")
    atomic_write_text(path, "\n".join(head) + "\n" + body + "\n".join(x for x in lines if x) + "\n")
    return path
