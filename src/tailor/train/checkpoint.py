"""Checkpoints: trainable weights, optimiser state, RNG states and the loop's position, written
so that a crash at any instant leaves the previous checkpoint intact.

Everything is safetensors (tensors) + JSON (the rest): no pickle, so a checkpoint is safe to load
even from an untrusted source. A checkpoint is written to a temporary folder, renamed into
place, and only then does `latest.json` (itself written atomically) point at it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import TailorError
from ..utils import atomic_dir, atomic_write, atomic_write_json

log = logging.getLogger("tailor")


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """Content hash of trained weights: part of the engine's cache key, so results of two
    different trained models are never mixed up."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def save_weights(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write(path, lambda tmp: save_file(_contiguous(tensors), str(tmp)))


def load_weights_into(model: torch.nn.Module, path: Path) -> None:
    saved = load_file(str(path))
    params = dict(model.named_parameters())
    missing = [n for n in saved if n not in params]
    if missing:
        raise TailorError(f"{path}: {len(missing)} saved tensors do not match this model (e.g. {missing[0]})")
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    version, state, gauss = random.getstate()
    return tensors, {"python": [version, list(state), gauss]}


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))


def save_checkpoint(root: Path, model, optimizer: torch.optim.Optimizer, state: dict, keep: int = 1,
                    rank_rngs: list | None = None, optimizer_state: dict | None = None) -> Path:
    """`rank_rngs`: every rank's `rng_state()` under several processes (rank 0's is the main one);
    `optimizer_state`: the optimiser's state dict when `optimizer` holds only a shard of it (FSDP
    gathers it whole first, so the checkpoint is the one a single process writes)."""
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{state['step']:07d}"
    final = root / name
    with atomic_dir(final) as tmp:
        save_file(_contiguous(trainable_state(model)), str(tmp / "trainable.safetensors"))
        opt = optimizer_state if optimizer_state is not None else optimizer.state_dict()
        opt_tensors = {f"{i}.{k}": v for i, s in opt["state"].items() for k, v in s.items()
                       if isinstance(v, torch.Tensor)}
        opt_scalars = {f"{i}.{k}": v for i, s in opt["state"].items() for k, v in s.items()
                       if not isinstance(v, torch.Tensor)}
        save_file(_contiguous(opt_tensors), str(tmp / "optimizer.safetensors"))
        rng_tensors, rng_meta = rng_state()
        save_file(_contiguous(rng_tensors), str(tmp / "rng.safetensors"))
        ranks = {}
        for rank, (tensors, meta) in enumerate(rank_rngs or []):
            if rank:
                save_file(_contiguous(tensors), str(tmp / f"rng-rank{rank}.safetensors"))
                ranks[str(rank)] = meta
        atomic_write_json(tmp / "state.json", {**state, "rng": rng_meta, "optimizer_groups": opt["param_groups"],
                                               "optimizer_scalars": opt_scalars, "rank_rng": ranks})
    atomic_write_json(root / "latest.json", {"step": state["step"], "dir": name})
    # Older checkpoints go only after the pointer has moved past them.
    olds = sorted(p for p in root.glob("step-*") if p.is_dir() and p.name != name)
    for old in olds[:max(0, len(olds) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(path: Path) -> Path | None:
    """A run directory, its checkpoints folder, or one checkpoint folder -> the checkpoint."""
    path = Path(path)
    if (path / "state.json").exists():
        return path
    for root in (path / "checkpoints", path):
        pointer = root / "latest.json"
        if pointer.exists():
            return root / json.loads(pointer.read_text())["dir"]
    return None


def load_checkpoint(path: Path, model, optimizer: torch.optim.Optimizer, rank: int = 0) -> dict:
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise TailorError(f"{path}: no checkpoint to resume from (expected checkpoints/latest.json)")
    load_weights_into(model, ckpt / "trainable.safetensors")
    state = json.loads((ckpt / "state.json").read_text())
    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    per_param: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(state.pop("optimizer_scalars").items()):
        i, k = key.split(".", 1)
        per_param.setdefault(int(i), {})[k] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state.pop("optimizer_groups")})
    set_rng_state(load_file(str(ckpt / "rng.safetensors")), state.pop("rng"))
    ranks = state.pop("rank_rng", {})
    if rank and str(rank) in ranks:
        set_rng_state(load_file(str(ckpt / f"rng-rank{rank}.safetensors")), ranks[str(rank)])
    elif rank:
        # saved by fewer processes: the data and weights are the same, only this rank's dropout masks
        # cannot be those of an uninterrupted run
        log.warning("%s has no RNG state for rank %d (saved by %d processes): it draws fresh ones", ckpt, rank,
                    len(ranks) + 1)
        torch.manual_seed(1_000_003 * state["step"] + rank)
    state["checkpoint"] = str(ckpt)
    return state
