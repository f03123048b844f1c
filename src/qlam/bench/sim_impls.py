"""The implementations `qlam bench sim` times, all on one circuit (:func:`benchmark_circuit`),
each doing forward + backward on a :class:`Setup`: qlam's scan paths, the gate-by-gate
reference, and the peers' adapters (PennyLane default.qubit and lightning.qubit, Qiskit Aer).
What each row means and how it is timed: :mod:`qlam.bench.sim`. Add a row with :func:`register`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from qlam.bench import sim_peers
from qlam.circuit import Circuit
from qlam.sim import circuit_scan as circuit_scan_module
from qlam.sim.circuit_scan import circuit_scan
from qlam.sim.measure import probabilities
from qlam.sim.scan import cpp
from qlam.sim.statevector import apply_ops, zero_state
from qlam.templates import ring


def benchmark_circuit(n_qubits: int, generator: torch.Generator | None = None) -> Circuit:
    """RZ(x_t) on every qubit, then trainable RY, RZ on every qubit, then a CNOT ring."""
    c = Circuit(n_qubits)
    for q in range(n_qubits):
        c.rz(q, c.input(0))
    for q in range(n_qubits):
        for gate in (c.ry, c.rz):
            init = float(torch.rand((), generator=generator, dtype=torch.float64) * 2 - 1)
            gate(q, c.new_param(math.pi * init))
    for a, b in ring(n_qubits):
        c.cnot(a, b)
    return c


@dataclass
class Setup:
    """One benchmark case; ``x`` (B, L, 1) holds the tokens, ``weights`` (2^n,) the loss."""

    circuit: Circuit
    theta: torch.Tensor  # (n_params,) leaf, requires grad
    x: torch.Tensor  # (B, L, 1)
    weights: torch.Tensor  # (2^n,)

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def n_qubits(self) -> int:
        return self.circuit.n_qubits

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def tokens(self) -> int:
        return self.x.shape[1]

    def prefix(self, tokens: int) -> Setup:
        return Setup(self.circuit, self.theta, self.x[:, :tokens].contiguous(), self.weights)


def make_setup(n_qubits: int, batch: int, seq_len: int, dtype=torch.float32,
               seed: int = 0, device: str | torch.device = "cpu") -> Setup:
    """A case drawn on the CPU from ``seed`` (the same numbers on every device), then moved
    to ``device``."""
    g = torch.Generator().manual_seed(seed)
    circuit = benchmark_circuit(n_qubits, g)
    theta = circuit.init_params(dtype).to(device).requires_grad_()
    x = torch.rand(batch, seq_len, 1, generator=g, dtype=torch.float64).to(device, dtype)
    weights = torch.randn(2**n_qubits, generator=g, dtype=torch.float64).to(device, dtype)
    return Setup(circuit, theta, x, weights)


# ---- implementations: each returns the loss after forward AND backward ----------------------
def _circuit_loss(s: Setup, method: str, backward: str = "auto") -> torch.Tensor:
    _, last = circuit_scan(s.circuit, s.theta, s.x, method=method, backward=backward)
    probs = last[:, 0, 0].square() + last[:, 0, 1].square()
    loss = probs @ s.weights
    loss.sum().backward()
    return loss.detach().sum()


def run_compiled(s: Setup) -> torch.Tensor:
    return _circuit_loss(s, "dense", "reversible")


def run_compiled_autograd(s: Setup) -> torch.Tensor:
    return _circuit_loss(s, "dense", "autograd")


def run_kernel(s: Setup) -> torch.Tensor:
    return _circuit_loss(s, "dense", "kernel")


def run_factored(s: Setup) -> torch.Tensor:
    return _circuit_loss(s, "factored")


def _factored_with_wire_min(s: Setup, wire_min: float) -> torch.Tensor:
    """qlam-factored with ``circuit_scan.WIRE_MIN_QUBITS`` set to ``wire_min`` for the call."""
    threshold = circuit_scan_module.WIRE_MIN_QUBITS
    circuit_scan_module.WIRE_MIN_QUBITS = wire_min
    try:
        return _circuit_loss(s, "factored")
    finally:
        circuit_scan_module.WIRE_MIN_QUBITS = threshold


def run_factored_rotated(s: Setup) -> torch.Tensor:
    """The phases always applied as a rotation of the state, never folded into the gates."""
    return _factored_with_wire_min(s, math.inf)


def run_factored_wire(s: Setup) -> torch.Tensor:
    """The phases always folded into the gates per wire (where separable), at every size:
    with qlam-factored-rotated, the two sides of ``circuit_scan.WIRE_MIN_QUBITS``."""
    return _factored_with_wire_min(s, 0)


def run_auto(s: Setup) -> torch.Tensor:
    return _circuit_loss(s, "auto")


def run_reference(s: Setup) -> torch.Tensor:
    n = s.n_qubits
    psi = zero_state(n, s.batch, s.x.dtype, s.device)
    for x_t in s.x.unbind(1):  # (B, 1) per token; no [:, t] indexing in the loop
        psi = apply_ops(psi, s.circuit.ops, n, s.theta, x_t)
    loss = probabilities(psi) @ s.weights
    loss.sum().backward()
    return loss.detach().sum()


def _pennylane_gate(qml, name: str):
    return {"rx": qml.RX, "ry": qml.RY, "rz": qml.RZ, "cnot": qml.CNOT, "cz": qml.CZ,
            "h": qml.Hadamard, "x": qml.PauliX, "z": qml.PauliZ, "swap": qml.SWAP,
            "rzz": qml.IsingZZ, "rxx": qml.IsingXX, "ryy": qml.IsingYY}[name]


def run_pennylane(s: Setup) -> torch.Tensor:
    import pennylane as qml

    n = s.n_qubits
    dev = qml.device("default.qubit", wires=n)
    ops = [(_pennylane_gate(qml, op.name), op.angles, list(op.wires)) for op in s.circuit.ops]

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def circuit(theta, x):
        for x_t in x.unbind(1):  # angles broadcast over the batch: (B,)
            for gate, angles, wires in ops:
                gate(*(a.evaluate(theta, x_t) for a in angles), wires=wires)
        return qml.probs(wires=range(n))

    loss = circuit(s.theta, s.x) @ s.weights.to(torch.float64)
    loss.sum().backward()
    return loss.detach().sum()


def run_lightning(s: Setup) -> torch.Tensor:
    """lightning.qubit, adjoint differentiation. Adjoint differentiates expectation values,
    not probabilities, so the loss is <diag(weights)> (equal to probs @ weights); the batch
    is broadcast, which PennyLane runs as one circuit per example."""
    import pennylane as qml

    n = s.n_qubits
    dev = qml.device("lightning.qubit", wires=n)
    ops = [(_pennylane_gate(qml, op.name), op.angles, list(op.wires)) for op in s.circuit.ops]
    obs = qml.Hermitian(torch.diag(s.weights.detach().to(torch.float64)).numpy(),
                        wires=range(n))

    @qml.qnode(dev, interface="torch", diff_method="adjoint")
    def circuit(theta, x):
        for x_t in x.unbind(-2):
            for gate, angles, wires in ops:
                gate(*(a.evaluate(theta, x_t) for a in angles), wires=wires)
        return qml.expval(obs)

    x = s.x.to(torch.float64)
    # the torch interface turns the device's float64 results into tensors of the default
    # dtype: make that float64, as lightning computes
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        if s.batch == 1:  # a broadcast dimension of size 1 is still a broadcast: keep it plain
            loss = circuit(s.theta, x[0]).reshape(1)  # tokens (L, 1): scalar angles
        else:
            loss = circuit(s.theta, x)  # tokens (B, L, 1): angles broadcast over the batch
        loss.sum().backward()
    finally:
        torch.set_default_dtype(default)
    return loss.detach().sum()


# Qiskit Aer: a parameterised circuit (one parameter per input angle and token, one per
# trainable angle), transpiled once per shape; a run binds every example and simulates.
_AER_CACHE: dict = {}


def _aer_circuit(s: Setup):
    key = (sim_peers.structure(s.circuit), s.tokens)  # not id(): Python reuses ids
    if key in _AER_CACHE:
        return _AER_CACHE[key]
    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit import Parameter
    from qiskit_aer import AerSimulator

    n = s.n_qubits
    qc = QuantumCircuit(n)
    inputs: list[tuple[Parameter, int, object]] = []  # (parameter, token, Angle)
    params: dict[int, Parameter] = {}

    def angle(a, t):
        if a.kind == "const":
            return a.value
        if a.kind == "param":
            if a.index not in params:
                params[a.index] = Parameter(f"theta{a.index}")
            return params[a.index]
        p = Parameter(f"x{t}_{len(inputs)}")
        inputs.append((p, t, a))
        return p

    for t in range(s.tokens):
        for op in s.circuit.ops:
            wires = [n - 1 - w for w in op.wires]  # qlam wire 0 (MSB) -> Qiskit qubit n-1
            a = [angle(x, t) for x in op.angles]
            getattr(qc, "cx" if op.name == "cnot" else op.name)(*a, *wires)
    qc.save_statevector()
    sim = AerSimulator(method="statevector", max_parallel_threads=torch.get_num_threads())
    tqc = transpile(qc, sim, optimization_level=0)
    _AER_CACHE.clear()  # one shape at a time
    _AER_CACHE[key] = (sim, tqc, inputs, params)
    return _AER_CACHE[key]


def run_aer(s: Setup) -> torch.Tensor:
    """Forward only: final states of every example on Aer, then the same loss."""
    import numpy as np

    sim, tqc, inputs, params = _aer_circuit(s)
    theta = s.theta.detach().double()
    x = s.x.detach().double()
    binds = {p: [float(theta[i])] * s.batch for i, p in params.items()}
    for p, t, a in inputs:
        binds[p] = torch.as_tensor(a.evaluate(theta, x[:, t])).expand(s.batch).tolist()
    result = sim.run(tqc, parameter_binds=[binds]).result()
    w = s.weights.detach().double().numpy()
    states = [np.asarray(result.data(i)["statevector"]) for i in range(s.batch)]
    loss = sum(float(np.abs(v) ** 2 @ w) for v in states)
    return torch.tensor(loss, dtype=torch.float64)


def prepare_aer(s: Setup) -> None:
    _aer_circuit(s)


@dataclass
class Impl:
    """A benchmarked implementation: ``run(setup)`` does forward + backward and returns the
    loss (forward only where ``forward_only``). ``quick_tokens`` / ``full_tokens`` cap the
    tokens it runs (None: all); ``cost`` ("dense", "factored", "auto", "gates" or None) sets how the work
    budget scales with n and batch (:func:`tokens_for`); ``prepare(setup)`` runs untimed
    before the timed runs (a compilation it times goes into ``sim_peers.COMPILE_SECONDS``);
    ``version()`` names the peer's package versions for the record; ``start()`` raises where
    the installed package cannot start (a broken install; None: nothing to try); ``atol``
    loosens the agreement check (float64, 1e-8) for a peer that computes in single precision;
    ``on_device(type)`` says whether the row runs on tensors of that device type ("cpu",
    "cuda"; default: CPU only) and ``qubits`` (lo, hi) bounds the register sizes it takes
    (None: any)."""

    name: str
    run: Callable[[Setup], torch.Tensor]
    quick_tokens: int | None = None
    full_tokens: int | None = None
    available: Callable[[], bool] = lambda: True
    forward_only: bool = False
    cost: str | None = None
    prepare: Callable[[Setup], None] | None = None
    version: Callable[[], str] | None = None
    start: Callable[[], None] | None = None
    atol: float | None = None
    on_device: Callable[[str], bool] = lambda device_type: device_type == "cpu"
    qubits: tuple[int, int] | None = None

    def takes(self, n_qubits: int) -> bool:
        return self.qubits is None or self.qubits[0] <= n_qubits <= self.qubits[1]

    @property
    def mode(self) -> str:
        return "forward" if self.forward_only else "train"


def _has(*modules: str) -> Callable[[], bool]:
    def check() -> bool:
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in modules)

    return check


pennylane_version = sim_peers.versions_of("pennylane", "pennylane-lightning")
aer_version = sim_peers.versions_of("qiskit", "qiskit-aer")


def _start_lightning() -> None:
    """Create a lightning.qubit device: raises where the installed plugin is broken."""
    import pennylane as qml

    qml.device("lightning.qubit", wires=1)


IMPLS: dict[str, Impl] = {}
BASELINE = "pennylane-default.qubit"
# the other simulators (the "fastest peer" of the side-by-side table)
PEERS = ("tensorcircuit-jax", "qulacs", "torchquantum", BASELINE, "pennylane-lightning.qubit",
         "qiskit-aer-forward")
QLAM_ROWS = ("qlam-auto", "qlam-kernel", "qlam-compiled")  # the "qlam" of the ratio column: first present


def register(impl: Impl) -> Impl:
    """Add (or replace) an implementation row."""
    IMPLS[impl.name] = impl
    return impl


def _any_device(device_type: str) -> bool:
    return True


def _cuda_only(device_type: str) -> bool:
    return device_type == "cuda"


# the PyTorch paths run on any device; the C++ kernel rows on the CPU only; on CUDA
# "kernel" is the Triton engine (4..6 qubits: qlam.sim.scan.triton_engine's MIN / MAX_QUBITS)
register(Impl("qlam-compiled", run_compiled, cost="dense", on_device=_any_device))
register(Impl("qlam-compiled-autograd", run_compiled_autograd, cost="dense",
              on_device=_any_device))
register(Impl("qlam-kernel", run_kernel, available=cpp.available, cost="dense"))
register(Impl("qlam-triton", run_kernel, available=_has("triton"), cost="dense",
              on_device=_cuda_only, qubits=(4, 6)))
register(Impl("qlam-factored", run_factored, cost="factored", on_device=_any_device))
register(Impl("qlam-factored-rotated", run_factored_rotated, cost="factored"))
register(Impl("qlam-factored-wire", run_factored_wire, cost="factored"))
register(Impl("qlam-auto", run_auto, cost="auto", on_device=_any_device))
register(Impl("qlam-reference", run_reference, quick_tokens=16, full_tokens=64, cost="gates",
              on_device=_any_device))
# PennyLane's per-token rate falls as the sequence grows (about 17k tokens/s at 8 tokens,
# 9.5k at 96, n=6), so a short prefix flatters it: the ratios below are conservative.
register(Impl(BASELINE, run_pennylane, quick_tokens=32, full_tokens=128,
              available=_has("pennylane"), cost="gates", version=pennylane_version))
register(Impl("pennylane-lightning.qubit", run_lightning, quick_tokens=8, full_tokens=32,
              available=_has("pennylane", "pennylane_lightning"), start=_start_lightning,
              cost="gates", version=pennylane_version))
register(Impl("tensorcircuit-jax", sim_peers.run_tensorcircuit, quick_tokens=128,
              full_tokens=784, available=_has("tensorcircuit", "jax"), cost="gates",
              prepare=sim_peers.prepare_tensorcircuit, version=sim_peers.tensorcircuit_version,
              on_device=sim_peers.jax_runs_on))
register(Impl("qulacs", sim_peers.run_qulacs, quick_tokens=16, full_tokens=64,
              available=_has("qulacs"), cost="gates", prepare=sim_peers.prepare_qulacs,
              version=sim_peers.qulacs_version))
register(Impl("torchquantum", sim_peers.run_torchquantum, quick_tokens=16, full_tokens=64,
              available=_has("torchquantum"), cost="gates",
              version=sim_peers.torchquantum_version, atol=1e-5))
register(Impl("qiskit-aer-forward", run_aer, quick_tokens=32, full_tokens=128,
              available=_has("qiskit", "qiskit_aer"), forward_only=True, cost="gates",
              prepare=prepare_aer, version=aer_version))
