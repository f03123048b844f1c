"""The scan dispatcher (qlam.sim.scan.dispatch): engines and gradient methods chosen apart,
the older ``backward`` names mapped onto them, clear errors for impossible choices."""

from __future__ import annotations

import pytest
import torch

from qlam.sim.scan import cpp, dispatch, random_unitaries, scan, torch_engine
from qlam.sim.scan.contract import check_inputs


def problem(b=2, length=5, h=2, r=2, n=4, read=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    psi = torch.randn(b, h, 2, n, generator=g, dtype=torch.float64)
    psi = psi / psi.square().sum((-2, -1), keepdim=True).sqrt()
    return [psi, torch.randn(b, length, h, r, n, generator=g, dtype=torch.float64),
            random_unitaries(h, r, n=n, generator=g),
            torch.randn(b, length, h, n, generator=g, dtype=torch.float64) if read else None,
            random_unitaries(h, n=n, generator=g) if read else None]


def grads(args, **how):
    leaves = [a.clone().requires_grad_() if a is not None else None for a in args]
    probs, last = scan(*leaves, **how)
    (probs.square().sum() + last.sum()).backward()
    return [probs, last] + [a.grad for a in leaves if a is not None]


@pytest.mark.parametrize("read", [True, False])
def test_every_engine_and_gradient_agree(read):
    args = problem(read=read)
    want = grads(args, engine="torch", gradient="autograd")
    for how in ({"engine": "torch"}, {"engine": "auto"}, {"backward": "reversible"},
                {"backward": "auto"}, {"backward": "autograd"}):
        for x, y in zip(grads(args, **how), want):
            torch.testing.assert_close(x, y, atol=1e-10, rtol=0)


def test_backward_names_map_to_engine_and_gradient():
    assert dispatch.resolve("reversible") == ("torch", "adjoint")
    assert dispatch.resolve("autograd") == ("torch", "autograd")
    assert dispatch.resolve("kernel") == ("compiled", "adjoint")
    args = problem()
    assert dispatch.pick_engine("compiled", "adjoint", args) == "cpp"  # CPU tensors
    assert dispatch.pick_engine("auto", "autograd", args) == "torch"
    with pytest.raises(ValueError, match="backward must be one of"):
        scan(*args, backward="nope")
    with pytest.raises(ValueError, match="engine must be one of"):
        scan(*args, engine="gpu")
    with pytest.raises(ValueError, match="gradient must be one of"):
        scan(*args, gradient="finite-differences")
    with pytest.raises(ValueError, match="the cpp engine offers gradient"):
        scan(*args, engine="cpp", gradient="autograd")


def test_contract_names_the_bad_argument():
    psi, phases, w, rp, wr = problem()
    with pytest.raises(ValueError, match="psi0 must have shape"):
        check_inputs(psi[:1], phases, w, rp, wr)
    with pytest.raises(ValueError, match="w must have shape"):
        check_inputs(psi, phases, w[:, :1], rp, wr)
    with pytest.raises(ValueError, match="given together"):
        check_inputs(psi, phases, w, rp, None)
    with pytest.raises(ValueError, match="phases must have shape"):
        scan(psi, phases[0], w)
    # every engine checks the contract itself when called directly (w with one unitary per
    # head instead of r = 2 would otherwise be zipped short: a wrong answer, no error)
    engines = [torch_engine.scan_autograd, torch_engine.scan_reversible]
    engines += [cpp.scan_kernel] if cpp.available() else []
    for engine in engines:
        with pytest.raises(ValueError, match="w must have shape"):
            engine(psi, phases, w[:, :1], rp, wr)
