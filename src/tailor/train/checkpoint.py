"""Checkpoints: trainable weights, optimiser state, RNG states and the loop's position, written
so that a crash at any instant leaves the previous checkpoint intact.

Everything is safetensors (tensors) + JSON (the rest): no pickle, so a checkpoint is safe to load
even from an untrusted source. A checkpoint is written to a temporary folder, renamed into
place, and only then does `latest.json` (itself written atomically) point at it.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import DataError, TailorError
from ..jsonl import json_type, read_json_object
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


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, or a DataError naming it (missing, truncated, not safetensors)."""
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise DataError(path, f"cannot read the tensors ({' '.join(str(e).split())})") from None


def load_weights_into(model: torch.nn.Module, path: Path, saved: dict | None = None) -> None:
    saved = _tensors(path) if saved is None else saved
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
    """A run directory, its checkpoints folder, or one checkpoint folder -> the checkpoint. An edited
    or corrupted `latest.json` is a DataError naming it and its field, before anything is loaded."""
    path = Path(path)
    if (path / "state.json").exists():
        return path
    for root in (path / "checkpoints", path):
        pointer = root / "latest.json"
        if pointer.exists():
            return root / _pointed(pointer)
    return None


def _pointed(pointer: Path) -> str:
    """The checkpoint folder `latest.json` names: a step-NNNNNNN folder beside it."""
    data = read_json_object(pointer, "checkpoint pointer", "a JSON object {step, dir}")
    name = data.get("dir")
    if not isinstance(name, str) or not re.fullmatch(r"step-[0-9]{7,}", name):
        raise DataError(pointer, f"expected a checkpoint folder beside it (step-0000012), got {name!r}", field="dir")
    if not (pointer.parent / name / "state.json").is_file():
        raise DataError(pointer, f"names {name}, which holds no state.json (deleted or never finished)", field="dir")
    return name


def _read_state(ckpt: Path) -> dict:
    """state.json of a checkpoint, its fields typed as loading uses them."""
    path = ckpt / "state.json"
    state = read_json_object(path, "checkpoint state")
    want = {"step": int, "rng": dict, "optimizer_groups": list, "optimizer_scalars": dict}
    for key, kind in want.items():
        if isinstance(state.get(key), bool) or not isinstance(state.get(key), kind):
            raise DataError(path, "missing" if key not in state else
                            f"expected {json_type(kind())}, got {json_type(state[key])}", field=key)
    python = state["rng"].get("python")
    if not (isinstance(python, list) and len(python) == 3 and isinstance(python[1], list)):
        raise DataError(path, "expected [version, state, gauss] as random.getstate() gives", field="rng.python")
    for key in state["optimizer_scalars"]:
        if not re.fullmatch(r"[0-9]+\..+", key):
            raise DataError(path, f"expected PARAM_INDEX.NAME keys, got {key!r}", field="optimizer_scalars")
    if not isinstance(state.get("rank_rng", {}), dict):
        raise DataError(path, f"expected an object, got {json_type(state['rank_rng'])}", field="rank_rng")
    return state


def load_checkpoint(path: Path, model, optimizer: torch.optim.Optimizer, rank: int = 0) -> dict:
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise TailorError(f"{path}: no checkpoint to resume from (expected checkpoints/latest.json)")
    # Everything is read and checked before the model, the optimiser or an RNG changes.
    state = _read_state(ckpt)
    weights, tensors = _tensors(ckpt / "trainable.safetensors"), _tensors(ckpt / "optimizer.safetensors")
    rngs = _tensors(ckpt / "rng.safetensors")
    if "torch" not in rngs:
        raise DataError(ckpt / "rng.safetensors", "missing", field="torch")
    bad = next((k for k in tensors if not re.fullmatch(r"[0-9]+\..+", k)), None)
    if bad is not None:
        raise DataError(ckpt / "optimizer.safetensors", f"expected PARAM_INDEX.NAME tensors, got {bad!r}")
    per_param: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(state.pop("optimizer_scalars").items()):
        i, k = key.split(".", 1)
        per_param.setdefault(int(i), {})[k] = value
    load_weights_into(model, ckpt / "trainable.safetensors", weights)
    try:
        optimizer.load_state_dict({"state": per_param, "param_groups": state.pop("optimizer_groups")})
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise DataError(ckpt / "state.json", f"does not fit this run's optimiser ({e})", field="optimizer_groups") from None
    set_rng_state(rngs, state.pop("rng"))
    ranks = state.pop("rank_rng", {})
    if rank and str(rank) in ranks:
        set_rng_state(_tensors(ckpt / f"rng-rank{rank}.safetensors"), ranks[str(rank)])
    elif rank:
        # saved by fewer processes: the data and weights are the same, only this rank's dropout masks
        # cannot be those of an uninterrupted run
        log.warning("%s has no RNG state for rank %d (saved by %d processes): it draws fresh ones", ckpt, rank,
                    len(ranks) + 1)
        torch.manual_seed(1_000_003 * state["step"] + rank)
    state["checkpoint"] = str(ckpt)
    return state
