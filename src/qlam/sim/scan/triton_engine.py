"""The Triton engine: the scan as Triton kernels, for CUDA tensors.

The contract of :mod:`qlam.sim.scan.contract` (shapes there) and
the same algorithm as the C++ CPU kernel: one program per (head, tile of ``BLOCK_B`` batch
rows) keeps its states in registers while it walks every token; per token and layer the
tile is rotated elementwise by exp(i phases) and multiplied by W as four real
``[BLOCK_B, N] x [N, N]`` dot products (Re/Im parts kept apart, so no half-swapping); the
backward is the reversible (adjoint) walk: psi_{t-1} = rot^-1(W^dagger psi_t) rebuilt with
the adjoint, no stored history. The gradient of W is accumulated per program in a private
fp32/fp64 buffer (no atomics, deterministic) and summed over programs on the host.

Scope: 4 <= n <= 6 qubits per head (N = 16..64: tl.dot needs N >= 16, and the state tiles
and the per-token matrices must fit the register file); other sizes, and devices without
Triton, use the PyTorch engine. :func:`supports` says which.

Testing without a GPU: Triton's interpreter (``TRITON_INTERPRET=1`` set before this module
is imported) runs the same kernels on CPU tensors with NumPy; the test suite checks outputs
and gradients against plain autograd that way, and ``scripts/cuda_check.py`` checks them on a
GPU.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import torch

from qlam.sim.scan import torch_engine
from qlam.sim.scan.contract import (
    RENORM_EVERY,
    check_inputs,
    compiled_function,
    one_float_dtype,
    random_unitaries,
)

try:  # Triton is optional: without it (or on CPU) the PyTorch paths run
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None


MIN_QUBITS, MAX_QUBITS = 4, 6
BLOCK_B = 16  # batch rows per program (tl.dot's minimum tile)
# no software pipelining across tokens: compiled for sm_90 with the default stages, the
# backward at 6 qubits (float32 with R >= 2, or float64) needs 300-600 KB of shared memory,
# above the H200's 227 KB per block; with one stage every case fits in ~82 KB
NUM_STAGES = 1


def interpreting() -> bool:
    """Whether Triton runs in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available() -> bool:
    """Whether Triton is importable."""
    return triton is not None


def supports(psi0, phases, w, read_phases=None, w_read=None) -> bool:
    """Whether the Triton kernels take these tensors: CUDA (or CPU under the interpreter),
    one dtype (float32, or float64), N = 16..64, phases (B, L, H, R, N) and W (H, R, 2, N, N)
    as the contract has them (anything else is not for this engine, never an error)."""
    ts = [t for t in (psi0, phases, w, read_phases, w_read) if t is not None]
    device_ok = all(t.is_cuda for t in ts) or (interpreting() and all(t.device.type == "cpu"
                                                                       for t in ts))
    n = phases.shape[-1]
    return (device_ok and one_float_dtype(*ts) and phases.dim() == 5 and w.dim() == 5
            and 2**MIN_QUBITS <= n <= 2**MAX_QUBITS and available())


if triton is not None:
    @triton.jit
    def _cmatvec(x_re, x_im, w_ptr, rows, cols, NN: tl.constexpr, ADJOINT: tl.constexpr):
        """Rows times W^T (W x per row), or times conj(W) (W^dagger x) if ADJOINT;
        W at w_ptr as [re (N, N), im (N, N)]."""
        if ADJOINT:  # out_j = sum_k x_k conj(W_kj): tile[k, j] = W[k, j]
            offs = rows[:, None] * NN + cols[None, :]
        else:  # out_j = sum_k x_k W_jk: tile[k, j] = W[j, k]
            offs = cols[None, :] * NN + rows[:, None]
        a = tl.load(w_ptr + offs)
        b = tl.load(w_ptr + NN * NN + offs)
        rr = tl.dot(x_re, a, input_precision="ieee")
        ii = tl.dot(x_im, b, input_precision="ieee")
        ri = tl.dot(x_re, b, input_precision="ieee")
        ir = tl.dot(x_im, a, input_precision="ieee")
        if ADJOINT:
            return rr + ii, ir - ri
        return rr - ii, ri + ir

    @triton.jit
    def _forward(psi0_ptr, ph_ptr, w_ptr, rph_ptr, wr_ptr, probs_ptr, last_ptr,
                 B, L, H: tl.constexpr, R: tl.constexpr, NN: tl.constexpr,
                 HAS_READ: tl.constexpr, RENORM: tl.constexpr, BB: tl.constexpr):
        h = tl.program_id(0)
        rows = (tl.program_id(1) * BB + tl.arange(0, BB)).to(tl.int64)  # (offsets past 2^31)
        cols = tl.arange(0, NN)
        kk = tl.arange(0, NN)
        mask = (rows < B)[:, None]
        st = (rows[:, None] * H + h) * 2 * NN + cols[None, :]  # psi0 / last (B, H, 2, N)
        re = tl.load(psi0_ptr + st, mask=mask, other=0.0)
        im = tl.load(psi0_ptr + st + NN, mask=mask, other=0.0)
        for t in range(L):
            for r in tl.static_range(R):
                phi = tl.load(ph_ptr + (((rows[:, None] * L + t) * H + h) * R + r) * NN
                              + cols[None, :], mask=mask, other=0.0)
                c, s = tl.cos(phi), tl.sin(phi)
                re, im = re * c - im * s, im * c + re * s
                re, im = _cmatvec(re, im, w_ptr + (h * R + r) * 2 * NN * NN, kk, cols, NN, False)
            if RENORM > 0:
                if (t + 1) % RENORM == 0:
                    nrm = tl.sum(re * re + im * im, axis=1)
                    scale = tl.where(nrm > 0, 1.0 / tl.sqrt(tl.where(nrm > 0, nrm, 1.0)), 1.0)
                    re, im = re * scale[:, None], im * scale[:, None]
            out = ((rows[:, None] * L + t) * H + h) * NN + cols[None, :]  # (B, L, H, N)
            if HAS_READ:
                th = tl.load(rph_ptr + out, mask=mask, other=0.0)
                c, s = tl.cos(th), tl.sin(th)
                v_re, v_im = _cmatvec(re * c - im * s, im * c + re * s, wr_ptr + h * 2 * NN * NN,
                                      kk, cols, NN, False)
                tl.store(probs_ptr + out, v_re * v_re + v_im * v_im, mask=mask)
            else:
                tl.store(probs_ptr + out, re * re + im * im, mask=mask)
        tl.store(last_ptr + st, re, mask=mask)
        tl.store(last_ptr + st + NN, im, mask=mask)

    @triton.jit
    def _accumulate(gw_ptr, g_re, g_im, u_re, u_im, rows_k, cols, NN: tl.constexpr):
        """gW += g u^dagger summed over the tile's rows: [re, im] (N, N) at gw_ptr."""
        offs = rows_k[:, None] * NN + cols[None, :]
        gt_re, gt_im = tl.trans(g_re), tl.trans(g_im)
        d_re = tl.dot(gt_re, u_re, input_precision="ieee") + tl.dot(gt_im, u_im, input_precision="ieee")
        d_im = tl.dot(gt_im, u_re, input_precision="ieee") - tl.dot(gt_re, u_im, input_precision="ieee")
        tl.store(gw_ptr + offs, tl.load(gw_ptr + offs) + d_re)
        tl.store(gw_ptr + NN * NN + offs, tl.load(gw_ptr + NN * NN + offs) + d_im)

    @triton.jit
    def _backward(last_ptr, ph_ptr, w_ptr, rph_ptr, wr_ptr, gprobs_ptr, glast_ptr,
                  gpsi0_ptr, gph_ptr, gw_ptr, grph_ptr, gwr_ptr,
                  B, L, H: tl.constexpr, R: tl.constexpr, NN: tl.constexpr,
                  HAS_READ: tl.constexpr, HAS_GPROBS: tl.constexpr, HAS_GLAST: tl.constexpr,
                  BB: tl.constexpr):
        h = tl.program_id(0)
        tile = tl.program_id(1)
        rows = (tile * BB + tl.arange(0, BB)).to(tl.int64)  # (offsets past 2^31)
        cols = tl.arange(0, NN)
        kk = tl.arange(0, NN)
        mask = (rows < B)[:, None]
        st = (rows[:, None] * H + h) * 2 * NN + cols[None, :]
        re = tl.load(last_ptr + st, mask=mask, other=0.0)
        im = tl.load(last_ptr + st + NN, mask=mask, other=0.0)
        if HAS_GLAST:
            a_re = tl.load(glast_ptr + st, mask=mask, other=0.0)
            a_im = tl.load(glast_ptr + st + NN, mask=mask, other=0.0)
        else:
            a_re = tl.zeros((BB, NN), dtype=re.dtype)
            a_im = tl.zeros((BB, NN), dtype=re.dtype)
        gw_tile = gw_ptr + (tile * H + h) * R * 2 * NN * NN  # private partial sums
        for tt in range(L):
            t = L - 1 - tt
            out = ((rows[:, None] * L + t) * H + h) * NN + cols[None, :]
            if HAS_GPROBS:
                gp = tl.load(gprobs_ptr + out, mask=mask, other=0.0)
                if HAS_READ:
                    th = tl.load(rph_ptr + out, mask=mask, other=0.0)
                    c, s = tl.cos(th), tl.sin(th)
                    u_re, u_im = re * c - im * s, im * c + re * s
                    wr = wr_ptr + h * 2 * NN * NN
                    v_re, v_im = _cmatvec(u_re, u_im, wr, kk, cols, NN, False)
                    gv_re, gv_im = 2 * v_re * gp, 2 * v_im * gp
                    _accumulate(gwr_ptr + (tile * H + h) * 2 * NN * NN, gv_re, gv_im,
                                u_re, u_im, kk, cols, NN)
                    gu_re, gu_im = _cmatvec(gv_re, gv_im, wr, kk, cols, NN, True)
                    tl.store(grph_ptr + out, gu_im * u_re - gu_re * u_im, mask=mask)
                    a_re += gu_re * c + gu_im * s
                    a_im += gu_im * c - gu_re * s
                else:
                    a_re += 2 * re * gp
                    a_im += 2 * im * gp
            for rr in tl.static_range(R):
                r = R - 1 - rr
                wp = w_ptr + (h * R + r) * 2 * NN * NN
                u_re, u_im = _cmatvec(re, im, wp, kk, cols, NN, True)  # undo W
                g_re, g_im = _cmatvec(a_re, a_im, wp, kk, cols, NN, True)
                _accumulate(gw_tile + r * 2 * NN * NN, a_re, a_im, u_re, u_im, kk, cols, NN)
                gph = (((rows[:, None] * L + t) * H + h) * R + r) * NN + cols[None, :]
                tl.store(gph_ptr + gph, g_im * u_re - g_re * u_im, mask=mask)
                phi = tl.load(ph_ptr + gph, mask=mask, other=0.0)
                c, s = tl.cos(phi), tl.sin(phi)  # undo the rotation
                re, im = u_re * c + u_im * s, u_im * c - u_re * s
                a_re, a_im = g_re * c + g_im * s, g_im * c - g_re * s
        tl.store(gpsi0_ptr + st, a_re, mask=mask)
        tl.store(gpsi0_ptr + st + NN, a_im, mask=mask)


def _grid(b: int, h: int) -> tuple[int, int]:
    return h, -(-b // BLOCK_B)


def _launch_device(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it the tensors' (cuda:1 tensors
    from a process whose current device is 0)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _triton_forward(psi0, phases, w, read_phases, w_read):
    b, length, h, r, n = phases.shape
    has_read = read_phases is not None
    probs = phases.new_empty(b, length, h, n)
    last = torch.empty_like(psi0)
    with _launch_device(phases):
        _forward[_grid(b, h)](psi0, phases, w, read_phases if has_read else phases,
                              w_read if has_read else w, probs, last, b, length, H=h, R=r,
                              NN=n, HAS_READ=has_read, RENORM=RENORM_EVERY, BB=BLOCK_B,
                              num_stages=NUM_STAGES)
    return probs, last


def _triton_backward(last, phases, w, read_phases, w_read, g_probs, g_last):
    b, length, h, r, n = phases.shape
    tiles = _grid(b, h)[1]
    has_read = read_phases is not None
    g_psi0 = torch.empty_like(last)
    g_ph = torch.empty_like(phases)
    gw_part = w.new_zeros(tiles, h, r, 2, n, n)  # per-tile partial sums
    g_rph = torch.zeros_like(read_phases) if has_read else None
    gwr_part = w_read.new_zeros(tiles, h, 2, n, n) if has_read else None
    with _launch_device(phases):
        _backward[_grid(b, h)](last, phases, w, read_phases if has_read else phases,
                               w_read if has_read else w,
                               g_probs.contiguous() if g_probs is not None else phases,
                               g_last.contiguous() if g_last is not None else last,
                               g_psi0, g_ph, gw_part, g_rph if has_read else phases,
                               gwr_part if has_read else gw_part, b, length, H=h, R=r, NN=n,
                               HAS_READ=has_read, HAS_GPROBS=g_probs is not None,
                               HAS_GLAST=g_last is not None, BB=BLOCK_B,
                               num_stages=NUM_STAGES)
    return g_psi0, g_ph, gw_part.sum(0), g_rph, gwr_part.sum(0) if has_read else None


_TritonScan = compiled_function("_TritonScan", _triton_forward, _triton_backward)


def scan_triton(psi0, phases, w, read_phases=None, w_read=None):
    """The recurrence on the Triton kernels: probs (B, L, H, N), last (B, H, 2, N)."""
    check_inputs(psi0, phases, w, read_phases, w_read)
    if not supports(psi0, phases, w, read_phases, w_read):
        raise ValueError(f"the Triton kernels need CUDA tensors of one dtype (float32 or "
                         f"float64), {MIN_QUBITS}..{MAX_QUBITS} qubits per head and Triton "
                         f"installed; got {phases.device}, {phases.dtype}, N={phases.shape[-1]}")
    # the kernels index dense row-major tensors: copy once here, so the backward (which gets
    # the saved inputs) needs no copies of its own
    args = [t if t is None else t.contiguous() for t in (psi0, phases, w, read_phases, w_read)]
    return _TritonScan.apply(*args)


_checked: dict[tuple, str | None] = {}  # specialisation -> None (passed) or why it failed


def _self_test(psi0, phases, w, read_phases, w_read) -> str | None:
    """Run this specialisation (device, dtype, H, R, N, readout) once on a tiny problem,
    forward and backward, against the PyTorch engine's adjoint path; None if it agrees."""
    b, _, h, r, n = phases.shape
    key = (phases.device, phases.dtype, h, r, n, read_phases is not None)
    if key in _checked:
        return _checked[key]
    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(phases)

    def unitary(*lead):
        return random_unitaries(*lead, n=n, generator=g).to(phases)

    psi = rnd(2, h, 2, n)
    args = [psi / psi.square().sum((-2, -1), keepdim=True).sqrt(), rnd(2, 3, h, r, n),
            unitary(h, r), rnd(2, 3, h, n) if read_phases is not None else None,
            unitary(h) if read_phases is not None else None]
    outs = []
    try:
        # (a forward under no_grad / inference_mode may be the first to ask: the check needs
        # gradients all the same)
        with torch.inference_mode(False), torch.enable_grad():
            for run in (scan_triton, torch_engine.scan_reversible):
                leaves = [a.clone().requires_grad_() if a is not None else None for a in args]
                probs, last = run(*leaves)
                (probs.sum() + 0.5 * last.sum()).backward()
                outs.append([probs, last] + [a.grad for a in leaves if a is not None])
        tol = 1e-3 if phases.dtype == torch.float32 else 1e-9
        err = max((x - y).abs().max().item() for x, y in zip(*outs))
        why = None if err <= tol else f"differs from the PyTorch path by {err:.2e}"
    except Exception as exc:  # a compile or launch failure on this device
        why = f"{type(exc).__name__}: {exc}"
    _checked[key] = why
    if why is not None:
        warnings.warn(f"qlam: the Triton recurrence kernels fail on {phases.device} "
                      f"({why}); using the PyTorch path", RuntimeWarning, stacklevel=3)
    return why


def trusted(psi0, phases, w, read_phases=None, w_read=None) -> bool:
    """Whether ``engine="auto"`` may pick Triton here: it supports the tensors and its
    once-per-specialisation self-test passed."""
    return (supports(psi0, phases, w, read_phases, w_read)
            and _self_test(psi0, phases, w, read_phases, w_read) is None)


GRADIENTS = {"adjoint": scan_triton}


def run(psi0, phases, w, read_phases=None, w_read=None, gradient: str = "adjoint"):
    return GRADIENTS[gradient](psi0, phases, w, read_phases, w_read)
