"""The train area: `tailor train CONFIG.yaml`, `tailor export ARM --merge OUT`,
`tailor inspect-prompt ARM`."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from ..errors import TailorError
from . import out


def train(
    config: str = typer.Argument(..., help="a YAML file: model, task, method, options, eval_split, ..."),
    resume: Optional[str] = typer.Option(None, help="a run directory (or checkpoint) to continue exactly"),
    runs_dir: Optional[str] = typer.Option(None, help="override the config's runs_dir"),
) -> None:
    """Train one fine-tuning arm (full, lora, qlora, prompt-tuning, prefix, ia3, bitfit)."""
    from ..arm_run import run_train
    from ..config import load_train_config
    cfg, method = load_train_config(config, {"runs_dir": runs_dir} if runs_dir else None)
    result = run_train(cfg, method, resume=resume)
    table = Table("field", "value", show_header=False,
                  title=f"{result['method']} on {result['task']} ({result['model']})")
    for key in ("steps", "trainable_params", "train_time_s", "train_tokens", "final_loss", "padding_fraction",
                "dropped_too_long", "artifact_bytes"):
        v = result[key]
        table.add_row(key, f"{v:.4f}" if isinstance(v, float) else f"{v:,}")
    for name, value in (result.get("metrics") or {}).items():
        table.add_row(f"{result['split']} {name}", f"{value:.4f}")
    out.print(table)
    out.print(f"run directory (the arm: tailor eval --adapter, tailor export): {result['run_dir']}")


def export(
    arm: str = typer.Argument(..., help="an arm folder: a `tailor train` run or a ladder's RUN/arms/NAME"),
    merge: str = typer.Option(..., help="output folder for the merged safetensors Hugging Face model"),
    model: Optional[str] = typer.Option(None, help="base model (default: the one the arm was fitted on)"),
    dtype: str = typer.Option("fp32", help="dtype to merge and save in: fp32 | bf16"),
) -> None:
    """Merge a trained adapter into its base and save a standard model folder."""
    from ..methods import load_adapted
    from ..methods.finetune import merge_arm
    base = _base(arm, model, dtype)
    path = merge_arm(load_adapted(arm, base), merge)
    out.print(f"merged model written to {path} (load it with AutoModelForCausalLM)")


def inspect_prompt(
    arm: str = typer.Argument(..., help="a prompt-tuning arm folder"),
    top: int = typer.Option(3, help="nearest vocabulary tokens per virtual token"),
    model: Optional[str] = typer.Option(None, help="base model (default: the one the arm was fitted on)"),
) -> None:
    """Read a soft prompt back as its nearest vocabulary tokens (cosine similarity)."""
    from ..recipe import find_arm, read_recipe
    from ..train.soft_prompt import nearest_tokens
    folder = find_arm(arm)
    recipe, _ = read_recipe(folder)
    if recipe.method != "prompt-tuning":
        raise TailorError(f"{folder}: a {recipe.method} arm has no soft prompt (only prompt-tuning arms do)")
    base = _base(arm, model, "fp32")
    table = Table("virtual token", *[f"nearest {i + 1} (cos)" for i in range(top)])
    for i, row in enumerate(nearest_tokens(folder / "adapter", base, top)):
        table.add_row(str(i), *[f"{tok!r} ({cos:.2f})" for tok, cos in row])
    out.print(table)


def _base(arm: str, model: str | None, dtype: str):
    from ..models import BUNDLED_MODELS, load_base
    from ..recipe import find_arm, read_recipe
    if model is None:
        recipe, _ = read_recipe(find_arm(arm))
        model = recipe.base["name"] if recipe.base["name"] in BUNDLED_MODELS else recipe.base["path"]
    return load_base(model, dtype, "cpu")
