"""The recurrence of the mixed (density-matrix) memory: a reset-and-write channel per token.

Per head h, example b and token t, in the frame where the channel is diagonal (see
:mod:`qlam.memory.mixed`), with d_t = sqrt(1 - a_t) e^{i phi_t} and w_t = sqrt(a_t) s_t:

    r_t = decay ⊙ (d_t d_t^dagger) ⊙ r_{t-1} + w_t w_t^dagger      (N x N, complex)

:func:`channel_states` returns every r_t. It runs on the compiled kernel
(``qlam/csrc/channel.cpp``: one pass over the sequence per (head, example), forward and a
hand-derived backward, built like :mod:`qlam.sim.scan.cpp` and cached beside it) and falls back
to :func:`channel_states_ref`, the per-token PyTorch loop that defines it (autograd records
every token; ~4x slower end to end at n = 3).

Shapes (H heads, B batch, L tokens, N = 2^n): d, w (H, B, L, N) complex; decay (H, N, N)
real; r0 (H, B, N, N) complex. Returns r (H, B, L, N, N) complex.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import torch

from qlam.sim.scan import cpp

SOURCE = Path(__file__).resolve().parents[2] / "csrc" / "channel.cpp"
_lock = threading.Lock()
_state: dict = {}


def _extension():
    """The compiled channel kernel, or None (one warning says why)."""
    with _lock:
        if "ext" not in _state:
            _state["ext"] = None
            if os.environ.get("QLAM_KERNEL", "1").strip().lower() in ("0", "false", "no", "off"):
                return None
            try:
                _state["ext"] = cpp.build(SOURCE)
            except Exception as e:  # noqa: BLE001 - any build failure means: fall back
                warnings.warn(f"qlam: compiled channel kernel unavailable ({type(e).__name__}); "
                              f"using the PyTorch loop", RuntimeWarning, stacklevel=3)
        return _state["ext"]


def _check(d, w, decay, r0):
    h, b, length, n = d.shape
    if w.shape != d.shape:
        raise ValueError(f"w must have shape {tuple(d.shape)}, got {tuple(w.shape)}")
    if decay.shape != (h, n, n):
        raise ValueError(f"decay must have shape {(h, n, n)}, got {tuple(decay.shape)}")
    if r0.shape != (h, b, n, n):
        raise ValueError(f"r0 must have shape {(h, b, n, n)}, got {tuple(r0.shape)}")
    if length == 0:
        raise ValueError("the sequence is empty (length 0)")


def channel_states_ref(d, w, decay, r0):
    """The definition, one token at a time (autograd through the loop)."""
    _check(d, w, decay, r0)
    decay, r, out = decay[:, None], r0, []
    for d_t, w_t in zip(d.unbind(2), w.unbind(2)):
        lam = (d_t[..., :, None] * d_t.conj()[..., None, :]) * decay
        r = torch.addcmul(w_t[..., :, None] * w_t.conj()[..., None, :], lam, r)
        out.append(r)
    return torch.stack(out, 2)


class _ChannelKernel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, d, w, decay, r0):
        rs = _extension().channel_forward(d, w, decay, r0)
        ctx.save_for_backward(d, w, decay, r0, rs)
        return rs

    @staticmethod
    def backward(ctx, grad):
        d, w, decay, r0, rs = ctx.saved_tensors
        gd, gw, gdecay, gr0 = _extension().channel_backward(
            grad.contiguous().resolve_conj(), d, w, decay, r0, rs)
        return gd, gw, gdecay, gr0


def channel_states(d, w, decay, r0, use_kernel: bool = True):
    """Every r_t, (H, B, L, N, N) complex (see the module docstring)."""
    _check(d, w, decay, r0)
    if (use_kernel and d.device.type == "cpu" and d.dtype in (torch.complex64, torch.complex128)
            and _extension() is not None):
        real = torch.float32 if d.dtype == torch.complex64 else torch.float64
        return _ChannelKernel.apply(d.contiguous(), w.to(d.dtype).contiguous(),
                                    decay.to(real).contiguous(),
                                    r0.to(d.dtype).resolve_conj().contiguous())
    return channel_states_ref(d, w, decay, r0)
