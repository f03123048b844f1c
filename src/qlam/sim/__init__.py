"""Simulators: the gate-by-gate reference path (statevector), the compiled dense + phase
path (compiled), circuit -> scan lowering (lowering), the multi-token scan and its engines
(scan), measurement (measure) and noise (noise)."""

from qlam.sim.compiled import CompiledCircuit
from qlam.sim.statevector import apply_matrix, run_reference, unitary, zero_state

__all__ = ["CompiledCircuit", "apply_matrix", "run_reference", "unitary", "zero_state"]
