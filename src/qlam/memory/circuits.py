"""The QLAM layer's circuits, per head of n qubits (the layer binds their angles):
:func:`token_circuit` evolves the memory by one token, :func:`readout_circuit` picks the
query's measurement basis, :func:`prep_circuit` prepares the learned initial state;
:func:`lower_checked` lowers them to scan layers."""

from __future__ import annotations

import math

from qlam.circuit import Circuit
from qlam.sim.lowering import Lowered, lower
from qlam.templates import ring


def token_circuit(n_qubits: int, depth: int = 1) -> Circuit:
    """One token's evolution: per layer, input RZ on every qubit and RZZ on the ring
    (inputs ``depth * (n + pairs)`` angles, in that order), then trainable RX, RY on every
    qubit and RXX, RYY on the ring. Trainable values are placeholders (the layer supplies
    Delta_h · theta)."""
    c = Circuit(n_qubits)
    pairs = ring(n_qubits)
    j = 0
    for _ in range(depth):
        for q in range(n_qubits):
            c.rz(q, c.input(j))
            j += 1
        for a, b in pairs:
            c.rzz(a, b, c.input(j))
            j += 1
        for q in range(n_qubits):
            c.rx(q, c.new_param())
            c.ry(q, c.new_param())
        for a, b in pairs:
            c.rxx(a, b, c.new_param())
            c.ryy(a, b, c.new_param())
    return c


def readout_circuit(n_qubits: int) -> Circuit:
    """The measurement basis: RZ(query) on every qubit, then trainable RY, RZ on every qubit
    and RXX on the ring (then measure in the computational basis)."""
    c = Circuit(n_qubits)
    for q in range(n_qubits):
        c.rz(q, c.input(q))
    for q in range(n_qubits):
        c.ry(q, c.new_param())
        c.rz(q, c.new_param())
    for a, b in ring(n_qubits):
        c.rxx(a, b, c.new_param())
    return c


def prep_circuit(n_qubits: int) -> Circuit:
    """The learned product initial state: RY, RZ on every qubit (starts at |+>^n)."""
    c = Circuit(n_qubits)
    for q in range(n_qubits):
        c.ry(q, c.new_param(math.pi / 2))
        c.rz(q, c.new_param(0.0))
    return c


def lower_checked(circuit: Circuit) -> Lowered:
    """The memory's circuits as scan layers whose phases take plain input angles."""
    lowered = lower(circuit)
    if lowered.param_map.abs().sum() or any(ops is None for ops in lowered.dense):
        raise ValueError("memory circuits must alternate input phases and trainable dense "
                         "blocks")
    return lowered
