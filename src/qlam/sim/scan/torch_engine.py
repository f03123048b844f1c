"""The reference engine: the scan in PyTorch, with two gradient methods.

Complex numbers are carried as real pairs and every complex matrix-vector product is one
real GEMM against the real form ``[[Re W, -Im W], [Im W, Re W]]`` (:func:`real_form`), so
each token is a few batched real matrix products. Shapes and the recurrence are in
:mod:`qlam.sim.scan.contract`; :mod:`qlam.memory.reference` is the same computation in plain
complex arithmetic.

Gradients:
- ``"autograd"`` (:func:`scan_autograd`): torch records every token (memory O(B L H 2^n));
- ``"adjoint"`` (:func:`scan_reversible`): a custom autograd Function keeps only the final
  state and rebuilds earlier ones while walking backward with the inverse unitaries (the
  adjoint method), so activation memory does not grow with the length beyond the outputs.
"""

from __future__ import annotations

import torch

from qlam.sim.scan.contract import RENORM_EVERY, check_inputs, real_form

# Rotation (cos, sin) tables are built this many tokens at a time (memory flat in L).
TABLE_CHUNK = 64


def _rotation(phases: torch.Tensor):
    """cos and signed-sin tables (..., 2N) so that ``z*c + roll(z)*s`` rotates each pair."""
    c, s = torch.cos(phases), torch.sin(phases)
    return torch.cat([c, c], -1), torch.cat([-s, s], -1)


def _rotate(z: torch.Tensor, c: torch.Tensor, s: torch.Tensor, n: int) -> torch.Tensor:
    return torch.addcmul(z * c, z.roll(n, -1), s)


def _token_rotations(phases_tm: torch.Tensor, reverse: bool = False, chunk: int = TABLE_CHUNK):
    """Yield (c, s) rotation tables token by token (in reverse order if ``reverse``) from
    token-major phases (L, ..., N), building them ``chunk`` tokens at a time so that their
    memory does not grow with L."""
    length = phases_tm.shape[0]
    starts = range(0, length, chunk)
    for lo in reversed(starts) if reverse else starts:
        c, s = _rotation(phases_tm[lo:lo + chunk])
        for i in reversed(range(c.shape[0])) if reverse else range(c.shape[0]):
            yield c[i], s[i]


def _prepare(phases, w, read_phases, w_read):
    """Token-major phases (L, R, H, B, N) and read phases (L, H, B, N) or None (views, no
    copies); mats (R, H, 2N, 2N); m_read (H, 2N, 2N) or None."""
    read_tm = m_read = None
    if read_phases is not None:
        read_tm, m_read = read_phases.permute(1, 2, 0, 3), real_form(w_read)
    return phases.permute(1, 3, 2, 0, 4), real_form(w).transpose(0, 1), read_tm, m_read


def _readout(z, read, n):
    """|.|^2 of the state (or of its rotation into the readout basis (c, s, m)): (H, B, N)."""
    if read is not None:
        rc, rs, m = read
        z = torch.bmm(_rotate(z, rc, rs, n), m)
    sq = z * z
    return sq[..., :n] + sq[..., n:]


def scan_autograd(psi0, phases, w, read_phases=None, w_read=None):
    """The recurrence with plain autograd (stores every intermediate)."""
    check_inputs(psi0, phases, w, read_phases, w_read)
    n = phases.shape[-1]
    phases_tm, mats, read_tm, m_read = _prepare(phases, w, read_phases, w_read)
    reads = _token_rotations(read_tm) if read_tm is not None else None
    z = psi0.transpose(0, 1).flatten(-2)  # (H, B, 2N)
    # without a graph, write straight into the output (no per-token list, no stacked copy)
    out = None if torch.is_grad_enabled() else z.new_empty(phases_tm.shape[3], phases_tm.shape[0],
                                                           phases_tm.shape[2], n)
    probs = []
    for t, (ct, st) in enumerate(_token_rotations(phases_tm)):
        for c, s, m in zip(ct.unbind(0), st.unbind(0), mats.unbind(0)):
            z = torch.bmm(_rotate(z, c, s, n), m)
        if (t + 1) % RENORM_EVERY == 0:
            z = z * torch.rsqrt((z * z).sum(-1, keepdim=True))
        p_t = _readout(z, None if reads is None else (*next(reads), m_read), n)
        if out is None:
            probs.append(p_t)
        else:
            out[:, t] = p_t.transpose(0, 1)
    if out is None:
        out = torch.stack(probs, 0).permute(2, 0, 1, 3)  # (B, L, H, N)
    return out, z.unflatten(-1, (2, n)).transpose(0, 1)


class _ReversibleScan(torch.autograd.Function):
    """Forward without a graph; backward rebuilds psi_{t-1} = D_t^† W^† psi_t."""

    @staticmethod
    def forward(ctx, psi0, phases, w, read_phases, w_read):
        with torch.no_grad():
            probs, last = scan_autograd(psi0, phases, w, read_phases, w_read)
        ctx.save_for_backward(last, phases, w, read_phases, w_read)
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not zeros
        return probs, last

    @staticmethod
    def backward(ctx, g_probs, g_last):
        last, phases, w, read_phases, w_read = ctx.saved_tensors
        n = phases.shape[-1]
        with torch.enable_grad():
            w_leaf = w.detach().requires_grad_()
            mats = real_form(w_leaf).transpose(0, 1)
            wr_leaf = m_read = None
            if w_read is not None:
                wr_leaf = w_read.detach().requires_grad_()
                m_read = real_form(wr_leaf)
        with torch.no_grad():
            g_psi0, g_ph, g_mats, g_rph, g_mread = _adjoint_walk(
                last, g_probs, g_last, phases, mats.detach(), read_phases,
                None if m_read is None else m_read.detach(), n)
        outs, gouts, leaves = [mats], [g_mats], [w_leaf]
        if m_read is not None:
            outs.append(m_read)
            gouts.append(g_mread)
            leaves.append(wr_leaf)
        g_leaves = torch.autograd.grad(outs, leaves, gouts)
        g_w = g_leaves[0]
        g_wr = g_leaves[1] if m_read is not None else None
        return g_psi0, g_ph, g_w, g_rph, g_wr


def _pair_grad(g_out, z_in, n):
    """d/dphi of ``out = rotate(z_in, phi)`` per pair: g_im * out_re - g_re * out_im, with
    out recomputed from z_in: (..., N)."""
    return g_out[..., n:] * z_in[..., :n] - g_out[..., :n] * z_in[..., n:]


def _adjoint_walk(last, g_probs, g_last, phases, mats, read_phases, m_read, n, chunk=32):
    """Walk t = L-1..0 with stacked [psi_t; adjoint_t] (H, 2B, 2N); returns the gradients
    of psi0, phases, mats, read_phases and m_read. The W gradients are accumulated with one
    GEMM per ``chunk`` tokens."""
    bsz, length, h, r, _ = phases.shape
    rots = _token_rotations(phases.permute(1, 3, 2, 0, 4), reverse=True)  # (R, H, B, 2N) each
    psi = last.transpose(0, 1).flatten(-2)
    adj = (g_last if g_last is not None else torch.zeros_like(last)).transpose(0, 1).flatten(-2)
    gp = g_probs.permute(1, 2, 0, 3) if g_probs is not None else None  # (L, H, B, N)
    g_ph = phases.new_zeros(phases.shape)  # (B, L, H, R, N), written token by token
    g_m = torch.zeros_like(mats)
    pending: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(r)]
    g_rph = g_mr = None
    if m_read is not None:
        reads = _token_rotations(read_phases.permute(1, 2, 0, 3), reverse=True)  # (H, B, 2N) each
        g_rph = read_phases.new_zeros(read_phases.shape)  # (B, L, H, N)
        g_mr = torch.zeros_like(m_read)
        pending_read: list[tuple[torch.Tensor, torch.Tensor]] = []

    def flush(buf, acc):
        if buf:
            a = torch.cat([u for u, _ in buf], 1)
            b = torch.cat([g for _, g in buf], 1)
            acc.baddbmm_(a.transpose(1, 2), b)
            buf.clear()

    for t in range(length - 1, -1, -1):
        rc_t, rs_t = next(rots)
        if m_read is not None:
            rrc, rrs = next(reads)
        if gp is not None:
            gpt = gp[t]
            if m_read is None:
                adj = adj + 2 * psi * torch.cat([gpt, gpt], -1)
            else:
                u = _rotate(psi, rrc, rrs, n)
                v = torch.bmm(u, m_read)
                gv = 2 * v * torch.cat([gpt, gpt], -1)
                pending_read.append((u, gv))
                gu = torch.bmm(gv, m_read.transpose(1, 2))
                g_rph[:, t] = _pair_grad(gu, u, n).transpose(0, 1)
                adj = adj + torch.addcmul(gu * rrc, gu.roll(n, -1), rrs, value=-1)
        z = torch.cat([psi, adj], 1)
        for k in range(r - 1, -1, -1):
            y = torch.bmm(z, mats[k].transpose(1, 2))  # [u; g_u]: undo the dense step
            pending[k].append((y[:, :bsz], z[:, bsz:]))
            g_ph[:, t, :, k] = _pair_grad(y[:, bsz:], y[:, :bsz], n).transpose(0, 1)
            y4 = y.view(h, 2, bsz, 2 * n)
            c, s = rc_t[k][:, None], rs_t[k][:, None]
            z = torch.addcmul(y4 * c, y4.roll(n, -1), s, value=-1).view(h, 2 * bsz, 2 * n)
        psi, adj = z[:, :bsz], z[:, bsz:]
        if t % chunk == 0:
            for k in range(r):
                flush(pending[k], g_m[k])
            if m_read is not None:
                flush(pending_read, g_mr)
    g_psi0 = adj.unflatten(-1, (2, n)).transpose(0, 1)
    return g_psi0, g_ph, g_m, g_rph, g_mr


def scan_reversible(psi0, phases, w, read_phases=None, w_read=None):
    """The scan with the adjoint (reversible) backward: O(1) activation memory in L."""
    check_inputs(psi0, phases, w, read_phases, w_read)
    return _ReversibleScan.apply(psi0, phases, w, read_phases, w_read)


GRADIENTS = {"adjoint": scan_reversible, "autograd": scan_autograd}


def supports(*tensors) -> bool:
    """The reference engine takes any real floating-point tensors on one device."""
    ts = [t for t in tensors if t is not None]
    return all(t.is_floating_point() for t in ts) and len({t.device for t in ts}) == 1


def run(psi0, phases, w, read_phases=None, w_read=None, gradient: str = "adjoint"):
    return GRADIENTS[gradient](psi0, phases, w, read_phases, w_read)
