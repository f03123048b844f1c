"""The noisy-trajectory engine: the scan with a noise channel on every qubit after every
token, one quantum trajectory per batch row and head (evaluation only, no gradients), and
:func:`check_readout`, which refuses finite shots drawn from those trajectories. The
channels and where they act: :mod:`qlam.sim.noise`."""

from __future__ import annotations

import torch

from qlam.sim.noise import channel_trajectory_all_wires, parse_noise
from qlam.sim.scan.contract import as_complex


def _bhn_matvec(m: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """m (H, N, N) applied to psi (B, H, N) per head."""
    return torch.einsum("hij,bhj->bhi", m, psi)


def check_readout(shots: int | None, noise) -> None:
    """Refuses ``shots`` with ``noise`` (a Channel or spec): the noisy scan runs one trajectory
    per example, and shots drawn from it would all share it (counts far more spread than
    Multinomial(shots, diag rho))."""
    if shots is not None and parse_noise(noise) is not None:
        raise ValueError(f"shots={shots} with noise={noise}: not simulated faithfully. On "
                         "hardware each shot is an independent noise trajectory; here the noise "
                         "runs one trajectory per example, which all its shots would share. Use "
                         "one or the other: noise (the trajectories' exact readout) or shots "
                         "(samples of the noiseless readout)")


def noisy_scan(psi0, phases, w, read_phases=None, w_read=None, noise=None,
               generator: torch.Generator | None = None):
    """The scan of :mod:`qlam.sim.scan.contract` (same shapes and return values)
    with ``noise`` on every qubit after every token, one quantum trajectory per batch row
    and head. Not differentiable (evaluation only); ``generator`` seeds the trajectories."""
    channel = parse_noise(noise)
    with torch.no_grad():
        psi, mats, m_read = as_complex(psi0, phases, w, read_phases, w_read)
        b, length, h, r, dim = phases.shape
        n = dim.bit_length() - 1
        probs = torch.empty(b, length, h, dim, dtype=phases.dtype, device=phases.device)
        for t in range(length):
            for k in range(r):
                psi = _bhn_matvec(mats[:, k], psi * torch.polar(torch.ones_like(phases[:, t, :, k]),
                                                                  phases[:, t, :, k]))
            if channel is not None and channel.p > 0:
                psi = channel_trajectory_all_wires(psi.reshape(b * h, dim), channel, n,
                                                   generator).view(b, h, dim)
            out = psi
            if m_read is not None:
                rp = read_phases[:, t]
                out = _bhn_matvec(m_read, psi * torch.polar(torch.ones_like(rp), rp))
            probs[:, t] = out.real.square() + out.imag.square()
        last = torch.stack([psi.real, psi.imag], -2).to(psi0.dtype)
    return probs, last
