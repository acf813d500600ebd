"""FSDP2 (torch's `fully_shard`) as a mode of the one loop: what an accelerate config with
`fsdp_version: 2` (or `tailor train --fsdp`) asks for. Each rank holds 1/N of the trained weights,
their gradients and their optimiser states; the data, the loss normalisation and everything the
loop records stay those of the data-parallel mode (distributed.py).

The shape, and why:
- The losses call the decoder and the vocabulary head directly (losses.target_logits), never a
  top-level forward, and FSDP2 all-gathers a module's weights in a hook on that module's forward.
  So each decoder layer is one FSDP module, and the root is `LossCall`, a thin module whose
  forward is the loss call itself: the embeddings, the final norm and the head (tied to the
  embeddings in SmolLM2) are one group, gathered for the whole of the loss, and the root is the
  first FSDP module every micro-batch calls, as FSDP2 requires.
- The sharded model is a copy of the module tree (`Sharded`), not the caller's model: FSDP2
  turns the modules it wraps into new classes with hooks that gather on every forward (a
  collective every rank must join) and reshard on every `state_dict()`. The caller's model stays
  the plain transformers / peft model it was, which rank 0 alone evaluates on the dev split and
  which the method saves after training in the format a one-process run writes; `gather_into`
  copies the trained weights into it (every rank, a collective) wherever the loop needs them:
  dev evaluation, checkpoints, the end of the run.
- Frozen weights (the base under LoRA) are not sharded: the copy shares them with the caller's
  model, which shares them with the loaded base every arm of a ladder reads, so sharding them
  would add memory, not save it. What FSDP shards is what trains: under full fine-tuning, all of it.
- Gradients are summed over ranks, not averaged (divide factor 1, sum reductions): the loop
  already divides each rank's loss by the step's units summed over all ranks. Every micro-batch
  reduce-scatters into the sharded gradients, which accumulate there: the full gradients never
  sit on one rank. Every rank must run the same number of forwards (each gathers weights), so a
  rank with fewer micro-batches runs fillers whose loss counts zero (forward_backward).
- Checkpoints hold full tensors, in the one-process format (the same files, the same optimiser
  keys): a checkpoint saved under FSDP resumes under FSDP, data parallel or one process.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass

import torch

from ..errors import TailorError

log = logging.getLogger("tailor")

# what `tailor train --fsdp` sets for the ranks it launches (as `accelerate launch` does from a
# config with distributed_type FSDP and fsdp_version 2)
LAUNCH_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}


@dataclass(frozen=True)
class FSDPOptions:
    reshard_after_forward: bool = True   # layers free their gathered weights after forward


def _flag(name: str, default: str = "false") -> bool:
    return os.environ.get(name, default).strip().lower() == "true"


def requested() -> FSDPOptions | None:
    """The FSDP options the launcher's environment asks for (accelerate launch sets these from the
    config's fsdp_config), or None. What the loop cannot honour is refused, in one line."""
    if _flag("ACCELERATE_USE_DEEPSPEED"):
        raise TailorError("DeepSpeed (from the accelerate config) is not wired into Tailor's training loop: use "
                          "FSDP2 (examples/accelerate/fsdp2.yaml) or data parallel (examples/accelerate/ddp.yaml)")
    if not _flag("ACCELERATE_USE_FSDP"):
        return None
    version = os.environ.get("FSDP_VERSION", "1").strip()
    if version != "2":
        raise TailorError(f"FSDP version {version} (from the accelerate config) is not wired into Tailor's training "
                          "loop: set fsdp_version: 2 (examples/accelerate/fsdp2.yaml), or use data parallel "
                          "(examples/accelerate/ddp.yaml)")
    if _flag("FSDP_OFFLOAD_PARAMS"):
        raise TailorError("fsdp_offload_params (from the accelerate config) is not wired into Tailor's training "
                          "loop: set it to false")
    return FSDPOptions(reshard_after_forward=_flag("FSDP_RESHARD_AFTER_FORWARD", "true"))


class LossCall(torch.nn.Module):
    """The root FSDP module: its forward is the loss on one micro-batch, so the weights outside the
    decoder layers (embeddings, final norm, head) are gathered once around the whole loss call."""

    def __init__(self, model: torch.nn.Module, loss):
        super().__init__()
        self.model = model
        # not a submodule: a loss holding modules (a teacher, say) must not join the root's group
        object.__setattr__(self, "loss_fn", loss)

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


def _decoder_layers(model) -> list[torch.nn.Module]:
    from ..engine import causal_lm_of
    causal = causal_lm_of(model)
    layers = getattr(causal.get_decoder(), "layers", None)
    if not layers:
        raise TailorError(f"FSDP: model type '{causal.config.model_type}' has no decoder layers where Tailor "
                          "looks for them (get_decoder().layers): train it data parallel")
    return list(layers)


class Sharded:
    """A sharded copy of `model` for training, with `loss` as its root's forward (module doc)."""

    def __init__(self, model: torch.nn.Module, loss, world, options: FSDPOptions):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import FSDPModule, fully_shard
        device = "cuda" if world.device.startswith("cuda") else "cpu"
        mesh = init_device_mesh(device, (world.size,))
        # the copy shares every tensor with `model` until fully_shard replaces the trained ones (on
        # the copy's modules only; the caller's keep theirs)
        self.model = copy.deepcopy(model, {id(t): t for t in [*model.parameters(), *model.buffers()]})
        frozen = {p for p in self.model.parameters() if not p.requires_grad}
        for layer in _decoder_layers(self.model):
            fully_shard(layer, mesh=mesh, reshard_after_forward=options.reshard_after_forward, ignored_params=frozen)
        self.root = fully_shard(LossCall(self.model, loss), mesh=mesh, ignored_params=frozen)
        for module in self.root.modules():
            if isinstance(module, FSDPModule):
                module.set_gradient_divide_factor(1.0)          # a sum over ranks (module doc)
                module.set_force_sum_reduction_for_comms(True)  # SUM, not PREMUL_SUM: gloo has only SUM
        self.trained = {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def parameters(self, names: list[str]) -> list[torch.nn.Parameter]:
        """The sharded parameters of these names (the optimiser's order: the caller's model's)."""
        return [self.trained[n] for n in names]

    @torch.no_grad()
    def gather_into(self, model: torch.nn.Module) -> None:
        """The trained weights, whole, into `model` (every rank must call it: all-gathers)."""
        params = dict(model.named_parameters())
        for name, p in self.trained.items():
            params[name].copy_(p.full_tensor())


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimiser's state dict with every sharded tensor gathered whole (every rank must call
    it): what a one-process run's `optimizer.state_dict()` holds."""
    from torch.distributed.tensor import DTensor
    sd = optimizer.state_dict()
    state = {i: {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in s.items()}
             for i, s in sorted(sd["state"].items())}
    return {"state": state, "param_groups": sd["param_groups"]}


def load_sharded_state(optimizer: torch.optim.Optimizer, full: dict) -> None:
    """Loads a one-process optimiser state dict (full tensors, on every rank) into an optimiser of
    sharded parameters (grouped as the one that saved it), each tensor cut to this rank's shard.
    No communication: every rank holds the whole of it."""
    from torch.distributed.tensor import distribute_tensor
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for i, s in full["state"].items():
        p = params[int(i)]
        state[i] = {k: distribute_tensor(v.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
                    if isinstance(v, torch.Tensor) and v.dim() and v.shape == p.shape else v for k, v in s.items()}
    optimizer.load_state_dict({"state": state, "param_groups": full["param_groups"]})


def global_norm(norm) -> float:
    """clip_grad_norm_ over DTensor gradients returns the norm over all shards as a DTensor."""
    from torch.distributed.tensor import DTensor
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)
