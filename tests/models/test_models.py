"""Baselines: shapes, learning on a tiny task, parameter budgets, the S4D kernel against
its recurrence, and QLSTM gates against closed-form and gate-by-gate simulations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from qlam.circuit import Circuit
from qlam.models import REGISTRY, build_model, count_params, size_to_budget
from qlam.models.qlstm import QLSTMCell, gate_circuit
from qlam.models.ssm import S4D, S4DKernel, SSMClassifier, causal_conv
from qlam.models.transformer import sinusoidal_positions
from qlam.sim.statevector import run_reference
from qlam.train import TrainConfig, resolved_model_options

BASELINES = ["rnn", "lstm", "gru", "transformer", "ssm", "qlstm"]
SMALL = dict(d_model=8, n_layers=1, n_heads=2, n_qubits=2, depth=1, d_state=4)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def toy_batch(n=24, length=9, n_classes=3, seed=0):
    """Every token is its class's prototype in 2 features plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    proto = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    return proto[y][:, None, :] + 0.5 * torch.randn(n, length, 2, generator=g), y


@pytest.mark.parametrize("name", BASELINES)
def test_registered_with_shapes(name):
    assert name in REGISTRY
    for pool in ("mean", "last"):
        model = build_model(name, 2, 4, pool=pool, **SMALL)
        assert model(torch.randn(3, 7, 2)).shape == (3, 4)
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(3, 7, 5))
    with pytest.raises(ValueError, match="pool"):
        build_model(name, 2, 4, pool="max", **SMALL)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_model_trains_under_bfloat16_autocast_near_float32(name):
    """``--precision bf16`` runs every model's forward under bfloat16 autocast; the quantum
    memories (qlam, qlam-mixed, qlstm) simulate in float32 inside it (complex states have
    no bfloat16 form: qlam-mixed and qlstm had raised a TypeError), so the logits stay near
    float32's and every parameter gets a finite gradient."""
    torch.manual_seed(0)
    model = build_model(name, 2, 4, **SMALL)
    x, _ = toy_batch(n=4)
    ref = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    torch.testing.assert_close(logits.float(), ref, atol=0.05, rtol=0.05)
    logits.float().sum().backward()
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", BASELINES)
def test_a_few_steps_reduce_the_loss(name):
    torch.manual_seed(0)
    x, y = toy_batch()
    model = build_model(name, 2, 3, **SMALL)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    first = None
    for _ in range(15):
        loss = F.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert F.cross_entropy(model(x), y).item() < 0.8 * first


@pytest.mark.parametrize("name", BASELINES + ["qlam"])
def test_parameter_budget(name):
    target = 3000
    opts = dict(n_layers=1, n_heads=2, n_qubits=2, depth=1, d_state=4)
    d = size_to_budget(name, 1, 10, target, **opts)
    n = count_params(build_model(name, 1, 10, d_model=d, **opts))
    step = 2 if name == "transformer" else 1
    assert d % step == 0
    neighbours = [count_params(build_model(name, 1, 10, d_model=m, **opts))
                  for m in (d - step, d + step) if m >= 1]
    assert all(abs(n - target) <= abs(c - target) for c in neighbours)  # the closest width
    assert 0.5 * target < n < 1.5 * target


def test_a_budget_below_the_narrowest_model_is_refused():
    """An LSTM over 8,192 token ids has 24,610 parameters at d_model 1: a 5,000 budget had
    been answered with d_model 1 (5x over) without a word."""
    narrowest = count_params(build_model("lstm", 8192, 10, d_model=1, discrete=True))
    with pytest.raises(ValueError, match=rf"lstm: even d_model=1 has {narrowest} parameters, "
                                         r"over the target 5000 by more than 10 %"):
        size_to_budget("lstm", 8192, 10, 5000, discrete=True)
    assert size_to_budget("lstm", 8192, 10, narrowest, discrete=True) == 1  # at the floor: fine


def test_build_model_passes_layer_options_on_and_names_unknown_ones():
    """QLAM's layer options reach the layer (they were dropped without a word before);
    an option no model takes is refused by name; one that only another model takes (a
    shared sweep config) is ignored."""
    model = build_model("qlam", 2, 3, backward="reversible", **SMALL)
    assert [m.backward_mode for m in model.memories()] == ["reversible"]
    with pytest.raises(ValueError, match="'qlam' does not take bogus"):
        build_model("qlam", 2, 3, bogus=1, **SMALL)
    with pytest.raises(ValueError, match="'lstm' does not take backward"):
        build_model("lstm", 2, 3, backward="reversible", **SMALL)
    assert count_params(build_model("lstm", 2, 3, **SMALL)) == count_params(
        build_model("lstm", 2, 3, d_model=8, n_layers=1))


def test_count_params_and_budget_in_config():
    model = build_model("lstm", 1, 10, d_model=4, n_layers=1)
    # embed 1*4+4, LSTM 4*(4*4 + 4*4 + 4 + 4), norm 8, head 4*10+10
    assert count_params(model) == 8 + 4 * 40 + 8 + 50
    cfg = TrainConfig(model="gru", params=5000, n_layers=1)
    opts = resolved_model_options(cfg, 1, 10)
    assert abs(count_params(build_model("gru", 1, 10, **opts)) - 5000) < 500
    with pytest.raises(ValueError, match="not both"):
        resolved_model_options(TrainConfig(model="gru", params=5000, d_model=8), 1, 10)


# ---- S4D --------------------------------------------------------------------------------
def test_s4d_init():
    k = S4DKernel(3, d_state=8, dt_min=1e-3, dt_max=1e-1)
    a = torch.complex(-k.log_A_real.exp(), k.A_imag)
    torch.testing.assert_close(a[1], torch.complex(torch.full((4,), -0.5), math.pi * torch.arange(4.0)))
    dt = k.log_dt.exp()
    assert ((dt >= 1e-3) & (dt <= 1e-1)).all()
    with pytest.raises(ValueError, match="even"):
        S4DKernel(3, d_state=5)


def test_s4d_kernel_matches_the_recurrence():
    torch.manual_seed(1)
    k = S4DKernel(3, d_state=6, dt_min=0.01, dt_max=0.5).double()
    length = 20
    kernel = k(length)
    da, db, c = k.discretize()
    # impulse response of x_t = dA x_{t-1} + dB u_t, y_t = 2 Re(C x_t)
    x = torch.zeros_like(da)
    naive = []
    for t in range(length):
        x = da * x + db * (1.0 if t == 0 else 0.0)
        naive.append(2 * (c * x).sum(-1).real)
    torch.testing.assert_close(kernel, torch.stack(naive, -1), rtol=1e-10, atol=1e-12)
    # and the FFT convolution is the causal convolution with it
    u = torch.randn(2, length, 3, dtype=torch.float64)
    direct = torch.stack([sum(kernel[:, s] * u[:, t - s] for s in range(t + 1))
                          for t in range(length)], 1)
    torch.testing.assert_close(causal_conv(u, kernel), direct, rtol=1e-10, atol=1e-10)


def test_s4d_convolution_equals_step_mode():
    torch.manual_seed(2)
    layer = S4D(4, d_state=6).double()
    u = torch.randn(2, 11, 4, dtype=torch.float64)
    conv = layer(u)
    state, steps = None, []
    for t in range(u.shape[1]):
        y, state = layer.step(u[:, t], state)
        steps.append(y)
    torch.testing.assert_close(conv, torch.stack(steps, 1), rtol=1e-9, atol=1e-10)
    model = SSMClassifier(2, 3, d_model=4, n_layers=2, d_state=4).double()
    x = torch.randn(2, 9, 2, dtype=torch.float64)
    torch.testing.assert_close(model(x), model.forward_recurrent(x), rtol=1e-9, atol=1e-10)


# ---- QLSTM ------------------------------------------------------------------------------
def test_qlstm_one_qubit_gate_closed_form():
    """1 qubit: H, RY(a), RZ(b), then RZ(p) RY(t) RZ(w) gives
    <Z> = -cos(a) cos(b + p) sin(t) - sin(a) cos(t), a = atan z, b = atan z^2."""
    cell = QLSTMCell(3, n_qubits=1, depth=1).double()
    z = torch.randn(5, 4, 1, dtype=torch.float64)
    got = cell.expectations(z)
    a, b = torch.atan(z[..., 0]), torch.atan(z[..., 0] ** 2)
    p, t = cell.theta[:, 0].detach(), cell.theta[:, 1].detach()  # per gate
    want = -torch.cos(a) * torch.cos(b + p) * torch.sin(t) - torch.sin(a) * torch.cos(t)
    torch.testing.assert_close(got[..., 0], want, rtol=1e-12, atol=1e-12)


def test_qlstm_two_qubit_gates_match_gate_by_gate_simulation():
    """The compiled, batched gates equal the reference simulator on the textbook circuit
    (H, RY(atan z), RZ(atan z^2), then CNOTs and RZ RY RZ)."""
    n, depth = 2, 2
    cell = QLSTMCell(3, n_qubits=n, depth=depth).double()
    z = torch.randn(4, 4, n, dtype=torch.float64)
    got = cell.expectations(z)
    variational = gate_circuit(n, depth).ops[7 * n:]  # after the 7-gate-per-qubit encoding
    for g in range(4):
        c = Circuit(n)
        for q in range(n):
            c.h(q).ry(q, c.input(q)).rz(q, c.input(n + q))
        c.ops.extend(variational)
        c.init = list(gate_circuit(n, depth).init)
        feats = torch.cat([torch.atan(z[:, g]), torch.atan(z[:, g] ** 2)], -1)
        probs = run_reference(c, feats, cell.theta[g].detach()).abs() ** 2
        zs = torch.stack([probs[:, [0, 1]].sum(-1) - probs[:, [2, 3]].sum(-1),
                          probs[:, [0, 2]].sum(-1) - probs[:, [1, 3]].sum(-1)], -1)
        torch.testing.assert_close(got[:, g], zs, rtol=1e-12, atol=1e-12)


def test_qlstm_cell_is_an_lstm_over_the_quantum_gates():
    torch.manual_seed(3)
    cell = QLSTMCell(3, n_qubits=2, depth=1).double()
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    out, (h_last, c_last) = cell(x)
    h = c = torch.zeros(2, 3, dtype=torch.float64)
    for t in range(4):
        z = (cell.in_x(x[:, t]) + cell.in_h(h)).view(2, 4, 2)
        q = cell.expectations(z)
        pre = [q[:, g] @ cell.out_w[g] + cell.out_b[g] for g in range(4)]
        c = torch.sigmoid(pre[0]) * c + torch.sigmoid(pre[1]) * torch.tanh(pre[2])
        h = torch.sigmoid(pre[3]) * torch.tanh(c)
        torch.testing.assert_close(out[:, t], h)
    torch.testing.assert_close(c_last, c)
    torch.testing.assert_close(h_last, h)


def test_sinusoidal_positions():
    pe = sinusoidal_positions(5, 6)
    assert pe.shape == (5, 6)
    torch.testing.assert_close(pe[0], torch.tensor([0.0, 1.0] * 3))
    torch.testing.assert_close(pe[:, 0], torch.sin(torch.arange(5.0)))
