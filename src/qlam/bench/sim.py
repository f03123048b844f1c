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
  over the batch (fewer tokens).

Slow implementations run fewer tokens (``Impl.quick_tokens`` / ``full_tokens``); the rate
is per token, so rows stay comparable. Add an implementation with :func:`register`.
"""

from __future__ import annotations

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
from qlam.sim.statevector import apply_ops, zero_state
from qlam.templates import ring


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
def compiled_tables(circuit: Circuit, theta: torch.Tensor, x: torch.Tensor):
    """The token circuit as scan inputs: phases (B, L, 1, R, N) and w (1, R, 2, N, N).

    Blocks are paired as (phase, dense) layers, psi <- W_r · diag(e^{i phi_r}) psi; a
    leading dense block gets a zero phase and a trailing phase block an identity W. W is
    built in float64 from theta (as the QLAM layer does) and cast to x's dtype.
    """
    cc = CompiledCircuit(circuit)
    n_states = 2**circuit.n_qubits
    lead = x.shape[:-1]
    mats = cc.unitaries(theta.double())
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
        dense.append(torch.eye(n_states, dtype=mats[0].dtype if dense else torch.complex128))
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


@dataclass
class Impl:
    """A benchmarked implementation: ``run(setup)`` does forward + backward and returns the
    loss. ``quick_tokens`` / ``full_tokens`` cap the tokens it runs (None: all)."""

    name: str
    run: Callable[[Setup], torch.Tensor]
    quick_tokens: int | None = None
    full_tokens: int | None = None
    available: Callable[[], bool] = lambda: True


def _has(module: str) -> Callable[[], bool]:
    def check() -> bool:
        import importlib.util

        return importlib.util.find_spec(module) is not None

    return check


IMPLS: dict[str, Impl] = {}
BASELINE = "pennylane-default.qubit"


def register(impl: Impl) -> Impl:
    """Add (or replace) an implementation row."""
    IMPLS[impl.name] = impl
    return impl


register(Impl("qlam-compiled", run_compiled))
register(Impl("qlam-compiled-autograd", run_compiled_autograd))
register(Impl("qlam-kernel", run_kernel, available=_kernel_available))
register(Impl("qlam-reference", run_reference, quick_tokens=16, full_tokens=64))
# PennyLane's per-token rate falls as the sequence grows (about 17k tokens/s at 8 tokens,
# 9.5k at 96, n=6), so a short prefix flatters it: the ratios below are conservative.
register(Impl(BASELINE, run_pennylane, quick_tokens=32, full_tokens=128,
              available=_has("pennylane")))


# ---- measuring ------------------------------------------------------------------------------
def check_agreement(impls: list[str], n_qubits: int = 3, tokens: int = 5,
                    atol: float = 1e-8) -> None:
    """All implementations give the same loss and gradient (float64, small case)."""
    ref_loss = ref_grad = None
    for name in impls:
        s = make_setup(n_qubits, 3, tokens, torch.float64, seed=123)
        loss = IMPLS[name].run(s)
        grad = s.theta.grad.detach().clone()
        if ref_loss is None:
            ref_loss, ref_grad, ref_name = loss, grad, name
            continue
        err = max(float((loss - ref_loss).abs()), float((grad - ref_grad).abs().max()))
        if err > atol:
            raise RuntimeError(f"benchmark implementations disagree: {name} vs {ref_name}, "
                               f"max difference {err:.3g} in loss/gradient")


def measure(impl: Impl, n_qubits: int, batch: int, seq_len: int, *, quick: bool,
            repeats: int, dtype=torch.float32, seed: int = 0) -> dict:
    cap = impl.quick_tokens if quick else impl.full_tokens
    tokens = min(seq_len, cap) if cap else seq_len
    s = make_setup(n_qubits, batch, tokens, dtype, seed)
    impl.run(s.prefix(min(tokens, 4)))  # warm-up: allocations, imports, lazy init
    times = []
    for _ in range(repeats):
        s.theta.grad = None
        t0 = time.perf_counter()
        impl.run(s)
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "impl": impl.name, "n_qubits": n_qubits, "batch": batch, "seq_len": tokens,
        "tokens_per_s": batch * tokens / best,
        "seconds": best, "seconds_median": statistics.median(times), "repeats": repeats,
        "requested_seq_len": seq_len, "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.machine(), "cpus": os.cpu_count(),
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "quick": quick,
    }


def run_benchmark(n_list=(4, 6, 8), batch: int = 128, seq_len: int = 784, *,
                  quick: bool = False, impls: list[str] | None = None, repeats: int | None = None,
                  dtype=torch.float32, log: Callable[[str], None] | None = None) -> list[dict]:
    names = impls or list(IMPLS)
    unknown = [n for n in names if n not in IMPLS]
    if unknown:
        raise ValueError(f"unknown implementation(s) {unknown}; known: {', '.join(IMPLS)}")
    missing = [n for n in names if not IMPLS[n].available()]
    if missing and impls:
        raise ValueError(f"implementation(s) {missing} unavailable (package not installed)")
    names = [n for n in names if n not in missing]
    check_agreement(names)
    reps = repeats if repeats is not None else (2 if quick else 3)
    records = []
    for n in n_list:
        for name in names:
            rec = measure(IMPLS[name], n, batch, seq_len, quick=quick, repeats=reps, dtype=dtype)
            records.append(rec)
            if log:
                log(f"  {name:<26} n={n}: {rec['tokens_per_s']:>12,.0f} tokens/s "
                    f"({rec['seq_len']} tokens, {rec['seconds']:.2f} s)")
    return records


def ratio(records: list[dict], impl: str, n_qubits: int, baseline: str = BASELINE) -> float | None:
    rate = {(r["impl"], r["n_qubits"]): r["tokens_per_s"] for r in records}
    if (impl, n_qubits) in rate and (baseline, n_qubits) in rate:
        return rate[impl, n_qubits] / rate[baseline, n_qubits]
    return None


def markdown_table(records: list[dict], baseline: str = BASELINE) -> str:
    lines = [f"| impl | n | batch | tokens run | tokens/s | x {baseline} |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in records:
        x = ratio(records, r["impl"], r["n_qubits"], baseline)
        xs = f"{x:,.1f}" if x is not None else "-"
        lines.append(f"| {r['impl']} | {r['n_qubits']} | {r['batch']} | {r['seq_len']} | "
                     f"{r['tokens_per_s']:,.0f} | {xs} |")
    return "\n".join(lines)
