"""Export a trained QLAM head's circuit for one input sequence, and hand it to other tools.

For a :class:`~qlam.models.qlam.QLAMClassifier`, example ``x`` (L, n_features), block
``layer`` and head ``head``, :func:`export_head` runs the model once to capture the input of
that block's QLAM layer (a forward hook), then writes out, with every angle a number:

* the **state circuit**: the head's state preparation from |0...0> (RY, RZ per qubit with the
  trained ``prep_theta[head]``), then, for each of the first K tokens, the token circuit
  :func:`qlam.memory.token_circuit` bound with input angles ``Delta_h * in_proj(x_t)[head]``
  and trainable angles ``Delta_h * theta[head]``. Its final state is the head's memory
  |psi_K>;
* the **readout circuit** of token K (its query-chosen measurement basis, when the layer has
  one): RZ(q_K) and the trained ``read_theta[head]`` gates. Measuring |psi_K> after it in the
  computational basis gives the probabilities that the layer turns into Pauli-Z expectations.

Along with them come the model's own |psi_K>, its probabilities and the readout
probabilities, computed by the layer itself (the fused recurrence, in float64), so anyone can
check the circuit against the model with another simulator.

Wire order: wire 0 is the most significant bit of a basis-state index (qlam's and
PennyLane's convention). :func:`to_qiskit` maps wire i to Qiskit qubit i, so the QASM text and
the Qiskit circuit agree; Qiskit indexes basis states with qubit 0 as the *least*
significant bit, so reverse the qubit order to compare: ``Statevector(qc).reverse_qargs()``
or ``qiskit_to_qlam_order(probs)``. :func:`to_pennylane` maps wire i to PennyLane wire i, and
``qml.state()`` / ``qml.probs()`` already use qlam's order.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from qlam.circuit import Circuit
from qlam.memory import QLAM


@dataclass
class HeadExport:
    """One head's circuits for one example, and the model's own results for them."""

    circuit: Circuit  # state preparation + the first ``tokens`` token circuits, bound
    readout: Circuit | None  # readout basis of the last exported token (None: plain Z basis)
    state: torch.Tensor  # (2^n,) complex128: the model's |psi_K> (wire 0 the top bit)
    probabilities: torch.Tensor  # (2^n,) |psi_K|^2
    readout_probabilities: torch.Tensor  # (2^n,) the model's probabilities after the readout
    layer: int
    head: int
    tokens: int
    n_qubits: int

    @property
    def measured(self) -> Circuit:
        """The circuit measured for the last token's readout: state circuit + readout."""
        c = Circuit(self.n_qubits)
        c.extend(self.circuit)
        if self.readout is not None:
            c.extend(self.readout)
        return c


@contextmanager
def _exact(model: torch.nn.Module):
    """Temporarily no shots and no noise on any QLAM layer (a deterministic capture)."""
    saved = [(m, m.shots, m.noise) for m in model.modules() if isinstance(m, QLAM)]
    try:
        for m, _, _ in saved:
            m.shots, m.noise = None, None
        yield
    finally:
        for m, shots, noise in saved:
            m.shots, m.noise = shots, noise


def _check_index(name: str, value, size: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value < size:
        raise ValueError(f"{name} {value} out of range: 0..{size - 1}")
    return int(value)


def capture_memory_input(model, x: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """The input (1, L, d_model) that block ``layer``'s QLAM layer receives for example x."""
    from qlam.models.qlam import QLAMClassifier

    if not isinstance(model, QLAMClassifier):
        raise TypeError(f"export needs a QLAMClassifier, got {type(model).__name__}")
    layer = _check_index("layer", layer, len(model.blocks))
    discrete = getattr(model, "discrete", False)  # token ids (length,) instead of features
    fits = isinstance(x, torch.Tensor) and (x.dim() == 1 if discrete else
                                            x.dim() == 2 and x.shape[1] == model.n_features)
    if not fits:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        want = "(length,) token ids" if discrete else f"(length, {model.n_features})"
        raise ValueError(f"x must be one example of shape {want}, got {shape}")
    captured = []

    def hook(_module, args):
        captured.append(args[0].detach())

    handle = model.blocks[layer].memory.register_forward_pre_hook(hook)
    param = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), _exact(model):
            model(x[None].to(param.device) if discrete else
                  x[None].to(device=param.device, dtype=param.dtype))
    finally:
        handle.remove()
        model.train(was_training)
    return captured[0]


def export_head(model, x: torch.Tensor, *, layer: int = 0, head: int = 0,
                tokens: int | None = None) -> HeadExport:
    """The bound circuits of head ``head`` of block ``layer`` for example x (L, n_features),
    over its first ``tokens`` tokens (all by default); see the module docstring."""
    h_in = capture_memory_input(model, x, layer).cpu().double()
    mem: QLAM = model.blocks[layer].memory
    head = _check_index("head", head, mem.n_heads)
    length = h_in.shape[1]
    if tokens is None:
        tokens = length
    if isinstance(tokens, bool) or not isinstance(tokens, (int, np.integer)):
        raise TypeError(f"tokens must be an int, got {type(tokens).__name__}")
    if not 1 <= tokens <= length:
        raise ValueError(f"tokens must lie in 1..{length} (the sequence length), got {tokens}")
    tokens = int(tokens)
    mem64 = copy.deepcopy(mem).cpu().double()
    mem64.shots, mem64.noise = None, None
    h_in = h_in[:, :tokens]
    n = mem64.n_qubits
    with torch.no_grad():
        dt = mem64.dt()[head]
        angles = mem64.in_proj(h_in).view(tokens, mem64.n_heads, mem64.n_angles)[:, head] * dt
        theta = mem64.theta[head] * dt
        circuit = Circuit(n)
        circuit.extend(mem64.prep.bind(mem64.prep_theta[head]))
        for t in range(tokens):
            circuit.extend(mem64.circuit.bind(theta, angles[t]))
        readout = None
        if mem64.query_basis:
            q = mem64.q_basis(h_in[0, -1]).view(mem64.n_heads, n)[head]
            readout = mem64.read.bind(mem64.read_theta[head], q)
        probs, final = mem64.probabilities(h_in)
    state = final[0, head].to(torch.complex128)
    return HeadExport(circuit=circuit, readout=readout, state=state,
                      probabilities=(state.real.square() + state.imag.square()),
                      readout_probabilities=probs[0, -1, head].double(), layer=layer, head=head,
                      tokens=tokens, n_qubits=n)


def head_circuit(model, x: torch.Tensor, *, layer: int = 0, head: int = 0,
                 tokens: int | None = None) -> Circuit:
    """The bound state circuit (preparation + first ``tokens`` tokens) of one head for one
    example; :func:`export_head` also gives the readout circuit and the model's state."""
    return export_head(model, x, layer=layer, head=head, tokens=tokens).circuit


# ---- other tools --------------------------------------------------------------------------
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
    from qlam.sim.noise import parse_noise

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


__all__ = ["HeadExport", "export_head", "head_circuit", "capture_memory_input", "to_qiskit",
           "to_pennylane", "qiskit_to_qlam_order"]
