"""Circuit -> scan lowering: a circuit as R layers ``psi <- W_r · diag(exp(i phi_r)) psi``.

:class:`~qlam.sim.compiled.CompiledCircuit` splits a circuit into dense blocks (input-free
gates fused into one unitary) and phase blocks (commuting diagonal gates). A layer pairs each
dense block with the phase block before it: a circuit that starts with a dense block gets a
zero phase in its first layer, one that ends with a phase block an identity W in its last.
Phases are affine in the inputs and the parameters, ``phi_r = x @ A_r + theta @ P_r + c_r``;
this is what the scan engines (:mod:`qlam.sim.scan`) take per token, and the one lowering
the QLAM layer, QLSTM and the benchmarks share.

Dense blocks are built with :func:`qlam.sim.statevector.unitary` (one 2^n x 2^n matrix per
gate for autograd); above ``GENERIC_W_MAX_QUBITS`` qubits a block of single-qubit gates
followed by parameter-free gates is built from its structure instead (the Kronecker product
of the per-qubit rotations, then the fixed tail): the same matrix, a fraction of the memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qlam.circuit import Circuit, Op
from qlam.sim.compiled import CompiledCircuit, FixedBlock, PhaseBlock
from qlam.sim.gates import bits as gate_bits
from qlam.sim.gates import matrix as gate_matrix
from qlam.sim.statevector import unitary

GENERIC_W_MAX_QUBITS = 10


@dataclass
class Lowered:
    """A circuit as R scan layers: ``dense[r]`` the ops of W_r (None: identity), and the
    affine phase maps ``input_map`` (R, F, N), ``param_map`` (R, P, N), ``offset`` (R, N)
    (float64)."""

    n_qubits: int
    dense: list[list[Op] | None]
    input_map: torch.Tensor
    param_map: torch.Tensor
    offset: torch.Tensor

    @property
    def n_layers(self) -> int:
        return len(self.dense)

    def phases(self, x: torch.Tensor | None, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Every layer's phases: x (..., F), theta (P,) -> (..., R, N) in x's dtype
        (theta's without x)."""
        like = x if x is not None else theta
        out = self.offset.to(like)
        if x is not None:
            out = out + torch.einsum("...f,rfn->...rn", x, self.input_map.to(x))
        if theta is not None and self.param_map.shape[1]:
            out = out + torch.einsum("p,rpn->rn", theta.to(like), self.param_map.to(like))
        return out

    def unitaries(self, theta: torch.Tensor) -> torch.Tensor:
        """(..., R, N, N) complex: every layer's W from parameters theta (..., P)."""
        mats = []
        for ops in self.dense:
            if ops is None:
                eye = torch.eye(2**self.n_qubits, dtype=torch.complex128, device=theta.device)
                mats.append(eye.expand(*theta.shape[:-1], -1, -1))
            else:
                mats.append(block_unitary(ops, self.n_qubits, theta))
        return torch.stack(mats, -3)


def wire_form(rows: torch.Tensor, n_qubits: int) -> torch.Tensor:
    """Phase rows (..., N) as per-wire phases (..., n + 1): the phase wire q's |1> adds,
    ``rows[2^(n-1-q)] - rows[0]`` (wire 0 the most significant bit), then ``rows[0]``.
    Linear and differentiable; exact for the rows :func:`separable` accepts."""
    idx = torch.tensor([1 << (n_qubits - 1 - q) for q in range(n_qubits)], device=rows.device)
    c = rows[..., :1]
    return torch.cat([rows[..., idx] - c, c], -1)


def separable(rows: torch.Tensor, n_qubits: int) -> bool:
    """Whether every phase row (..., N) is ``c + sum_q beta_q bit_q(k)``: the diagonal of
    single-qubit diagonal gates (RZ, U1, S, ...) only, so that ``exp(i phi)`` is a Kronecker
    product of per-wire diagonals (not with RZZ, say)."""
    if rows.numel() == 0:
        return True
    w = wire_form(rows, n_qubits)
    bits = torch.stack([gate_bits(n_qubits, q) for q in range(n_qubits)]).to(rows)  # (n, N)
    rebuilt = w[..., -1:] + w[..., :-1] @ bits
    scale = 1 + rows.abs().amax(-1, keepdim=True)  # rounding allowance, per row
    return bool(((rebuilt - rows).abs() <= 1e-12 * scale).all())


def separable_phases(low: Lowered) -> bool:
    """Whether every layer's phases (inputs, parameters and constants) are separable."""
    n = 2**low.n_qubits  # one check of every row (not one per map: each builds the bits)
    rows = torch.cat([m.reshape(-1, n) for m in (low.input_map, low.param_map, low.offset)])
    return separable(rows, low.n_qubits)


def lower(circuit: Circuit) -> Lowered:
    """Pair the circuit's compiled blocks into scan layers (see the module docstring)."""
    compiled = CompiledCircuit(circuit)
    n_in, n_par, n_states = circuit.n_inputs, circuit.n_params, 2**circuit.n_qubits
    zero = PhaseBlock()
    pending: PhaseBlock | None = None
    pairs: list[tuple[PhaseBlock, list[Op] | None]] = []
    for block in compiled.blocks:
        if isinstance(block, FixedBlock):
            pairs.append((pending or zero, block.ops))
            pending = None
        else:
            pending = block
    if pending is not None:
        pairs.append((pending, None))
    maps = []
    for phase, _ in pairs:
        if phase.angles:
            maps.append(phase.affine_map(n_in, n_par))
        else:
            empty = torch.zeros(n_states, dtype=torch.float64)
            maps.append((empty.expand(n_in, -1), empty.expand(n_par, -1), empty))
    return Lowered(circuit.n_qubits, [ops for _, ops in pairs],
                   torch.stack([m[0] for m in maps]), torch.stack([m[1] for m in maps]),
                   torch.stack([m[2] for m in maps]))


def block_unitary(ops: list[Op], n_qubits: int, theta: torch.Tensor) -> torch.Tensor:
    """The dense matrix of a block of gates, (..., N, N) complex for theta (..., P): built
    from its structure above GENERIC_W_MAX_QUBITS where it has one, else gate by gate."""
    if n_qubits > GENERIC_W_MAX_QUBITS:
        u = structured_unitary(ops, n_qubits, theta)
        if u is not None:
            return u
    return unitary(ops, n_qubits, theta)


def _split_structured(ops, theta: torch.Tensor):
    """(head, tail) of a block made of single-qubit gates followed by parameter-free gates,
    or None if the block has another shape (or theta is batched)."""
    k = 0
    while k < len(ops) and len(ops[k].wires) == 1:
        k += 1
    head, tail = ops[:k], ops[k:]
    if theta.dim() > 1 or any(a.kind != "const" for op in tail for a in op.angles):
        return None
    return head, tail


def _wire_matrices(head, wires: range, theta: torch.Tensor) -> torch.Tensor:
    """Each of ``wires``' 2x2 matrix (len(wires), 2, 2) complex128: the product of its
    single-qubit gates in ``head``, the later on the left (identity for a wire without
    gates). Where every wire has the same gate names, each step is one batched matrix for all
    wires (a few tensor ops per call, not a simulation per wire)."""
    seqs = [[op for op in head if op.wires[0] == q] for q in wires]
    eye = torch.eye(2, dtype=torch.complex128, device=theta.device)
    if len({tuple(op.name for op in seq) for seq in seqs}) > 1:
        return torch.cat([_wire_matrices(head, range(q, q + 1), theta) for q in wires])
    u = eye.expand(len(seqs), 2, 2)
    for step in zip(*seqs):
        angles = [torch.stack([torch.as_tensor(op.angles[i].evaluate(theta, None),
                                               dtype=torch.float64, device=theta.device)
                               for op in step]) for i in range(len(step[0].angles))]
        u = gate_matrix(step[0].name, angles, eye) @ u
    return u


def structured_unitary(ops, n_qubits: int, theta: torch.Tensor) -> torch.Tensor | None:
    """W of a block made of single-qubit gates followed by parameter-free gates, built as the
    Kronecker product of the per-qubit 2x2 matrices (wire 0 the most significant) and then
    the parameter-free tail; None if the block has another shape (or theta is batched)."""
    split = _split_structured(ops, theta)
    if split is None:
        return None
    head, tail = split
    u = kron(_wire_matrices(head, range(n_qubits), theta))
    if not tail:
        return u
    perm, t = _tail(tuple(tail), n_qubits)
    return u[perm] if perm is not None else t.to(u.device, u.dtype) @ u


def _factor_split(ops, n_qubits: int):
    """(single-qubit head, row permutation or None) of a block that is single-qubit gates
    followed by a parameter-free permutation, else None; no matrix is built but the cached
    tail's."""
    if ops is None:
        return None
    k = 0
    while k < len(ops) and len(ops[k].wires) == 1:
        k += 1
    head, tail = ops[:k], ops[k:]
    if any(a.kind != "const" for op in tail for a in op.angles):
        return None
    if not tail:
        return head, None
    perm, _ = _tail(tuple(tail), n_qubits)
    return None if perm is None else (head, perm)


def factorable(ops, n_qubits: int) -> bool:
    """Whether a block (None: identity) is ``P (U_0 ⊗ ... ⊗ U_{n-1})``: single-qubit gates
    followed by a parameter-free permutation (a CNOT ring, say). Structure only, no theta."""
    return _factor_split(ops, n_qubits) is not None


def qubit_factors(ops, n_qubits: int, theta: torch.Tensor):
    """A factorable block (see :func:`factorable`) as ``(gates, perm)`` with
    ``W = P (gates[0] ⊗ ... ⊗ gates[n-1])``: gates (n, 2, 2) complex (wire 0 the most
    significant; identity where a wire has no gate) built from theta (P,) with autograd, and
    ``perm`` (N,) the row gather of P (None: no permutation); None if the block does not
    factor."""
    split = _factor_split(ops, n_qubits)
    if split is None or theta.dim() != 1:
        return None
    head, perm = split
    return _wire_matrices(head, range(n_qubits), theta), perm


def kron(gates: torch.Tensor) -> torch.Tensor:
    """The Kronecker product of (k, 2, 2) matrices, the first the most significant: (2^k, 2^k)."""
    u = gates[0]
    for g in gates[1:]:
        u = torch.kron(u, g)
    return u


def kron_factors(ops, n_qubits: int, theta: torch.Tensor, rows: int):
    """W of a factorable block as ``(A, B, perm)`` with ``W = P (A ⊗ B)``: A (2^rows, 2^rows)
    on wires 0..rows-1, B on the others, complex, and ``perm`` as in :func:`qubit_factors`;
    None when the block does not factor (or rows is not in 1..n-1)."""
    f = qubit_factors(ops, n_qubits, theta) if 0 < rows < n_qubits else None
    if f is None:
        return None
    gates, perm = f
    return kron(gates[:rows]), kron(gates[rows:]), perm


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


def scan_tables(circuit: Circuit | Lowered, theta: torch.Tensor, x: torch.Tensor):
    """One head running ``circuit`` (or its :func:`lower` form) on every token, as scan
    inputs: x (B, L, F) -> phases (B, L, 1, R, N) in x's dtype and w (1, R, 2, N, N)
    [re, im], W built in float64 from theta (P,) and cast to x's dtype."""
    low = circuit if isinstance(circuit, Lowered) else lower(circuit)
    phases = low.phases(x, theta)
    u = low.unitaries(theta.double())
    w = torch.stack([u.real, u.imag], -3).to(x.dtype)
    return phases.unsqueeze(2), w.unsqueeze(0)


__all__ = ["GENERIC_W_MAX_QUBITS", "Lowered", "lower", "block_unitary", "structured_unitary",
           "factorable", "qubit_factors", "kron", "kron_factors", "scan_tables"]
