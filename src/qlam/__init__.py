"""qlam: Quantum Long-Attention Memory.

Amplitude vectors index basis states with **wire 0 as the most significant bit**
(PennyLane's convention; Qiskit's is the reverse).
"""

from __future__ import annotations

import torch

from qlam.circuit import Angle, Circuit, Op, const
from qlam.sim.compiled import CompiledCircuit
from qlam.sim.measure import counts, estimate_expval, expval, probabilities, sample
from qlam.sim.statevector import run_reference

__version__ = "0.1.0"

from qlam.circuit_layer import CircuitLayer  # noqa: E402
from qlam.memory import QLAM  # noqa: E402  (the layer builds on the simulator above)
from qlam.models.qlam import QLAMClassifier  # noqa: E402


def statevector(circuit: Circuit, inputs=None, params=None, *, state=None, method="compiled",
                dtype=torch.float64, device=None) -> torch.Tensor:
    """Final state (batch, 2^n) complex of ``circuit`` applied to |0...0> (or ``state``).

    inputs: (batch, F) features read by input angles; params: (n_params,) trainable values
    (the circuit's initial values when None). ``method``: "compiled" (diagonal runs merged
    into phase vectors, fixed stretches fused into dense unitaries only where that is
    cheaper for this batch, see :func:`qlam.sim.compiled.fusing_pays`) or "reference" (gate
    by gate).

    Example:
        >>> c = Circuit(2)
        >>> _ = c.h(0).cnot(0, 1)
        >>> statevector(c).abs().square()  # a Bell state
        tensor([[0.5000, 0.0000, 0.0000, 0.5000]], dtype=torch.float64)
    """
    if not isinstance(circuit, Circuit):
        raise TypeError(f"circuit must be a qlam.Circuit, got {type(circuit).__name__}")
    if method == "compiled":
        return CompiledCircuit(circuit).run(inputs, params, state, dtype, device)
    if method == "reference":
        return run_reference(circuit, inputs, params, state, dtype, device)
    raise ValueError(f"method must be 'compiled' or 'reference', got {method!r}")


__all__ = ["Angle", "Circuit", "Op", "const", "statevector", "CompiledCircuit", "__version__",
           "probabilities", "expval", "sample", "counts", "estimate_expval", "QLAM", "QLAMClassifier",
           "CircuitLayer"]
