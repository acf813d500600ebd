"""Two "machines" on one box: two network namespaces joined by a veth pair, one training node in
each, a torchrun c10d rendezvous between them over the veth link (no loopback shortcut: each
node only sees its own end), and the same `tailor train` one process runs. The 2-node run's
final loss and trained weights are compared with a 1-process run at the same global batch.

Needs root and iproute2 (`ip netns`). The script makes the namespaces and removes them, whatever
happens. Run under the CPU lock:

    flock /tmp/tailor-cpu.lock .venv/bin/python bench/netns_two_nodes.py [--model tiny-test] [--steps 30]

Prints a table, then one JSON line (last).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NODES = ("tailor-n0", "tailor-n1")
LINKS = ("tailorv0", "tailorv1")
ADDRS = ("10.77.0.1", "10.77.0.2")
RDZV_PORT = 29477


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def make_network() -> None:
    for ns in NODES:
        sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", LINKS[0], "type", "veth", "peer", "name", LINKS[1])
    for ns, link, addr in zip(NODES, LINKS, ADDRS):
        sh("ip", "link", "set", link, "netns", ns)
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{addr}/24", "dev", link)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", link, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")


def remove_network() -> None:
    for ns in NODES:   # deleting a namespace deletes its end of the veth pair, and so the pair
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def config_text(model: str, steps: int) -> str:
    return (f"model: {model}\ntask: tweet-sentiment\nmethod: lora\ndtype: fp32\neval_split: null\n"
            f"options: {{steps: {steps}, batch_size: 8, max_train_examples: 256, dropout: 0.0, lr: 3.0e-3, "
            "log_every: 1, precision: fp32}\n")


def node_command(rank: int, config: Path, runs: Path) -> list[str]:
    ns, link, addr = NODES[rank], LINKS[rank], ADDRS[rank]
    env = ["env", f"GLOO_SOCKET_IFNAME={link}", "OMP_NUM_THREADS=1", "TOKENIZERS_PARALLELISM=false"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{ADDRS[0]}:{RDZV_PORT}", "--rdzv-id", "tailor-netns",
                # the address this node is reached at (its hostname would resolve outside the namespace),
                # and which node hosts the rendezvous store (torchrun guesses it from the hostname)
                "--local-addr", addr, "--rdzv-conf", f"is_host={int(rank == 0)},join_timeout=120"]
    return ["ip", "netns", "exec", ns, *env, *torchrun, "-m", "tailor.cli", "train", str(config), "--runs-dir", str(runs)]


def result_of(runs: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file
    (run,) = [Path(p) for p in glob.glob(str(runs / "*"))]   # one run directory: rank 0's
    processes = int(re.search(r"processes=(\d+)", (run / "log.txt").read_text()).group(1))
    metrics = json.loads((run / "metrics.json").read_text())
    return {**metrics, "processes": processes}, load_file(str(run / "adapter" / "adapter_model.safetensors"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-test")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (ip netns)")
    work = Path(tempfile.mkdtemp(prefix="tailor-netns-"))
    config = work / "train.yaml"
    config.write_text(config_text(args.model, args.steps))
    tailor = str(Path(sys.executable).parent / "tailor")

    t0 = time.perf_counter()
    one = subprocess.run([tailor, "train", str(config), "--runs-dir", str(work / "one")], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    if one.returncode:
        sys.exit(one.stderr[-3000:])
    one_s = time.perf_counter() - t0

    remove_network()   # a previous run killed before its cleanup
    make_network()
    try:
        seen = [subprocess.run(["ip", "netns", "exec", ns, "ip", "-br", "-4", "addr"], capture_output=True,
                               text=True).stdout.split() for ns in NODES]
        t0 = time.perf_counter()
        procs = [subprocess.Popen(node_command(rank, config, work / "two"), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
        outputs = [p.communicate(timeout=900)[0] for p in procs]
        two_s = time.perf_counter() - t0
        for rank, (p, text) in enumerate(zip(procs, outputs)):
            if p.returncode:
                sys.exit(f"node {rank} failed ({p.returncode}):\n{text[-4000:]}")
    finally:
        remove_network()

    (m1, w1), (m2, w2) = result_of(work / "one"), result_of(work / "two")
    param_diff = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    rel = abs(m1["final_loss"] - m2["final_loss"]) / abs(m1["final_loss"])
    print(f"network: {NODES[0]} {ADDRS[0]} <-veth-> {NODES[1]} {ADDRS[1]}; rendezvous c10d at {ADDRS[0]}:{RDZV_PORT}")
    for ns, words in zip(NODES, seen):
        print(f"  {ns} sees: {' '.join(words)}")
    print(f"{'run':<28}{'final loss':>14}{'train tokens':>14}{'wall s':>9}")
    print(f"{'1 process x 2 threads':<28}{m1['final_loss']:>14.8f}{m1['train_tokens']:>14,}{one_s:>9.1f}")
    if m2["processes"] != 2:
        sys.exit(f"the 2-node run trained in {m2['processes']} process(es)")
    print(f"{'2 nodes x 1 process x 1 thr':<28}{m2['final_loss']:>14.8f}{m2['train_tokens']:>14,}{two_s:>9.1f}")
    print(f"final loss relative difference {rel:.2e}; max trainable-parameter difference {param_diff:.2e} "
          f"({len(w1)} tensors, {args.steps} steps of {args.model})")
    print(json.dumps({"bench": "netns_two_nodes", "model": args.model, "steps": args.steps, "nodes": 2,
                      "final_loss_one_process": m1["final_loss"], "final_loss_two_nodes": m2["final_loss"],
                      "final_loss_rel_diff": rel, "max_param_diff": param_diff,
                      "tokens_equal": m1["train_tokens"] == m2["train_tokens"], "processes_in_log": m2["processes"]}))


if __name__ == "__main__":
    main()
