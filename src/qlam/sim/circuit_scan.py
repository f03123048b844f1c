"""A circuit run on every token of a batch of sequences, by the faster of two methods.

One head runs ``circuit`` per token (inputs x (B, L, F), parameters theta (P,)), lowered to
scan layers (:func:`qlam.sim.lowering.lower`). Each layer's fixed block W is applied either

- ``"dense"``: as one 2^n x 2^n matrix (:func:`qlam.sim.lowering.scan_tables`, run by the
  scan dispatcher, the C++ kernel where it builds): 4^n multiply-adds per example and token;
- ``"factored"``: as ``P (A ⊗ B)`` (:mod:`qlam.sim.scan.factored`), two GEMMs of
  2^n (2^rows + 2^(n-rows)) multiply-adds and a gather, when every block is single-qubit
  gates followed by a permutation (:func:`qlam.sim.lowering.kron_factors`).

``"auto"`` picks ``"factored"`` from ``FACTORED_MIN_QUBITS`` qubits on where the circuit
allows it: below that the dense kernel's single fused pass beats the factored path's
per-token PyTorch calls, above it the 4^n product loses (measured by ``qlam bench sim``;
benchmarks/results/peers/README.md).
"""

from __future__ import annotations

import torch

from qlam.circuit import Circuit
from qlam.sim.lowering import Lowered, factorable, kron, lower, qubit_factors, scan_tables
from qlam.sim.scan import cpp, scan
from qlam.sim.scan.dispatch import resolve
from qlam.sim.scan.factored import scan_factored

FACTORED_MIN_QUBITS = 9
METHODS = ("auto", "dense", "factored")


def factored_tables(low: Lowered, theta: torch.Tensor, x: torch.Tensor):
    """``(phases (B, L, 1, R, N), gates (1, R, n, 2, 2), perms)``: every layer's
    ``W_r = P_r (gates[0, r, 0] ⊗ ... ⊗ gates[0, r, n-1])``, gates complex128 built from theta
    with autograd, perms one (N,) row gather or None per layer; None when a layer's block does
    not factor."""
    factors = [qubit_factors(ops, low.n_qubits, theta.double()) for ops in low.dense]
    if any(f is None for f in factors):
        return None
    gates = torch.stack([g for g, _ in factors]).unsqueeze(0)
    # phases that take no parameter carry no gradient to theta: leave theta out of the graph
    phases = low.phases(x, theta if bool(low.param_map.any()) else None)
    return phases.unsqueeze(2), gates, [perm for _, perm in factors]


def _run_factored(psi0, phases, gates, perms, backward: str):
    """The factored scan: on the C++ kernel (the gates applied one by one in cache) where the
    dense scan's ``backward`` would pick it and it applies, else in PyTorch (``W = P (A ⊗ B)``,
    two GEMMs, rows = n // 2)."""
    engine, _ = resolve(backward)
    n = gates.shape[2]
    kernel = engine == "compiled" or (
        engine == "auto" and n >= cpp.FACTORED_LOW_QUBITS and cpp.supports(psi0, phases)
        and cpp.available())
    if kernel:
        return cpp.scan_factored_kernel(psi0, phases,
                                        *cpp.factored_inputs(gates, perms, phases.dtype))
    cdtype = torch.complex128 if phases.dtype == torch.float64 else torch.complex64
    rows = n // 2
    a = torch.stack([kron(g[:rows]) for g in gates[0]]).to(cdtype).unsqueeze(0)
    b = torch.stack([kron(g[rows:]) for g in gates[0]]).to(cdtype).unsqueeze(0)
    return scan_factored(psi0, phases, a, b, perms)


def _pick(low: Lowered, method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        return method
    if low.n_qubits >= FACTORED_MIN_QUBITS and all(factorable(ops, low.n_qubits)
                                                   for ops in low.dense):
        return "factored"
    return "dense"


def choose(circuit: Circuit, method: str = "auto") -> str:
    """The method that runs: ``method``, or for "auto" the rule of the module docstring
    (from the circuit's structure; no matrix is built)."""
    return _pick(lower(circuit), method)


def circuit_scan(circuit: Circuit, theta: torch.Tensor, x: torch.Tensor,
                 method: str = "auto", backward: str = "auto"):
    """Every token's state from |0...0>: probs (B, L, 1, N) and the final state
    (B, 1, 2, N) in real pairs (:mod:`qlam.sim.scan.contract`). ``backward`` as in
    :func:`qlam.sim.scan.scan`; for the factored method "auto" and "kernel" run the C++
    kernel (where it applies), "reversible" and "autograd" the PyTorch path. The circuit is
    lowered once and its matrices built once. theta must be one parameter vector (P,) for
    every method (a batch of them is refused with a ValueError)."""
    if x.dim() != 3 or x.shape[-1] < circuit.n_inputs:
        raise ValueError(f"x must have shape (batch, length, >= {circuit.n_inputs}), "
                         f"got {tuple(x.shape)}")
    if theta.shape != (circuit.n_params,):
        raise ValueError(f"theta must have shape ({circuit.n_params},), got "
                         f"{tuple(theta.shape)}")
    low = lower(circuit)
    method = _pick(low, method)
    n_states = 2**circuit.n_qubits
    psi0 = x.new_zeros(x.shape[0], 1, 2, n_states)
    psi0[:, 0, 0, 0] = 1
    if method == "factored":
        tables = factored_tables(low, theta, x)
        if tables is None:
            raise ValueError("method='factored' needs every block of the circuit to be "
                             "single-qubit gates followed by a permutation")
        return _run_factored(psi0, *tables, backward)
    phases, w = scan_tables(low, theta, x)
    return scan(psi0, phases, w, backward=backward)


__all__ = ["FACTORED_MIN_QUBITS", "METHODS", "choose", "circuit_scan", "factored_tables"]
