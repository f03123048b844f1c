"""Compiled fast path: a circuit as alternating dense unitaries and phase vectors.

Input-independent stretches of gates are fused into one dense 2^n x 2^n unitary, rebuilt
once per call from the trainable parameters. Input-dependent gates are made diagonal
(RX = H RZ H, RY = S H RZ H S†, RXX/RYY likewise, U3 = e^{i(φ+λ)/2} RZ RY RZ) with the
fixed basis changes folded into the neighbouring dense blocks; a run of commuting diagonal
gates becomes one phase vector ``exp(i * angles @ coeffs)``. Per example the circuit is then
``... U_2 · diag(e^{iφ_1(x)}) · U_1 ...``: a few GEMMs and elementwise products.

Fusing pays only when the batch is large: building a block's unitary costs about
(gates + batch) · 4^n operations, applying its gates one by one gates · batch · 2^n. By
default :meth:`CompiledCircuit.run` fuses a block only when that is cheaper
(:func:`fusing_pays`), so a general circuit (hundreds of gates, one state) runs gate by gate
in milliseconds instead of building a 2^n x 2^n matrix for seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch

from qlam.circuit import Angle, Circuit, Op, const
from qlam.sim import gates
from qlam.sim.statevector import (
    apply_ops,
    batch_size,
    check_inputs,
    check_params,
    initial_state,
    real_dtype,
    unitary,
)


class AffineMap(NamedTuple):
    """Phases (..., 2^n) = x (..., F) @ inputs + theta (..., P) @ params + offset."""

    inputs: torch.Tensor  # (F, 2^n)
    params: torch.Tensor  # (P, 2^n)
    offset: torch.Tensor  # (2^n,)


@dataclass
class FixedBlock:
    """Input-independent gates, fused into one dense unitary."""

    ops: list[Op] = field(default_factory=list)


@dataclass
class PhaseBlock:
    """Commuting diagonal gates: phase = sum_k scale_k * angle_k * coeffs[k]."""

    angles: list[Angle | None] = field(default_factory=list)  # None: constant 1
    scales: list[float] = field(default_factory=list)
    coeffs: list[torch.Tensor] = field(default_factory=list)  # each (2^n,) float64

    def add(self, coeff: torch.Tensor, angle: Angle | None, scale: float = 1.0):
        self.coeffs.append(coeff)
        self.angles.append(angle)
        self.scales.append(scale)

    def coeff_matrix(self, dtype, device) -> torch.Tensor:
        """(K, 2^n) with the scales folded in."""
        c = torch.stack(self.coeffs) * torch.tensor(self.scales, dtype=torch.float64)[:, None]
        return c.to(dtype=dtype, device=device)

    def angle_values(self, theta, x, like: torch.Tensor) -> torch.Tensor:
        """(..., K): every term's angle, broadcast to x's leading shape (or () without x)."""
        lead = x.shape[:-1] if x is not None else ()
        vals = []
        for a in self.angles:
            v = 1.0 if a is None else a.evaluate(theta, x)
            v = torch.as_tensor(v, dtype=like.dtype, device=like.device)
            vals.append(v.expand(lead))
        return torch.stack(vals, -1)

    def phases(self, theta, x, like: torch.Tensor) -> torch.Tensor:
        """(..., 2^n) phase vector."""
        return self.angle_values(theta, x, like) @ self.coeff_matrix(like.dtype, like.device)

    def affine_map(self, n_inputs: int, n_params: int = 0) -> AffineMap:
        """The block's phases as ``x @ inputs + theta @ params + offset`` (float64), for
        angles that are constants, parameters, or inputs with numeric a, b; a ValueError
        for an input angle with a trainable coefficient."""
        coeffs = self.coeff_matrix(torch.float64, None)
        n_states = coeffs.shape[1]
        a_map = torch.zeros(n_inputs, n_states, dtype=torch.float64)
        p_map = torch.zeros(n_params, n_states, dtype=torch.float64)
        offset = torch.zeros(n_states, dtype=torch.float64)
        for angle, coeff in zip(self.angles, coeffs):
            if angle is None or angle.kind == "const":
                offset += coeff * (1.0 if angle is None else angle.value)
            elif angle.kind == "param":
                p_map[angle.index] += coeff
            elif not isinstance(angle.a, Angle) and not isinstance(angle.b, Angle):
                a_map[angle.index] += angle.a * coeff
                offset += angle.b * coeff
            else:
                raise ValueError(f"phase angle {angle}: trainable input coefficients have no "
                                 "affine map")
        return AffineMap(a_map, p_map, offset)


def _diagonalise(op: Op) -> list[Op]:
    """Rewrite an input-dependent gate as fixed gates around diagonal input-dependent ones."""
    w = op.wires
    if op.name == "rx":
        return [Op("h", w), Op("rz", w, op.angles), Op("h", w)]
    if op.name == "ry":
        return [Op("sdg", w), Op("h", w), Op("rz", w, op.angles), Op("h", w), Op("s", w)]
    if op.name in ("rxx", "ryy"):
        a, b = (w[0],), (w[1],)
        pre = [Op("h", a), Op("h", b)]
        post = [Op("h", a), Op("h", b)]
        if op.name == "ryy":
            pre = [Op("sdg", a), Op("sdg", b)] + pre
            post = post + [Op("s", a), Op("s", b)]
        return pre + [Op("rzz", w, op.angles)] + post
    if op.name in ("u2", "u3"):
        if op.name == "u2":
            theta, phi, lam = const(math.pi / 2), *op.angles
        else:
            theta, phi, lam = op.angles
        ry = Op("ry", w, (theta,))
        mid = _diagonalise(ry) if theta.is_input else [ry]
        # U3 = e^{i(φ+λ)/2} RZ(φ) RY(θ) RZ(λ): the global phase is a pseudo-gate
        return [Op("rz", w, (lam,)), *mid, Op("rz", w, (phi,)), Op("gphase", (), (phi, lam))]
    return [op]


def fusing_pays(n_gates: int, batch: int, n_qubits: int) -> bool:
    """Whether one dense unitary beats applying ``n_gates`` gates to ``batch`` states:
    (n_gates + batch) 4^n < n_gates · batch · 2^n."""
    return 2**n_qubits * (n_gates + batch) < n_gates * batch


class CompiledCircuit:
    """A circuit compiled into alternating FixedBlock / PhaseBlock items. It keeps a copy of
    the circuit as compiled: gates appended to the circuit afterwards do not reach it."""

    def __init__(self, circuit: Circuit):
        self.circuit = replace(circuit, ops=list(circuit.ops), init=list(circuit.init))
        self.n_qubits = circuit.n_qubits
        self.blocks: list[FixedBlock | PhaseBlock] = []
        for op in circuit.ops:
            for sub in (_diagonalise(op) if op.is_input else [op]):
                self._add(sub)

    def _add(self, op: Op):
        last = self.blocks[-1] if self.blocks else None
        if op.name == "gphase":
            if not isinstance(last, PhaseBlock):
                last = PhaseBlock()
                self.blocks.append(last)
            ones = torch.ones(2**self.n_qubits, dtype=torch.float64)
            for a in op.angles:
                last.add(ones, a, 0.5)
            return
        to_phase = op.diagonal and (op.is_input or isinstance(last, PhaseBlock))
        if to_phase:
            if not isinstance(last, PhaseBlock):
                last = PhaseBlock()
                self.blocks.append(last)
            for coeff, slot in gates.diagonal_terms(op.name, op.wires, self.n_qubits):
                last.add(coeff, None if slot is None else op.angles[slot])
        else:
            if not isinstance(last, FixedBlock):
                last = FixedBlock()
                self.blocks.append(last)
            last.ops.append(op)

    def unitaries(self, theta, dtype=torch.float64, device=None) -> list[torch.Tensor | None]:
        """Dense matrix of every FixedBlock (None for phase blocks)."""
        return [unitary(b.ops, self.n_qubits, theta, dtype, device)
                if isinstance(b, FixedBlock) else None for b in self.blocks]

    def run(self, inputs=None, params=None, state=None, dtype=torch.float64, device=None,
            fuse: str = "auto"):
        """Same contract as :func:`qlam.sim.statevector.run_reference`. ``fuse``: "auto"
        (a dense unitary per block where :func:`fusing_pays`, else its gates one by one),
        "all" or "none"."""
        if fuse not in ("auto", "all", "none"):
            raise ValueError(f"fuse must be 'auto', 'all' or 'none', got {fuse!r}")
        dtype = real_dtype(dtype)
        theta = check_params(self.circuit, params, dtype, device)
        x = check_inputs(self.circuit, inputs)
        if x is not None:
            x = x.to(dtype=dtype, device=device)
        psi = initial_state(self.circuit, state, batch_size(x, state), dtype, device)
        like = theta if theta.numel() else torch.zeros((), dtype=dtype, device=device)
        for block in self.blocks:
            if isinstance(block, PhaseBlock):
                phi = block.phases(theta, x, like)
                psi = psi * torch.polar(torch.ones_like(phi), phi)
            elif fuse == "all" or (fuse == "auto" and fusing_pays(
                    len(block.ops), psi.shape[0], self.n_qubits)):
                psi = psi @ unitary(block.ops, self.n_qubits, theta, dtype, device).transpose(0, 1)
            else:
                psi = apply_ops(psi, block.ops, self.n_qubits, theta, None)
        return psi

    def describe(self) -> str:
        kinds = ["U" if isinstance(b, FixedBlock) else f"D[{len(b.angles)}]" for b in self.blocks]
        return " · ".join(reversed(kinds))
