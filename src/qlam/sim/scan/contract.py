"""The scan's contract, shared by every engine: shapes, input checks, renormalisation, the
real-pair layout, and the autograd wrapper of a compiled (forward, reversible backward) pair.

The quantum-memory recurrence: per head h and token t, for layers r = 0..R-1 the state is
updated by ``psi <- W[h, r] · (exp(i * phases[b, t, h, r]) ⊙ psi)`` and read out as
``probs[b, t, h] = |W_read[h] · (exp(i * read_phases[b, t, h]) ⊙ psi_t)|^2``
(or ``|psi_t|^2`` without a readout basis).

Shapes (B batch, L tokens, H heads, R layers per token, N = 2^n), complex numbers as real
pairs [re, im]:
    psi0 (B, H, 2, N); phases (B, L, H, R, N); w (H, R, 2, N, N);
    read_phases (B, L, H, N) or None; w_read (H, 2, N, N) or None.
Every engine returns probs (B, L, H, N) and the final state (B, H, 2, N).

This module imports no engine and no dispatcher: engines import it, never each other's
dispatch.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

# Rounding makes a float32 W unitary only to ~1e-7, and the error compounds over the same W
# applied token after token; renormalising the state every RENORM_EVERY tokens keeps
# |psi| = 1 to ~1e-6 over 10^5 tokens. Every engine renormalises on the same tokens, and the
# reversible backwards treat it as the identity (its effect on gradients is of the same 1e-7
# order).
RENORM_EVERY = 64


def check_state_and_phases(psi0, phases) -> tuple[int, int, int, int, int]:
    """(B, L, H, R, N) of phases, or a ValueError naming phases or psi0."""
    if phases.dim() != 5:
        raise ValueError(f"phases must have shape (batch, length, heads, layers, 2^n), "
                         f"got {tuple(phases.shape)}")
    b, l, h, r, n = phases.shape
    if psi0.shape != (b, h, 2, n):
        raise ValueError(f"psi0 must have shape {(b, h, 2, n)}, got {tuple(psi0.shape)}")
    return b, l, h, r, n


def check_inputs(psi0, phases, w, read_phases, w_read) -> None:
    """Raise a ValueError naming the first argument whose shape breaks the contract."""
    b, l, h, r, n = check_state_and_phases(psi0, phases)
    if w.shape != (h, r, 2, n, n):
        raise ValueError(f"w must have shape {(h, r, 2, n, n)}, got {tuple(w.shape)}")
    if (read_phases is None) != (w_read is None):
        raise ValueError("read_phases and w_read must be given together")
    if read_phases is not None:
        if read_phases.shape != (b, l, h, n):
            raise ValueError(f"read_phases must have shape {(b, l, h, n)}, "
                             f"got {tuple(read_phases.shape)}")
        if w_read.shape != (h, 2, n, n):
            raise ValueError(f"w_read must have shape {(h, 2, n, n)}, got {tuple(w_read.shape)}")


def expand_angles(angles: torch.Tensor, phase_map: torch.Tensor,
                  offset: torch.Tensor) -> torch.Tensor:
    """The phases ``offset + angles . map`` of angles (..., F) through a phase map (F, N) ->
    (..., N), or (R, F, N) with offset (R, N) -> (..., R, N): what the compiled kernel computes
    from the angles it is given with ``maps`` (:func:`qlam.sim.scan.cpp.scan_kernel`)."""
    if phase_map.dim() == 2:
        return angles @ phase_map + offset
    return torch.einsum("...f,rfn->...rn", angles, phase_map) + offset


def check_maps(psi0, angles, w, read_angles, w_read, maps) -> None:
    """The inputs of a scan given angles and ``maps`` (phase_map (R, F, N), phase_offset
    (R, N), read_map (Fr, N) or None, read_offset (N,) or None): angles (B, L, H, F) and
    read_angles (B, L, H, Fr) expand to phases of the contract's shapes; the maps are constants
    (no gradient). Raises a ValueError naming the first argument that breaks it."""
    if not isinstance(maps, (tuple, list)) or len(maps) != 4:
        raise ValueError("maps must be (phase_map, phase_offset, read_map, read_offset)")
    phase_map, phase_offset, read_map, read_offset = maps
    if phase_map is None or phase_offset is None or phase_map.dim() != 3:
        raise ValueError("maps: phase_map (R, F, N) and phase_offset (R, N) are required")
    r, f, n = phase_map.shape
    if f == 0:
        raise ValueError("phase_map has no angles (F = 0): pass the phases themselves "
                         "(phase_offset broadcast to (B, L, H, R, N)) and no maps")
    if phase_offset.shape != (r, n):
        raise ValueError(f"phase_offset must have shape {(r, n)}, got {tuple(phase_offset.shape)}")
    if angles.dim() != 4 or angles.shape[3] != f:
        raise ValueError(f"angles must have shape (batch, length, heads, {f}) for a phase map "
                         f"of {f} angles, got {tuple(angles.shape)}")
    if (read_map is None) != (read_offset is None):
        raise ValueError("read_map and read_offset must be given together")
    read_phases = None
    if read_map is not None:
        if read_angles is None:
            raise ValueError("read_map needs read angles")
        if read_map.dim() != 2 or read_map.shape[1] != n or read_offset.shape != (n,):
            raise ValueError(f"read_map must be (Fr, {n}) and read_offset ({n},), got "
                             f"{tuple(read_map.shape)} and {tuple(read_offset.shape)}")
        if read_angles.dim() != 4 or read_angles.shape[3] != read_map.shape[0]:
            raise ValueError(f"read angles must have shape (batch, length, heads, "
                             f"{read_map.shape[0]}), got {tuple(read_angles.shape)}")
        read_phases = torch.empty(*read_angles.shape[:3], n, device="meta")
    elif read_angles is not None:
        read_phases = read_angles
    if any(m is not None and m.requires_grad for m in maps):
        raise ValueError("maps are constants: the kernel returns no gradient for them")
    check_inputs(psi0, torch.empty(*angles.shape[:3], r, n, device="meta"), w, read_phases,
                 w_read)


def _complex(pair: torch.Tensor, axis: int) -> torch.Tensor:
    re, im = pair.unbind(axis)
    return torch.complex(re, im)


def as_complex(psi0, phases, w, read_phases, w_read):
    """The contract's real pairs as complex tensors (detached): psi (B, H, N), mats
    (H, R, N, N), m_read (H, N, N) or None."""
    check_inputs(psi0, phases, w, read_phases, w_read)
    psi = _complex(psi0.detach(), -2)  # (B, H, N)
    mats = _complex(w.detach(), -3)  # (H, R, N, N)
    m_read = _complex(w_read.detach(), -3) if w_read is not None else None  # (H, N, N)
    return psi, mats, m_read


def one_float_dtype(*tensors) -> bool:
    """Whether the given tensors (None skipped) share one dtype, float32 or float64."""
    ts = [t for t in tensors if t is not None]
    return len({t.dtype for t in ts}) == 1 and ts[0].dtype in (torch.float32, torch.float64)


def real_form(w: torch.Tensor) -> torch.Tensor:
    """(..., 2, N, N) [re, im] -> (..., 2N, 2N) transposed real form, for row vectors:
    ``[re, im] @ real_form(w)`` equals ``[Re(W psi), Im(W psi)]``."""
    re, im = w.unbind(-3)
    top = torch.cat([re, -im], -1)
    bottom = torch.cat([im, re], -1)
    return torch.cat([top, bottom], -2).transpose(-1, -2)


def random_unitaries(*lead: int, n: int, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Haar-random N x N unitaries in the scan's layout, (*lead, 2, N, N) [re, im]:
    QR of a complex Gaussian with the phases of R's diagonal moved into Q (Mezzadri 2007).
    For tests, self-tests and benchmarks."""
    z = torch.randn(*lead, n, n, generator=generator, dtype=torch.complex128)
    q, r = torch.linalg.qr(z)
    d = r.diagonal(dim1=-2, dim2=-1)
    q = q * (d / d.abs())[..., None, :]
    return torch.stack([q.real, q.imag], -3).to(dtype)


def compiled_function(name: str, run_forward, run_backward) -> type:
    """An autograd Function around a compiled engine: ``run_forward(psi0, phases, w,
    read_phases, w_read) -> (probs, last)`` and the reversible ``run_backward(last, phases, w,
    read_phases, w_read, g_probs, g_last) -> (g_psi0, g_phases, g_w, g_read_phases,
    g_w_read)``, where an unused output's gradient arrives as None."""

    def forward(ctx, psi0, phases, w, read_phases, w_read):
        probs, last = run_forward(psi0, phases, w, read_phases, w_read)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(last, phases, w, read_phases, w_read)
        return probs, last

    @once_differentiable
    def backward(ctx, g_probs, g_last):
        if g_probs is None and g_last is None:
            return None, None, None, None, None
        grads = run_backward(*ctx.saved_tensors, g_probs, g_last)
        return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad))

    return type(name, (torch.autograd.Function,),
                {"forward": staticmethod(forward), "backward": staticmethod(backward)})


__all__ = ["RENORM_EVERY", "check_state_and_phases", "check_inputs", "expand_angles",
           "check_maps", "as_complex",
           "one_float_dtype", "real_form", "random_unitaries", "compiled_function"]
