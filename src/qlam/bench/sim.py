"""Simulator benchmark: training tokens/s of a QLAM-style recurrence.

Per token t the state is evolved by the same circuit (:func:`token_circuit`): RZ(x_t) on
every qubit (the input), one trainable RY/RZ layer and a CNOT ring. The batch starts in
|0...0>, runs ``seq_len`` tokens, and the loss is the final state's probabilities weighted
by a fixed random vector; one measurement is forward + backward (the gradient of the loss
with respect to the trainable angles), and tokens/s = batch * tokens / seconds.

Every implementation runs the identical circuit from the identical qlam ``Circuit``:

- ``qlam-compiled``: the fast path the QLAM layer uses: the circuit compiled to one phase
  vector per token (from the inputs) and one fused dense unitary W, run by the real-pair
  fused scan (:func:`qlam.sim.recurrence.scan`) with its reversible (adjoint) backward;
- ``qlam-compiled-autograd``: the same scan with plain autograd through every token;
- ``qlam-kernel``: the same scan on the compiled C++ kernel (:mod:`qlam.sim.kernel`: forward
  and reversible backward in C++), where it builds;
- ``qlam-reference``: gate by gate with complex autograd (fewer tokens);
- ``pennylane-default.qubit``: PennyLane, torch interface, backprop, parameter broadcasting
  over the batch (fewer tokens);
- ``pennylane-lightning.qubit``: PennyLane's C++ simulator with adjoint differentiation
  (the loss as the expectation of the diagonal observable diag(weights); PennyLane splits
  the broadcast batch into one circuit per example; fewer tokens);
- ``qiskit-aer-forward``: Qiskit Aer's statevector simulator on the same circuit, one
  parameter binding per example, **forward only** (Aer gives no gradients of a state):
  a run simulates the final states and computes the same loss, nothing more. Its rate is
  not a training rate; the table marks it ``forward``. Building and transpiling the
  parameterised circuit happens once before the timing (:attr:`Impl.prepare`).

TorchQuantum is not benchmarked: its only release for Python 3.11 (0.1.8) pins qiskit < 1
and pulls its own torch and TensorFlow, so it cannot share an environment with qlam's peers.

The dense implementations build the fused W from theta inside every step (as the QLAM layer
does). The generic builder keeps one 2^n x 2^n matrix per trainable gate for autograd (6 GiB
at n = 12), so above ``GENERIC_W_MAX_QUBITS`` qubits W is built from its structure instead
(the Kronecker product of the per-qubit rotations, then the parameter-free CNOT ring): the
same matrix (tests check it), a fraction of the memory.

Slow implementations run fewer tokens: each has a cap (``Impl.quick_tokens`` /
``full_tokens``) and a work budget per timed run (:func:`tokens_for`), which also shortens
the dense rows at n >= 10 (at least ``MIN_TOKENS``). The rate is per token, so rows stay
comparable; a short run amortises the per-step W build over fewer tokens, which makes the
qlam rates at large n conservative. Add an implementation with :func:`register`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from qlam.circuit import Circuit
from qlam.sim.compiled import CompiledCircuit, FixedBlock
from qlam.sim.measure import probabilities
from qlam.sim.recurrence import scan
from qlam.sim.statevector import apply_ops, unitary, zero_state
from qlam.templates import ring

GENERIC_W_MAX_QUBITS = 10
MIN_TOKENS = 4
# work budgets per timed run: dense rows cost ~ max(batch, 16) * 4^n per token (a batch-1
# matvec streams the whole W, like a batch of ~16), gate-by-gate rows ~ batch * 2^n * n.
DENSE_BUDGET = {True: 2e9, False: 8e9}  # quick, full
GATES_BUDGET = {True: 8.4e6, False: 3.4e7}
REPEAT_SECONDS = {True: 5.0, False: 20.0}  # stop repeating once this much time is spent


def token_circuit(n_qubits: int, generator: torch.Generator | None = None) -> Circuit:
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
               seed: int = 0) -> Setup:
    g = torch.Generator().manual_seed(seed)
    circuit = token_circuit(n_qubits, g)
    theta = circuit.init_params(dtype).requires_grad_()
    x = torch.rand(batch, seq_len, 1, generator=g, dtype=torch.float64).to(dtype)
    weights = torch.randn(2**n_qubits, generator=g, dtype=torch.float64).to(dtype)
    return Setup(circuit, theta, x, weights)


# ---- implementations: each returns the loss after forward AND backward ----------------------
def structured_unitary(ops, n_qubits: int, theta: torch.Tensor) -> torch.Tensor | None:
    """W of a block made of single-qubit gates followed by parameter-free gates, built as the
    Kronecker product of the per-qubit 2x2 matrices (wire 0 the most significant) and then
    the parameter-free tail; None if the block has another shape."""
    k = 0
    while k < len(ops) and len(ops[k].wires) == 1:
        k += 1
    head, tail = ops[:k], ops[k:]
    if any(a.kind != "const" for op in tail for a in op.angles):
        return None
    u = None
    for q in range(n_qubits):
        m = unitary([dataclasses.replace(op, wires=(0,)) for op in head if op.wires[0] == q],
                    1, theta)
        u = m if u is None else torch.kron(u, m)
    if not tail:
        return u
    perm, t = _tail(tuple(tail), n_qubits)
    return u[perm] if perm is not None else t.to(u.dtype) @ u


_TAILS: dict = {}


def _tail(ops: tuple, n_qubits: int):
    """(row permutation or None, matrix) of parameter-free ops, cached: a CNOT ring is a
    permutation P, and P @ U is the row gather U[perm] (one copy instead of one per gate)."""
    key = (ops, n_qubits)
    if key not in _TAILS:
        with torch.no_grad():
            t = unitary(list(ops), n_qubits)
        nonzero = t != 0
        perm = None
        if bool((nonzero.sum(1) == 1).all()) and bool((t[nonzero] == 1).all()):
            perm = nonzero.to(torch.int8).argmax(1)
        _TAILS.clear()
        _TAILS[key] = (perm, t)
    return _TAILS[key]


def block_unitaries(cc: CompiledCircuit, theta: torch.Tensor) -> list[torch.Tensor | None]:
    """``cc.unitaries(theta)``; above GENERIC_W_MAX_QUBITS, from the blocks' structure."""
    n = cc.n_qubits
    if n <= GENERIC_W_MAX_QUBITS:
        return cc.unitaries(theta)
    out = []
    for block in cc.blocks:
        if not isinstance(block, FixedBlock):
            out.append(None)
            continue
        u = structured_unitary(block.ops, n, theta)
        out.append(u if u is not None else unitary(block.ops, n, theta))
    return out


def compiled_tables(circuit: Circuit, theta: torch.Tensor, x: torch.Tensor):
    """The token circuit as scan inputs: phases (B, L, 1, R, N) and w (1, R, 2, N, N).

    Blocks are paired as (phase, dense) layers, psi <- W_r · diag(e^{i phi_r}) psi; a
    leading dense block gets a zero phase and a trailing phase block an identity W. W is
    built in float64 from theta (as the QLAM layer does) and cast to x's dtype.
    """
    cc = CompiledCircuit(circuit)
    n_states = 2**circuit.n_qubits
    lead = x.shape[:-1]
    mats = block_unitaries(cc, theta.double())
    phases, dense, pending = [], [], None
    for block, u in zip(cc.blocks, mats):
        if isinstance(block, FixedBlock):
            phases.append(pending if pending is not None else x.new_zeros(*lead, n_states))
            dense.append(u)
            pending = None
        else:
            phi = block.phases(theta, x, theta).expand(*lead, n_states)
            pending = phi if pending is None else pending + phi
    if pending is not None:
        phases.append(pending)
        dense.append(torch.eye(n_states, dtype=dense[0].dtype if dense else torch.complex128))
    w = torch.stack(dense)
    w = torch.stack([w.real, w.imag], -3).to(x.dtype)  # (R, 2, N, N)
    return torch.stack(phases, -2).unsqueeze(2), w.unsqueeze(0)


def _scan_loss(s: Setup, backward: str) -> torch.Tensor:
    phases, w = compiled_tables(s.circuit, s.theta, s.x)
    psi0 = s.x.new_zeros(s.batch, 1, 2, 2**s.n_qubits)
    psi0[:, 0, 0, 0] = 1
    _, last = scan(psi0, phases, w, backward=backward)
    probs = last[:, 0, 0].square() + last[:, 0, 1].square()
    loss = probs @ s.weights
    loss.sum().backward()
    return loss.detach().sum()


def run_compiled(s: Setup) -> torch.Tensor:
    return _scan_loss(s, "reversible")


def run_compiled_autograd(s: Setup) -> torch.Tensor:
    return _scan_loss(s, "autograd")


def run_kernel(s: Setup) -> torch.Tensor:
    return _scan_loss(s, "kernel")


def _kernel_available() -> bool:
    from qlam.sim import kernel

    return kernel.available()


def run_reference(s: Setup) -> torch.Tensor:
    n = s.n_qubits
    psi = zero_state(n, s.batch, s.x.dtype)
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
    key = (id(s.circuit), s.tokens)
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
    tokens it runs (None: all); ``cost`` ("dense", "gates" or None) sets how the work
    budget scales with n and batch (:func:`tokens_for`); ``prepare(setup)`` runs untimed
    before the timed runs."""

    name: str
    run: Callable[[Setup], torch.Tensor]
    quick_tokens: int | None = None
    full_tokens: int | None = None
    available: Callable[[], bool] = lambda: True
    forward_only: bool = False
    cost: str | None = None
    prepare: Callable[[Setup], None] | None = None

    @property
    def mode(self) -> str:
        return "forward" if self.forward_only else "train"


def _has(*modules: str) -> Callable[[], bool]:
    def check() -> bool:
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in modules)

    return check


def _has_lightning() -> bool:
    if not _has("pennylane", "pennylane_lightning")():
        return False
    try:
        import pennylane as qml

        qml.device("lightning.qubit", wires=1)
    except Exception:  # noqa: BLE001 - any failure to create the device: not available
        return False
    return True


IMPLS: dict[str, Impl] = {}
BASELINE = "pennylane-default.qubit"
QLAM_ROWS = ("qlam-kernel", "qlam-compiled")  # the "qlam" of the ratio column: first present


def register(impl: Impl) -> Impl:
    """Add (or replace) an implementation row."""
    IMPLS[impl.name] = impl
    return impl


register(Impl("qlam-compiled", run_compiled, cost="dense"))
register(Impl("qlam-compiled-autograd", run_compiled_autograd, cost="dense"))
register(Impl("qlam-kernel", run_kernel, available=_kernel_available, cost="dense"))
register(Impl("qlam-reference", run_reference, quick_tokens=16, full_tokens=64, cost="gates"))
# PennyLane's per-token rate falls as the sequence grows (about 17k tokens/s at 8 tokens,
# 9.5k at 96, n=6), so a short prefix flatters it: the ratios below are conservative.
register(Impl(BASELINE, run_pennylane, quick_tokens=32, full_tokens=128,
              available=_has("pennylane"), cost="gates"))
register(Impl("pennylane-lightning.qubit", run_lightning, quick_tokens=8, full_tokens=32,
              available=_has_lightning, cost="gates"))
register(Impl("qiskit-aer-forward", run_aer, quick_tokens=32, full_tokens=128,
              available=_has("qiskit", "qiskit_aer"), forward_only=True, cost="gates",
              prepare=prepare_aer))


# ---- measuring ------------------------------------------------------------------------------
def check_agreement(impls: list[str], n_qubits: int = 3, tokens: int = 5,
                    atol: float = 1e-8) -> None:
    """All implementations give the same loss and gradient (float64, small case);
    forward-only implementations are checked on the loss."""
    ref_loss = ref_grad = None
    for name in sorted(impls, key=lambda k: IMPLS[k].forward_only):
        s = make_setup(n_qubits, 3, tokens, torch.float64, seed=123)
        loss = IMPLS[name].run(s)
        grad = None if IMPLS[name].forward_only else s.theta.grad.detach().clone()
        if ref_loss is None:
            ref_loss, ref_grad, ref_name = loss, grad, name
            continue
        err = float((loss - ref_loss).abs())
        if grad is not None and ref_grad is not None:
            err = max(err, float((grad - ref_grad).abs().max()))
        if err > atol:
            raise RuntimeError(f"benchmark implementations disagree: {name} vs {ref_name}, "
                               f"max difference {err:.3g} in loss/gradient")


def tokens_for(impl: Impl, n_qubits: int, batch: int, seq_len: int, quick: bool) -> int:
    """Tokens one timed run of ``impl`` takes: the cap, then the work budget (>= MIN_TOKENS)."""
    cap = impl.quick_tokens if quick else impl.full_tokens
    tokens = min(seq_len, cap) if cap else seq_len
    if impl.cost == "dense":
        per_token, budget = max(batch, 16) * 4.0**n_qubits, DENSE_BUDGET[quick]
    elif impl.cost == "gates":
        per_token, budget = batch * 2.0**n_qubits * n_qubits, GATES_BUDGET[quick]
    else:
        return tokens
    return max(1, min(tokens, max(MIN_TOKENS, int(budget // per_token))))


def measure(impl: Impl, n_qubits: int, batch: int, seq_len: int, *, quick: bool,
            repeats: int, dtype=torch.float32, seed: int = 0) -> dict:
    tokens = tokens_for(impl, n_qubits, batch, seq_len, quick)
    s = make_setup(n_qubits, batch, tokens, dtype, seed)
    impl.run(s.prefix(min(tokens, 4)))  # warm-up: allocations, imports, lazy init
    if impl.prepare is not None:
        impl.prepare(s)
    times: list[float] = []
    while len(times) < repeats and (not times or sum(times) < REPEAT_SECONDS[quick]):
        s.theta.grad = None
        t0 = time.perf_counter()
        impl.run(s)
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "impl": impl.name, "n_qubits": n_qubits, "batch": batch, "seq_len": tokens,
        "tokens_per_s": batch * tokens / best, "mode": impl.mode,
        "seconds": best, "seconds_median": statistics.median(times), "repeats": len(times),
        "requested_seq_len": seq_len, "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.machine(), "cpus": os.cpu_count(),
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "quick": quick,
    }


def run_benchmark(n_list=(4, 6, 8), batch: int | list[int] = 128, seq_len: int = 784, *,
                  quick: bool = False, impls: list[str] | None = None, repeats: int | None = None,
                  dtype=torch.float32, log: Callable[[str], None] | None = None) -> list[dict]:
    names = impls or list(IMPLS)
    unknown = [n for n in names if n not in IMPLS]
    if unknown:
        raise ValueError(f"unknown implementation(s) {unknown}; known: {', '.join(IMPLS)}")
    missing = [n for n in names if not IMPLS[n].available()]
    if missing and impls:
        raise ValueError(f"implementation(s) {missing} unavailable (package not installed)")
    if missing and log:
        log(f"  skipped (not installed here): {', '.join(missing)}")
    names = [n for n in names if n not in missing]
    check_agreement(names)
    reps = repeats if repeats is not None else (2 if quick else 3)
    batches = [batch] if isinstance(batch, int) else list(batch)
    records = []
    for b in batches:
        for n in n_list:
            for name in names:
                rec = measure(IMPLS[name], n, b, seq_len, quick=quick, repeats=reps, dtype=dtype)
                records.append(rec)
                if log:
                    log(f"  {name:<26} n={n:<2} batch={b:<4}: {rec['tokens_per_s']:>12,.0f} "
                        f"tokens/s ({rec['mode']}, {rec['seq_len']} tokens, "
                        f"{rec['seconds']:.2f} s)")
    return records


def _rates(records: list[dict]) -> dict:
    return {(r["impl"], r["n_qubits"], r["batch"]): r["tokens_per_s"] for r in records}


def ratio(records: list[dict], impl: str, n_qubits: int, baseline: str = BASELINE,
          batch: int | None = None) -> float | None:
    """tokens/s of ``impl`` over ``baseline`` at n (and batch; default: the first batch)."""
    if batch is None:
        batch = next((r["batch"] for r in records if r["n_qubits"] == n_qubits), None)
    rate = _rates(records)
    if (impl, n_qubits, batch) in rate and (baseline, n_qubits, batch) in rate:
        return rate[impl, n_qubits, batch] / rate[baseline, n_qubits, batch]
    return None


def qlam_row(records: list[dict]) -> str | None:
    present = {r["impl"] for r in records}
    return next((name for name in QLAM_ROWS if name in present), None)


def markdown_table(records: list[dict], baseline: str = BASELINE) -> str:
    """One row per measurement; ``x baseline``: this row's rate over the baseline's;
    ``qlam ÷ this``: the qlam fast path's rate (kernel, else compiled) over this row's."""
    ref = qlam_row(records)
    lines = [f"| impl | pass | n | batch | tokens run | tokens/s | x {baseline} | "
             f"{ref or 'qlam'} ÷ this |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        x = ratio(records, r["impl"], r["n_qubits"], baseline, r["batch"])
        q = ratio(records, ref, r["n_qubits"], r["impl"], r["batch"]) if ref else None
        xs = f"{x:,.1f}" if x is not None else "-"
        qs = f"{q:,.1f}" if q is not None else "-"
        lines.append(f"| {r['impl']} | {r.get('mode', 'train')} | {r['n_qubits']} | "
                     f"{r['batch']} | {r['seq_len']} | {r['tokens_per_s']:,.0f} | {xs} | {qs} |")
    return "\n".join(lines)


def summary(records: list[dict], baseline: str = BASELINE) -> list[str]:
    """One line per (n, batch): the qlam fast paths' rate over the baseline's."""
    out = []
    keys = sorted({(r["n_qubits"], r["batch"]) for r in records})
    for n, b in keys:
        parts = [f"{name} {x:,.1f}x" for name in ("qlam-kernel", "qlam-compiled")
                 if (x := ratio(records, name, n, baseline, b)) is not None]
        if parts:
            out.append(f"n={n} batch={b}: " + ", ".join(parts) + f" {baseline} (training tokens/s)")
    return out


def target_note(records: list[dict], target: float = 30.0) -> str | None:
    """The issue's target: the fast path >= 30x default.qubit at n = 6, batch 128."""
    ref = qlam_row(records)
    x = ratio(records, ref, 6, BASELINE, 128) if ref else None
    if x is None:
        return None
    verdict = "met" if x >= target else f"missed by {target / x:.2f}x"
    return f"{ref} at n=6, batch 128: {x:,.1f}x {BASELINE} (target {target:.0f}x: {verdict})"


def plot(records: list[dict], path) -> None:
    """tokens/s against n, one panel per batch size, one line per implementation (dashed:
    forward only)."""
    from qlam.bench.common import pyplot, save_figure

    plt = pyplot()
    batches = sorted({r["batch"] for r in records})
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4.2), squeeze=False)
    for ax, b in zip(axes[0], batches):
        for name in dict.fromkeys(r["impl"] for r in records):
            rs = sorted((r for r in records if r["impl"] == name and r["batch"] == b),
                        key=lambda r: r["n_qubits"])
            if not rs:
                continue
            style = "--" if rs[0].get("mode") == "forward" else "-"
            label = name + (" (forward only)" if rs[0].get("mode") == "forward" else "")
            ax.plot([r["n_qubits"] for r in rs], [r["tokens_per_s"] for r in rs], style,
                    marker="o", label=label)
        ax.set(xlabel="qubits n", ylabel="tokens/s (forward + backward)", yscale="log",
               title=f"batch {b}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    save_figure(fig, path)
