"""`tailor export ARM --gguf OUT.gguf`: which arms become one GGUF model, and the files written.

What an arm is decides it, asked through its capabilities (never its method's name):
- a scorer (a reward model) generates nothing: refused;
- an arm that answers through a program (several calls per answer) is more than one model: refused;
- an arm trained over a 4-bit copy of the base would, merged into the full base, compute something
  other than what was measured: refused;
- an arm that changes weights is merged by its family (`merged`); a family that cannot merge
  (a soft prompt, prefix vectors) says why, and the export stops there;
- an arm that changes no weights (prompting, RAG) exports the base, its instruction and fixed
  examples in the Modelfile; what stays in Tailor (a retriever, examples chosen per input, a
  calibrated label prior) is said.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TailorError
from ..methods.base import Adapted, load_adapted, method_class
from ..recipe import Recipe, find_arm, read_recipe
from .gguf_file import Written, check_exportable, write_gguf
from .modelfile import modelfile


@dataclass
class Export:
    gguf: Written
    modelfile: Path
    architecture: str
    merge_s: float
    write_s: float
    stays_with_tailor: list[str] = field(default_factory=list)
    no_template: str | None = None


def refuse_unexportable(folder: Path, recipe: Recipe) -> None:
    """One line saying why the arm in `folder` cannot be one GGUF model, before anything loads."""
    cls = method_class(recipe.method)
    why = None
    if cls.scorer:
        why = "it is a scorer (a reward model): it judges answers and writes none, so llama.cpp has nothing to run"
    elif cls.external:
        why = "its answers come from outside Tailor (a model's completions file or endpoint): there are no weights to export"
    elif cls.own_predict:
        why = ("it answers through a program (several model calls per answer, planned by Tailor): serve it with "
               "tailor serve")
    elif cls.quantized:
        why = ("it was trained over a 4-bit copy of the base: merged into the full-precision base it would compute "
               "something other than what was measured")
    if why:
        raise TailorError(f"{folder}: a {recipe.method} arm cannot be exported as GGUF: {why}")


def stays_with_tailor(adapted: Adapted) -> list[str]:
    """What the arm does beyond one prompt to one model, which a GGUF and a Modelfile cannot carry."""
    r = adapted.recipe
    out = []
    if r.retriever:
        out.append(f"the retriever ({r.retriever.get('kb') or r.retriever.get('knowledge') or 'its knowledge base'}, "
                   f"k={r.retriever.get('k')}) stays with Tailor: the exported model answers from passages the caller "
                   "puts in the prompt (tailor serve retrieves them)")
    if r.shots and r.shots.selector != "fixed":
        out.append(f"its {r.shots.k} in-context examples are chosen per input ({r.shots.selector}) by Tailor: the "
                   "Modelfile carries none (tailor serve chooses them)")
    if r.calibration:
        out.append("its calibrated label prior is divided out by Tailor's scoring only: answers from llama.cpp or "
                   "Ollama are uncalibrated")
    if r.kind in ("classify", "choice"):
        out.append(f"Tailor answers a {r.kind} row by scoring each option; a chat client generates text instead "
                   "(the check's llama.cpp row scores options as Tailor does)")
    return out


def exported_model(adapted: Adapted):
    """The plain transformers model the arm computes with: its family's merge, or the base."""
    cls = method_class(adapted.method)
    if not cls.changes_weights:
        return adapted.model
    try:
        return cls.merged(adapted)
    except TailorError as e:
        raise TailorError(f"{adapted.artifact_dir}: a {adapted.method} arm cannot be exported as GGUF: {e}") from None


def fixed_shots(adapted: Adapted) -> list:
    """The in-context examples every prompt of the arm shows (a fixed selection), else none."""
    shots = adapted.recipe.shots
    if not shots or shots.selector != "fixed" or adapted.shots is None:
        return []
    by_id = {ex.id: ex for ex in adapted.pool}
    return [by_id[i] for i in shots.ids[: shots.k] if i in by_id]


def export_arm(arm: str | Path, base, out: Path, quant: str = "f16") -> tuple[Export, Adapted, object]:
    """Writes OUT.gguf and a Modelfile beside it; returns what was written, the arm as loaded
    and the merged model (for the check)."""
    folder = find_arm(arm)
    recipe, _ = read_recipe(folder)
    refuse_unexportable(folder, recipe)
    out = Path(out)
    if out.suffix != ".gguf":
        raise TailorError(f"--gguf {out}: name the file to write, ending in .gguf")
    adapted = load_adapted(folder, base)
    t0 = time.perf_counter()
    model = exported_model(adapted)
    arch = check_exportable(model)
    merge_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    written = write_gguf(model, adapted.tokenizer, out, quant, chat_template=adapted.builder.chat_template,
                         name=f"{recipe.base.get('name', 'base')} + {folder.name} ({recipe.method})")
    write_s = time.perf_counter() - t0
    notes = stays_with_tailor(adapted)
    text, no_template = modelfile(out.name, adapted.builder, fixed_shots(adapted),
                                  [f"Written by `tailor export --gguf` from {folder} ({recipe.method} arm)"]
                                  + [f"Note: {n}" for n in notes])
    mf = out.parent / "Modelfile"
    if mf.exists() and f"FROM ./{out.name}\n" not in mf.read_text(encoding="utf-8"):   # another export's
        mf = out.parent / f"{out.stem}.Modelfile"
    from ..utils import atomic_write_text
    atomic_write_text(mf, text)
    return Export(written, mf, arch.name.lower(), merge_s, write_s, notes, no_template), adapted, model
