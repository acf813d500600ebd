"""`tailor export ARM --gguf OUT.gguf [--quant f16|q8_0|...] [--check N]`: the arm as one GGUF file
for llama.cpp, Ollama and LM Studio, with an Ollama Modelfile beside it, checked to answer as the
arm did; `--merge OUT` and `--serve vllm` are the safetensors folder and the vLLM line (train.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import TailorError
from . import out, train
from .numbers import COUNT0, PORT


def export(
    arms: list[str] = typer.Argument(..., help="arm folders (`tailor train` runs or a ladder's RUN/arms/NAME); "
                                               "NAME=ARM names one for --serve"),
    merge: Optional[str] = typer.Option(None, help="output folder for the merged safetensors Hugging Face model"),
    serve: Optional[str] = typer.Option(None, help="`vllm`: check the LoRA arms against vLLM's rules and print "
                                                   "the `vllm serve --enable-lora` line that serves them"),
    gguf: Optional[str] = typer.Option(None, help="OUT.gguf: the arm merged into its base as one GGUF file "
                                                  "(llama.cpp, Ollama, LM Studio), with an Ollama Modelfile beside it"),
    quant: str = typer.Option("f16", help="--gguf: f32 | f16 | bf16 | q8_0 | q5_1 | q5_0 | q4_1 | q4_0, or a k-quant "
                                             "through llama.cpp (q4_k_m, q5_k_m, q6_k, ...; needs llama-cpp-python)"),
    check: int = typer.Option(20, callback=COUNT0,
                              help="--gguf: rows on which the GGUF, read back by transformers (and llama.cpp "
                                   "where llama-cpp-python is installed), must answer as the arm (0: no check)"),
    task: Optional[str] = typer.Option(None, help="--gguf --check: the task whose test rows to check on (default: "
                                                  "the arm's own task when it is a bundled one)"),
    port: int = typer.Option(8000, callback=PORT, help="--serve: the port in the printed line"),
    model: Optional[str] = typer.Option(None, help="base model (default: the one the arm was fitted on)"),
    dtype: str = typer.Option("fp32", help="--merge: dtype to merge and save in: fp32 | bf16"),
) -> None:
    """Merge an arm into its base as a model folder (--merge) or one GGUF file with an Ollama
    Modelfile (--gguf, checked against the arm), or print how to serve LoRA arms with vLLM (--serve)."""
    if [merge, serve, gguf].count(None) != 2:
        raise TailorError("choose one: --merge OUT (a merged model folder), --gguf OUT.gguf (one GGUF file and an "
                          "Ollama Modelfile) or --serve vllm (a vllm serve line)")
    if gguf is None:
        return train.merge_or_serve(arms, merge, serve, port, model, dtype)
    if len(arms) != 1:
        raise TailorError(f"--gguf writes one model: name one arm, not {len(arms)}")
    from ..export.gguf_file import check_quant
    check_quant(quant)   # before the merge; a k-quant needs llama-cpp-python
    export_gguf(arms[0], Path(gguf), quant, check, task, model)


def export_gguf(arm: str, path: Path, quant: str, check: int, task: str | None, model: str | None) -> dict:
    from ..export.arm import export_arm
    from ..export.check import llama_cpp_missing
    from ..export.kquants import K_QUANTS
    from ..recipe import find_arm, read_recipe
    folder = find_arm(arm)
    rows, task_ = _check_rows(folder, read_recipe(folder)[0], check, task) if check else (None, None)
    base = train._base(arm, model, "fp32")
    done, adapted, merged = export_arm(folder, base, path, quant)
    g = done.gguf
    out.print(f"GGUF written: {g.path} ({g.bytes / 1e6:,.1f} MB, {g.quant}, {done.architecture}, {g.tensors} tensors: "
              + ", ".join(f"{n} {t}" for t, n in sorted(g.by_type.items())) + f"; pre-tokenizer {g.pre_tokenizer})",
              markup=False, soft_wrap=True)
    if g.fallbacks:
        written = "written by llama.cpp in another type" if g.quant in K_QUANTS else "written F16"
        out.print(f"{len(g.fallbacks)} tensors do not divide into {g.quant} blocks and were {written}: "
                  f"{', '.join(g.fallbacks[:5])}" + (", ..." if len(g.fallbacks) > 5 else ""), style="yellow",
                  markup=False)
    out.print(f"Ollama Modelfile: {done.modelfile} (ollama create NAME -f {done.modelfile})", markup=False, soft_wrap=True)
    if done.no_template:
        out.print(f"warning: the Modelfile has no TEMPLATE: {done.no_template}", style="yellow", markup=False)
    for note in done.stays_with_tailor:
        out.print(f"note: {note}", markup=False, soft_wrap=True)
    result = {"gguf": str(g.path), "bytes": g.bytes, "quant": g.quant, "modelfile": str(done.modelfile)}
    if rows:
        from ..export.check import check_export
        result["check"] = check_export(adapted, merged, g.path, task_, rows)
        _print_check(result["check"], task_, llama_cpp_missing())
    return result


def _check_rows(folder: Path, recipe, n: int, task: str | None):
    from ..datasets import BUNDLED, load_task
    name = task or (recipe.task or {}).get("name")
    if not name or (task is None and name not in BUNDLED):
        raise TailorError(f"{folder}: the check needs rows with answers: name the arm's task with --task "
                          "(a bundled task or the task file), or skip the check with --check 0")
    loaded = load_task(name)
    if "test" not in loaded.splits:
        loaded = loaded.split()
    rows = loaded.splits["test"][:n]
    if not rows:
        raise TailorError(f"task {name}: no test rows to check the export on")
    return rows, loaded


def _print_check(c: dict, task, llama_missing: str | None) -> None:
    t = Table("model", c["metric"], "agrees with arm", "agrees with merged", "max Δp", "load s",
              title=f"export check: {c['rows']} {task.name} test rows, each answered as Tailor measures")
    for r in c["models"]:
        gap = "" if r.get("max_prob_gap") is None else f"{r['max_prob_gap']:.4f}"
        t.add_row(r["model"], f"{r['metric']:.3f}", f"{r['agree_arm']:.1%}", f"{r['agree_merged']:.1%}", gap,
                  "" if r.get("load_s") is None else f"{r['load_s']:.1f}")
    out.print(t)
    out.print(f"prompts tokenised differently by the GGUF's tokenizer: transformers {c['token_mismatches']}"
              + (f", llama.cpp {c['llama_cpp_token_mismatches']}" if "llama_cpp_token_mismatches" in c else "")
              + f" of {c['rows']}", markup=False)
    if llama_missing:
        out.print(f"llama.cpp check skipped: {llama_missing}", markup=False, soft_wrap=True)
    out.print(c["verdict"], markup=False, soft_wrap=True)
