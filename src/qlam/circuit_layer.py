"""A trainable circuit as a PyTorch module (like PennyLane's ``TorchLayer``).

:class:`CircuitLayer` registers a :class:`~qlam.circuit.Circuit`'s trainable angles as one
``nn.Parameter`` (initialised from the circuit's ``new_param`` values), so an optimizer,
``state_dict`` and ``.to()`` see them, and maps input features to a measured output.
"""

from __future__ import annotations

import torch
from torch import nn

from qlam.circuit import Circuit
from qlam.sim.compiled import CompiledCircuit
from qlam.sim.measure import expval, probabilities

OUTPUTS = ("expval", "probs", "state")


class CircuitLayer(nn.Module):
    """``circuit`` as a module: inputs (B, F) -> measured outputs.

    Args:
        circuit: the circuit; its ``new_param`` angles become the trainable ``weights``
            (n_params,) and its ``input`` angles read the features of ``inputs``.
        observables: Pauli strings for ``output="expval"`` (default: Z on every wire).
        output: ``"expval"`` (B, K) real, ``"probs"`` (B, 2^n) or ``"state"`` (B, 2^n)
            complex (wire 0 the most significant bit).
        dtype: dtype of the weights and of the simulation (float32 or float64).

    Gradients flow to ``weights`` and to ``inputs`` (autograd through the compiled
    simulator; exact, as parameter shift gives).

    Example:
        >>> c = Circuit(2)
        >>> c.ry(0, c.input(0)).ry(1, c.new_param(0.1)).cnot(0, 1)  # doctest: +ELLIPSIS
        Circuit(...)
        >>> layer = CircuitLayer(c, observables=["ZI", "IZ"])
        >>> layer(torch.rand(4, 1)).shape
        torch.Size([4, 2])
    """

    def __init__(self, circuit: Circuit, observables: str | list[str] | None = None,
                 output: str = "expval",
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        if not isinstance(circuit, Circuit):
            raise TypeError(f"CircuitLayer needs a qlam Circuit, got {type(circuit).__name__}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        n = circuit.n_qubits
        if observables is None:
            observables = ["I" * w + "Z" + "I" * (n - w - 1) for w in range(n)]
        elif output != "expval":
            raise ValueError("observables apply to output='expval' only")
        self.output = output
        self.observables = [observables] if isinstance(observables, str) else list(observables)
        if output == "expval":  # validates the strings now, not at the first forward
            expval(torch.ones(1, 2**n, dtype=torch.complex128), self.observables)
        self._compiled = CompiledCircuit(circuit)
        self.circuit = self._compiled.circuit  # as built: later appends to `circuit` stay out
        self.weights = nn.Parameter(circuit.init_params(dtype))

    def forward(self, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """inputs (B, F) (None for a circuit without input angles) -> outputs (B, ...)."""
        dtype = self.weights.dtype
        if inputs is not None and isinstance(inputs, torch.Tensor) and inputs.is_floating_point():
            inputs = inputs.to(dtype)
        psi = self._compiled.run(inputs, self.weights, None, dtype, self.weights.device)
        if self.output == "state":
            return psi
        if self.output == "probs":
            return probabilities(psi)
        return expval(psi, self.observables)

    def extra_repr(self) -> str:
        return (f"n_qubits={self.circuit.n_qubits}, n_params={self.circuit.n_params}, "
                f"n_inputs={self.circuit.n_inputs}, output={self.output!r}")
