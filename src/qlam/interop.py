"""qlam circuits in other tools: Qiskit (:func:`to_qiskit`, :func:`append_qiskit`,
:func:`qiskit_to_qlam_order`) and PennyLane (:func:`to_pennylane`). Each imports its tool
when called.

Wire order: wire 0 is the most significant bit of a basis-state index (qlam's and
PennyLane's convention). :func:`to_qiskit` maps wire i to Qiskit qubit i, so the QASM text and
the Qiskit circuit agree; Qiskit indexes basis states with qubit 0 as the *least*
significant bit, so reverse the qubit order to compare: ``Statevector(qc).reverse_qargs()``
or ``qiskit_to_qlam_order(probs)``. :func:`to_pennylane` maps wire i to PennyLane wire i, and
``qml.state()`` / ``qml.probs()`` already use qlam's order.
"""

from __future__ import annotations

import math

import numpy as np

from qlam.circuit import Circuit
from qlam.sim.noise import parse_noise


def _bound(circuit: Circuit, params=None, inputs=None) -> Circuit:
    if not isinstance(circuit, Circuit):
        raise TypeError(f"expected a qlam Circuit, got {type(circuit).__name__}")
    if circuit.n_params or circuit.n_inputs or params is not None or inputs is not None:
        return circuit.bind(params, inputs)
    return circuit


def to_qiskit(circuit: Circuit, params=None, inputs=None):
    """A ``qiskit.QuantumCircuit`` (no measurements) of ``circuit``, its angles bound to
    ``params``/``inputs`` if it has any. qlam wire i is Qiskit qubit i (as in the QASM); Qiskit
    numbers basis states with qubit 0 as the least significant bit, so
    ``Statevector(qc).reverse_qargs()`` is in qlam's order. Imports qiskit here."""
    try:
        from qiskit import QuantumCircuit
    except ModuleNotFoundError as exc:
        raise RuntimeError("to_qiskit needs qiskit: pip install qiskit") from exc
    bound = _bound(circuit, params, inputs)
    qc = QuantumCircuit(bound.n_qubits)
    for op in bound.ops:
        append_qiskit(qc, op.name, [x.value for x in op.angles], list(op.wires))
    return qc


def append_qiskit(qc, name: str, a: list, w: list[int]) -> None:
    """Append qlam gate ``name`` with angles ``a`` (numbers or Qiskit parameter expressions)
    on wires ``w`` to the Qiskit circuit ``qc``."""
    if name == "u1":
        qc.p(a[0], w[0])
    elif name == "u2":
        qc.u(math.pi / 2, a[0], a[1], w[0])
    elif name == "u3":
        qc.u(a[0], a[1], a[2], w[0])
    elif name == "cnot":
        qc.cx(*w)
    else:  # x y z h s sdg t tdg rx ry rz cz swap rzz rxx ryy: same names and conventions
        getattr(qc, name)(*a, *w)


def qiskit_to_qlam_order(values, n_qubits: int) -> np.ndarray:
    """Reorder a length-2^n vector (probabilities or amplitudes) from Qiskit's basis-state
    order (qubit 0 the least significant bit) to qlam's (wire 0 the most significant)."""
    v = np.asarray(values)
    if v.shape != (2**n_qubits,):
        raise ValueError(f"expected a vector of length {2**n_qubits}, got shape {v.shape}")
    return v.reshape((2,) * n_qubits).transpose(tuple(reversed(range(n_qubits)))).reshape(-1)


def _pennylane_op(qml, name: str, a: list[float], w: list[int]):
    table = {
        "x": qml.PauliX, "y": qml.PauliY, "z": qml.PauliZ, "h": qml.Hadamard, "s": qml.S,
        "t": qml.T, "rx": qml.RX, "ry": qml.RY, "rz": qml.RZ, "u1": qml.U1, "u2": qml.U2,
        "u3": qml.U3, "cnot": qml.CNOT, "cz": qml.CZ, "swap": qml.SWAP, "rzz": qml.IsingZZ,
        "rxx": qml.IsingXX, "ryy": qml.IsingYY,
    }
    if name in ("sdg", "tdg"):
        return qml.adjoint(table[name[0]](wires=w))
    return table[name](*a, wires=w)


_PENNYLANE_CHANNELS = {"depolarizing": "DepolarizingChannel",
                       "amplitude_damping": "AmplitudeDamping", "bitflip": "BitFlip"}


def to_pennylane(circuit: Circuit, params=None, inputs=None, *, noise=None):
    """A PennyLane quantum function ``qfunc()`` that applies ``circuit`` (angles bound to
    ``params``/``inputs`` if it has any) on wires 0..n-1; use it inside a QNode, e.g.
    ``qml.QNode(lambda: (qfunc(), qml.probs(wires=range(n)))[1], dev)``. qlam wire i is
    PennyLane wire i, and PennyLane's state and probabilities use qlam's order. ``noise``
    (a channel spec such as "depolarizing:0.01") inserts that channel on every wire of every
    gate, after the gate (for ``default.mixed``). Imports pennylane here."""
    try:
        import pennylane as qml
    except ModuleNotFoundError as exc:
        raise RuntimeError("to_pennylane needs pennylane: pip install pennylane") from exc
    bound = _bound(circuit, params, inputs)
    channel = parse_noise(noise)
    ops = [(op.name, [x.value for x in op.angles], list(op.wires)) for op in bound.ops]

    def qfunc():
        for name, a, w in ops:
            _pennylane_op(qml, name, a, w)
            if channel is not None:
                for wire in w:
                    getattr(qml, _PENNYLANE_CHANNELS[channel.kind])(channel.p, wires=wire)

    qfunc.n_qubits = bound.n_qubits
    return qfunc


__all__ = ["to_qiskit", "append_qiskit", "qiskit_to_qlam_order", "to_pennylane"]
