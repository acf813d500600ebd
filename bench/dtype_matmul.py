"""fp32 vs bf16 large-matmul throughput on this machine.

Why: `tailor.models.pick_dtype` chooses bf16 on CPUs with native bf16 matrix units (AMX /
AVX512-BF16). This measures whether that pays off here. `bf16_peak_flops()` is also the
reference other benchmarks use for MFU (model FLOP utilisation):

    from bench.dtype_matmul import bf16_peak_flops   # run from the repository root
    mfu = achieved_flops / bf16_peak_flops()

Run (the CPU is shared; take turns):
    flock /tmp/tailor-cpu.lock .venv/bin/python bench/dtype_matmul.py
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SIZES = (1024, 2048, 3072, 4096)


def matmul_flops(n: int, dtype: torch.dtype, device: torch.device | None = None, seconds: float = 1.0) -> float:
    """FLOP/s of an n x n x n matmul (2 n^3 FLOPs each), timed over at least `seconds`."""
    from tailor.models import pick_device
    device = device or pick_device()
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):  # warm up: kernels chosen, caches and AMX tiles configured
        torch.matmul(a, b, out=out)
    sync()
    reps, start = 0, time.perf_counter()
    while True:
        torch.matmul(a, b, out=out)
        reps += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and reps >= 3:
            return 2 * n ** 3 * reps / elapsed


def best_flops(n: int, dtype: torch.dtype, device: torch.device | None = None, tries: int = 3) -> float:
    """The best of a few timings: other work on a shared machine only ever slows a run down."""
    return max(matmul_flops(n, dtype, device, seconds=0.5) for _ in range(tries))


def _memo_path() -> Path:
    from tailor.models import pick_device
    from tailor.utils import cache_dir, sha256_text
    device = pick_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    cpu = ""
    try:
        cpu = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    key = sha256_text(json.dumps([name, cpu, torch.__version__, torch.get_num_threads(), str(device)]))[:16]
    return cache_dir("bench") / f"bf16_peak_{key}.json"


def bf16_peak_flops(fresh: bool = False) -> float:
    """Peak bf16 matmul FLOP/s of this machine (the best of the sizes above). Measured once per
    machine, torch version and thread count, then read from the user cache; `fresh=True`
    measures again (a measurement takes a few seconds and is lowered by other CPU load)."""
    memo = _memo_path()
    if memo.exists() and not fresh:
        return json.loads(memo.read_text())["bf16_peak_flops"]
    peak = max(best_flops(n, torch.bfloat16) for n in SIZES)
    from tailor.utils import atomic_write_json
    atomic_write_json(memo, {"bf16_peak_flops": peak, "sizes": SIZES, "torch": torch.__version__,
                             "threads": torch.get_num_threads(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return peak


def main() -> None:
    from tailor.models import cpu_has_bf16_units, pick_device, pick_dtype
    device = pick_device()
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"bf16 units: {cpu_has_bf16_units() if device.type == 'cpu' else 'n/a'}, "
          f"pick_dtype -> {str(pick_dtype(device)).removeprefix('torch.')}")
    print(f"{'n':>6} {'fp32 GFLOP/s':>14} {'bf16 GFLOP/s':>14} {'bf16/fp32':>10}")
    best = {torch.float32: 0.0, torch.bfloat16: 0.0}
    for n in SIZES:
        f32 = best_flops(n, torch.float32, device)
        b16 = best_flops(n, torch.bfloat16, device)
        best[torch.float32] = max(best[torch.float32], f32)
        best[torch.bfloat16] = max(best[torch.bfloat16], b16)
        print(f"{n:>6} {f32 / 1e9:>14.1f} {b16 / 1e9:>14.1f} {b16 / f32:>9.2f}x")
    print(f"peak   {best[torch.float32] / 1e9:>14.1f} {best[torch.bfloat16] / 1e9:>14.1f} "
          f"{best[torch.bfloat16] / best[torch.float32]:>9.2f}x")
    from tailor.utils import atomic_write_json
    atomic_write_json(_memo_path(), {"bf16_peak_flops": best[torch.bfloat16], "fp32_peak_flops": best[torch.float32],
                                     "sizes": SIZES, "torch": torch.__version__,
                                     "threads": torch.get_num_threads(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    print(f"bf16 peak (MFU reference) saved: {_memo_path()}")


if __name__ == "__main__":
    main()
