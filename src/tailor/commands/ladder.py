"""`tailor run`, `tailor advise` and `tailor demo`: the adaptation ladder from the command line."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from . import out
from .numbers import TEST_ROWS

DEMO_ARMS = [
    "zero-shot",
    {"name": "few-shot-4", "method": "few-shot", "k": 4},
    {"name": "icl-4-similar", "method": "icl", "k": 4, "selector": "similarity"},
]


def run_(
    source: str = typer.Argument(..., metavar="EXPERIMENT_OR_DATA_FILE",
                                 help="an experiment YAML (model, task, arms, prices), or a data file (.jsonl .json "
                                      ".csv .tsv .parquet: any task format, or preference pairs, rankings or thumbs "
                                      "up/down rows) to plan the ladder from"),
    model: Optional[str] = typer.Option(None, help="the base model (data file default: smollm2-135m; overrides an "
                                                   "experiment's)"),
    kb: Optional[str] = typer.Option(None, help="data file: a knowledge base for the rag arms: a folder of "
                                                ".txt/.md/.html files or a .jsonl of {id, title, text} (built into the "
                                                "run as tailor index builds it), or a folder tailor index built"),
    budget: Optional[str] = typer.Option(None, help="wall-clock budget: 30m, 1h, 90s, or minutes (45); data file "
                                                    "default 30m: sizes test rows, training steps and the general "
                                                    "suite to fit; overrides an experiment's budget_minutes"),
    limit: Optional[int] = typer.Option(None, callback=TEST_ROWS, help="override: evaluate on the first N test rows"),
    runs_dir: Optional[str] = typer.Option(None, help="override: where run directories go"),
    grader: Optional[str] = typer.Option(None, help="data file: a grader JSON (OpenAI's grader shapes), every arm's "
                                                    "primary metric; a reinforcement fine-tuning file's grpo arm "
                                                    "trains on it"),
    completions: Optional[str] = typer.Option(None, help="data file: a closed model's answers to the test rows "
                                                         "(JSONL: {id, completion} lines, lines keyed by the row's input, "
                                                         "or OpenAI Batch API output), measured as one more arm: how "
                                                         "close each open arm comes to it"),
    closed_name: str = typer.Option("closed", help="data file: the name of the --completions arm"),
    plan_only: bool = typer.Option(False, "--plan-only", help="data file: write the plan (RUN/experiment.yaml) and "
                                                              "the test rows (RUN/test_rows.jsonl, for a closed model "
                                                              "to answer) and stop"),
) -> None:
    """Run the adaptation ladder of an experiment, or of a data file (the arms Meta's guide to adapting
    LLMs suggests for it, sized to --budget; RUN/experiment.yaml is what ran), and write results.json
    and report.html."""
    import time
    from pathlib import Path

    from ..plan import parse_budget
    from ..run_file import EXPERIMENT_SUFFIXES, check_arms, check_inputs, prepare
    started = time.perf_counter()
    _one_process("tailor run")
    budget_s = parse_budget(budget) if budget is not None else None
    if Path(source).suffix.lower() in EXPERIMENT_SUFFIXES:
        from ..config import load_experiment
        from ..errors import TailorError
        if kb is not None:
            raise TailorError(f"--kb applies to a data file; the experiment {source} names its knowledge base on its "
                              "rag arms (kb:)")
        if grader is not None:
            raise TailorError(f"--grader applies to a data file; the experiment {source} names its grader as "
                              "metric: {grader: FILE}")
        if completions is not None or plan_only:
            raise TailorError(f"{'--completions' if completions is not None else '--plan-only'} applies to a data file; "
                              f"the experiment {source} names a closed model's answers as an arm: "
                              "{method: external, completions: FILE}")
        exp = load_experiment(source)
        if model:
            exp.model = model
        if budget_s is not None:
            exp.budget_minutes = budget_s / 60
        if limit is not None:
            exp.limit = limit
        if runs_dir:
            exp.runs_dir = runs_dir
        _say(check_arms(exp))   # an external arm's answers checked against the test rows before any model loads
        _run_and_print(exp)
        return
    model = model or "smollm2-135m"
    check_inputs(source, kb, model, grader, completions)
    budget_s = budget_s if budget_s is not None else 30 * 60
    run_dir, plan = prepare(source, model=model, kb=kb, budget_s=budget_s, runs_dir=runs_dir or "runs", limit=limit,
                            started=started, grader=grader, completions=completions, closed_name=closed_name)
    _print_plan(plan, run_dir)
    if plan_only:
        out.print(f"the test rows every arm is measured on: {run_dir}/test_rows.jsonl (have the closed model answer "
                  f"them, then tailor run {source} --completions ANSWERS.jsonl)", highlight=False)
        return
    from ..config import load_experiment
    exp = load_experiment(run_dir / "experiment.yaml")   # what runs is what the file says
    _say(check_arms(exp))
    _run_and_print(exp, run_dir)
    took = time.perf_counter() - started
    out.print(f"budget {budget_s / 60:.1f} min, took {took / 60:.1f} min{'' if took <= budget_s else ' (over)'}; "
              f"the experiment: {run_dir}/experiment.yaml (edit it and `tailor run` it again)")


def _say(notes: list[str]) -> None:
    for note in notes:
        out.print(f"[yellow]note:[/] {note}", highlight=False)


def _print_plan(plan, run_dir) -> None:
    exp = plan.experiment
    out.print(f"[bold]Plan[/] for {exp['task']} -> {run_dir}/experiment.yaml "
              f"(estimated {plan.estimate['total'] / 60:.1f} min)", highlight=False)
    for arm in exp["arms"]:
        name = arm if isinstance(arm, str) else arm["name"]
        size = f" ({arm['steps']} steps)" if isinstance(arm, dict) and "steps" in arm else ""
        out.print(f"  {name}{size}: {plan.reasons.get(name, '')}", highlight=False)
    for note in plan.notes:
        out.print(f"  - {note}", highlight=False)


def demo(
    limit: Optional[int] = typer.Option(None, callback=TEST_ROWS, help="test rows (default: the whole 300-row test split)"),
    runs_dir: str = typer.Option("runs"),
) -> None:
    """The main job: the ladder on the bundled tweet-sentiment task with smollm2-135m."""
    from ..config import experiment_from_dict
    _one_process("tailor demo")
    arms = list(DEMO_ARMS)
    # 40 steps of 16 examples: about 3 minutes on a 2-core CPU (2,000 examples gain a few
    # more points for 3x the time; see the README's measured figures).
    arms.append({"name": "lora-640", "method": "lora", "steps": 40, "batch_size": 16})
    exp = experiment_from_dict({"name": "demo-tweet-sentiment", "model": "smollm2-135m",
                                "task": "tweet-sentiment", "arms": arms, "limit": limit,
                                "runs_dir": runs_dir,
                                # Forgetting on 200 items per general benchmark (about 1 minute
                                # per model; intervals near +-6 points, experiments default to +-3).
                                "forgetting_size": 200,
                                # The bundled tweets have near-duplicates across splits; the demo
                                # shows the finding (in the terminal and report) and goes on.
                                "continue_on_data_problems": True}, "demo")
    _run_and_print(exp)


def advise(
    answers: Optional[str] = typer.Option(None, help="YAML file of answers (keys as in `advice:`); "
                                                     "asks interactively if omitted"),
) -> None:
    """Answer the decision questions of Meta's guide to adapting LLMs; get the arms worth
    running, cheapest first."""
    from ..advise import QUESTIONS
    from ..advise import advise as decide
    if answers:
        from ..advise import check_answers
        from ..schema import read_yaml
        given, lines = read_yaml(answers, "question: answer pairs")
        at = ("advice",) if "advice" in given else ()
        given = check_answers(given.get("advice", given), answers, lines, at)
    else:
        given = {key: typer.prompt(f"{q} [{'/'.join(choices)}]", default=choices[-1 if key == 'external_knowledge' else 0])
                 for key, (q, choices) in QUESTIONS.items()}
    result = decide(given)
    out.print(f"[bold]Suggested arms:[/] {', '.join(result['suggested_arms'])}")
    for name, why in result["reasons"].items():
        out.print(f"  {name}: {why}")
    for note in result["notes"]:
        out.print(f"- {note}")


def _forgetting_cell(arm) -> str:
    """The general-benchmark delta that matters most (a significant drop first, else the
    largest), red when significant; blank for arms that change no weights."""
    worst = arm.forgetting.worst() if arm.forgetting else None
    if worst is None:
        return ""
    name, row = worst
    text = f"{100 * row.delta:+.1f} pt {name}"
    return f"[red]{text}[/]" if row.significant_drop else text


def _run_and_print(exp, run_dir=None) -> None:
    from ..ladder import run_ladder
    results = run_ladder(exp, run_dir=run_dir)
    metric = results.primary_metric
    forgetting = any(a.forgetting for a in results.arms)
    table = Table("arm", metric, "95% CI", "P(best)", "tok/req", "latency p50", "train s", "trainable",
                  "$ / 1k req", "$ 1st month", *(["general Δ (worst)"] if forgetting else []),
                  title=f"{results.experiment.name} ({results.experiment.test_rows} test rows, {exp.model})")
    for a in results.arms:
        if not a.ok:
            table.add_row(a.name, "[red]failed[/]", "", "", (a.error or "")[:90], "", "", "", "", "")
            continue
        c = a.cost
        score = a.metrics.get(metric)   # a reward model judges pairs: it has no answers to score
        if a.seed_means:   # the mean over its seeds, and their spread (the served arm is the first seed)
            m = a.seed_means
            score, seeds = sum(m) / len(m), f" (mean of {len(m)} seeds, {min(m):.3f}–{max(m):.3f})"
        else:
            seeds = ""
        table.add_row(a.name, "—" if score is None else f"{score:.3f}{seeds}",
                      f"{a.interval[0]:.3f}–{a.interval[1]:.3f}" if a.interval else "",
                      f"{a.p_best:.0%}" if a.p_best is not None else "",
                      f"{c.prompt_tokens_per_request + c.completion_tokens_per_request:.0f}",
                      f"{c.latency_p50_s * 1000:.0f} ms" if c.latency_p50_s is not None else "",
                      f"{c.train_time_s:.0f}", f"{c.trainable_params:,}", f"{c.cost_per_1k_requests:.4f}",
                      f"{c.first_month_cost:.2f}", *([_forgetting_cell(a)] if forgetting else []))
    out.print(table)
    out.print("latency: one request at a time, uncached, on this machine")
    out.print(f"[bold green]Recommendation:[/] {results.recommendation.text}", highlight=False)
    for a in results.arms:
        if a.learning_curve:
            from ..curves import sentence as curve_sentence
            out.print(f"[bold]Learning curve:[/] {curve_sentence(a.name, a.learning_curve, metric)}", highlight=False)
    if results.break_even:
        from ..breakeven import sentence
        out.print(f"[bold]Break-even:[/] {sentence(results.break_even, results.experiment.requests_per_month)}",
                  highlight=False)
    out.print(f"results: {results.run_dir}/results.json   arms: {results.run_dir}/arms/")
    if results.report and results.report.get("html"):
        out.print(f"report:  {results.report['html']}")
    out.print(f"total time {results.wall_s:.0f} s")


def _one_process(command: str) -> None:
    """The ladder is one process: under a launcher every rank would run all of it, each measuring and
    writing its own copy. Refused in one line, with the way to scale what is worth scaling."""
    from ..errors import TailorError
    from ..train.launch import launched
    if launched():
        raise TailorError(f"{command} runs in one process, not under torchrun / accelerate launch: train the arm "
                          "worth scaling with `tailor train CONFIG --processes N` (or the launcher), then measure "
                          "it with `tailor eval --adapter RUN`")
