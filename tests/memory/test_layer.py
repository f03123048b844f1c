"""The QLAM layer against gate-by-gate simulation, its reversible backward against autograd,
streaming, norms, shots and bad input."""

import math

import pytest
import torch

import qlam
from qlam.memory import QLAM, sample_probs, walsh_matrix
from qlam.memory.checks import all_finite
from qlam.models.qlam import QLAMClassifier
from qlam.sim.scan import cpp, random_unitaries, scan


def _layer(**kw):
    torch.manual_seed(0)
    opts = dict(d_model=8, n_heads=3, n_qubits=3, depth=2)
    opts.update(kw)
    return QLAM(**opts).double()


@pytest.mark.parametrize("query_basis", [True, False])
def test_head_states_match_gate_by_gate_simulation(query_basis):
    m = _layer(query_basis=query_basis)
    x = torch.randn(2, 12, 8, dtype=torch.float64)
    probs, final = m.probabilities(x)
    angles = m.in_proj(x).view(2, 12, 3, -1)
    for h in range(3):
        dt = m.dt()[h]
        psi = qlam.statevector(m.prep, params=m.prep_theta[h].double()).expand(2, -1)
        for t in range(12):
            psi = qlam.statevector(m.circuit, angles[:, t, h] * dt, params=m.theta[h] * dt,
                                   state=psi, method="reference")
            if query_basis:
                q = m.q_basis(x[:, t]).view(2, 3, -1)[:, h]
                v = qlam.statevector(m.read, q, params=m.read_theta[h].double(), state=psi,
                                     method="reference")
            else:
                v = psi
            torch.testing.assert_close(probs[:, t, h], v.abs() ** 2, atol=1e-12, rtol=0)
        torch.testing.assert_close(final[:, h], psi, atol=1e-12, rtol=0)


@pytest.mark.parametrize("query_basis", [True, False])
def test_forward_is_query_weighted_pauli_z_expectations(query_basis):
    """y = out_proj(concat_h [w_{h,S}(x) <Z_S>_h]) recomputed from probabilities() with an
    explicit product of Z eigenvalues per string S (S's bit n-1-w selects wire w), each
    head's 2^n - 1 strings in order S = 1 .. 2^n - 1."""
    m = _layer(query_basis=query_basis)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    y, _ = m(x)
    probs, _ = m.probabilities(x)
    n, n_str = 3, 7
    z = torch.arange(8)
    feats = []
    qw = m.q_weight(x)
    for h in range(3):
        for s in range(1, 8):
            sign = torch.ones(8, dtype=torch.float64)
            for w in range(n):
                if (s >> (n - 1 - w)) & 1:
                    sign = sign * (1 - 2 * ((z >> (n - 1 - w)) & 1)).double()
            expval = (probs[:, :, h] * sign).sum(-1)
            feats.append(expval * qw[..., h * n_str + s - 1])
    want = m.out_proj(torch.stack(feats, -1))
    torch.testing.assert_close(y, want, atol=1e-12, rtol=0)


def test_walsh_matrix_gives_pauli_z_expectations():
    # <Z_0 Z_2> on 3 qubits: sign of bit0 xor bit2 (wire 0 = most significant bit)
    w = walsh_matrix(3)
    s = 0b101
    for z in range(8):
        b0, b2 = (z >> 2) & 1, z & 1
        assert w[z, s - 1] == (-1) ** (b0 ^ b2)
    psi = torch.randn(4, 8, dtype=torch.complex128)
    psi = psi / psi.norm(dim=-1, keepdim=True)
    z_exp = (psi.abs() ** 2) @ w
    assert torch.allclose(z_exp[:, s - 1], qlam.expval(psi, "ZIZ"), atol=1e-12)


@pytest.mark.parametrize("query_basis", [True, False])
def test_reversible_gradients_equal_autograd(query_basis):
    torch.manual_seed(1)
    model = QLAMClassifier(1, 4, d_model=8, n_layers=2, n_heads=2, n_qubits=3,
                           query_basis=query_basis).double()
    x = torch.randn(3, 800, 1, dtype=torch.float64)
    y = torch.tensor([0, 1, 3])
    grads = {}
    modes = ("autograd", "reversible", "kernel") if cpp.available() else ("autograd", "reversible")
    for mode in modes:
        for mem in model.memories():
            mem.backward_mode = mode
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for mode in modes[1:]:
        for name, g in grads["autograd"].items():
            torch.testing.assert_close(grads[mode][name], g, atol=1e-9, rtol=1e-7,
                                       msg=lambda m, n=name, k=mode: f"{k} {n}: {m}")


def test_layer_gradcheck_float64():
    m = _layer(n_heads=2, n_qubits=2, depth=1)
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda inp: m(inp)[0], (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backward", ["reversible", "auto"])
def test_norm_preserved_over_1e5_tokens_float32(backward):
    torch.manual_seed(0)
    h, n, length = 2, 16, 100_000
    w = random_unitaries(h, 1, n=n, dtype=torch.float32)
    psi0 = torch.zeros(1, h, 2, n)
    psi0[..., 0, 0] = 1
    phases = torch.rand(1, length, h, 1, n) * 2 * math.pi
    probs, last = scan(psi0, phases, w, backward=backward)
    norms = probs.sum(-1)
    assert (norms - 1).abs().max() < 1e-5
    assert ((last ** 2).sum((-1, -2)) - 1).abs().max() < 1e-5


def test_streaming_step_matches_full_sequence():
    m = _layer()
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    y, state = m(x)
    st, ys = None, []
    for t in range(9):
        yt, st = m.step(x[:, t], st)
        ys.append(yt)
    torch.testing.assert_close(torch.stack(ys, 1), y)
    torch.testing.assert_close(st, state)


def test_initial_state_is_used_and_validated():
    m = _layer()
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    state = torch.zeros(2, 3, 8, dtype=torch.complex128)
    state[..., 3] = 1
    y0, _ = m(x)
    y1, _ = m(x, state)
    assert not torch.allclose(y0, y1)
    with pytest.raises(ValueError, match=r"not normalised \(max \| \|psi\|\^2 - 1 \| = 3\)"):
        m(x, 2 * state)  # |2 psi|^2 = 4
    with pytest.raises(ValueError, match="state must have shape"):
        m(x, state[:, :2])
    with pytest.raises(TypeError, match="complex"):
        m(x, state.real)


def test_input_dtype_must_match_the_layer():
    m = QLAM(d_model=4, n_heads=1, n_qubits=2)
    with pytest.raises(TypeError, match="input is torch.float64 but the layer's parameters are "
                                        "torch.float32"):
        m(torch.randn(1, 3, 4, dtype=torch.float64))


def test_bad_inputs_are_named():
    m = _layer()
    with pytest.raises(ValueError, match=r"shape \(batch, length, 8\)"):
        m(torch.randn(2, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(batch, length, 8\)"):
        m(torch.randn(2, 3, 5, dtype=torch.float64))
    for empty in [(0, 3, 8), (2, 0, 8)]:  # no example / no token: named, not a reshape error
        with pytest.raises(ValueError, match="at least one example of at least one token"):
            m(torch.randn(*empty, dtype=torch.float64))
    with torch.no_grad(), pytest.raises(ValueError, match="at least one example"):
        m.step(torch.randn(0, 8, dtype=torch.float64))
    for value in (float("nan"), float("inf"), -float("inf")):
        bad = torch.randn(2, 3, 8, dtype=torch.float64)
        bad[0, 1, 2] = value
        with pytest.raises(ValueError, match="NaN or inf"):
            m(bad)
    # finite values whose sum overflows are no NaN or inf (the check sums first)
    big = torch.full((2, 3, 8), torch.finfo(torch.float64).max / 2, dtype=torch.float64)
    assert all_finite(big) and not torch.isfinite(big.sum())
    big[0, 0, 0] = float("inf")
    assert not all_finite(big)
    with pytest.raises(TypeError, match="floating-point"):
        m(torch.ones(2, 3, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="qubits per head"):
        QLAM(8, n_qubits=20)
    with pytest.raises(ValueError, match="shots"):
        sample_probs(torch.ones(2, 4) / 4, 0)
    with pytest.raises(ValueError, match=r"x_t of shape \(batch, 8\), got list"):
        m.step([0.0] * 8)
    with pytest.raises(ValueError, match=r"x_t of shape \(batch, 8\), got \(2, 1, 8\)"):
        m.step(torch.zeros(2, 1, 8, dtype=torch.float64))


def test_shot_estimates_are_unbiased_with_binomial_spread():
    torch.manual_seed(0)
    p = torch.tensor([0.1, 0.2, 0.3, 0.4]).expand(20000, 4)
    gen = torch.Generator().manual_seed(3)
    est = sample_probs(p, 50, gen)
    mean, var = est.mean(0), est.var(0)
    assert torch.allclose(mean, p[0], atol=4 * (0.25 / 50 / 20000) ** 0.5)
    expected_var = p[0] * (1 - p[0]) / 50
    assert torch.allclose(var, expected_var, rtol=0.1)


def test_shots_change_outputs_but_converge_to_exact():
    m = _layer()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    exact, _ = m(x)
    m.generator = torch.Generator().manual_seed(0)
    m.shots = 10
    rough, _ = m(x)
    m.shots = 200_000
    fine, _ = m(x)
    err_rough = (rough - exact).abs().max()
    err_fine = (fine - exact).abs().max()
    assert err_fine < err_rough / 10
    assert err_fine < 0.05


def test_token_circuit_layout():
    """The documented layout, by hand: per layer RZ(x_j) on every qubit, RZZ(x_j) on the ring,
    then RX, RY per qubit and RXX, RYY per ring pair; input slots 0, 1, ... in that order."""
    from qlam.memory import token_circuit

    c = token_circuit(3)  # depth 1 by default; ring (0,1), (1,2), (2,0)
    names = [op.name for op in c.ops]
    assert names == ["rz"] * 3 + ["rzz"] * 3 + ["rx", "ry"] * 3 + ["rxx", "ryy"] * 3
    inputs = [op.angles[0].index for op in c.ops if op.is_input]
    assert inputs == [0, 1, 2, 3, 4, 5] and c.n_inputs == 6 and c.n_params == 12
    assert [op.wires for op in c.ops[3:6]] == [(0, 1), (1, 2), (2, 0)]
    c2 = token_circuit(3, depth=2)
    assert [op.angles[0].index for op in c2.ops if op.is_input] == list(range(12))


def test_initial_state_is_plus_on_every_qubit():
    m = QLAM(d_model=4, n_heads=2, n_qubits=3)
    psi = m.initial_state(2, torch.float64)
    torch.testing.assert_close(psi, torch.full((2, 2, 8), 8 ** -0.5, dtype=torch.complex128),
                               atol=1e-7, rtol=0)


def test_defaults_and_option_bounds():
    m = QLAM(d_model=8)
    assert (m.n_heads, m.n_qubits, m.depth, m.query_basis) == (4, 4, 1, True)
    QLAM(d_model=1, n_heads=1, n_qubits=1, depth=1)  # the smallest layer is valid
    for bad in (dict(n_qubits=0), dict(n_qubits=13), dict(n_heads=0), dict(depth=0),
                dict(d_model=0)):
        with pytest.raises(ValueError, match="n_qubits|n_heads"):
            QLAM(**{"d_model": 4, **bad})


def test_sample_probs_follows_its_generator():
    p = torch.tensor([[0.2, 0.3, 0.5]])
    a = sample_probs(p, 50, torch.Generator().manual_seed(4))
    b = sample_probs(p, 50, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not all(torch.equal(a, sample_probs(p, 50, torch.Generator().manual_seed(s)))
                   for s in range(5, 10))


def _z_signs(n: int) -> torch.Tensor:
    """(2^n, n) eigenvalue of Z on wire i for basis state z (+1 for bit 0), wire 0 the MSB."""
    return torch.tensor([[1 - 2 * ((z >> (n - 1 - i)) & 1) for i in range(n)]
                         for z in range(2**n)], dtype=torch.float64)


def test_phases_are_the_z_rotation_layers_by_hand():
    """QLAM._phases (the phase map qlam.hardware uses) against the gates' own phases:
    RZ(t) on wire i gives basis state z the phase -t z_i / 2 and RZZ(t) on (a, b) gives
    -t z_a z_b / 2 (z = +-1); the token layer's angles are Delta_h in_proj(x), the readout
    layer's the query q_basis(x)."""
    from qlam.templates import ring

    m = QLAM(d_model=5, n_heads=2, n_qubits=3).double()
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    zs = _z_signs(3)
    read = m._phases(x, m.q_basis, None, "read")  # (B, L, H, R=1, N)
    q = m.q_basis(x).view(2, 4, 2, 3)
    assert read.shape == (2, 4, 2, 1, 8)
    torch.testing.assert_close(read[:, :, :, 0], -0.5 * q @ zs.T, rtol=0, atol=1e-12)
    token = m._phases(x, m.in_proj, m.dt(), "phase")  # (B, L, H, R=1, N)
    angles = m.in_proj(x).view(2, 4, 2, 6) * m.dt()[:, None]  # RZ x 3, then RZZ on the ring
    strings = torch.cat([zs, torch.stack([zs[:, a] * zs[:, b] for a, b in ring(3)], 1)], 1)
    torch.testing.assert_close(token[:, :, :, 0], -0.5 * angles @ strings.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("order, strings", [(1, ["IIZ", "IZI", "ZII"]),
                                            (2, ["IIZ", "IZI", "IZZ", "ZII", "ZIZ", "ZZI"])])
def test_read_order_reads_the_low_weight_z_strings(order, strings):
    """read_order k: the features are <P> of the Z-strings on at most k qubits (in increasing
    string index, wire 0 the leftmost letter), from qlam.expval on the readout state."""
    m = _layer(query_basis=False, read_order=order)
    assert m.n_read == len(strings)
    assert m.q_weight.out_features == m.out_proj.in_features == 3 * len(strings)
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    y, final = m(x)
    _, psi = m(x[:, :3])
    _, psi = m(x[:, 3:], psi)  # the state after the last token, read in the Z basis
    qw = m.q_weight(x[:, -1]).view(2, 3, -1)
    feats = torch.stack([qlam.expval(psi[:, h], p) * qw[:, h, i]
                         for h in range(3) for i, p in enumerate(strings)], -1)
    torch.testing.assert_close(y[:, -1], m.out_proj(feats), atol=1e-12, rtol=0)
    with torch.no_grad():  # step (the fused kernel reads every string: the forward is used)
        state, ys = None, []
        for t in range(4):
            y_t, state = m.step(x[:, t], state)
            ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, atol=1e-12, rtol=0)


@pytest.mark.parametrize("bad", [0, 4, 1.5, True, "2"])
def test_read_order_out_of_range_is_named(bad):
    with pytest.raises(ValueError, match="read_order"):
        QLAM(8, 2, 3, read_order=bad)


def test_classifier_passes_read_order_to_the_unitary_memory_only():
    model = QLAMClassifier(3, 5, d_model=8, n_layers=2, n_heads=2, n_qubits=4, read_order=2)
    assert [m.n_read for m in model.memories()] == [10, 10]  # 4 + C(4, 2) strings per head
    with pytest.raises(ValueError, match="read_order"):
        QLAMClassifier(3, 5, d_model=8, n_heads=2, n_qubits=3, memory="mixed", read_order=2)


@pytest.mark.parametrize("memory", ["unitary", "mixed"])
def test_conv_feeds_the_memory_a_causal_depthwise_convolution(memory):
    """With conv k the memory of block 0 reads m_t = silu(b + sum_j w_j h_{t-k+1+j}) per
    channel (h = LN of the embedded tokens, zero before the first token), written out here
    as a sum over the kernel; a change to token t leaves every output before t as it was."""
    torch.manual_seed(0)
    model = QLAMClassifier(3, 4, d_model=6, n_layers=2, n_heads=2, n_qubits=2, pool="none",
                           memory=memory, conv=3).double()
    x = torch.randn(7, 3, dtype=torch.float64)
    block = model.blocks[0]
    h = block.norm1(model.embed(x[None]))[0]  # (L, d)
    w, bias = block.conv.weight[:, 0], block.conv.bias  # (d, k), (d,)
    want = torch.stack([torch.nn.functional.silu(bias + sum(
        w[:, j] * h[t - 2 + j] for j in range(3) if t - 2 + j >= 0)) for t in range(7)])
    torch.testing.assert_close(model.memory_input(x, 0)[0], want, atol=1e-12, rtol=0)
    with torch.no_grad():
        y = model(x[None])
        x2 = x.clone()
        x2[4] += 1.0
        y2 = model(x2[None])
    torch.testing.assert_close(y2[:, :4], y[:, :4], atol=1e-12, rtol=0)
    assert not torch.allclose(y2[:, 4], y[:, 4])
    with pytest.raises(ValueError, match="conv"):
        QLAMClassifier(3, 4, d_model=6, n_heads=2, n_qubits=2, conv=0)
