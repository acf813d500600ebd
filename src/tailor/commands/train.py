"""The train area: `tailor train CONFIG.yaml`, `tailor export ARM --merge OUT | --serve vllm`,
`tailor inspect-prompt ARM`."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from ..errors import TailorError
from . import out
from .numbers import COUNT


def train(
    config: str = typer.Argument(..., help="a YAML file: model, task, method, options, eval_split, ..."),
    resume: Optional[str] = typer.Option(None, help="a run directory (or checkpoint) to continue exactly"),
    runs_dir: Optional[str] = typer.Option(None, help="override the config's runs_dir"),
    processes: int = typer.Option(1, callback=COUNT,
                                  help="train in N processes on this machine (torchrun over loopback), the same "
                                       "global batch; for several machines use torchrun / accelerate launch "
                                       "-m tailor.cli train (README)"),
    fsdp: bool = typer.Option(False, help="with --processes N: shard the trained weights, gradients and optimiser "
                                          "states between the processes (FSDP2), as an accelerate config with "
                                          "fsdp_version 2 does"),
) -> None:
    """Train one fine-tuning arm (full, lora, qlora, prompt-tuning, prefix, ia3, bitfit)."""
    from ..arm_run import check_several_processes, run_train
    from ..config import load_train_config
    cfg, method = load_train_config(config, {"runs_dir": runs_dir} if runs_dir else None)
    if fsdp and processes == 1:
        import os

        from ..train.fsdp import LAUNCH_ENV
        from ..train.launch import launched
        if not launched():
            raise TailorError("--fsdp shards the weights between processes: add --processes N (N >= 2)")
        os.environ.update(LAUNCH_ENV)   # a rank of `torchrun ... -m tailor.cli train CONFIG --fsdp`
    if processes != 1:
        from ..train.launch import launch_local
        check_several_processes(cfg)   # once here, not once per rank under the launcher's traceback
        _resumable(resume)
        args = ["train", config] + (["--resume", resume] if resume else []) + (["--runs-dir", runs_dir] if runs_dir else [])
        code = launch_local(args, processes, fsdp=fsdp)
        if code:
            raise typer.Exit(code)
        return
    result = run_train(cfg, method, resume=resume)
    if result is None:   # a rank other than 0 of a launched run: rank 0 writes and prints
        return
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


def _resumable(resume: str | None) -> None:
    from pathlib import Path

    from ..train.checkpoint import latest_checkpoint
    if resume and latest_checkpoint(Path(resume)) is None:
        raise TailorError(f"{resume}: no checkpoint to resume from (expected checkpoints/latest.json)")


def merge_or_serve(arms: list[str], merge: str | None, serve: str | None, port: int, model: str | None,
                   dtype: str) -> None:
    """Merge a trained adapter into its base and save a standard model folder (--merge), or print
    how to serve LoRA arms with vLLM (--serve vllm); `tailor export` chose one of them."""
    if serve is not None:
        return _export_vllm(arms, serve, port)
    if len(arms) != 1:
        raise TailorError(f"--merge writes one model: name one arm, not {len(arms)}")
    from ..methods import load_adapted
    from ..methods.finetune import merge_arm
    base = _base(arms[0], model, dtype)
    path = merge_arm(load_adapted(arms[0], base), merge)
    out.print(f"merged model written to {path} (load it with AutoModelForCausalLM)")


def _export_vllm(specs: list[str], server: str, port: int) -> None:
    from ..recipe import find_arm
    from ..serve.vllm import check_arm, serve_command
    if server != "vllm":
        raise TailorError(f"--serve {server!r}: the server Tailor exports for is vllm")
    arms = []
    for spec in specs:
        name, sep, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        folder = find_arm(path)
        arms.append(check_arm(name or folder.name, folder))
    for arm in arms:
        for warning in arm.warnings:
            out.print(f"warning: {arm.name} {warning}", style="yellow", markup=False)
    out.print(serve_command(arms, port), markup=False, soft_wrap=True)
    for arm in arms:
        if arm.instruction:
            out.print(f"{arm.name}: vLLM applies the base's chat template, not the arm's recipe; send its instruction "
                      f"as the system message: {arm.instruction!r} (tailor serve applies the whole recipe)",
                      markup=False, soft_wrap=True)


def inspect_prompt(
    arm: str = typer.Argument(..., help="a prompt-tuning arm folder"),
    top: int = typer.Option(3, callback=COUNT, help="nearest vocabulary tokens per virtual token"),
    model: Optional[str] = typer.Option(None, help="base model (default: the one the arm was fitted on)"),
) -> None:
    """Read a soft prompt back as its nearest vocabulary tokens (cosine similarity)."""
    from ..recipe import find_arm, read_recipe
    from ..train.soft_prompt import nearest_tokens
    folder = find_arm(arm)
    recipe, _ = read_recipe(folder)
    from ..methods.base import arm_options
    options = arm_options(recipe, folder)
    if not getattr(options, "soft_tokens", lambda: 0)():   # virtual tokens read as input embeddings
        raise TailorError(f"{folder}: a {recipe.method} arm has no soft prompt (only prompt-tuning arms do)")
    base = _base(arm, model, "fp32")
    table = Table("virtual token", *[f"nearest {i + 1} (cos)" for i in range(top)])
    for i, row in enumerate(nearest_tokens(folder / "adapter", base, top)):
        table.add_row(str(i), *[f"{tok!r} ({cos:.2f})" for tok, cos in row])
    out.print(table)


def _base(arm: str, model: str | None, dtype: str):
    from ..models import load_base, recipe_base
    from ..recipe import find_arm, read_recipe
    if model is None:
        folder = find_arm(arm)
        model = recipe_base(read_recipe(folder)[0], folder)
    return load_base(model, dtype, "cpu")
