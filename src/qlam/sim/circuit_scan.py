"""A circuit run on every token of a batch of sequences, by the faster of two methods.

One head runs ``circuit`` per token (inputs x (B, L, F), parameters theta (P,)), lowered to
scan layers (:func:`qlam.sim.lowering.lower`). Each layer's fixed block W is applied either

- ``"dense"``: as one 2^n x 2^n matrix (:func:`qlam.sim.lowering.scan_tables`, run by the
  scan dispatcher, the C++ kernel where it builds): 4^n multiply-adds per example and token;
- ``"factored"``: as ``P (U_0 ⊗ ... ⊗ U_{n-1})`` when every block is single-qubit gates
  followed by a permutation (:func:`qlam.sim.lowering.qubit_factors`): on the C++ kernel
  (:func:`qlam.sim.scan.cpp.scan_factored_kernel`; the 2x2 gates applied one by one to each
  example's state in cache, the last four wires in registers on groups of 16 amplitudes:
  O(2^n n)), or
  in PyTorch (:mod:`qlam.sim.scan.factored`: ``P (A ⊗ B)``, two GEMMs of
  2^n (2^rows + 2^(n-rows)) multiply-adds and a gather) where the kernel does not run.

``"auto"`` picks ``"factored"`` where the circuit allows it from 4 qubits on when the C++
kernel runs it (it beats the dense kernel from 4 qubits on: 1.1-1.2x at 4 and 5, 1.1-1.7x at
6, 1.8x at 7 in `qlam bench sim`), else from ``FACTORED_MIN_QUBITS`` (the PyTorch factored
path's per-token calls lose to the dense kernel below that; benchmarks/results/peers/).
"""

from __future__ import annotations

import torch

from qlam.circuit import Circuit
from qlam.sim.lowering import (
    Lowered,
    factorable,
    kron,
    lower,
    qubit_factors,
    scan_tables,
    separable_phases,
    wire_form,
)
from qlam.sim.scan import cpp, scan
from qlam.sim.scan.dispatch import resolve
from qlam.sim.scan.factored import scan_factored

FACTORED_MIN_QUBITS = 9
# From how many qubits the kernel gets separable phases per wire (folded into the gates, no
# rotation pass): below, its per-token work (n + 1 cos / sin, the low wires' coefficient
# planes and gradient sums) outweighs the N-long passes it saves. Per wire against rotated,
# training steps of the bench circuit on AVX2 (benchmarks/results/peers/avx2/wire/): 0.73x at
# n = 4, 0.86x at 5, 0.96x at 6, 1.02x at 7, 1.05-1.11x at 8, 1.10x at 10, 1.11x at 12.
WIRE_MIN_QUBITS = 7
METHODS = ("auto", "dense", "factored")


def factored_tables(low: Lowered, theta: torch.Tensor, x: torch.Tensor, kernel: bool = False):
    """``(phases (B, L, 1, R, N), gates (1, R, n, 2, 2), perms, maps)``: every layer's
    ``W_r = P_r (gates[0, r, 0] ⊗ ... ⊗ gates[0, r, n-1])``, gates complex128 built from theta
    with autograd, perms one (N,) row gather or None per layer, maps None; with ``kernel``,
    phases are the angles x (B, L, 1, F) and maps the kernel's (input_map (R, F, N), offset
    (R, N) with theta's phases folded in), which it expands itself, or per wire ((R, F, n + 1),
    (R, n + 1); :func:`qlam.sim.lowering.wire_form`) where every layer's phases are separable.
    None when a layer's block does not factor."""
    factors = [qubit_factors(ops, low.n_qubits, theta.double()) for ops in low.dense]
    if any(f is None for f in factors):
        return None
    gates = torch.stack([g for g, _ in factors]).unsqueeze(0)
    perms = [perm for _, perm in factors]
    # phases that take no parameter carry no gradient to theta: leave theta out of the graph
    uses_theta = bool(low.param_map.any())
    if kernel:
        f = low.input_map.shape[1]
        offset = low.phases(None, theta).to(x) if uses_theta else low.offset.to(x)
        maps = (low.input_map.to(x), offset)
        if low.n_qubits >= WIRE_MIN_QUBITS and separable_phases(low):  # folded into the gates
            maps = tuple(wire_form(m, low.n_qubits) for m in maps)
        return x[..., :f].unsqueeze(2), gates, perms, maps
    phases = low.phases(x, theta if uses_theta else None)
    return phases.unsqueeze(2), gates, perms, None


def _kernel_runs(backward: str, n_qubits: int, *tensors) -> bool:
    """Whether the factored scan runs on the C++ kernel: tensors it takes (CPU, float32 /
    float64) and ``backward`` "kernel", or "auto" from 4 qubits where it builds here. (On
    CUDA "kernel" is the Triton engine, which runs the dense scan.)"""
    engine, _ = resolve(backward)
    return cpp.supports(*tensors) and (engine == "compiled" or (
        engine == "auto" and n_qubits >= cpp.FACTORED_LOW_QUBITS and cpp.available()))


def _run_factored(psi0, phases, gates, perms, maps, kernel: bool):
    """The factored scan: on the C++ kernel (the gates applied one by one in cache, the
    phases expanded from ``maps`` there), or in PyTorch (``W = P (A ⊗ B)``, two GEMMs,
    rows = n // 2)."""
    if kernel:
        return cpp.scan_factored_kernel(psi0, phases,
                                        *cpp.factored_inputs(gates, perms, phases.dtype),
                                        maps=maps)
    cdtype = torch.complex128 if phases.dtype == torch.float64 else torch.complex64
    rows = gates.shape[2] // 2
    a = torch.stack([kron(g[:rows]) for g in gates[0]]).to(cdtype).unsqueeze(0)
    b = torch.stack([kron(g[rows:]) for g in gates[0]]).to(cdtype).unsqueeze(0)
    return scan_factored(psi0, phases, a, b, perms)


def min_factored_qubits(kernel: bool) -> int:
    """From how many qubits "auto" runs a factorable circuit factored: with the C++ kernel
    from the kernel's minimum, 4 (:data:`qlam.sim.scan.cpp.FACTORED_LOW_QUBITS`), else from
    ``FACTORED_MIN_QUBITS``."""
    return cpp.FACTORED_LOW_QUBITS if kernel else FACTORED_MIN_QUBITS


def _pick(low: Lowered, method: str, kernel: bool) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        return method
    if low.n_qubits >= min_factored_qubits(kernel) and all(factorable(ops, low.n_qubits)
                                                           for ops in low.dense):
        return "factored"
    return "dense"


def choose(circuit: Circuit, method: str = "auto", kernel: bool = False) -> str:
    """The method that runs: ``method``, or for "auto" the rule of the module docstring
    (``kernel``: whether the C++ kernel would run the factored scan; from the circuit's
    structure, no matrix is built)."""
    return _pick(lower(circuit), method, kernel)


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
    n_states = 2**circuit.n_qubits
    psi0 = x.new_zeros(x.shape[0], 1, 2, n_states)
    psi0[:, 0, 0, 0] = 1
    kernel = _kernel_runs(backward, circuit.n_qubits, psi0, x)
    method = _pick(low, method, kernel)
    if method == "factored":
        tables = factored_tables(low, theta, x, kernel)
        if tables is None:
            raise ValueError("method='factored' needs every block of the circuit to be "
                             "single-qubit gates followed by a permutation")
        return _run_factored(psi0, *tables, kernel)
    phases, w = scan_tables(low, theta, x)
    return scan(psi0, phases, w, backward=backward)


__all__ = ["FACTORED_MIN_QUBITS", "METHODS", "choose", "circuit_scan", "factored_tables",
           "min_factored_qubits"]
