"""The quantum memory: the QLAM layer (:mod:`~qlam.memory.layer`), its circuits
(:mod:`~qlam.memory.circuits`) and its plain-complex reference (:mod:`~qlam.memory.reference`)."""

from qlam.memory.circuits import prep_circuit, readout_circuit, token_circuit
from qlam.memory.layer import MAX_MEMORY_QUBITS, QLAM
from qlam.memory.reference import qlam_reference
from qlam.sim.measure import sample_probs, walsh_matrix

__all__ = ["QLAM", "MAX_MEMORY_QUBITS", "qlam_reference", "token_circuit", "readout_circuit",
           "prep_circuit", "sample_probs", "walsh_matrix"]
