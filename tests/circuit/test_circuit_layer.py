"""Trainable circuits in PyTorch: a tensor that requires grad is refused as an angle (it
would silently become a constant), and CircuitLayer registers the circuit's parameters."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import qlam
from qlam import Circuit, CircuitLayer


def test_a_tensor_requiring_grad_is_refused_with_a_hint():
    c = Circuit(1)
    with pytest.raises(TypeError, match=r"new_param.*CircuitLayer"):
        c.ry(0, nn.Parameter(torch.tensor(0.3)))
    c.ry(0, torch.tensor(0.3))  # a plain tensor is a constant, as before
    assert c.n_params == 0


def _circuit() -> Circuit:
    c = Circuit(3)
    c.ry(0, c.input(0)).rx(1, c.input(1, a=0.7))
    c.ry(0, c.new_param(0.4)).rx(1, c.new_param(-0.8)).rz(2, c.new_param(1.1))
    c.h(2).rzz(0, 1, c.new_param(0.3)).rxx(1, 2, c.new_param(-0.5)).ryy(0, 2, c.new_param(0.9))
    c.cnot(0, 1).ry(2, c.new_param(0.2))
    return c


def test_circuit_layer_registers_parameters_and_its_gradients_match_parameter_shift():
    torch.manual_seed(0)
    layer = CircuitLayer(_circuit(), observables=["ZII", "XZI", "IYX"])
    assert [n for n, _ in layer.named_parameters()] == ["weights"]
    assert layer.weights.shape == (7,) and "weights" in layer.state_dict()
    x = torch.rand(5, 2, dtype=torch.float64)
    out = layer(x)
    assert out.shape == (5, 3)
    loss_w = torch.tensor([0.3, -1.2, 0.8], dtype=torch.float64)
    (out * loss_w).sum().backward()
    # every parameter drives one RX/RY/RZ/RZZ/RXX/RYY gate once: the parameter-shift rule
    # d<O>/dθ = (f(θ + π/2) - f(θ - π/2)) / 2 is exact
    theta = layer.weights.detach()
    shift = torch.zeros_like(theta)
    for i in range(len(theta)):
        e = torch.zeros_like(theta)
        e[i] = math.pi / 2
        f = [(qlam.expval(qlam.statevector(layer.circuit, x, theta + s), layer.observables)
              * loss_w).sum() for s in (e, -e)]
        shift[i] = (f[0] - f[1]) / 2
    torch.testing.assert_close(layer.weights.grad, shift, atol=1e-12, rtol=0)


def test_circuit_layer_trains_inside_a_model():
    torch.manual_seed(0)
    c = Circuit(2)
    c.ry(0, c.input(0)).ry(1, c.input(1))
    c.ry(0, c.new_param(0.0)).ry(1, c.new_param(0.0)).cnot(0, 1)
    model = nn.Sequential(nn.Linear(3, 2, dtype=torch.float64), CircuitLayer(c))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.randn(16, 3, dtype=torch.float64)
    target = torch.full((16, 2), -0.5, dtype=torch.float64)
    first = None
    for _ in range(60):
        loss = (model(x) - target).square().mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model[1].weights.grad is not None
    assert loss.item() < 0.2 * first


def test_circuit_layer_outputs_and_bad_options():
    c = Circuit(2)
    c.h(0).cnot(0, 1)
    assert CircuitLayer(c, output="probs")().shape == (1, 4)
    psi = CircuitLayer(c, output="state")()
    torch.testing.assert_close(psi.abs().square(), torch.tensor([[0.5, 0, 0, 0.5]],
                                                                 dtype=torch.float64))
    with pytest.raises(ValueError, match="output must be one of"):
        CircuitLayer(c, output="bogus")
    with pytest.raises(ValueError):
        CircuitLayer(c, observables=["ZQ"])
    with pytest.raises(TypeError, match="qlam Circuit"):
        CircuitLayer("not a circuit")


def test_gates_appended_after_the_layer_is_built_do_not_reach_it():
    """Appending to the circuit after building the layer had broken it: its compiled gates
    stayed the old ones while the parameter and input checks read the grown circuit
    ("params must have shape (2,), got (1,)")."""
    c = Circuit(2)
    c.ry(0, c.new_param(0.3))
    layer = CircuitLayer(c, observables="ZI")
    before = layer()
    c.rx(1, c.new_param(0.5)).rz(0, c.input(3))
    assert torch.allclose(layer(), before)
    assert torch.allclose(before, torch.tensor([math.cos(0.3)], dtype=torch.float64))
    assert layer.circuit.n_params == 1 and c.n_params == 2
