"""The GPU check of the recurrence kernels, as one prepared run for a lent CUDA machine.

    PYTHONPATH=src python3 scripts/cuda_check.py --out DIR

1. runs the CUDA tests (tests/test_triton.py, the CUDA simulator oracle) compiled on the GPU;
2. times one training step (forward + backward) of the QLAM recurrence on the GPU: the Triton
   kernels against the pure-PyTorch reversible path and plain autograd, n = 4, 5, 6 qubits,
   batch 64 and 128, 784 tokens, 8 heads, one layer and a readout basis (float32);
3. writes DIR/cuda_check.json (records with impl, n_qubits, batch, seq_len, tokens_per_s)
   and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from qlam.sim.scan import random_unitaries, scan


def problem(b, length, h, n, device, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    psi = torch.randn(b, h, 2, n, generator=g, dtype=torch.float64)
    psi = psi / psi.square().sum((-2, -1), keepdim=True).sqrt()
    w = random_unitaries(h, 2, n=n, generator=g)
    args = [psi, torch.randn(b, length, h, 1, n, generator=g, dtype=torch.float64), w[:, :1],
            torch.randn(b, length, h, n, generator=g, dtype=torch.float64), w[:, 1].contiguous()]
    return [a.to(device=device, dtype=dtype).requires_grad_() for a in args]


def time_step(args, backward, repeats=3):
    def step():
        probs, last = scan(*args, backward=backward)
        (probs.square().sum() + last.sum()).backward()

    step()  # compile / warm up
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--seq-len", type=int, default=784)
    p.add_argument("--skip-tests", action="store_true")
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "command": " ".join(sys.argv)}
    if not a.skip_tests:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "tests/test_triton.py", "tests/test_sim_oracles.py", "-k",
                               "triton or cuda or interpreted or supports"],
                              capture_output=True, text=True)
        (out / "pytest.log").write_text(proc.stdout + proc.stderr)
        meta["pytest_rc"] = proc.returncode
        print(proc.stdout[-2000:])
    records = []
    for n_qubits in (4, 5, 6):
        for b in (64, 128):
            args = problem(b, a.seq_len, 8, 2**n_qubits, "cuda")
            for impl, backward in (("qlam-triton", "kernel"), ("qlam-reversible", "reversible"),
                                   ("qlam-autograd", "autograd")):
                sec = time_step(args, backward)
                records.append({"impl": impl, "n_qubits": n_qubits, "batch": b,
                                "seq_len": a.seq_len, "heads": 8, "seconds": sec,
                                "tokens_per_s": b * a.seq_len / sec})
                print(f"{impl:16s} n={n_qubits} B={b:4d}: {records[-1]['tokens_per_s']:,.0f} tok/s")
    (out / "cuda_check.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    return int(meta.get("pytest_rc", 0) != 0)


if __name__ == "__main__":
    sys.exit(main())
