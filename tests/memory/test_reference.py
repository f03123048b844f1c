"""The plain-complex reference of the QLAM layer (qlam.memory.reference) against the fused
path (lowered circuits, real-pair scan), on every engine and gradient method here."""

from __future__ import annotations

import pytest
import torch

from qlam.memory import QLAM, qlam_reference
from qlam.sim.scan import cpp

BACKWARDS = ["autograd", "reversible"] + (["kernel"] if cpp.available() else [])


@pytest.mark.parametrize("query_basis, read_order", [(True, None), (False, None), (True, 2)])
@pytest.mark.parametrize("backward", BACKWARDS)
def test_fused_layer_matches_the_reference(query_basis, read_order, backward):
    torch.manual_seed(0)
    layer = QLAM(6, n_heads=2, n_qubits=3, depth=2, query_basis=query_basis,
                 dt_min=0.05, dt_max=0.5, backward=backward, read_order=read_order).double()
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    y, state = layer(x)
    y_ref, state_ref = qlam_reference(layer, x)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(state, state_ref, atol=1e-12, rtol=0)
    # and the gradients the fused path computes are the reference's
    grads = torch.autograd.grad(y.square().sum(), list(layer.parameters()))
    grads_ref = torch.autograd.grad(y_ref.square().sum(), list(layer.parameters()))
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, atol=1e-10, rtol=1e-8)


def test_reference_is_a_unitary_evolution():
    """An independent check of the reference itself: the state stays normalised and one
    token moves it (the circuits act)."""
    torch.manual_seed(1)
    layer = QLAM(4, n_heads=3, n_qubits=2, dt_min=0.5, dt_max=1.0).double()
    x = torch.randn(1, 3, 4, dtype=torch.float64)
    _, s3 = qlam_reference(layer, x)
    _, s1 = qlam_reference(layer, x[:, :1])
    torch.testing.assert_close(s3.abs().square().sum(-1), torch.ones(1, 3, dtype=torch.float64))
    assert (s3 - s1).abs().max() > 1e-3
