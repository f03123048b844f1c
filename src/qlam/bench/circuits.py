"""General circuits (no inputs, one state): seconds per `qlam.statevector` call for the
reference path (gate by gate), the compiled path with every block fused into a dense unitary
(``fuse="all"``: the default before the fusing rule) and the default compiled path
(``fuse="auto"``: fuse only where :func:`qlam.sim.compiled.fusing_pays`).

The circuit is Ising-like, the shape of QASMBench's ``ising_n10`` (491 gates at 10
qubits): H on every qubit, then per Trotter step RZZ on every neighbouring pair written as
CX RZ CX, and RX on every qubit."""

from __future__ import annotations

import time

import torch

from qlam.circuit import Circuit
from qlam.sim.compiled import CompiledCircuit

METHODS = ("reference", "fuse-all", "compiled")


def ising_circuit(n_qubits: int, steps: int = 13) -> Circuit:
    c = Circuit(n_qubits)
    for q in range(n_qubits):
        c.h(q)
    for s in range(steps):
        for q in range(n_qubits - 1):
            c.cnot(q, q + 1)
            c.rz(q + 1, 0.1 * (s + 1))
            c.cnot(q, q + 1)
        for q in range(n_qubits):
            c.rx(q, 0.05 * (q + 1))
    return c


def seconds(circuit: Circuit, method: str, batch: int, repeats: int) -> tuple[float, float]:
    """Best (wall, CPU) seconds of ``repeats`` runs on ``batch`` copies of |0...0> (CPU time
    stays comparable when other work shares the cores)."""
    from qlam.sim.statevector import run_reference, zero_state

    state = zero_state(circuit.n_qubits, batch)
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        if method == "reference":
            run_reference(circuit, state=state)
        else:
            CompiledCircuit(circuit).run(state=state, fuse="all" if method == "fuse-all" else "auto")
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best


def run_benchmark(n_list=(8, 10, 11), batch: int = 1, methods=METHODS, repeats: int = 3,
                  log=None) -> list[dict]:
    records = []
    for n in n_list:
        c = ising_circuit(n)
        # the default compiled path agrees with gate-by-gate simulation
        torch.testing.assert_close(CompiledCircuit(c).run(fuse="auto"),
                                   CompiledCircuit(c).run(fuse="none"))
        for m in methods:
            wall, cpu = seconds(c, m, batch, repeats)
            records.append({"n_qubits": n, "gates": len(c), "batch": batch, "method": m,
                            "seconds": wall, "cpu_seconds": cpu})
            if log:
                log(f"n={n} gates={len(c)} batch={batch} {m}: {wall:.4g} s ({cpu:.4g} s CPU)")
    return records


def markdown_table(records: list[dict]) -> str:
    rows = ["| qubits | gates | batch | method | seconds | CPU seconds |",
            "|---|---|---|---|---|---|"]
    rows += [f"| {r['n_qubits']} | {r['gates']} | {r['batch']} | {r['method']} | "
             f"{r['seconds']:.4g} | {r['cpu_seconds']:.4g} |" for r in records]
    return "\n".join(rows)
