"""The GPU check, as one prepared run for a lent CUDA machine (issue 19, goal 5).

    PYTHONPATH=src PYTHONUNBUFFERED=1 python3 scripts/cuda_check.py --out DIR

needs torch (with CUDA), numpy and pytest, Triton for the Triton rows, nothing else of
qlam's extras. Four steps, each writing its results as soon as it ends (a run cut short
keeps what finished):

1. ``tests``: the ``cuda``-marked tests (the files in ``CUDA_TEST_FILES``) on the GPU: the
   Triton kernels against the PyTorch path, the statevector, the QLAM classifier (unitary
   and mixed memory) and a stopped-and-resumed training run against the CPU, and
   ``qlam bench sim --device cuda``; the log in DIR/pytest.log;
2. ``scan``: training tokens/s (forward + backward) of the QLAM recurrence, 8 heads, one
   layer and a readout basis, float32, 784 tokens, n = 4, 5, 6 qubits, batch 64 and 128:
   the Triton kernels (``qlam-triton``) against the pure-PyTorch reversible path and plain
   autograd; DIR/cuda_check.json;
3. ``sim``: ``qlam bench sim --device cuda`` at n = 4, 6, 8, 10, 12, batch 128, 784 tokens
   (or each row's budgeted prefix): qlam's rows on the GPU, then TensorCircuit-NG on JAX's
   GPU where it is installed (checked against qlam's reference first); DIR/sim-cuda.json
   and the side-by-side table DIR/sim-cuda.md;
4. ``models``: ``qlam bench models --device cuda`` at the committed recipe (8 heads x 4
   qubits, 784 tokens, batch 64, training, fp32 and bf16): QLAM (Triton, and the PyTorch
   recurrence) against the LSTM, GRU, Transformer and SSM at equal parameters;
   DIR/models-cuda.json and DIR/models-cuda.md.

TensorCircuit-NG is not in the device image; its wheels travel with the tree. Here, before
the call: ``bash scripts/cuda_wheels.sh`` (into .whl/, ignored by git); on the machine,
before this script: ``python3 -m pip install -q --no-index --no-deps --target /tmp/site
.whl/*.whl && export PYTHONPATH=src:/tmp/site`` (the call carrying ``.whl``).

On CUDA the C++ CPU kernel is left unbuilt (``QLAM_KERNEL=0``: the CPU sides of the
comparisons run the PyTorch path), which saves its minute-long compile.

``--device cpu --tiny`` runs the same code on the CPU at toy sizes (the C++ kernel in place
of Triton; the test suite does this, so the script is known to run before a GPU is lent).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from qlam.bench import common, models, sim  # noqa: E402
from qlam.sim.scan import random_unitaries, scan  # noqa: E402

# every test file holding ``cuda``-marked tests (tests/test_cuda_check.py keeps this true);
# each imports nothing beyond qlam, torch and pytest, so it runs without the peers
CUDA_TEST_FILES = (
    "tests/bench/test_bench.py",
    "tests/memory/test_layer_devices.py",
    "tests/run/test_train.py",
    "tests/sim/test_scan_triton.py",
    "tests/sim/test_sim_devices.py",
)
SIM_ROWS = ("qlam-auto", "qlam-triton", "qlam-compiled", "qlam-factored", "qlam-reference")
PEER = "tensorcircuit-jax"
MODEL_ROWS = ("qlam-kernel", "qlam-reversible", "lstm", "gru", "transformer", "ssm")


def problem(b, length, h, n, device, dtype=torch.float32, seed=0):
    """The scan's inputs (shapes in qlam.sim.scan.contract), leaves on ``device``."""
    g = torch.Generator().manual_seed(seed)
    psi = torch.randn(b, h, 2, n, generator=g, dtype=torch.float64)
    psi = psi / psi.square().sum((-2, -1), keepdim=True).sqrt()
    w = random_unitaries(h, 2, n=n, generator=g)
    args = [psi, torch.randn(b, length, h, 1, n, generator=g, dtype=torch.float64), w[:, :1],
            torch.randn(b, length, h, n, generator=g, dtype=torch.float64), w[:, 1].contiguous()]
    return [a.to(device=device, dtype=dtype).requires_grad_() for a in args]


def time_step(args, backward: str, device: str, repeats: int = 3) -> float:
    """Best seconds of one forward + backward of the scan (after a compiling warm-up)."""
    def step():
        for a in args:
            a.grad = None
        probs, last = scan(*args, backward=backward)
        (probs.square().sum() + last.sum()).backward()

    step()
    common.synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        common.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def run_tests(out: Path, files=CUDA_TEST_FILES) -> int:
    """The cuda-marked tests (where torch sees no GPU they are skipped: the CPU dry run)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-m", "cuda", "-rs", *files], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    (out / "pytest.log").write_text(proc.stdout + proc.stderr)
    print(proc.stdout[-3000:] + proc.stderr[-2000:])
    return proc.returncode


def run_scan(device: str, sizes, batches, seq_len: int, log) -> list[dict]:
    compiled = "qlam-triton" if device.startswith("cuda") else "qlam-kernel"
    records = []
    for n_qubits in sizes:
        for b in batches:
            args = problem(b, seq_len, 8, 2**n_qubits, device)
            for impl, backward in ((compiled, "kernel"), ("qlam-reversible", "reversible"),
                                   ("qlam-autograd", "autograd")):
                sec = time_step(args, backward, device)
                records.append({"impl": impl, "n_qubits": n_qubits, "batch": b,
                                "seq_len": seq_len, "heads": 8, "seconds": sec,
                                "tokens_per_s": b * seq_len / sec})
                log(f"scan {impl:16s} n={n_qubits} B={b:4d}: "
                    f"{records[-1]['tokens_per_s']:,.0f} tok/s")
    return records


def run_sim(device: str, sizes, batch: int, seq_len: int, log) -> tuple[list[dict], str]:
    """qlam's rows that run on the device, then TensorCircuit-NG where it is installed and
    has a backend there (a failure of the peer is logged, never loses qlam's rows)."""
    rows = [r for r in SIM_ROWS if sim.IMPLS[r].available() and sim.IMPLS[r].on_device(
        torch.device(device).type)]
    records = sim.run_benchmark(sizes, batch, seq_len, impls=rows, device=device, log=log)
    peer = sim.IMPLS[PEER]
    if not (peer.available() and peer.on_device(torch.device(device).type)):
        return records, f"{PEER}: not installed here, or JAX has no backend for {device}"
    try:
        sim.check_agreement(["qlam-reference", PEER], n_qubits=4, device=device)
        records += sim.run_benchmark(sizes, batch, seq_len, impls=[PEER], device=device,
                                     log=log)
    except Exception as exc:  # noqa: BLE001 - the peer's failure is a finding, not a crash
        return records, f"{PEER} failed: {type(exc).__name__}: {exc}"
    return records, f"{PEER}: {peer.version()}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run)")
    p.add_argument("--tiny", action="store_true",
                   help="toy sizes (n = 4, batch 8, 16 tokens): checks that the script runs")
    p.add_argument("--skip", nargs="*", default=[], choices=["tests", "scan", "sim", "models"])
    a = p.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("cuda_check: no CUDA device (use --device cpu for a dry run)", file=sys.stderr)
        return 2
    if a.device.startswith("cuda"):  # the CPU kernel is not the subject: skip its build
        os.environ.setdefault("QLAM_KERNEL", "0")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    seq_len = 16 if a.tiny else 784
    name = common.device_name(a.device) if a.device.startswith("cuda") else "cpu"
    meta = {"device": name, "torch": torch.__version__, "command": " ".join(sys.argv),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    report = out / "cuda_check.json"

    def save(records):
        report.write_text(json.dumps({"meta": meta, "records": records}, indent=1))

    def log(line):
        print(line, flush=True)

    records: list[dict] = []
    rc = 0
    if "tests" not in a.skip:
        meta["pytest_rc"] = run_tests(out)
        rc |= meta["pytest_rc"] != 0
        save(records)
    if "scan" not in a.skip:
        records += run_scan(a.device, (4,) if a.tiny else (4, 5, 6),
                            (8,) if a.tiny else (64, 128), seq_len, log)
        save(records)
    if "sim" not in a.skip:
        sim_records, meta["peer"] = run_sim(a.device, (4,) if a.tiny else (4, 6, 8, 10, 12),
                                            8 if a.tiny else 128, seq_len, log)
        log(meta["peer"])
        (out / "sim-cuda.json").write_text(json.dumps({"meta": meta, "records": sim_records},
                                                      indent=1))
        table = sim.peers_table(sim_records)
        (out / "sim-cuda.md").write_text(table + "\n")
        print(table)
        save(records)
    if "models" not in a.skip:
        model_records = models.run_benchmark(
            [seq_len], batch=8 if a.tiny else 64, rows=MODEL_ROWS,
            qlam_options={"n_heads": 8}, modes=("train",), log=log, device=a.device,
            precisions=("fp32",) if a.tiny else ("fp32", "bf16"))
        (out / "models-cuda.json").write_text(json.dumps(
            {"meta": meta, "records": model_records}, indent=1))
        table = models.markdown_table(model_records)
        (out / "models-cuda.md").write_text(table + "\n\n" + "\n".join(
            f"- {line}" for line in models.summary(model_records)) + "\n")
        print(table)
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())
