"""Simulators: the gate-by-gate reference path and the compiled (dense + phase) fast path."""

from qlam.sim.compiled import CompiledCircuit
from qlam.sim.statevector import apply_matrix, run_reference, unitary, zero_state

__all__ = ["CompiledCircuit", "apply_matrix", "run_reference", "unitary", "zero_state"]
