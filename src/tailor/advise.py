"""The decision guide: the questions of Meta's guide to adapting LLMs, mapped onto its flow chart.

Answers come from the experiment YAML (`advice:`) or interactively from `tailor advise`. The
output is which arms to run, cheapest first, with the reason for each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import DataError

# key -> (question, allowed answers)
QUESTIONS = {
    "external_knowledge": ("Does the application need knowledge the model was not trained on "
                           "(your documents, product facts)?", ("yes", "no")),
    "custom_style": ("Does it need a custom tone, format, vocabulary or behaviour?", ("yes", "no")),
    "hallucination_tolerance": ("How much tolerance is there for made-up answers?", ("low", "medium", "high")),
    "labelled_examples": ("How many labelled examples do you have?", ("none", "under-100", "100-1000", "over-1000")),
    "data_dynamics": ("How often does the underlying knowledge change?", ("static", "monthly", "daily")),
    "transparency": ("Must answers cite their sources?", ("yes", "no")),
    "team_skills": ("Has the team fine-tuned models or built search systems before?", ("none", "search", "fine-tuning", "both")),
    "task_count": ("How many distinct tasks will this model serve?", ("one", "a-few", "many")),
}


def check_answers(answers: Any, path: str | Path = "advice", lines: dict | None = None, at: tuple = ()) -> dict:
    """The answers, each one of its question's choices (yes/no also as true/false); anything else is a
    DataError naming the file, the line and the question. `at` is where the answers sit in the file."""
    lines = lines or {}
    field = ".".join(map(str, at)) or None
    if not isinstance(answers, dict):
        raise DataError(path, f"expected a mapping of question: answer pairs (questions: {', '.join(QUESTIONS)}), "
                              f"got {_show(answers)}", lines.get(at), field)
    out = {}
    for key, value in answers.items():
        where, line = ".".join(map(str, at + (key,))), lines.get(at + (key,), lines.get(at))
        if key not in QUESTIONS:
            raise DataError(path, f"unknown question {key!r} (known: {', '.join(QUESTIONS)})", line, where)
        allowed = QUESTIONS[key][1]
        if isinstance(value, bool) and allowed == ("yes", "no"):
            value = "yes" if value else "no"
        elif isinstance(value, str):
            value = value.strip().lower()
        if value not in allowed:
            raise DataError(path, f"expected one of {', '.join(allowed)}, got {_show(value)}", line, where)
        out[key] = value
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def advise(answers: dict) -> dict:
    a = check_answers(answers)
    arms: list[tuple[str, str]] = [("zero-shot", "the baseline every other arm must beat")]
    notes: list[str] = []
    n = a.get("labelled_examples", "100-1000")
    if n != "none":
        arms.append(("few-shot", "a handful of labelled examples in the prompt costs no training"))
        arms.append(("icl", "examples chosen per input (dynamic example selection) often match fine-tuning with "
                            "no training cost"))
    retrieval = (a.get("external_knowledge") == "yes" or a.get("data_dynamics") in ("monthly", "daily")
                 or a.get("transparency") == "yes" or a.get("hallucination_tolerance") == "low")
    if retrieval:
        arms.append(("rag", "the top passages of your knowledge base in the prompt (Lewis et al. 2020): no training, "
                            "and the knowledge stays current when the documents change; needs a knowledge base "
                            "(tailor index DOCS --out KB, then kb: KB on the arm)"))
        notes.append("RAG fits: the answers need external or changing knowledge, citations, or grounding "
                     "against made-up answers; fine-tuning adds little new knowledge and goes stale "
                     "(Meta's guide to adapting LLMs).")
    tune = n in ("100-1000", "over-1000") and not (a.get("data_dynamics") == "daily" and a.get("custom_style") != "yes")
    if a.get("custom_style") == "yes" and n != "none":
        tune = True
        notes.append("A custom tone or format is what fine-tuning does best (Meta's guide to adapting LLMs).")
    if tune:
        arms.append(("lora", "PEFT: a small adapter, forgets less than full fine-tuning, many adapters share one base"))
        if retrieval:
            arms.append(("rag+lora", "LoRA trained on prompts that carry retrieved passages (RAFT, Zhang et al. 2024): "
                                     "format and behaviour from fine-tuning, knowledge from retrieval"))
        if n == "over-1000" and a.get("task_count", "one") == "one" and a.get("team_skills") in ("fine-tuning", "both"):
            arms.append(("full", "with plenty of data, one task and a team that has done it, full fine-tuning is "
                                 "worth measuring"))
    elif n in ("none", "under-100"):
        notes.append("With fewer than 100 labelled examples, fine-tuning is unlikely to beat in-context learning; "
                     "collect and curate data first (Meta's guide: quality beats quantity).")
    if a.get("task_count") == "many":
        notes.append("Many tasks: prefer adapters (LoRA) on one shared base over one full model per task.")
    if retrieval and tune:
        notes.append("Both together often work best: fine-tune for format and behaviour, retrieve for knowledge "
                     "(the rag+lora arm; Meta's guide to adapting LLMs).")
    text = ("Run, cheapest first: " + ", ".join(name for name, _ in arms) + ". " + " ".join(notes)).strip()
    return {"answers": a, "suggested_arms": [name for name, _ in arms],
            "reasons": {name: why for name, why in arms}, "notes": notes, "text": text}
