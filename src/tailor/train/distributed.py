"""Several processes, one training loop. The processes are started by a launcher (torchrun,
`accelerate launch`, or `tailor train --processes N`, which runs torchrun); accelerate's
`PartialState` reads the launcher's environment and opens the process group (gloo on CPU, nccl
on CUDA). Everything else here is a handful of torch.distributed collectives the loop calls at
named points, each a no-op in a single process, so one process runs exactly the code it ran
before this file existed.

What makes N processes train what one process trains at the same global batch:
- every rank computes the same step's examples (a pure function of seed and step) and keeps its
  shard of them, so the data order is a pure function of (seed, epoch, rank);
- the loss is divided by the step's units (target tokens, pairs) summed over all ranks, and the
  gradients are summed over ranks once per optimiser step, after the micro-batches have
  accumulated: the sum of the ranks' gradients is the gradient of the step's global mean.

Why not DDP's wrapper: the loop's losses call the decoder and the vocabulary head directly (the
head only on positions that predict a target), which bypasses a wrapper's forward; and a step
already accumulates every micro-batch before it needs the gradients, which is what DDP's
`no_sync` followed by one synchronised backward gives. One flattened all_reduce per step is the
same traffic, and the model stays a plain transformers / peft model for evaluation and saving.

FSDP2 (an accelerate config with fsdp_version 2, or `tailor train --fsdp`) is a mode of the same
loop: the same shards of the same steps and the same normalisation, with the trained weights,
gradients and optimiser states sharded instead of replicated (train/fsdp.py).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass

import torch

from ..errors import TailorError
from .fsdp import FSDPOptions, requested

log = logging.getLogger("tailor")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str = "cpu"     # where collectives' tensors live (cuda under nccl)
    fsdp: FSDPOptions | None = None   # sharded training (train/fsdp.py) instead of replicas

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


@functools.lru_cache(maxsize=1)
def world() -> World:
    """This process's place among the launched ones; a plain run (no WORLD_SIZE) is a world of one."""
    # what the loop cannot honour (FSDP 1, DeepSpeed) is refused rather than ignored: it would train
    # full unsharded replicas
    fsdp = requested()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        if fsdp:
            log.info("FSDP with one process: nothing to shard, training as one process does")
        return World()
    from accelerate import PartialState
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes <= 1:
        raise TailorError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but accelerate opened no process group "
                          f"(distributed type {state.distributed_type}); launch with torchrun or accelerate launch")
    device = str(state.device) if state.device.type == "cuda" else "cpu"
    return World(state.process_index, state.num_processes, state.local_process_index, device, fsdp)


def shard(examples: list, w: World) -> list:
    """This rank's examples of a step. Longest first, dealt in turn, so ranks get about the same
    number of tokens (the step waits for the slowest rank). Stable: equal lengths keep their order."""
    if not w.distributed:
        return examples
    ranked = sorted(examples, key=len, reverse=True)
    return ranked[w.rank::w.size]


def sum_numbers(values: list[float], w: World) -> list[float]:
    """Element-wise sums over ranks (float64: token counts stay exact)."""
    if not w.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=w.device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def max_number(value: float, w: World) -> float:
    if not w.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=w.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.item()


def sum_logs(logs: dict[str, float], w: World) -> dict[str, float]:
    """Sums of what a loss logs; a rank with no examples this step logs nothing, so keys are merged."""
    if not w.distributed:
        return logs
    every: list = [None] * w.size
    torch.distributed.all_gather_object(every, logs)
    merged: dict[str, float] = {}
    for part in every:
        for k, v in part.items():
            merged[k] = merged.get(k, 0.0) + v
    return merged


def _flat(params: list[torch.nn.Parameter], grads: bool) -> torch.Tensor:
    parts = []
    for p in params:
        t = p.grad if grads else p.data
        parts.append(torch.zeros(p.numel(), dtype=p.dtype, device=p.device) if t is None else t.reshape(-1))
    return torch.cat(parts)


def _unflat(flat: torch.Tensor, params: list[torch.nn.Parameter], grads: bool) -> None:
    at = 0
    for p in params:
        chunk = flat[at:at + p.numel()].view_as(p)
        at += p.numel()
        if grads:
            p.grad = chunk.clone()
        else:
            p.data.copy_(chunk)


@torch.no_grad()
def sum_gradients(params: list[torch.nn.Parameter], w: World) -> None:
    """Each parameter's gradient becomes the sum of every rank's (one all_reduce per dtype). A
    rank whose shard never reached a parameter counts zeros for it."""
    if not w.distributed:
        return
    for group in _by_dtype(params):
        flat = _flat(group, grads=True)
        torch.distributed.all_reduce(flat)
        _unflat(flat, group, grads=True)


@torch.no_grad()
def broadcast_parameters(params: list[torch.nn.Parameter], w: World) -> None:
    """Every rank starts from rank 0's trainable weights (as DDP's constructor does), whatever
    each rank's initialisation drew."""
    if not w.distributed:
        return
    for group in _by_dtype(params):
        flat = _flat(group, grads=False)
        torch.distributed.broadcast(flat, src=0)
        _unflat(flat, group, grads=False)


def broadcast(value, w: World):
    """Rank 0's value, on every rank (a dev metric, a decision)."""
    if not w.distributed:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather_on_main(value, w: World) -> list | None:
    """Every rank's value, in rank order, on rank 0 (None elsewhere)."""
    if not w.distributed:
        return [value]
    every = [None] * w.size if w.is_main else None
    torch.distributed.gather_object(value, every, dst=0)
    return every


def _by_dtype(params: list[torch.nn.Parameter]) -> list[list[torch.nn.Parameter]]:
    groups: dict[torch.dtype, list] = {}
    for p in params:
        groups.setdefault(p.dtype, []).append(p)
    return list(groups.values())


def close() -> None:
    if world().distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
