"""Circuit sizes of an exported mixed-memory head (they depend on n and K, not on the weights),
and, with --aer, the Qiskit Aer density-matrix check of the whole file against the model.

    PYTHONPATH=src python scripts/mixed_export_sizes.py [--tokens 784] [--qubits 2 3 4] [--aer]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from qlam.export_mixed import export_mixed_head
from qlam.models.qlam import QLAMClassifier


def aer_error(ex) -> tuple[float, float]:
    """(max |rho_Aer - rho_model| after R, seconds) for the whole exported file."""
    from qiskit import qasm2
    from qiskit.quantum_info import DensityMatrix
    from qiskit_aer import AerSimulator

    n = ex.n_qubits
    qc = qasm2.loads(ex.measured.to_qasm())
    qc.save_density_matrix(qubits=list(range(n)))
    sim = AerSimulator(method="density_matrix", precision="double", max_parallel_threads=1)
    start = time.perf_counter()
    names = ["cry", "cswap", "rzz", "rxx", "ryy", "swap"]
    data = sim.run(qc.decompose(gates_to_decompose=names)).result().data()
    rho = DensityMatrix(data["density_matrix"]).reverse_qargs().data
    return float(np.abs(rho - ex.readout_state.numpy()).max()), time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=784)
    p.add_argument("--qubits", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--aer", action="store_true")
    args = p.parse_args()
    torch.manual_seed(0)
    for n in args.qubits:
        model = QLAMClassifier(1, 10, d_model=16, n_layers=1, n_heads=2, n_qubits=n,
                               memory="mixed").double().eval()
        ex = export_mixed_head(model, torch.randn(args.tokens, 1, dtype=torch.float64))
        c = ex.measured
        line = (f"n={n} K={args.tokens}: {c.n_qubits} qubits, {len(c)} instructions "
                f"({len(c) / args.tokens:.0f} per token), depth {c.depth()}, "
                f"{sorted(c.gate_count().items())}")
        if args.aer:
            err, sec = aer_error(ex)
            line += f"; Aer max |d rho| {err:.1e} in {sec:.1f} s"
        print(line)


if __name__ == "__main__":
    main()
