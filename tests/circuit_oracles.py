"""Test helpers: random circuits and independent simulators (Qiskit, PennyLane) as oracles.

Peers get the circuit with every angle bound to a number (``Circuit.bind``) and one batch row
at a time; their states are returned in qlam's ordering (wire 0 the most significant bit).
The peers' circuits are built here from the gate list with the peers' own gate classes,
independently of qlam's exporters (qlam.export.to_qiskit / to_pennylane), so one mistake
made in both an exporter and the simulator cannot hide.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from qlam.circuit import GATES, Angle, Circuit

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


def qiskit_circuit(bound: Circuit):
    """A Qiskit QuantumCircuit of a bound circuit, qlam wire w on Qiskit qubit w."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import library as lib

    gates = {"x": lib.XGate, "y": lib.YGate, "z": lib.ZGate, "h": lib.HGate, "s": lib.SGate,
             "sdg": lib.SdgGate, "t": lib.TGate, "tdg": lib.TdgGate, "rx": lib.RXGate,
             "ry": lib.RYGate, "rz": lib.RZGate, "u1": lib.U1Gate, "u2": lib.U2Gate,
             "u3": lib.U3Gate, "cnot": lib.CXGate, "cz": lib.CZGate, "swap": lib.SwapGate,
             "rzz": lib.RZZGate, "rxx": lib.RXXGate, "ryy": lib.RYYGate}
    assert set(gates) == set(GATES), "a qlam gate has no Qiskit oracle"
    qc = QuantumCircuit(bound.n_qubits)
    for op in bound.ops:
        qc.append(gates[op.name](*[a.value for a in op.angles]), list(op.wires))
    return qc


def qiskit_state(bound: Circuit) -> np.ndarray:
    return qiskit_vector(qiskit_circuit(bound))


# ---- PennyLane ----------------------------------------------------------------------------
def pennylane_state(bound: Circuit) -> np.ndarray:
    import pennylane as qml

    gates = {"x": qml.PauliX, "y": qml.PauliY, "z": qml.PauliZ, "h": qml.Hadamard, "s": qml.S,
             "sdg": lambda wires: qml.adjoint(qml.S(wires)), "t": qml.T,
             "tdg": lambda wires: qml.adjoint(qml.T(wires)), "rx": qml.RX, "ry": qml.RY,
             "rz": qml.RZ, "u1": qml.PhaseShift, "u2": qml.U2, "u3": qml.U3, "cnot": qml.CNOT,
             "cz": qml.CZ, "swap": qml.SWAP, "rzz": qml.IsingZZ, "rxx": qml.IsingXX,
             "ryy": qml.IsingYY}
    assert set(gates) == set(GATES), "a qlam gate has no PennyLane oracle"
    dev = qml.device("default.qubit", wires=bound.n_qubits)

    @qml.qnode(dev)
    def run():
        for op in bound.ops:
            gates[op.name](*[a.value for a in op.angles], wires=list(op.wires))
        return qml.state()

    return np.asarray(run())
