"""`tailor` commands for the train area (registered on tailor.cli.app):
`tailor train CONFIG.yaml`, `tailor export RUN --merge OUT`, `tailor inspect-prompt RUN`."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from ..cli import app, out
from ..errors import TailorError


@app.command()
def train(
    config: str = typer.Argument(..., help="a YAML file: model, task, method, options, eval_split, ..."),
    resume: Optional[str] = typer.Option(None, help="a run directory (or checkpoint) to continue exactly"),
    runs_dir: Optional[str] = typer.Option(None, help="override the config's runs_dir"),
) -> None:
    """Train one fine-tuning arm (full, lora, qlora, prompt-tuning, prefix, ia3, bitfit)."""
    from ..train.run import load_config, run_train
    cfg = load_config(config, {"runs_dir": runs_dir} if runs_dir else None)
    result = run_train(cfg, resume=resume)
    table = Table("field", "value", show_header=False,
                  title=f"{result['method']} on {result['task']} ({result['model']})")
    for key in ("trainable_params", "train_time_s", "train_tokens", "final_loss", "padding_fraction",
                "dropped_too_long", "artifact_bytes"):
        v = result[key]
        table.add_row(key, f"{v:.4f}" if isinstance(v, float) else f"{v:,}")
    for name, value in (result.get("metrics") or {}).items():
        table.add_row(f"{result['split']} {name}", f"{value:.4f}")
    out.print(table)
    out.print(f"run directory: {result['run_dir']}\nartifact: {result['artifact_dir']}")


@app.command()
def export(
    run: str = typer.Argument(..., help="a training run directory (or its adapter/ folder)"),
    merge: str = typer.Option(..., help="output folder for the merged safetensors Hugging Face model"),
    model: Optional[str] = typer.Option(None, help="base model (default: the one the run trained on)"),
    dtype: str = typer.Option("fp32", help="dtype to merge and save in: fp32 | bf16"),
) -> None:
    """Merge a trained adapter into its base and save a standard model folder."""
    from ..export import merge as merge_to, read_meta
    from ..models import load_base
    _, meta = read_meta(run)
    base = load_base(model or _base_name(meta), dtype, "cpu")
    path = merge_to(run, merge, base)
    out.print(f"merged {meta['method']} model written to {path} (load it with AutoModelForCausalLM)")


@app.command("inspect-prompt")
def inspect_prompt(
    run: str = typer.Argument(..., help="a prompt-tuning run directory (or its adapter/ folder)"),
    top: int = typer.Option(3, help="nearest vocabulary tokens per virtual token"),
    model: Optional[str] = typer.Option(None, help="base model (default: the one the run trained on)"),
) -> None:
    """Read a soft prompt back as its nearest vocabulary tokens (cosine similarity)."""
    from ..export import read_meta
    from ..models import load_base
    from ..train.inspect import nearest_tokens
    folder, meta = read_meta(run)
    if meta["method"] != "prompt-tuning":
        raise TailorError(f"{folder}: a {meta['method']} artifact has no soft prompt (only prompt-tuning runs do)")
    base = load_base(model or _base_name(meta), "fp32", "cpu")
    table = Table("virtual token", *[f"nearest {i + 1} (cos)" for i in range(top)])
    for i, row in enumerate(nearest_tokens(folder, base, top)):
        table.add_row(str(i), *[f"{tok!r} ({cos:.2f})" for tok, cos in row])
    out.print(table)


def _base_name(meta: dict) -> str:
    return meta["base"] if meta["base"] in ("smollm2-135m", "gemma3-270m", "tiny-test") else meta["base_path"]
