"""`--processes N`: the same command in N processes on this machine, started by torchrun (the
launcher accelerate's own `accelerate launch` runs underneath). Clusters use the launchers
directly, with the same entry point:

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        -m tailor.cli train CONFIG
    accelerate launch --config_file examples/accelerate/ddp.yaml -m tailor.cli train CONFIG
    accelerate launch --config_file examples/accelerate/fsdp2.yaml -m tailor.cli train CONFIG   # sharded

Each worker finds its place through accelerate (train/distributed.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

from ..errors import TailorError


def launched() -> bool:
    """True inside a process a launcher started (torchrun and accelerate set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_local(args: list[str], processes: int, fsdp: bool = False) -> int:
    """Runs `python -m tailor.cli ARGS` as `processes` ranks on this machine, over loopback, and
    returns the launcher's exit code. The cores are split between the ranks: two processes that
    each want every core slow each other down many times over. `fsdp`: the ranks shard the trained
    weights (FSDP2, train/fsdp.py), through the variables `accelerate launch` sets from a config."""
    if processes < 1:
        raise TailorError(f"--processes {processes}: need at least 1")
    if launched():
        raise TailorError("--processes inside a launched run (torchrun / accelerate launch already started "
                          f"{os.environ['WORLD_SIZE']} processes): drop --processes")
    threads = max(1, (os.cpu_count() or 1) // processes)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if fsdp:
        from .fsdp import LAUNCH_ENV
        env.update(LAUNCH_ENV)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")      # all ranks are here: gloo talks over loopback
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "tailor.cli", *args]
    return subprocess.call(command, env=env)
