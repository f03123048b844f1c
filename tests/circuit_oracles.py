"""Test helpers: random circuits and independent simulators (Qiskit, PennyLane) as oracles.

Peers get the circuit with every angle bound to a number (``Circuit.bind``) and one batch row
at a time; their states are returned in qlam's ordering (wire 0 the most significant bit).
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from qlam.circuit import GATES, Angle, Circuit
from qlam.interop import _pennylane_op, to_qiskit  # noqa: F401  (to_qiskit re-exported)

TWO_QUBIT = [g for g, (nw, _, _) in GATES.items() if nw == 2]
ONE_QUBIT = [g for g, (nw, _, _) in GATES.items() if nw == 1]
N_FEATURES = 3


def random_angle(c: Circuit, rng: random.Random) -> float | Angle:
    r = rng.random()
    if r < 0.3:
        return rng.uniform(-2 * math.pi, 2 * math.pi)
    if r < 0.6:
        return c.new_param(rng.uniform(-math.pi, math.pi))

    def coeff(lo, hi):
        return c.new_param(rng.uniform(lo, hi)) if rng.random() < 0.4 else rng.uniform(lo, hi)

    return c.input(rng.randrange(N_FEATURES), coeff(-2, 2), coeff(-1, 1))


def random_circuit(seed: int, n_qubits: int | None = None, n_gates: int | None = None,
                   kinds: list[str] | None = None) -> Circuit:
    """A random circuit over every gate kind with const / param / input angles."""
    rng = random.Random(seed)
    n = n_qubits if n_qubits is not None else 1 + seed % 8
    n_gates = n_gates if n_gates is not None else rng.randint(1, 25)
    c = Circuit(n)
    pool = kinds or (ONE_QUBIT + TWO_QUBIT if n > 1 else ONE_QUBIT)
    # the first gates of a circuit cycle through the pool, so every kind gets used
    offset = rng.randrange(len(pool))
    for k in range(n_gates):
        name = pool[(offset + k) % len(pool)] if k < len(pool) else rng.choice(pool)
        n_wires, n_angles, _ = GATES[name]
        wires = rng.sample(range(n), n_wires)
        c.append(name, wires, [random_angle(c, rng) for _ in range(n_angles)])
    return c


def random_args(c: Circuit, seed: int, batch: int = 2, dtype=torch.float64):
    """(params (n_params,), inputs (batch, N_FEATURES))."""
    g = torch.Generator().manual_seed(seed)
    params = (torch.rand(c.n_params, generator=g, dtype=dtype) * 2 - 1) * math.pi
    inputs = (torch.rand(batch, N_FEATURES, generator=g, dtype=dtype) * 2 - 1) * math.pi
    return params, inputs


def bound_rows(c: Circuit, params, inputs):
    """The circuit bound to each batch row: list of constant-angle circuits."""
    k = c.n_inputs
    return [c.bind(params, row[:k] if k else None) for row in inputs]


# ---- Qiskit -------------------------------------------------------------------------------
def qiskit_vector(qc) -> np.ndarray:
    """Qiskit state in qlam ordering (Qiskit's qubit 0 is the least significant bit)."""
    from qiskit.quantum_info import Statevector

    return Statevector(qc).reverse_qargs().data


def qiskit_state(bound: Circuit) -> np.ndarray:
    return qiskit_vector(to_qiskit(bound))


# ---- PennyLane ----------------------------------------------------------------------------
def pennylane_state(bound: Circuit) -> np.ndarray:
    import pennylane as qml

    dev = qml.device("default.qubit", wires=bound.n_qubits)

    @qml.qnode(dev)
    def run():
        for op in bound.ops:
            _pennylane_op(qml, op.name, [x.value for x in op.angles], list(op.wires))
        return qml.state()

    return np.asarray(run())
