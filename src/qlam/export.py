"""Export a trained QLAM head's circuit for one input sequence, and hand it to other tools.

For a model containing QLAM layers (a :class:`~qlam.models.qlam.QLAMClassifier` and one
example ``x`` (L, n_features), any module of yours and its input, or a
:class:`~qlam.memory.QLAM` layer itself and its input (L, d_model)), QLAM layer ``layer``
(counted in module order) and head ``head``, :func:`export_head` runs the model once to
capture the input of that layer (a forward hook), then writes out, with every angle a number:

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

A mixed-memory head (``memory="mixed"``) is a channel, not a unitary: :mod:`qlam.export_mixed`
exports it (its circuit has ancillas and resets); :func:`export_example` (`qlam export`) writes
either kind.

The converters to Qiskit and PennyLane (and the wire-order notes) are in :mod:`qlam.interop`;
``to_qiskit``, ``to_pennylane`` and ``qiskit_to_qlam_order`` are importable from here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from qlam.atomic import atomic_write_text
from qlam.circuit import Circuit
from qlam.data.recall import IGNORE_INDEX
from qlam.evaluate import checkpoint_task, load_qlam
from qlam.export_mixed import MixedHeadExport, export_mixed_head
from qlam.interop import qiskit_to_qlam_order, to_pennylane, to_qiskit
from qlam.memory.layer import QLAM, check_index
from qlam.memory.mixed import MixedQLAM
from qlam.models.qlam import QLAMClassifier
from qlam.sim.noise import circuit_density_matrix, parse_noise


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


def qlam_layers(model: torch.nn.Module) -> list[QLAM]:
    """The QLAM layers of ``model`` in module order (``[model]`` for a layer itself)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"export needs a QLAM layer or a model containing one, got "
                        f"{type(model).__name__}")
    layers = [m for m in model.modules() if isinstance(m, QLAM)]
    if not layers and isinstance(model, QLAMClassifier):
        raise ValueError(f"export_head exports memory='unitary'; this model's layers are "
                         f"{type(model.memories()[0]).__name__}: use "
                         f"qlam.export_mixed.export_mixed_head")
    if not layers:
        raise TypeError(f"export needs a QLAM layer or a model containing one; "
                        f"{type(model).__name__} contains no QLAM layer")
    return layers


def _shape(x) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def capture_memory_input(model, x, layer: int = 0, example: int = 0):
    """The input (1, L, d_model) that QLAM layer number ``layer`` (in module order) of
    ``model`` receives, and that layer.

    ``model`` is a :class:`~qlam.models.qlam.QLAMClassifier` (x: one example (L,
    n_features), or (L,) token ids for a ``discrete`` model), a :class:`~qlam.memory.QLAM`
    layer (x: (L, d_model) or a batch (B, L, d_model)) or any module containing QLAM layers
    (x: what the module takes; it is called as ``model(x)``). ``example`` picks the batch row
    the layer sees. The pass is exact (no shots, no noise) and in eval mode.
    """
    layers = qlam_layers(model)
    mem = layers[check_index("layer", layer, len(layers))]
    if isinstance(model, QLAMClassifier):
        return model.memory_input(x, model.memories().index(mem)), mem
    if model is mem:
        if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3) or x.shape[-1] != mem.d_model:
            raise ValueError(f"x must have shape (length, {mem.d_model}) or (batch, length, "
                             f"{mem.d_model}) for this QLAM layer, got {_shape(x)}")
        x = x[None] if x.dim() == 2 else x
    captured = []

    def hook(_module, args, kwargs):
        if not captured:  # the first call (a layer used twice is exported at its first use)
            state = args[1] if len(args) > 1 else kwargs.get("state")
            captured.append(((args[0] if args else kwargs["x"]).detach(), state))

    handle = mem.register_forward_pre_hook(hook, with_kwargs=True)
    param = next(model.parameters())
    was_training = model.training
    saved = [(m, m.shots, m.noise, m.generator) for m in layers]
    try:
        model.eval()
        for m in layers:
            m.set_readout()
        with torch.no_grad():
            if isinstance(x, torch.Tensor):  # features in the model's dtype; ids as they are
                x = (x.to(device=param.device, dtype=param.dtype) if x.is_floating_point()
                     else x.to(param.device))
            model(x)
    finally:
        handle.remove()
        for m, shots, noise, gen in saved:
            m.set_readout(shots, noise, gen)
        model.train(was_training)
    if not captured:
        raise ValueError(f"QLAM layer {layer} was not called by {type(model).__name__}(x)")
    h_in, state = captured[0]
    if state is not None:
        raise ValueError("the QLAM layer was called with a carried state, but an export starts "
                         "from the learned initial state: export from the start of the stream")
    example = check_index("example", example, h_in.shape[0])
    return h_in[example:example + 1], mem


def export_head(model, x, *, layer: int = 0, head: int = 0, tokens: int | None = None,
                example: int = 0) -> HeadExport:
    """The bound circuits of head ``head`` of QLAM layer ``layer`` (in module order) of
    ``model`` for input x, over its first ``tokens`` tokens (all by default); ``model``
    and ``x`` as in :func:`capture_memory_input`. See the module docstring.

    Example:
        >>> layer = QLAM(d_model=4, n_heads=2, n_qubits=2)
        >>> ex = export_head(layer, torch.randn(6, 4), head=1)
        >>> ex.tokens, ex.circuit.n_qubits
        (6, 2)
    """
    h_in, mem = capture_memory_input(model, x, layer, example)
    layer = qlam_layers(model).index(mem)
    mem64 = mem.exact_copy()
    circuit, readout, tokens = mem64.bound_circuits(h_in.cpu().double(), head, tokens)
    with torch.no_grad():
        probs, final = mem64.probabilities(h_in.cpu().double()[:, :tokens])
    state = final[0, head].to(torch.complex128)
    return HeadExport(circuit=circuit, readout=readout, state=state,
                      probabilities=(state.real.square() + state.imag.square()),
                      readout_probabilities=probs[0, -1, head].double(), layer=layer, head=head,
                      tokens=tokens, n_qubits=mem64.n_qubits)


def head_circuit(model, x, *, layer: int = 0, head: int = 0,
                 tokens: int | None = None) -> Circuit:
    """The bound state circuit (preparation + first ``tokens`` tokens) of one head for one
    example; :func:`export_head` also gives the readout circuit and the model's state."""
    return export_head(model, x, layer=layer, head=head, tokens=tokens).circuit


# ---- a checkpoint's example to files (`qlam export`) ----------------------------------
WIRE_ORDER = ("wire 0 is the most significant bit: probabilities[i] belongs to the basis state "
              "whose bit string format(i, '0{n}b') has wire 0 first; the QASM's q[i] is wire i "
              "(Qiskit orders basis states the other way round: reverse its qubits to compare)")


def _int_in(name: str, value: int, size: int, what: str) -> int:
    if not 0 <= value < size:
        raise ValueError(f"{name} {value} out of range: {what} has {size} "
                         f"(valid 0..{size - 1})")
    return value


def outcome(model, x: torch.Tensor, y: torch.Tensor, target: str, tokens: int) -> dict:
    """The label of one example and the model's prediction, as JSON values: a class index
    or a regression value per sequence; for per-token targets (``"tokens"``) those at the
    last exported token (position ``tokens`` - 1; label None where that position is not a
    target) and the whole sequences under ``labels`` and ``predictions``."""
    with torch.no_grad():
        out = model(model.one_example(x))[0]
    if target == "regression":
        return {"label": float(y), "prediction": float(out[0])}
    if target == "class":
        return {"label": int(y), "prediction": int(out.argmax(-1))}
    labels = [None if v == IGNORE_INDEX else v for v in y.tolist()]
    predictions = out.argmax(-1).tolist()
    return {"label": labels[tokens - 1], "prediction": predictions[tokens - 1],
            "labels": labels, "predictions": predictions}


def export_example(checkpoint, out, *, index: int, task: str | None = None, layer: int = 0,
                   head: int = 0, tokens: int | None = None, split: str = "test",
                   noise=None, backend: str | None = None, basis: int | None = None) -> dict:
    """Write ``out`` (OpenQASM 2.0) and ``out`` with .json (probabilities, readout, metadata)
    for example ``index`` of ``split``; returns the JSON record. ``noise`` (e.g.
    "depolarizing:0.001") adds the exact density-matrix probabilities of the same circuits
    with that channel after every gate on each wire it touches (key ``noisy``). ``backend``
    (a fake IBM backend, see :mod:`qlam.hardware`) adds the measured circuit transpiled for
    it: depth, two-qubit gates, estimated success probability (key ``hardware``), and writes
    that circuit to ``out`` with suffix .BACKEND.qasm. ``noise`` and ``backend`` are for
    memory='unitary'; a memory='mixed' head is exported as its channel (ancillas, resets; see
    :mod:`qlam.export_mixed`), read in its readout basis ``basis`` (default 0)."""
    channel = parse_noise(noise)
    if backend is not None:
        from qlam.hardware import get_backend

        backend = get_backend(backend)  # an unknown name fails before any work
    out = Path(out)
    if out.is_dir() or out.with_suffix(".json").is_dir():
        raise ValueError(f"--out {out} is a directory; it must name the QASM file to write "
                         f"(e.g. {out / 'circuit.qasm'})")
    model, ck = load_qlam(checkpoint)
    _int_in("layer", layer, len(model.blocks), "the model's block list")
    mem = model.blocks[layer].memory
    _int_in("head", head, mem.n_heads, f"block {layer}'s QLAM layer")
    if tokens is not None and tokens < 1:
        raise ValueError(f"tokens must be >= 1, got {tokens}")
    mixed = isinstance(mem, MixedQLAM)
    if mixed and (channel is not None or backend is not None):
        raise ValueError("--noise and --backend are for memory='unitary' exports; a "
                         "memory='mixed' head is exported as its channel, without them")
    if mixed:
        basis = _int_in("basis", 0 if basis is None else basis, mem.n_bases,
                        f"block {layer}'s readout basis list")
    elif basis is not None:
        raise ValueError("--basis picks one of a memory='mixed' head's readout bases; this "
                         "model's memory is unitary (its readout is the query-chosen basis)")
    cfg, t = checkpoint_task(ck, task, split)
    data = t.split(split)
    _int_in("index", index, len(data), f"the {cfg.task} {split} split")
    x, y = data[index]
    if tokens is not None and tokens > x.shape[0]:
        raise ValueError(f"tokens must lie in 1..{x.shape[0]} (the sequence length), got {tokens}")
    info = {"checkpoint": str(checkpoint), "model": ck.get("model_name"), "task": cfg.task,
            "split": split, "index": index, "target": t.target,
            **outcome(model, x, y, t.target, tokens or x.shape[0]),
            "layer": layer, "head": head, "sequence_length": int(x.shape[0]),
            "n_heads": mem.n_heads, "n_layers": len(model.blocks), "qasm": out.name}
    if mixed:
        ex = export_mixed_head(model, x, layer=layer, head=head, tokens=tokens, basis=basis)
        qasm, record = ex.measured.to_qasm(), _mixed_record(ex, mem, info)
    else:
        ex = export_head(model, x, layer=layer, head=head, tokens=tokens)
        qasm, record = ex.circuit.to_qasm(), _unitary_record(ex, mem, info, channel)
    if backend is not None:
        from qiskit import qasm2

        from qlam.hardware import device_report

        record["hardware"], tqc = device_report(ex, backend)
        record["hardware"]["qasm"] = out.with_suffix(f".{backend.name}.qasm").name
        atomic_write_text(out.with_suffix(f".{backend.name}.qasm"), qasm2.dumps(tqc))
    atomic_write_text(out, qasm)
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=1))
    return record


def _metadata(info: dict, ex, circuit) -> dict:
    """The metadata both memories share, in the order users read it."""
    n = ex.n_qubits
    return {**info, "tokens": ex.tokens, "n_qubits": n, "gates": circuit.gate_count(),
            "n_gates": len(circuit), "circuit_depth": circuit.depth(),
            "wire_order": WIRE_ORDER.format(n=n)}


def _unitary_record(ex: HeadExport, mem: QLAM, info: dict, channel) -> dict:
    record = {
        "probabilities": ex.probabilities.tolist(),
        "amplitudes": {"real": ex.state.real.tolist(), "imag": ex.state.imag.tolist()},
        "readout": None if ex.readout is None else {
            "token": ex.tokens - 1,
            "probabilities": ex.readout_probabilities.tolist(),
            "qasm": ex.readout.to_qasm(),
            "note": "the query-chosen measurement basis of the last exported token: apply this "
                    "circuit after the state circuit, then measure every qubit; these are the "
                    "model's Born probabilities of that measurement",
        },
        "metadata": {
            **_metadata(info, ex, ex.circuit), "memory": "unitary",
            "depth": mem.depth, "query_basis": mem.query_basis,
            "circuit": "state preparation (RY, RZ per qubit) from |0...0>, then each token's "
                       "circuit (input RZ and ring RZZ, trainable RX, RY and ring RXX, RYY, per "
                       "layer) with the trained and input-derived angles; probabilities are "
                       "|psi_K|^2 at its end, computed by the model's own recurrence (float64)",
        },
    }
    if channel is not None:
        rho = circuit_density_matrix(ex.circuit, channel)
        noisy = {"noise": str(channel),
                 "placement": "after every gate, on each wire it touches (exact density matrix)",
                 "probabilities": torch.diagonal(rho).real.tolist()}
        if ex.readout is not None:
            rho_read = circuit_density_matrix(ex.readout, channel, rho=rho)
            noisy["readout_probabilities"] = torch.diagonal(rho_read).real.tolist()
        record["noisy"] = noisy
    return record


def _mixed_record(ex: MixedHeadExport, mem: MixedQLAM, info: dict) -> dict:
    circuit, n = ex.measured, ex.n_qubits
    return {
        "probabilities": ex.readout_probabilities.tolist(),
        "amplitudes": None,
        "density_matrix": {"real": ex.readout_state.real.tolist(),
                           "imag": ex.readout_state.imag.tolist()},
        "readout": {
            "token": ex.tokens - 1, "basis": ex.basis, "n_bases": mem.n_bases,
            "probabilities": ex.readout_probabilities.tolist(),
            "qasm": ex.readout.to_qasm(),
            "note": "the trained readout basis R (number basis of the head's n_bases, picked "
                    "by --basis), already the last gates of the exported circuit (on q): "
                    "measure q after it; probabilities are the model's Born probabilities of "
                    "that measurement (the memory before R is R^dag rho R)",
        },
        "metadata": {
            **_metadata(info, ex, circuit), "memory": "mixed", "depth": 1,
            "query_basis": False, "selective": mem.selective, "dephasing": mem.dephasing,
            "n_qubits_total": circuit.n_qubits, "resets": circuit.gate_count().get("reset", 0),
            "registers": {
                "q": f"the memory, {n} qubits: its reduced density matrix is the model's",
                "fresh": f"{n} ancillas: each token's write prepares RY(alpha), RZ(beta) here, "
                         "a controlled SWAP moves it into q, then they are reset",
                "anc": "1 ancilla: the phase damping's controlled-RY target and the write's "
                       "control (RY(2 asin sqrt(a_t))), reset after each use",
            },
            "circuit": "the head's initial state on q (RY, RZ per qubit) from |0...0>, then per "
                       "token: V^dag, the token's Z-string rotations (RZ, RZZ, CX ladders), "
                       "phase damping per qubit (CRY onto anc, reset), V, reset-and-write "
                       "(fresh prepared, anc in RY(2 asin sqrt(a_t)), CSWAP per qubit, resets); "
                       "then the readout basis R. probabilities and density_matrix are the "
                       "memory's at its end (ancillas traced out), computed by the model's "
                       "own recurrence (float64)",
        },
    }


__all__ = ["HeadExport", "export_head", "MixedHeadExport", "export_mixed_head", "export_example",
           "head_circuit", "capture_memory_input", "qlam_layers", "to_qiskit", "to_pennylane",
           "qiskit_to_qlam_order"]
