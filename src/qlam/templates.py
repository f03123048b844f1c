"""Circuit templates: ansatz layers and encodings, appended to an existing Circuit.

Each template allocates its own trainable parameters (initial values from ``init`` or
``torch.Generator``) and returns the circuit for chaining.
"""

from __future__ import annotations

import math

import torch

from qlam.circuit import Circuit


def _init(gen: torch.Generator | None, scale: float) -> float:
    return float((torch.rand((), generator=gen, dtype=torch.float64) * 2 - 1) * scale)


def ring(n: int) -> list[tuple[int, int]]:
    """Nearest-neighbour pairs closing into a ring (one pair for 2 qubits, none for 1)."""
    if n == 1:
        return []
    if n == 2:
        return [(0, 1)]
    return [(i, (i + 1) % n) for i in range(n)]


def hardware_efficient(c: Circuit, layers: int = 1, *, scale: float = math.pi,
                       generator: torch.Generator | None = None) -> Circuit:
    """``layers`` x (RY and RZ on every qubit, then a CNOT ring)."""
    for _ in range(layers):
        for q in range(c.n_qubits):
            c.ry(q, c.new_param(_init(generator, scale)))
            c.rz(q, c.new_param(_init(generator, scale)))
        for a, b in ring(c.n_qubits):
            c.cnot(a, b)
    return c


def strongly_entangling(c: Circuit, layers: int = 1, *, scale: float = math.pi,
                        generator: torch.Generator | None = None) -> Circuit:
    """PennyLane-style StronglyEntanglingLayers: Rot (RZ RY RZ) per qubit, CNOTs with range
    ``1 + l mod (n-1)`` in layer l."""
    n = c.n_qubits
    for layer in range(layers):
        for q in range(n):
            c.rz(q, c.new_param(_init(generator, scale)))
            c.ry(q, c.new_param(_init(generator, scale)))
            c.rz(q, c.new_param(_init(generator, scale)))
        if n > 1:
            r = 1 + layer % (n - 1)
            for q in range(n):
                c.cnot(q, (q + r) % n)
    return c


def angle_encoding(c: Circuit, features: list[int] | None = None, rotation: str = "Y",
                   a: float = 1.0, b: float = 0.0) -> Circuit:
    """One rotation per qubit q with angle ``a * x[features[q]] + b``."""
    rotation = rotation.upper()
    if rotation not in ("X", "Y", "Z"):
        raise ValueError(f"rotation must be X, Y or Z, got {rotation!r}")
    features = list(range(c.n_qubits)) if features is None else list(features)
    if len(features) > c.n_qubits:
        raise ValueError(f"{len(features)} features for {c.n_qubits} qubits")
    for q, j in enumerate(features):
        c.append("r" + rotation.lower(), q, c.input(j, a, b))
    return c


def zz_feature_map(c: Circuit, reps: int = 2, features: list[int] | None = None) -> Circuit:
    """Havlicek et al. ZZ feature map: H, RZ(2 x_q) on each qubit, then RZZ(2 (pi - x_a)(pi - x_b))
    on neighbouring pairs; the pair angle is expanded as an affine input in x_a with
    coefficient fixed by x_b, so it is written here with the product feature prepared by the
    caller: feature ``n + k`` must hold ``(pi - x_a)(pi - x_b)`` for pair k of ``ring(n)``."""
    n = c.n_qubits
    features = list(range(n)) if features is None else list(features)
    pairs = ring(n) if n > 2 else ([(0, 1)] if n == 2 else [])
    for _ in range(reps):
        for q in range(n):
            c.h(q)
            c.rz(q, c.input(features[q], 2.0))
        for k, (qa, qb) in enumerate(pairs):
            c.rzz(qa, qb, c.input(n + k, 2.0))
    return c


def zz_features(x: torch.Tensor) -> torch.Tensor:
    """Extend features (..., n) with the pair products that :func:`zz_feature_map` reads."""
    n = x.shape[-1]
    pairs = ring(n) if n > 2 else ([(0, 1)] if n == 2 else [])
    prods = [(math.pi - x[..., a]) * (math.pi - x[..., b]) for a, b in pairs]
    return torch.cat([x, torch.stack(prods, -1)], -1) if prods else x
