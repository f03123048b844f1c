"""Density-matrix engines: the scan on rho (4^n per head) instead of psi.

Today one exact, evaluation-only engine, the counterpart of the noisy trajectories
(:mod:`qlam.sim.scan.noisy`), used to test them. A differentiable density-matrix engine (a
mixed-state memory) belongs here, with its own contract: its state is rho (B, H, N, N).
"""

from __future__ import annotations

import torch

from qlam.sim.noise import apply_channel_density, parse_noise, pure_density
from qlam.sim.scan.contract import as_complex


def density_scan(psi0, phases, w, read_phases=None, w_read=None, noise=None):
    """Exact counterpart of :func:`qlam.sim.scan.noisy.noisy_scan`: density matrices (4^n per head), the same
    per-token noise. Returns probs (B, L, H, N) and the final rho (B, H, N, N) complex."""
    channel = parse_noise(noise)
    with torch.no_grad():
        psi, mats, m_read = as_complex(psi0, phases, w, read_phases, w_read)
        b, length, h, r, dim = phases.shape
        n = dim.bit_length() - 1
        rho = pure_density(psi)  # (B, H, N, N)
        kraus = channel.kraus(psi.dtype, psi.device) if channel is not None else None
        probs = torch.empty(b, length, h, dim, dtype=phases.dtype, device=phases.device)
        for t in range(length):
            for k in range(r):
                e = torch.polar(torch.ones_like(phases[:, t, :, k]), phases[:, t, :, k])
                rho = rho * pure_density(e)
                rho = mats[:, k] @ rho @ mats[:, k].mH
            if kraus is not None:
                flat = rho.reshape(b * h, dim, dim)
                for q in range(n):
                    flat = apply_channel_density(flat, kraus, q, n)
                rho = flat.view(b, h, dim, dim)
            out = rho
            if m_read is not None:
                rp = read_phases[:, t]
                out = rho * pure_density(torch.polar(torch.ones_like(rp), rp))
                out = m_read @ out @ m_read.mH
            probs[:, t] = torch.diagonal(out, dim1=-2, dim2=-1).real
    return probs, rho
