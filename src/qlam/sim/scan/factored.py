"""The gate-factored scan: each layer's W applied as ``P (A ⊗ B)`` instead of a dense matrix.

A token layer whose fixed block is single-qubit gates followed by a permutation (a CNOT
ring, say; :func:`qlam.sim.lowering.kron_factors`) is ``W = P (A ⊗ B)`` with A the
Kronecker product of the first ``rows`` wires' 2x2 matrices and B of the others. On the state
viewed as a (2^rows, 2^(n-rows)) matrix Psi, ``(A ⊗ B) psi`` is ``A Psi B^T``: two GEMMs of
2^n (2^rows + 2^(n-rows)) multiply-adds per example instead of the dense product's 4^n, then
one gather. At 12 qubits with rows = 6 that is 128 instead of 4096 per amplitude.

Shapes follow :mod:`qlam.sim.scan.contract` (psi0 (B, H, 2, N), phases (B, L, H, R, N);
probs (B, L, H, N) and the final state (B, H, 2, N) in real pairs), with the layers given
as ``a`` (H, R, 2^rows, 2^rows) and ``b`` (H, R, 2^(n-rows), 2^(n-rows)) complex and
``perms`` (one (N,) index tensor or None per layer). No readout basis. Complex arithmetic
throughout; the same renormalisation every ``RENORM_EVERY`` tokens as the other engines.

Gradients: autograd, checkpointed every ``CHUNK`` tokens (only the states at chunk
boundaries are kept; each chunk's forward is recomputed in the backward), so activation
memory is O(B H N (L / CHUNK + CHUNK)) plus the outputs. :func:`scan_factored_ref` is the
same recurrence written out gate by gate for tests.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from qlam.sim.scan.contract import RENORM_EVERY, check_state_and_phases

CHUNK = 32


def _gather_index(perm, rows_dim: int, cols_dim: int, bsz: int):
    """The flat index (A * B * C,) that applies the row gather ``perm`` (N,) to a state held
    as (A, B, C) (rows of the amplitude index, batch, columns), and its inverse."""
    src = (perm // cols_dim) * (bsz * cols_dim) + perm % cols_dim
    batch = torch.arange(bsz, device=perm.device) * cols_dim
    idx = (src.view(rows_dim, 1, cols_dim) + batch.view(1, bsz, 1)).reshape(-1)
    return idx, torch.argsort(idx)


class _Gather(torch.autograd.Function):
    """``x[:, idx]`` for a permutation idx: the backward is the gather by the inverse
    permutation (index_select's own backward scatters into zeros)."""

    @staticmethod
    def forward(ctx, x, idx, inverse):
        ctx.save_for_backward(inverse)
        return torch.index_select(x, 1, idx)

    @staticmethod
    def backward(ctx, g):
        (inverse,) = ctx.saved_tensors
        return torch.index_select(g, 1, inverse), None, None


def _apply_layer(z, a, b, idx):
    """z (H, A, B, C) complex -> P (A ⊗ B) z: a (H, A, A), b (H, C, C); idx the flat gather
    of P and its inverse (None: identity). Two GEMMs per head, no copy but the gather."""
    h, rows_dim, bsz, cols_dim = z.shape
    z = torch.bmm(a, z.view(h, rows_dim, bsz * cols_dim))  # A Psi, every example at once
    z = torch.bmm(z.view(h, rows_dim * bsz, cols_dim), b.transpose(-1, -2))  # (A Psi) B^T
    if idx is not None:
        z = _Gather.apply(z.view(h, -1), *idx)
    return z.view(h, rows_dim, bsz, cols_dim)


def _chunk(z, rot, a, b, idxs, t0):
    """Tokens t0.. of one chunk: z (H, A, B, C), rot (T, R, H, A, B, C) unit phases
    e^{i phi} -> (probs (T, H, A, B, C), z)."""
    probs = []
    a_r, b_r = a.unbind(1), b.unbind(1)
    for t, rot_t in enumerate(rot.unbind(0)):  # unbind: one gradient stack, not one per token
        for r, (idx, rot_tr) in enumerate(zip(idxs, rot_t.unbind(0))):
            z = _apply_layer(z * rot_tr, a_r[r], b_r[r], idx)
        if (t0 + t + 1) % RENORM_EVERY == 0:
            norm = (z.real.square() + z.imag.square()).sum((1, 3), keepdim=True)
            z = z * torch.rsqrt(norm)
        probs.append(z.real.square() + z.imag.square())
    return torch.stack(probs), z


def check_factored(psi0, phases, a, b, perms) -> tuple[int, int]:
    """Raise a ValueError naming the first argument that breaks the shapes above; returns
    (2^rows, 2^(n-rows))."""
    _, _, h, r, n = check_state_and_phases(psi0, phases)
    if a.dim() != 4 or a.shape[:2] != (h, r) or a.shape[2] != a.shape[3]:
        raise ValueError(f"a must have shape ({h}, {r}, A, A), got {tuple(a.shape)}")
    rows_dim = a.shape[-1]
    if b.shape != (h, r, n // rows_dim, n // rows_dim) or rows_dim * b.shape[-1] != n:
        raise ValueError(f"b must have shape {(h, r, n // rows_dim, n // rows_dim)} "
                         f"(A * C = {n}), got {tuple(b.shape)}")
    if len(perms) != r or any(p is not None and (
            p.shape != (n,) or not torch.equal(p.sort().values.cpu(), torch.arange(n)))
            for p in perms):
        raise ValueError(f"perms must be {r} permutations of range({n}) or None")
    if not (a.is_complex() and b.is_complex()):
        raise ValueError("a and b must be complex tensors")
    return rows_dim, n // rows_dim


def scan_factored(psi0, phases, a, b, perms):
    """The factored recurrence (module docstring): probs (B, L, H, N), last (B, H, 2, N).
    The state is held as (H, A, B, C), rows of the amplitude index outside the batch, so
    that both factors are one GEMM per head over the whole batch."""
    rows_dim, cols_dim = check_factored(psi0, phases, a, b, perms)
    bsz, length, h, r, n = phases.shape
    cdtype = a.dtype
    z = torch.complex(psi0[:, :, 0], psi0[:, :, 1]).to(cdtype)
    z = z.view(bsz, h, rows_dim, cols_dim).permute(1, 2, 0, 3).contiguous()
    idxs = [None if p is None else _gather_index(p.to(phases.device), rows_dim, cols_dim, bsz)
            for p in perms]
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (psi0, phases, a, b))
    outs = []
    for t0 in range(0, length, CHUNK):
        ph = phases[:, t0:t0 + CHUNK].unflatten(-1, (rows_dim, cols_dim))
        ph = ph.permute(1, 3, 2, 4, 0, 5).contiguous()  # (T, R, H, A, B, C)
        rot = torch.polar(torch.ones_like(ph), ph).to(cdtype)
        if grad:
            p, z = checkpoint(_chunk, z, rot, a, b, idxs, t0, use_reentrant=False)
        else:
            p, z = _chunk(z, rot, a, b, idxs, t0)
        outs.append(p.permute(3, 0, 1, 2, 4).reshape(bsz, -1, h, n))  # (B, T, H, N)
    probs = torch.cat(outs, 1).to(phases.dtype)
    psi = z.permute(2, 0, 1, 3).reshape(bsz, h, n)
    last = torch.stack([psi.real, psi.imag], -2).to(phases.dtype)
    return probs, last


def scan_factored_ref(psi0, phases, a, b, perms):
    """The same recurrence with each layer's W = P (A ⊗ B) built densely (for tests)."""
    psi = torch.complex(psi0[:, :, 0], psi0[:, :, 1]).to(a.dtype)
    probs = []
    for t in range(phases.shape[1]):
        for r, perm in enumerate(perms):
            w = torch.vmap(torch.kron)(a[:, r], b[:, r])  # (H, N, N)
            if perm is not None:
                w = w[:, perm]
            psi = torch.einsum("hij,bhj->bhi", w, psi * torch.exp(1j * phases[:, t, :, r]))
        if (t + 1) % RENORM_EVERY == 0:
            psi = psi / psi.abs().square().sum(-1, keepdim=True).sqrt()
        probs.append(psi.abs().square())
    return torch.stack(probs, 1).to(phases.dtype), torch.stack([psi.real, psi.imag], -2).to(
        phases.dtype)
