"""Noise channels: Kraus operators, state-vector quantum trajectories, exact density matrices.

Channels (one qubit, PennyLane's conventions, parameter in [0, 1]):

* ``depolarizing:P``: rho -> (1 - P) rho + P/3 (X rho X + Y rho Y + Z rho Z)
  (Kraus sqrt(1-P) I, sqrt(P/3) X, Y, Z; P = 3/4 is the fully depolarizing channel);
* ``amplitude_damping:G``: |1> decays to |0> with probability G
  (Kraus [[1, 0], [0, sqrt(1-G)]], [[0, sqrt(G)], [0, 0]]);
* ``bitflip:P``: rho -> (1 - P) rho + P X rho X.

Two ways to run them:

* **trajectories** (:func:`apply_channel_trajectory`): each state vector picks one Kraus
  operator K_k with probability ||K_k psi||^2 and continues as K_k psi / ||K_k psi||. The
  average of |psi><psi| over trajectories is the density matrix, so a batch of examples
  each with its own trajectory estimates noisy accuracy at state-vector cost (2^n, not 4^n);
* **density matrices** (:func:`apply_channel_density`): rho -> sum_k K_k rho K_k^dagger,
  exact, 4^n memory: for small n and for testing the trajectories.

Where the noise acts:

* in the QLAM layer (:func:`qlam.sim.scan.noisy.noisy_scan`, used by ``QLAM.noise``):
  **per token**, the channel on every qubit after each token's circuit U(x_t), before that
  token's readout. State preparation and the readout basis change are noiseless. Evaluation
  only (no gradients);
* on a bound circuit (:func:`circuit_density_matrix`, :func:`circuit_trajectories`):
  **per gate**, the channel on each wire a gate touches, after the gate.

Wire 0 is the most significant bit of a basis-state index, as everywhere in qlam.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from qlam.circuit import Circuit
from qlam.sim import gates
from qlam.sim.statevector import apply_matrix, complex_dtype

CHANNELS = ("depolarizing", "amplitude_damping", "bitflip")
_ALIASES = {"depolarising": "depolarizing", "depol": "depolarizing", "bit_flip": "bitflip",
            "amplitude_damp": "amplitude_damping", "damping": "amplitude_damping"}


@dataclass(frozen=True)
class Channel:
    """A one-qubit noise channel: ``kind`` in CHANNELS, strength ``p`` in [0, 1]."""

    kind: str
    p: float

    def __post_init__(self):
        if self.kind not in CHANNELS:
            raise ValueError(f"unknown noise kind {self.kind!r}; choose one of "
                             f"{', '.join(CHANNELS)}")
        if isinstance(self.p, bool) or not isinstance(self.p, numbers.Real):
            raise TypeError(f"noise strength must be a real number, got {type(self.p).__name__}")
        if not (math.isfinite(self.p) and 0.0 <= self.p <= 1.0):
            raise ValueError(f"{self.kind} noise strength must lie in [0, 1], got {self.p}")
        object.__setattr__(self, "p", float(self.p))

    def kraus(self, dtype=torch.complex128, device=None) -> torch.Tensor:
        """(K, 2, 2) Kraus operators with sum_k K_k^dagger K_k = I."""
        p = self.p
        if self.kind == "depolarizing":
            a, b = math.sqrt(1 - p), math.sqrt(p / 3)
            ops = [[[a, 0], [0, a]], [[0, b], [b, 0]], [[0, -1j * b], [1j * b, 0]],
                   [[b, 0], [0, -b]]]
        elif self.kind == "amplitude_damping":
            ops = [[[1, 0], [0, math.sqrt(1 - p)]], [[0, math.sqrt(p)], [0, 0]]]
        else:  # bitflip
            a, b = math.sqrt(1 - p), math.sqrt(p)
            ops = [[[a, 0], [0, a]], [[0, b], [b, 0]]]
        return torch.tensor(ops, dtype=complex_dtype(dtype), device=device)

    def __str__(self) -> str:
        return f"{self.kind}:{self.p:g}"


def _kind(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    return _ALIASES.get(key, key)


def _strength(kind: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"noise strength for {kind} must be a number, got {text!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{kind} noise strength must lie in [0, 1], got {text}")
    return value


def parse_noise(spec) -> Channel | None:
    """``"depolarizing:0.01"`` (or a Channel, or None / "none") -> Channel or None.

    Example:
        >>> parse_noise("bitflip:0.05")
        Channel(kind='bitflip', p=0.05)
    """
    if spec is None or isinstance(spec, Channel):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"noise must be a string like 'depolarizing:0.01', got "
                        f"{type(spec).__name__}")
    if spec.strip().lower() in ("", "none"):
        return None
    kind, sep, value = spec.partition(":")
    kind = _kind(kind)
    if kind not in CHANNELS:
        raise ValueError(f"unknown noise kind {kind!r} in {spec!r}; choose one of "
                         f"{', '.join(CHANNELS)} (e.g. depolarizing:0.01)")
    if not sep or not value.strip():
        raise ValueError(f"noise {spec!r} needs a strength: {kind}:P with P in [0, 1]")
    return Channel(kind, _strength(kind, value))


def parse_noise_sweep(spec: str) -> list[Channel]:
    """``"depolarizing:0.001,0.01"`` -> one Channel per strength."""
    if not isinstance(spec, str):
        raise TypeError(f"noise sweep must be a string like 'bitflip:0.01,0.1', got "
                        f"{type(spec).__name__}")
    kind, sep, values = spec.partition(":")
    kind = _kind(kind)
    if kind not in CHANNELS:
        raise ValueError(f"unknown noise kind {kind!r} in {spec!r}; choose one of "
                         f"{', '.join(CHANNELS)}")
    items = [v for v in values.split(",") if v.strip()]
    if not sep or not items:
        raise ValueError(f"noise sweep {spec!r} needs strengths: {kind}:P1,P2,...")
    return [Channel(kind, _strength(kind, v)) for v in items]


# ---- applying a channel -------------------------------------------------------------------
def _uniform(shape, generator, device, dtype) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device, dtype=dtype)


def apply_channel_trajectory(psi: torch.Tensor, kraus: torch.Tensor, wire: int, n_qubits: int,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """One trajectory step per row of psi (M, 2^n) complex: Kraus operator k is picked with
    probability ||K_k psi||^2, the result renormalised. Rows must be normalised."""
    outs = torch.stack([apply_matrix(psi, k, (wire,), n_qubits) for k in kraus])  # (K, M, N)
    weights = outs.real.square().add_(outs.imag.square()).sum(-1)  # (K, M)
    cum = weights.cumsum(0)
    r = _uniform(psi.shape[0], generator, psi.device, cum.dtype) * cum[-1]
    pick = (r[None] >= cum).sum(0).clamp_max(len(kraus) - 1)  # (M,)
    rows = torch.arange(psi.shape[0], device=psi.device)
    chosen = outs[pick, rows]
    norm = weights[pick, rows].clamp_min(torch.finfo(cum.dtype).tiny).sqrt()
    return chosen / norm[:, None]


def _pauli_weights(channel: Channel) -> tuple[float, float, float, float]:
    """Probabilities of I, X, Y, Z for the Pauli-mixture channels."""
    p = channel.p
    if channel.kind == "depolarizing":
        return 1 - p, p / 3, p / 3, p / 3
    if channel.kind == "bitflip":
        return 1 - p, p, 0.0, 0.0
    raise ValueError(f"{channel.kind} is not a Pauli channel")


def channel_trajectory_all_wires(psi: torch.Tensor, channel: Channel, n_qubits: int,
                                 generator: torch.Generator | None = None) -> torch.Tensor:
    """One trajectory step of ``channel`` on every wire of each row of psi (M, 2^n): the
    same law as :func:`apply_channel_trajectory` wire after wire, faster. Pauli channels
    (depolarizing, bitflip) pick a Pauli string per row and apply it as one gather;
    amplitude damping picks a jump per wire from the state."""
    m, dim = psi.shape
    idx = torch.arange(dim, device=psi.device)
    rdtype = psi.real.dtype
    if channel.kind == "amplitude_damping":
        keep = math.sqrt(1 - channel.p)
        for w in range(n_qubits):
            bit = 1 << (n_qubits - 1 - w)
            one = (idx & bit) != 0
            pop = (psi.real.square() + psi.imag.square())[:, one].sum(-1)
            jump = _uniform(m, generator, psi.device, rdtype) < channel.p * pop
            jumped = torch.where(one, torch.zeros_like(psi), psi[:, idx | bit])
            damped = torch.where(one, psi * keep, psi)
            psi = torch.where(jump[:, None], jumped, damped)
            norm = (psi.real.square() + psi.imag.square()).sum(-1, keepdim=True)
            psi = psi * norm.clamp_min(torch.finfo(rdtype).tiny).rsqrt()
        return psi
    cum = torch.tensor(_pauli_weights(channel), dtype=rdtype, device=psi.device).cumsum(0)
    r = _uniform((m, n_qubits), generator, psi.device, rdtype) * cum[-1]
    pick = (r[..., None] >= cum[:3]).sum(-1)  # (M, n): 0 I, 1 X, 2 Y, 3 Z
    bits = 1 << torch.arange(n_qubits - 1, -1, -1, device=psi.device)
    flip = (((pick == 1) | (pick == 2)).long() * bits).sum(-1)  # X or Y on the wire
    zmask = (((pick == 2) | (pick == 3)).long() * bits).sum(-1)  # Z or Y
    n_y = (pick == 2).sum(-1)
    # (X^F Z^S psi)[i] = (-1)^{|(i ^ F) & S|} psi[i ^ F], and Y = i X Z
    src = idx[None] ^ flip[:, None]  # (M, N)
    sign = (1 - 2 * gates.parity(src & zmask[:, None], n_qubits)).to(rdtype)
    phase = torch.polar(torch.ones_like(n_y, dtype=rdtype), (math.pi / 2) * n_y.to(rdtype))
    return torch.gather(psi, 1, src) * sign * phase[:, None]


def apply_channel_density(rho: torch.Tensor, kraus: torch.Tensor, wire: int,
                          n_qubits: int) -> torch.Tensor:
    """rho (M, 2^n, 2^n) -> sum_k K_k rho K_k^dagger, K_k acting on ``wire``."""
    out = torch.zeros_like(rho)
    for k in kraus:
        out += _sandwich(rho, k, (wire,), n_qubits)
    return out


def _left(rho: torch.Tensor, u: torch.Tensor, wires, n: int) -> torch.Tensor:
    """(U ⊗ I) rho for rho (M, N, N): U applied to every column."""
    m, dim = rho.shape[0], rho.shape[-1]
    cols = rho.transpose(-1, -2).reshape(m * dim, dim)
    return apply_matrix(cols, u, wires, n).reshape(m, dim, dim).transpose(-1, -2)


def _sandwich(rho: torch.Tensor, u: torch.Tensor, wires, n: int) -> torch.Tensor:
    """U rho U^dagger = (U (U rho)^dagger)^dagger (conjugation resolved: no lazy conj view)."""
    return _left(_left(rho, u, wires, n).mH, u, wires, n).mH.resolve_conj()


def pure_density(psi: torch.Tensor) -> torch.Tensor:
    """|psi><psi|: (..., N) -> (..., N, N)."""
    return psi[..., :, None] * psi[..., None, :].conj()


# ---- bound circuits: noise after every gate -----------------------------------------------
def _check_bound(circuit: Circuit) -> None:
    if not isinstance(circuit, Circuit):
        raise TypeError(f"expected a qlam Circuit, got {type(circuit).__name__}")
    if any(a.kind != "const" for op in circuit.ops for a in op.angles):
        raise ValueError("the circuit has trainable or input angles: bind it first "
                         "(Circuit.bind(params, inputs))")


def circuit_density_matrix(circuit: Circuit, noise=None, dtype=torch.float64,
                           rho: torch.Tensor | None = None) -> torch.Tensor:
    """Exact (2^n, 2^n) density matrix of a bound circuit from |0...0> (or from ``rho``),
    with ``noise`` (a Channel or spec) on every wire of every gate, after the gate."""
    _check_bound(circuit)
    channel = parse_noise(noise)
    n, dim = circuit.n_qubits, 2**circuit.n_qubits
    if n > 12:
        raise ValueError(f"density matrices are for small circuits (n <= 12), got {n} qubits; "
                         "use circuit_trajectories")
    cd = complex_dtype(dtype)
    if rho is None:
        rho = torch.zeros(1, dim, dim, dtype=cd)
        rho[0, 0, 0] = 1
    else:
        if not isinstance(rho, torch.Tensor) or rho.shape != (dim, dim):
            raise ValueError(f"rho must be a ({dim}, {dim}) density matrix")
        rho = rho.to(cd)[None]
    kraus = channel.kraus(cd) if channel is not None else None
    for op in circuit.ops:
        u = gates.matrix(op.name, [a.value for a in op.angles], rho)
        rho = _sandwich(rho, u, op.wires, n)
        if kraus is not None:
            for w in op.wires:
                rho = apply_channel_density(rho, kraus, w, n)
    return rho[0]


def circuit_trajectories(circuit: Circuit, noise, trajectories: int,
                         generator: torch.Generator | None = None,
                         dtype=torch.float64) -> torch.Tensor:
    """(trajectories, 2^n) final states of a bound circuit, each a quantum trajectory of
    ``noise`` on every wire of every gate; their |psi><psi| average to
    :func:`circuit_density_matrix`."""
    _check_bound(circuit)
    channel = parse_noise(noise)
    if isinstance(trajectories, bool) or not isinstance(trajectories, int) or trajectories < 1:
        raise ValueError(f"trajectories must be an int >= 1, got {trajectories!r}")
    n = circuit.n_qubits
    cd = complex_dtype(dtype)
    psi = torch.zeros(trajectories, 2**n, dtype=cd)
    psi[:, 0] = 1
    kraus = channel.kraus(cd) if channel is not None else None
    for op in circuit.ops:
        u = gates.matrix(op.name, [a.value for a in op.angles], psi)
        psi = apply_matrix(psi, u, op.wires, n)
        if kraus is not None:
            for w in op.wires:
                psi = apply_channel_trajectory(psi, kraus, w, n, generator)
    return psi


__all__ = ["CHANNELS", "Channel", "parse_noise", "parse_noise_sweep", "apply_channel_trajectory",
           "apply_channel_density", "channel_trajectory_all_wires", "pure_density", "circuit_density_matrix",
           "circuit_trajectories"]
