"""torch.compile: the compiled recurrence kernel is a PyTorch custom operator
(``qlam::scan_forward`` / ``qlam::scan_backward``, with fake and autograd implementations),
so a model containing QLAM compiles to one graph that calls it as a single op."""

from __future__ import annotations

import pytest
import torch

from qlam import QLAM
from qlam.sim.scan import cpp as kernel
from qlam.sim.scan.contract import random_unitaries

pytestmark = pytest.mark.skipif(not kernel.available(), reason="C++ kernel unavailable")


def _inputs(read: bool, b=2, length=3, h=2, r=2, n=4):
    g = torch.Generator().manual_seed(0)
    psi = torch.randn(b, h, 2, n, generator=g, dtype=torch.float64)
    psi = psi / psi.square().sum((-1, -2), keepdim=True).sqrt()
    phases = torch.randn(b, length, h, r, n, generator=g, dtype=torch.float64)
    w = random_unitaries(h, r, n=n, generator=g)
    rp = torch.randn(b, length, h, n, generator=g, dtype=torch.float64) if read else None
    wr = random_unitaries(h, n=n, generator=g) if read else None
    args = [psi, phases, w, rp, wr]
    return [a.requires_grad_() if a is not None else None for a in args] + [0]


@pytest.mark.parametrize("read", [True, False])
def test_custom_op_passes_opcheck(read):
    torch.library.opcheck(torch.ops.qlam.scan_forward.default, _inputs(read))


def test_compiled_layer_is_one_graph_and_matches_eager():
    torch.manual_seed(0)
    layer = QLAM(6, n_heads=2, n_qubits=2, dt_min=0.1, dt_max=1.0).double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    explained = torch._dynamo.explain(layer)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    assert "qlam.scan_forward" in explained.graphs[0].code
    y, state = layer(x)
    (y.square().sum() + state.real.sum()).backward()
    want = {k: p.grad.clone() for k, p in layer.named_parameters()}
    layer.zero_grad()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    yc, state_c = compiled(x)
    torch.testing.assert_close(yc, y, atol=1e-12, rtol=0)
    torch.testing.assert_close(state_c, state, atol=1e-12, rtol=0)
    (yc.square().sum() + state_c.real.sum()).backward()
    for k, p in layer.named_parameters():
        torch.testing.assert_close(p.grad, want[k], atol=1e-10, rtol=1e-10, msg=k)
