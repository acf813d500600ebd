"""`tailor export ARM... --serve vllm`: the `vllm serve` line for a team that outgrows one machine.

vLLM serves LoRA adapters of one base (`--enable-lora --lora-modules NAME=PATH`, per-request
choice by `model`, as `tailor serve` does), but only plain ones: no `modules_to_save` (vLLM
loads the A/B matrices only), no DoRA, no trained bias, rank at most `--max-lora-rank` (one of
vLLM's supported ranks). Each arm is checked against these rules and every break is a warning
that says what vLLM would do instead. vLLM applies the base's chat template, not the arm's
recipe: the arm's instruction is printed, to be sent as the system message (or use `tailor serve`,
which applies the whole recipe: shots, template, instruction).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TailorError

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)   # vLLM's accepted --max-lora-rank values
VLLM_DEFAULT_RANK = 16


@dataclass
class VllmArm:
    name: str
    adapter: Path
    base: str
    rank: int
    instruction: str
    warnings: list[str] = field(default_factory=list)


def check_arm(name: str, folder: Path) -> VllmArm:
    """The arm's adapter as vLLM would load it, with a warning for each rule it breaks."""
    from ..methods.base import method_class
    from ..recipe import read_recipe
    recipe, _ = read_recipe(folder)
    cls = method_class(recipe.method)
    if not cls.lora_adapter:
        raise TailorError(f"{folder}: vLLM serves LoRA adapters; a {recipe.method} arm is not one "
                          "(merge it with `tailor export ARM --merge OUT` and serve the merged folder)")
    adapter = folder / cls.folder
    try:
        config = json.loads((adapter / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TailorError(f"{adapter}/adapter_config.json: cannot read the adapter's config ({e})") from None
    arm = VllmArm(name, adapter.resolve(), recipe.base.get("path", ""), int(config.get("r", 0)), recipe.instruction)
    if config.get("modules_to_save"):
        arm.warnings.append(f"trains whole modules ({', '.join(config['modules_to_save'])}): vLLM loads only the "
                            "LoRA matrices and would serve them untrained")
    if config.get("use_dora"):
        arm.warnings.append("is a DoRA adapter: vLLM does not load DoRA magnitudes")
    if config.get("bias", "none") != "none":
        arm.warnings.append(f"trains biases (bias={config['bias']}): vLLM ignores LoRA biases")
    targets = config.get("target_modules") or []
    heads = sorted({t for t in targets if t in ("lm_head", "embed_tokens")})
    if heads:
        arm.warnings.append(f"adapts {', '.join(heads)}: vLLM's support for these is limited; check its output")
    if arm.rank not in VLLM_RANKS:
        arm.warnings.append(f"has rank {arm.rank}, which vLLM does not accept (ranks: {VLLM_RANKS})")
    if cls.quantized:
        arm.warnings.append("was trained on a 4-bit base: vLLM serves it on the full-precision base, which "
                            "computes slightly different answers than the ladder measured")
    if recipe.retriever or recipe.shots:
        arm.warnings.append("retrieves passages or shows shots in its prompt: vLLM serves the adapter with the "
                            "request as sent, so the client must build that prompt (tailor serve does it)")
    return arm


def serve_command(arms: list[VllmArm], port: int = 8000) -> str:
    bases = {a.base for a in arms}
    if len(bases) != 1:
        raise TailorError(f"vLLM serves adapters of one base; these arms have {len(bases)}: {', '.join(sorted(bases))}")
    rank = max(a.rank for a in arms)
    max_rank = next((r for r in VLLM_RANKS if r >= rank), rank)
    parts = ["vllm", "serve", bases.pop(), "--enable-lora", "--max-loras", str(len(arms))]
    if max_rank > VLLM_DEFAULT_RANK:
        parts += ["--max-lora-rank", str(max_rank)]
    parts += ["--port", str(port), "--lora-modules", *[f"{a.name}={a.adapter}" for a in arms]]
    return shlex.join(parts)
