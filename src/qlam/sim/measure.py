"""Measurements of batched state vectors: probabilities, Pauli expectations and shots.

States are complex tensors (..., 2^n) with wire 0 the most significant bit of the index. A
Pauli string such as ``"XZIY"`` has one character per wire: character i acts on wire i.
Exact quantities are differentiable; sampled ones are not (they are draws).
"""

from __future__ import annotations

import math
import operator

import torch

from qlam.circuit import MAX_QUBITS
from qlam.sim.gates import parity
from qlam.sim.statevector import apply_matrix

_PAULI_CHARS = set("IXYZ")
_S2 = 1 / math.sqrt(2)


def _n_qubits(state: torch.Tensor) -> int:
    if not isinstance(state, torch.Tensor):
        raise TypeError(f"state must be a torch tensor, got {type(state).__name__}")
    if state.dim() < 1:
        raise ValueError("state must have at least one dimension (..., 2^n)")
    dim = state.shape[-1]
    n = dim.bit_length() - 1
    if dim < 2 or 2**n != dim:
        raise ValueError(f"state's last dimension must be 2^n with n >= 1, got {dim}")
    return n


def _check_complex(state) -> int:
    n = _n_qubits(state)
    if not state.is_complex():
        raise TypeError(f"state must be a complex tensor (..., 2^n), got dtype {state.dtype}")
    return n


def probabilities(state: torch.Tensor) -> torch.Tensor:
    """|amplitude|^2 of every basis state: real (..., 2^n), differentiable."""
    _check_complex(state)
    return state.real.square() + state.imag.square()


def _check_paulis(pauli, n: int) -> tuple[list[str], bool]:
    """Normalise ``pauli`` to a list of upper-case strings; also return whether it was one."""
    single = isinstance(pauli, str)
    paulis = [pauli] if single else list(pauli) if isinstance(pauli, (list, tuple)) else None
    if paulis is None:
        raise TypeError(f"pauli must be a string like 'XZIY' or a list of them, got "
                        f"{type(pauli).__name__}")
    if not paulis:
        raise ValueError("pauli list is empty")
    out = []
    for p in paulis:
        if not isinstance(p, str):
            raise TypeError(f"Pauli strings must be str, got {type(p).__name__}")
        up = p.upper()
        bad = sorted(set(up) - _PAULI_CHARS)
        if bad:
            raise ValueError(f"Pauli string {p!r} has invalid character(s) {bad}; use I, X, Y, Z")
        if len(up) != n:
            raise ValueError(f"Pauli string {p!r} has length {len(p)} but the state has "
                             f"{n} qubits (one character per wire)")
        out.append(up)
    return out, single


def _masks(p: str) -> tuple[int, int, int]:
    """(flip mask: X or Y, sign mask: Y or Z, number of Y); wire 0 is the top bit."""
    n = len(p)
    flip = sum(1 << (n - 1 - i) for i, c in enumerate(p) if c in "XY")
    sign = sum(1 << (n - 1 - i) for i, c in enumerate(p) if c in "YZ")
    return flip, sign, p.count("Y")


def expval(state: torch.Tensor, pauli) -> torch.Tensor:
    """<psi|P|psi> for a Pauli string or a list of K of them.

    state (..., 2^n) complex; returns real (...) for one string, (..., K) for a list.
    Differentiable with respect to the state.

    Example:
        >>> psi = torch.tensor([[1, 0, 0, 1]], dtype=torch.complex128) / 2 ** 0.5
        >>> expval(psi, ["ZZ", "XX", "ZI"]).round(decimals=6)
        tensor([[1., 1., 0.]], dtype=torch.float64)

    P|z> = i^{#Y} (-1)^{|z & sign|} |z xor flip>, so
    <P> = Re( i^{#Y} sum_z conj(psi[z xor flip]) (-1)^{|z & sign|} psi[z] ).
    """
    n = _check_complex(state)
    paulis, single = _check_paulis(pauli, n)
    idx = torch.arange(2**n, device=state.device)
    re, im = state.real, state.imag
    out = []
    for p in paulis:
        flip, sign_mask, n_y = _masks(p)
        sign = 1 - 2 * parity(idx & sign_mask, n)
        sign = sign.to(re.dtype)
        if flip:
            perm = idx ^ flip
            re_p, im_p = re[..., perm], im[..., perm]
        else:
            re_p, im_p = re, im
        # conj(psi_p) * psi = (re_p re + im_p im) + i (re_p im - im_p re)
        if n_y % 2 == 0:
            val = ((re_p * re + im_p * im) * sign).sum(-1)
        else:
            val = ((re_p * im - im_p * re) * sign).sum(-1)
        if n_y % 4 in (1, 2):  # i^1 -> -Im, i^2 -> -Re
            val = -val
        out.append(val)
    return out[0] if single else torch.stack(out, -1)


def _check_shots(shots) -> int:
    if isinstance(shots, bool):
        raise TypeError("shots must be an int >= 1, got a bool")
    try:
        shots = operator.index(shots)
    except TypeError:
        raise TypeError(f"shots must be an int >= 1, got {type(shots).__name__}") from None
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    return shots


def _as_probs(state_or_probs: torch.Tensor) -> torch.Tensor:
    _n_qubits(state_or_probs)
    what = "state" if state_or_probs.is_complex() else "probabilities"
    if state_or_probs.is_complex():
        probs = probabilities(state_or_probs).detach()
    elif not state_or_probs.is_floating_point():
        raise TypeError(f"probabilities must be floating point, got {state_or_probs.dtype}")
    else:
        probs = state_or_probs.detach()
    return _check_distribution(probs, what)


def _check_distribution(probs: torch.Tensor, what: str = "probabilities") -> torch.Tensor:
    """``probs`` (..., N), checked to be finite, non-negative and to sum to 1 along the last
    axis (within 1e-4); ``what`` names it in the error ("state": from squared amplitudes)."""
    if not torch.isfinite(probs).all() or (probs < 0).any():
        raise ValueError(f"{what} must be finite" + ("" if what == "state" else " and non-negative"))
    totals = probs.sum(-1)
    if not torch.allclose(totals, torch.ones_like(totals), atol=1e-4):
        need = "be normalised (squared norms" if what == "state" else "sum to 1 (got sums"
        raise ValueError(f"{what} must {need} {totals.flatten()[:4].tolist()})")
    return probs


def sample(state_or_probs: torch.Tensor, shots: int,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``shots`` computational-basis outcomes per batch row.

    state_or_probs: a complex state (..., 2^n) or real probabilities (..., 2^n). Returns int64
    basis-state indices (..., shots); bit n-1-i of an index is wire i's outcome.

    Example:
        >>> probs = torch.tensor([[0.0, 1.0]])
        >>> sample(probs, shots=3)
        tensor([[1, 1, 1]])
    """
    shots = _check_shots(shots)
    probs = _as_probs(state_or_probs)
    lead = probs.shape[:-1]
    flat = probs.reshape(-1, probs.shape[-1])
    flat = flat / flat.sum(-1, keepdim=True)
    draws = torch.multinomial(flat, shots, replacement=True, generator=generator)
    return draws.reshape(*lead, shots)


def sample_counts(probs: torch.Tensor, shots: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Outcome counts of ``shots`` Born-rule draws per row of probs (..., N) (finite,
    non-negative, each row summing to 1), without drawing the shots one by one: the
    multinomial in its conditional form, a chain of binomials
    c_k ~ Bin(shots - c_0 - ... - c_{k-1}, p_k / (p_k + ... + p_{N-1})), so the cost is O(N)
    per row whatever the shot count. Returns counts (..., N) float64 (whatever probs' dtype:
    float32 holds integers exactly only up to 2^24), each row summing to ``shots``."""
    shots = _check_shots(shots)
    if not probs.is_floating_point():
        raise TypeError(f"probabilities must be floating point, got {probs.dtype}")
    if probs.dim() < 1:
        raise ValueError("probabilities must have shape (..., N), got a scalar")
    flat = _check_distribution(probs.detach()).reshape(-1, probs.shape[-1]).double()
    tail = flat.flip(-1).cumsum(-1).flip(-1)  # tail[:, k] = p_k + ... + p_{N-1}
    remaining = flat.new_full(flat.shape[:1], float(shots))
    out = torch.empty_like(flat)
    for k in range(flat.shape[1] - 1):
        q = torch.where(tail[:, k] > 0, flat[:, k] / tail[:, k], 1.0).clamp(0, 1)
        out[:, k] = torch.binomial(remaining, q, generator=generator)
        remaining = remaining - out[:, k]
    out[:, -1] = remaining
    return out.reshape(probs.shape)


def counts(samples: torch.Tensor, n_qubits: int) -> torch.Tensor:
    """Histogram of basis-state indices: (..., shots) -> int64 counts (..., 2^n)."""
    if not isinstance(samples, torch.Tensor) or samples.dtype not in (
            torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError("samples must be an integer tensor of basis-state indices")
    if isinstance(n_qubits, bool) or not isinstance(n_qubits, int) or not 1 <= n_qubits <= MAX_QUBITS:
        raise ValueError(f"n_qubits must be an int in 1..{MAX_QUBITS}, got {n_qubits!r}")
    dim = 2**n_qubits
    if samples.numel() and (samples.min() < 0 or samples.max() >= dim):
        raise ValueError(f"sample indices must lie in [0, {dim}) for {n_qubits} qubits")
    out = torch.zeros(*samples.shape[:-1], dim, dtype=torch.int64, device=samples.device)
    return out.scatter_add_(-1, samples.long(), torch.ones_like(samples, dtype=torch.int64))


def bitstring_counts(samples: torch.Tensor, n_qubits: int) -> dict[str, int]:
    """{bitstring: count} for one row of samples (shots,); wire 0 is the leftmost bit
    (the reverse of Qiskit's ``get_counts`` keys)."""
    if samples.dim() != 1:
        raise ValueError(f"bitstring_counts takes one row of samples (shots,), got "
                         f"{tuple(samples.shape)}")
    c = counts(samples, n_qubits)
    return {format(i, f"0{n_qubits}b"): int(v) for i, v in enumerate(c.tolist()) if v}


# Single-qubit basis changes V with V P V^dagger = Z, so <P> = <V psi| Z |V psi>.
_TO_Z = {
    "X": [[_S2, _S2], [_S2, -_S2]],  # H
    "Y": [[_S2, -1j * _S2], [_S2, 1j * _S2]],  # H S^dagger
}


def rotate_to_z(state: torch.Tensor, pauli: str) -> torch.Tensor:
    """The state in the eigenbasis of ``pauli``: X and Y factors turned into Z."""
    n = _check_complex(state)
    (p,), _ = _check_paulis(pauli, n)
    lead = state.shape[:-1]
    psi = state.reshape(-1, 2**n)
    for w, c in enumerate(p):
        if c in _TO_Z:
            u = torch.tensor(_TO_Z[c], dtype=state.dtype, device=state.device)
            psi = apply_matrix(psi, u, (w,), n)
    return psi.reshape(*lead, 2**n)


def estimate_expval(state: torch.Tensor, pauli, shots: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Finite-shot estimate of <P>: rotate to the Z basis, sample, average the parity.

    Each shot gives +1 or -1 with mean <P>, so the estimate is unbiased with variance
    (1 - <P>^2) / shots. Returns real (...) for one string, (..., K) for a list (each
    string gets its own ``shots`` draws). Not differentiable.
    """
    n = _check_complex(state)
    shots = _check_shots(shots)
    paulis, single = _check_paulis(pauli, n)
    state = state.detach()
    idx = torch.arange(2**n, device=state.device)
    out = []
    for p in paulis:
        support = sum(1 << (n - 1 - i) for i, c in enumerate(p) if c != "I")
        eig = (1 - 2 * parity(idx & support, n)).to(state.real.dtype)
        draws = sample(rotate_to_z(state, p), shots, generator)
        out.append(eig[draws].mean(-1))
    return out[0] if single else torch.stack(out, -1)


def walsh_matrix(n_qubits: int) -> torch.Tensor:
    """(2^n, 2^n - 1): column S is the sign (-1)^{popcount(z & S)} of the Z-string S on basis
    state z, so ``probs @ walsh`` are the expectations of every non-identity Z-string."""
    z = torch.arange(2**n_qubits)
    s = torch.arange(1, 2**n_qubits)
    return (1 - 2 * parity(z[:, None] & s[None, :], n_qubits)).double()


def sample_probs(probs: torch.Tensor, shots: int, generator=None) -> torch.Tensor:
    """Empirical frequencies of ``shots`` Born-rule samples from each row of probs (..., N),
    in probs' dtype."""
    return (sample_counts(probs, shots, generator) / shots).to(probs.dtype)


def sampled_readout(probs: torch.Tensor, shots: int, generator=None) -> torch.Tensor:
    """A layer's finite-shot readout of probs (..., N): in the forward the frequencies of
    ``shots`` samples per row, in the backward the exact probabilities' gradient (the
    straight-through estimator ``probs + (sampled - probs).detach()``). All-zero rows (padded
    tokens) stay zero; rounding's tiny negatives are read as 0 and its drift of the rows' sums
    (long float32 sequences) normalised away."""
    p = probs.detach().clamp_min(0)
    total = p.sum(-1)
    real = total > 0  # (...)
    sampled = torch.zeros_like(p)
    sampled[real] = sample_probs(p[real] / total[real].unsqueeze(-1), shots, generator)
    return probs + (sampled - probs).detach()
