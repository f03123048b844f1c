"""OpenQASM 2.0 in and out for qlam circuits: the same as ``Circuit.to_qasm`` and
``Circuit.from_qasm``; what is read and written is described in :mod:`qlam.openqasm`."""

from __future__ import annotations

from qlam import openqasm
from qlam.circuit import Circuit


def to_qasm(circuit: Circuit, params=None, inputs=None) -> str:
    """OpenQASM 2.0 text of ``circuit`` with angles bound to ``params`` and ``inputs``."""
    return circuit.to_qasm(params, inputs)


def from_qasm(text: str, max_gates: int = openqasm.MAX_GATES) -> Circuit:
    """Parse OpenQASM 2.0 text into a :class:`Circuit` with constant angles (at most
    ``max_gates`` gates once expanded)."""
    return Circuit.from_qasm(text, max_gates)


__all__ = ["to_qasm", "from_qasm"]
