"""Circuit -> scan lowering (qlam.sim.lowering): its layers reproduce the circuit, whatever
the block order; large-n dense blocks built from their structure are the same matrices."""

from __future__ import annotations

import pytest
import torch
from circuit_oracles import random_args, random_circuit

from qlam.circuit import Angle, Circuit
from qlam.sim import gates, lowering
from qlam.sim.statevector import run_reference


def run_layers(circuit, params, inputs):
    """Apply the lowered layers psi <- W_r diag(exp(i phi_r)) psi from |0...0>."""
    low = lowering.lower(circuit)
    phases = low.phases(inputs[:, :circuit.n_inputs], params)  # (B, R, N)
    mats = low.unitaries(params)  # (R, N, N)
    psi = torch.zeros(inputs.shape[0], 2**circuit.n_qubits, dtype=torch.complex128)
    psi[:, 0] = 1
    for r in range(low.n_layers):
        psi = (psi * torch.polar(torch.ones_like(phases[:, r]), phases[:, r])) @ mats[r].T
    return psi


def plain_coefficients(c: Circuit) -> bool:
    return not any(isinstance(a.a, Angle) or isinstance(a.b, Angle)
                   for op in c.ops for a in op.angles if a.kind == "input")


@pytest.mark.parametrize("seed", range(40))
def test_lowered_layers_reproduce_the_circuit(seed):
    c = random_circuit(9000 + seed, n_qubits=1 + seed % 4)
    if not plain_coefficients(c):
        with pytest.raises(ValueError, match="trainable input coefficients"):
            lowering.lower(c)
        return
    params, inputs = random_args(c, seed, batch=3)
    want = run_reference(c, inputs, params)
    torch.testing.assert_close(run_layers(c, params, inputs), want, atol=1e-10, rtol=0)


def test_any_block_order_gets_zero_phases_and_identity_w():
    """Leading dense and trailing phase blocks become zero-phase / identity-W layers."""
    c = Circuit(2)
    c.ry(0, c.new_param(0.3)).cnot(0, 1)  # dense first
    c.rz(1, c.input(0))  # phase
    c.rx(0, c.new_param(-0.4))  # dense
    c.rzz(0, 1, c.input(0, 2.0))  # trailing phase
    low = lowering.lower(c)
    assert low.n_layers == 3 and low.dense[-1] is None
    assert not low.input_map[0].any() and not low.offset[0].any()
    theta = c.init_params().requires_grad_()
    x = torch.rand(3, 5, 1, dtype=torch.float64)
    phases, w = lowering.scan_tables(c, theta, x)
    assert phases.shape == (3, 5, 1, 3, 4) and w.shape == (1, 3, 2, 4, 4)
    torch.testing.assert_close(w[0, 2, 0], torch.eye(4, dtype=torch.float64))
    x1 = x[:, 0]
    torch.testing.assert_close(run_layers(c, theta.detach(), x1),
                               run_reference(c, x1, theta.detach()), atol=1e-12, rtol=0)


def _uniform_layer(c):  # the same gates on every wire: one batched matrix per step
    for q in range(4):
        c.ry(q, c.new_param(0.1 * q + 0.2)).rz(q, c.new_param(-0.3 * q))


def _mixed_layer(c):  # different gates per wire, a wire without any: one wire at a time
    c.h(0).rx(0, c.new_param(0.4)).u3(1, c.new_param(0.3), c.new_param(-0.7), c.new_param(1.1))
    c.ry(3, c.new_param(-0.5)).h(3)


@pytest.mark.parametrize("layer", [_uniform_layer, _mixed_layer])
def test_structured_unitary_equals_the_generic_build(monkeypatch, layer):
    """Above GENERIC_W_MAX_QUBITS dense blocks are built from their structure: same matrix,
    same gradients."""
    c = Circuit(4)
    for q in range(4):
        c.rz(q, c.input(0))
    layer(c)
    for q in range(4):
        c.cnot(q, (q + 1) % 4)
    theta = c.init_params(torch.float64).requires_grad_()
    x = torch.rand(2, 3, 1, dtype=torch.float64)
    weights = torch.arange(2 * 16 * 16, dtype=torch.float64).view(1, 1, 2, 16, 16)
    phases, w = lowering.scan_tables(c, theta, x)
    (g,) = torch.autograd.grad(w.square().mul(weights).sum(), theta)
    monkeypatch.setattr(lowering, "GENERIC_W_MAX_QUBITS", 0)
    phases2, w2 = lowering.scan_tables(c, theta, x)
    (g2,) = torch.autograd.grad(w2.square().mul(weights).sum(), theta)
    assert torch.allclose(w2, w, atol=1e-12) and torch.equal(phases2, phases)
    assert torch.allclose(g2, g, atol=1e-10)


def test_separable_accepts_single_qubit_phases_and_refuses_two_qubit_ones():
    """Rows from single-qubit diagonal gates (c + sum_q beta_q bit_q) are separable, and
    wire_form gives their per-wire phases back; a ZZ parity row (RZZ) is not."""
    n = 5
    b = [gates.bits(n, q).double() for q in range(n)]
    row = 0.3 + 0.7 * b[0] - 1.1 * b[4]
    assert lowering.separable(torch.stack([row, 2 * row]), n)
    torch.testing.assert_close(lowering.wire_form(row, n),
                               torch.tensor([0.7, 0, 0, 0, -1.1, 0.3], dtype=torch.float64))
    assert not lowering.separable(torch.stack([row, (b[1] + b[2]) % 2]), n)
