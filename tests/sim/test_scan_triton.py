"""The Triton recurrence kernels (qlam.sim.scan.triton_engine) against the PyTorch paths.

Without a GPU they run in Triton's interpreter (TRITON_INTERPRET=1, which must be set before
Triton is imported, so those checks run in a subprocess); on a CUDA machine the same
comparison also runs compiled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from qlam.sim.scan import random_unitaries, scan, triton_engine

pytestmark = pytest.mark.skipif(not triton_engine.available(), reason="Triton not installed")

# (dtype, B, L, H, R, N, readout, loss on probs, loss on last)
CASES = [
    ("float64", 5, 7, 2, 2, 16, True, True, True),    # partial batch tile, two layers
    ("float64", 18, 5, 1, 1, 32, False, True, True),  # two tiles, no readout basis
    ("float64", 3, 4, 2, 1, 64, True, False, True),   # only the final state is used
    ("float64", 2, 6, 1, 3, 16, True, True, False),   # only the readout is used
    ("float32", 3, 70, 2, 1, 16, True, True, True),   # crosses the renormalisation at 64
]

CHECK = textwrap.dedent("""
    import json, sys
    import torch
    from qlam.sim.scan import triton_engine
    from qlam.sim.scan import random_unitaries, scan

    def unitary(g, dtype, *lead, n):
        return random_unitaries(*lead, n=n, generator=g, dtype=dtype)

    out = []
    for dtype, b, length, h, r, n, read, on_probs, on_last in json.loads(sys.argv[1]):
        dtype = getattr(torch, dtype)
        g = torch.Generator().manual_seed(b * 1000 + n)
        rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)
        psi = rnd(b, h, 2, n)
        args = [psi / psi.square().sum((-2, -1), keepdim=True).sqrt(), rnd(b, length, h, r, n),
                unitary(g, dtype, h, r, n=n), rnd(b, length, h, n) if read else None,
                unitary(g, dtype, h, n=n) if read else None]
        assert triton_engine.supports(*args)
        gp, gl = rnd(b, length, h, n), rnd(b, h, 2, n)
        res = []
        for run in (triton_engine.scan_triton, lambda *a: scan(*a, backward="reversible")):
            leaves = [a.clone().requires_grad_() if a is not None else None for a in args]
            probs, last = run(*leaves)
            loss = (probs * gp).sum() * on_probs + (last * gl).sum() * on_last
            loss.backward()
            res.append([probs, last] + [a.grad for a in leaves if a is not None])
        errs = [(x - y).abs().max().item() for x, y in zip(*res)]
        norm = res[0][1].square().sum((-2, -1))
        out.append({"errs": errs, "norm_err": (norm - 1).abs().max().item(),
                    "scale": max(y.abs().max().item() for y in res[1])})
    # the auto path's once-per-specialisation self-test passes and is then used
    a = [torch.randn(2, 3, 1, 1, 16, dtype=torch.float64), torch.randn(2, 3, 1, 16, dtype=torch.float64)]
    psi = torch.randn(2, 1, 2, 16, dtype=torch.float64)
    w = unitary(torch.Generator().manual_seed(1), torch.float64, 1, 1, n=16)
    wr = unitary(torch.Generator().manual_seed(2), torch.float64, 1, n=16)
    # the first to ask may be a forward under no_grad or inference_mode: the self-test runs
    # (with gradients) and passes all the same
    with torch.no_grad():
        assert triton_engine.trusted(psi, a[0], w, a[1], wr)
    with torch.inference_mode():
        assert triton_engine.trusted(psi, a[0], w)
    assert triton_engine.trusted(psi, a[0], w, a[1], wr)
    # tensors outside the contract (the layer's inputs (B, L, d_model) in place of phases,
    # d_model in 16..64) are not taken, never an error in the self-test
    assert not triton_engine.trusted(psi, torch.zeros(2, 3, 16, dtype=torch.float64), w)
    auto = triton_engine.scan_triton(psi, a[0], w, a[1], wr)
    ref = scan(psi, a[0], w, a[1], wr, backward="reversible")
    print(json.dumps({"cases": out, "auto_err": (auto[0] - ref[0]).abs().max().item(),
                      "checked": [v for v in triton_engine._checked.values()]}))
""")


def _run_interpreted(cases):
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHECK, json.dumps(cases)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_interpreted_kernels_match_the_reversible_path():
    res = _run_interpreted(CASES)
    for case, r in zip(CASES, res["cases"]):
        tol = 1e-10 if case[0] == "float64" else 2e-5
        assert max(r["errs"]) <= tol * max(1.0, r["scale"]), (case, r)
        assert r["norm_err"] < (1e-12 if case[0] == "float64" else 1e-5), (case, r)
    assert res["auto_err"] < 1e-12 and res["checked"] == [None, None]


def test_supports_only_its_scope():
    x = torch.zeros(2, 1, 2, 16)
    ph, w = torch.zeros(2, 3, 1, 1, 16), torch.zeros(1, 1, 2, 16, 16)
    if not triton_engine.interpreting():
        assert not triton_engine.supports(x, ph, w)  # CPU tensors outside the interpreter
        with pytest.raises(ValueError, match="CUDA tensors"):
            triton_engine.scan_triton(x, ph, w)
    small = torch.zeros(2, 3, 1, 1, 8)
    assert not triton_engine.supports(torch.zeros(2, 1, 2, 8), small, torch.zeros(1, 1, 2, 8, 8))
    assert not triton_engine.supports(x.double(), ph, w)  # mixed dtypes


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_kernels_match_the_pytorch_path(dtype):
    g = torch.Generator().manual_seed(0)
    b, length, h, r, n = 37, 300, 4, 2, 32
    psi = torch.randn(b, h, 2, n, generator=g, dtype=dtype)
    psi = psi / psi.square().sum((-2, -1), keepdim=True).sqrt()
    w = random_unitaries(h, r + 1, n=n, generator=g, dtype=dtype)
    args = [psi, torch.randn(b, length, h, r, n, generator=g, dtype=dtype), w[:, :r],
            torch.randn(b, length, h, n, generator=g, dtype=dtype), w[:, r].contiguous()]
    res = []
    for device, backward in (("cpu", "reversible"), ("cuda", "kernel")):
        leaves = [a.to(device).requires_grad_() for a in args]
        probs, last = scan(*leaves, backward=backward)
        (probs.square().sum() + last.sum()).backward()
        res.append([t.detach().cpu() for t in (probs, last, *(a.grad for a in leaves))])
    tol = 2e-4 if dtype == torch.float32 else 1e-10
    for x, y in zip(*res):
        assert (x - y).abs().max().item() <= tol * max(1.0, y.abs().max().item())
