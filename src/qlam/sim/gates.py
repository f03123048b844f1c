"""Gate matrices (batched over angles) and diagonal gates as phase vectors.

Conventions are Qiskit's and PennyLane's: RX(t) = exp(-i t X / 2), RZZ(t) = exp(-i t Z⊗Z / 2),
U3(t, p, l) = [[cos t/2, -e^{il} sin t/2], [e^{ip} sin t/2, e^{i(p+l)} cos t/2]];
for two-qubit gates the first wire is the more significant bit of the 4x4 matrix.
"""

from __future__ import annotations

import math

import torch

_S2 = 1 / math.sqrt(2)
FIXED = {
    "x": [[0, 1], [1, 0]],
    "y": [[0, -1j], [1j, 0]],
    "z": [[1, 0], [0, -1]],
    "h": [[_S2, _S2], [_S2, -_S2]],
    "s": [[1, 0], [0, 1j]],
    "sdg": [[1, 0], [0, -1j]],
    "t": [[1, 0], [0, complex(_S2, _S2)]],
    "tdg": [[1, 0], [0, complex(_S2, -_S2)]],
    "cnot": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]],
    "cz": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, -1]],
    "swap": [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]],
}


# Pauli rotations R_P(t) = cos(t/2) I - i sin(t/2) P: the generator P of each
_PAULI_GENERATORS = {
    "rx": [[0, 1], [1, 0]], "ry": [[0, -1j], [1j, 0]], "rz": [[1, 0], [0, -1]],
    "rxx": [[0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0]],
    "ryy": [[0, 0, 0, -1], [0, 0, 1, 0], [0, 1, 0, 0], [-1, 0, 0, 0]],
    "rzz": [[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 0], [0, 0, 0, 1]],
}
_ROTATION_CONSTANTS: dict = {}


def _rotation_constants(name: str, cdtype, device):
    """(I, -i P) of a Pauli rotation, cached per (gate, dtype, device)."""
    key = (name, cdtype, device)
    if key not in _ROTATION_CONSTANTS:
        p = torch.tensor(_PAULI_GENERATORS[name], dtype=cdtype, device=device)
        _ROTATION_CONSTANTS[key] = (torch.eye(p.shape[0], dtype=cdtype, device=device), -1j * p)
    return _ROTATION_CONSTANTS[key]


def _rotation(name: str, theta: torch.Tensor, cdtype) -> torch.Tensor:
    """cos(t/2) I - i sin(t/2) P, (..., d, d): four elementwise ops, not a stack per entry
    (the QLAM layer builds its unitaries from these at every training step)."""
    eye, gen = _rotation_constants(name, cdtype, theta.device)
    half = (theta / 2)[..., None, None]
    return torch.cos(half) * eye + torch.sin(half) * gen


def _as_tensor(angle, ref: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(angle, dtype=ref.real.dtype, device=ref.device)


def matrix(name: str, angles: list, like: torch.Tensor) -> torch.Tensor:
    """Gate matrix (..., d, d) as ``like``'s complex dtype; angles broadcast over ``...``."""
    cdtype = like.dtype if like.is_complex() else (
        torch.complex128 if like.dtype == torch.float64 else torch.complex64)
    if name in FIXED:
        return torch.tensor(FIXED[name], dtype=cdtype, device=like.device)
    th = [_as_tensor(a, like) for a in angles]
    if name in _PAULI_GENERATORS:
        return _rotation(name, th[0], cdtype)
    th = torch.broadcast_tensors(*th)
    one = torch.ones_like(th[0])
    zero = torch.zeros_like(th[0])
    if name == "u1":
        rows = [[one.to(cdtype), zero.to(cdtype)], [zero.to(cdtype), torch.polar(one, th[0])]]
    elif name in ("u2", "u3"):
        if name == "u2":
            theta, phi, lam = torch.full_like(th[0], math.pi / 2), th[0], th[1]
        else:
            theta, phi, lam = th
        c = torch.cos(theta / 2).to(cdtype)
        s = torch.sin(theta / 2).to(cdtype)
        rows = [[c, -torch.polar(one, lam) * s],
                [torch.polar(one, phi) * s, torch.polar(one, phi + lam) * c]]
    else:
        raise ValueError(f"no matrix for gate {name!r}")
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def bits(n_qubits: int, wire: int, device=None) -> torch.Tensor:
    """Value (0/1) of ``wire`` in each basis index, wire 0 the most significant bit: (2^n,)."""
    idx = torch.arange(2**n_qubits, device=device)
    return (idx >> (n_qubits - 1 - wire)) & 1


def parity(v: torch.Tensor, n_bits: int) -> torch.Tensor:
    """Parity (0/1) of the low ``n_bits`` bits of each integer in v: popcount(v) mod 2."""
    out = torch.zeros_like(v)
    for k in range(n_bits):
        out ^= (v >> k) & 1
    return out


def diagonal_terms(name: str, wires: tuple[int, ...], n_qubits: int):
    """A diagonal gate as phase terms: list of (coefficient vector (2^n,) float64, angle slot).

    The gate's diagonal is exp(i * sum_k angle_k * coeff_k) where angle_k is the gate's
    angle number ``slot`` (or 1.0 when slot is None, a constant phase).
    """
    b = [bits(n_qubits, w).double() for w in wires]
    if name == "rz":
        return [(b[0] - 0.5, 0)]
    if name == "rzz":
        parity = (b[0] + b[1]) % 2
        return [(parity - 0.5, 0)]
    if name == "u1":
        return [(b[0], 0)]
    const = {"z": math.pi, "s": math.pi / 2, "sdg": -math.pi / 2, "t": math.pi / 4,
             "tdg": -math.pi / 4}
    if name in const:
        return [(b[0] * const[name], None)]
    if name == "cz":
        return [(b[0] * b[1] * math.pi, None)]
    raise ValueError(f"gate {name!r} is not diagonal")
