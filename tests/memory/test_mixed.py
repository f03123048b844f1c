"""The mixed (density-matrix) memory against a direct density-matrix simulation of its channel,
its compiled recurrence against the PyTorch loop and finite differences, the density matrix's
validity, streaming, shots and bad options."""

import math

import pytest
import torch

from qlam.memory.mixed import MixedQLAM, product_state
from qlam.models.qlam import QLAMClassifier
from qlam.sim.scan import channel as channel_scan
from qlam.sim.scan.channel import channel_states, channel_states_ref
from qlam.sim.statevector import unitary

Z = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.complex128)
I2 = torch.eye(2, dtype=torch.complex128)


def _on_qubit(op, q, n):
    """op on wire q of n (wire 0 the most significant)."""
    out = torch.ones(1, 1, dtype=torch.complex128)
    for w in range(n):
        out = torch.kron(out, op if w == q else I2)
    return out


def _layer(**kw):
    torch.manual_seed(0)
    opts = dict(d_model=6, n_heads=2, n_qubits=2)
    opts.update(kw)
    m = MixedQLAM(**opts).double()
    if m.dephasing:
        with torch.no_grad():
            m.log_gamma.copy_(-3 * torch.rand(m.n_heads, m.n_qubits))
            m.log_dt.fill_(0.3)
    return m


def _direct(m: MixedQLAM, x: torch.Tensor):
    """Probabilities (L, H, N) and final rho (H, N, N) of one example x (L, d), simulated as
    the channel is defined: the token unitary V D V^dag, phase damping on every qubit of the
    frame (Kraus form: keep with prob 1-p, Z with prob p, p = (1 - e^-gamma)/2), then reset
    to |s(x)> with probability a; read in the basis R."""
    n, h_count = m.n_qubits, m.n_heads
    big_n = 2**n
    v = unitary(m.frame.ops, n, m.theta.double())
    r = unitary(m.frame.ops, n, m.read_theta.double().flatten(0, 1))
    r = r.view(h_count, m.n_bases, big_n, big_n)
    psi = unitary(m.prep.ops, n, m.prep_theta.double())[:, :, 0]
    rho = torch.stack([torch.outer(p, p.conj()) for p in psi])
    probs = []
    for xt in x:
        theta = (m.in_proj(xt).view(h_count, big_n - 1) * m.dt()[:, None]).double()
        a = torch.sigmoid(m.gate(xt)) if m.selective else torch.sigmoid(m.gate_logit)
        alpha, beta = m.write_proj(xt).view(h_count, 2, n).unbind(1)
        out, p_t = [], []
        for h in range(h_count):
            # the diagonal unitary prod_S exp(-i theta_S / 2 Z_S), Z_S from single-qubit Zs
            # (bit k of the mask S is bit k of the basis index: wire n - 1 - k)
            diag = torch.eye(big_n, dtype=torch.complex128)
            for s in range(1, big_n):
                zs = torch.eye(big_n, dtype=torch.complex128)
                for k in range(n):
                    if (s >> k) & 1:
                        zs = zs @ _on_qubit(Z, n - 1 - k, n)
                diag = diag @ torch.linalg.matrix_exp(-0.5j * theta[h, s - 1] * zs)
            u = v[h] @ diag @ v[h].conj().T
            rh = u @ rho[h] @ u.conj().T
            if m.dephasing:
                rh = v[h].conj().T @ rh @ v[h]
                for q in range(n):
                    p = (1 - torch.exp(-m.log_gamma.exp()[h, q])) / 2
                    zq = _on_qubit(Z, q, n)
                    rh = (1 - p) * rh + p * zq @ rh @ zq
                rh = v[h] @ rh @ v[h].conj().T
            s_state = torch.ones(1, dtype=torch.complex128)
            for q in range(n):
                ry = torch.stack([torch.cos(alpha[h, q] / 2), torch.sin(alpha[h, q] / 2)])
                phase = torch.exp(torch.tensor([-0.5j, 0.5j], dtype=torch.complex128) * beta[h, q])
                s_state = torch.kron(s_state, ry * phase)
            rh = (1 - a[h]) * rh + a[h] * torch.outer(s_state, s_state.conj())
            out.append(rh)
            p_t.append(torch.cat([torch.diagonal(rk @ rh @ rk.conj().T).real for rk in r[h]]))
        rho = torch.stack(out)
        probs.append(torch.stack(p_t))
    return torch.stack(probs), rho


@pytest.mark.parametrize("kw", [{}, {"selective": False}, {"dephasing": False},
                                {"n_qubits": 3, "n_heads": 1}, {"n_bases": 3}])
def test_layer_matches_direct_density_matrix_simulation(kw):
    m = _layer(**kw)
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    probs, final = m.probabilities(x)
    for b in range(2):
        want_p, want_rho = _direct(m, x[b])
        torch.testing.assert_close(probs[b], want_p, atol=1e-10, rtol=0)
        torch.testing.assert_close(final[b], want_rho, atol=1e-10, rtol=0)


def test_product_state_is_the_rotated_zero_state():
    alpha, beta = torch.tensor([0.3, 1.1]), torch.tensor([-0.7, 2.0])
    got = product_state(alpha.double(), beta.double())
    q0 = torch.tensor([torch.cos(alpha[0] / 2) * torch.exp(-0.5j * beta[0]),
                       torch.sin(alpha[0] / 2) * torch.exp(0.5j * beta[0])])
    q1 = torch.tensor([torch.cos(alpha[1] / 2) * torch.exp(-0.5j * beta[1]),
                       torch.sin(alpha[1] / 2) * torch.exp(0.5j * beta[1])])
    torch.testing.assert_close(got, torch.kron(q0, q1).to(got.dtype))
    scaled = product_state(alpha.double(), beta.double(), torch.tensor([0.5], dtype=torch.float64))
    torch.testing.assert_close(scaled, 0.5 * got)


def test_product_state_gradients_for_angles_of_either_sign():
    """Angles outside (0, pi) make cos(alpha/2) or sin(alpha/2) negative (torch.polar's
    gradient is wrong for negative magnitudes, and the write path had used it)."""
    alpha = torch.tensor([[-0.8, 2.9], [3.7, -4.0]], dtype=torch.float64, requires_grad=True)
    beta = torch.tensor([[0.4, -1.3], [2.2, 0.1]], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([[0.7], [-0.5]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(product_state, (alpha, beta, scale))


def test_layer_gradcheck_through_the_write_path():
    """The whole layer in float64 against finite differences, inputs and parameters (the
    write projection's angles have both signs at initialisation)."""
    torch.manual_seed(0)
    m = MixedQLAM(3, 1, 2).double()
    x = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    params = [m.write_proj.weight, m.write_proj.bias]
    alpha = m.write_proj(x)  # some write angles are negative: the case that broke
    assert (alpha < 0).any()
    assert torch.autograd.gradcheck(lambda x, w, b: torch.func.functional_call(
        m, {"write_proj.weight": w, "write_proj.bias": b}, (x,))[0], (x, *params))


def test_a_given_state_must_be_a_density_matrix():
    """Trace 1 alone had let a matrix with a negative eigenvalue through (Born
    probabilities below 0 followed)."""
    m = MixedQLAM(4, 2, 2)
    x = torch.randn(3, 5, 4)
    neg = torch.zeros(3, 2, 4, 4, dtype=torch.complex64)
    neg[..., 0, 0], neg[..., 1, 1] = 2, -1
    with pytest.raises(ValueError, match=r"an eigenvalue is -1 < 0"):
        m(x, neg)
    skew = m.initial_state(3).clone()
    skew[..., 0, 1] += 0.5
    with pytest.raises(ValueError, match="not Hermitian"):
        m(x, skew)
    m(x, m.initial_state(3))  # a density matrix passes


def _random_inputs(h=2, b=3, length=6, n=4, requires_grad=True):
    g = torch.Generator().manual_seed(1)
    d = 0.9 * torch.randn(h, b, length, n, dtype=torch.complex128, generator=g)
    w = torch.randn(h, b, length, n, dtype=torch.complex128, generator=g)
    decay = torch.rand(h, n, n, dtype=torch.float64, generator=g)
    r0 = torch.randn(h, b, n, n, dtype=torch.complex128, generator=g)
    return [t.requires_grad_(requires_grad) for t in (d, w, decay, r0)]


@pytest.mark.skipif(channel_scan._extension() is None, reason="no C++ compiler")
def test_channel_kernel_matches_loop_and_finite_differences():
    inputs = _random_inputs()
    got = channel_states(*inputs)
    want = channel_states_ref(*inputs)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    g = torch.randn_like(got)
    grads = torch.autograd.grad((got * g.conj()).real.sum(), inputs)
    grads_ref = torch.autograd.grad((want * g.conj()).real.sum(), inputs)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=0)
    assert torch.autograd.gradcheck(channel_states, _random_inputs(length=4, n=2))


def test_channel_loop_gradcheck():
    assert torch.autograd.gradcheck(channel_states_ref, _random_inputs(length=3, n=2))


def test_density_matrix_stays_valid_over_a_long_sequence():
    torch.manual_seed(0)
    m = MixedQLAM(8, n_heads=3, n_qubits=3)
    x = torch.randn(2, 600, 8)
    _, rho = m.probabilities(x)
    torch.testing.assert_close(rho, rho.conj().transpose(-1, -2), atol=1e-5, rtol=0)
    trace = rho.diagonal(dim1=-2, dim2=-1).sum(-1)
    torch.testing.assert_close(trace, torch.ones_like(trace), atol=1e-4, rtol=0)
    assert torch.linalg.eigvalsh(rho.to(torch.complex128)).min() > -1e-5


def test_step_streams_the_full_sequence():
    m = _layer()
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    y, rho = m(x)
    state, ys = None, []
    for t in range(7):
        y_t, state = m.step(x[:, t], state)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y)
    torch.testing.assert_close(state, rho)
    y_a, s_a = m(x[:, :3])  # a carried state continues the sequence
    y_b, _ = m(x[:, 3:], s_a)
    torch.testing.assert_close(torch.cat([y_a, y_b], 1), y)


def test_shots_sample_the_born_distribution():
    m = _layer()
    x = torch.randn(1, 4, 6, dtype=torch.float64)
    probs, _ = m.probabilities(x)
    m.shots, m.generator = 20000, torch.Generator().manual_seed(0)
    z = probs.unflatten(-1, (m.n_bases, 2**m.n_qubits)) @ m.walsh
    y_exact = m.out_proj(z.flatten(2) * m.q_weight(x))
    y_shots, _ = m(x)
    assert 0 < (y_shots - y_exact).abs().max() < 0.2


def test_shots_sample_every_basis_with_its_own_shots():
    """n_bases = K measurement settings: each basis is sampled with its own ``shots`` draws
    (frequencies summing to 1 per basis), not one draw over the K N outcomes together. With one
    shot, each basis's Z-strings are the signs of the one outcome it drew (a row of the Walsh
    matrix), and over many examples the outcomes follow that basis's Born probabilities."""
    k, n_states, rows = 3, 4, 20000
    m = _layer(d_model=9, n_heads=1, n_bases=k)
    with torch.no_grad():  # y = the K bases' Z-strings (B, L, K (N - 1))
        m.q_weight.weight.zero_()
        m.q_weight.bias.fill_(1)
        m.out_proj.weight.copy_(torch.eye(9))
        m.out_proj.bias.zero_()
    x = torch.randn(1, 1, 9, dtype=torch.float64)
    probs = m.probabilities(x)[0].view(k, n_states)
    m.shots, m.generator = 1, torch.Generator().manual_seed(0)
    with torch.no_grad():
        z = m(x.repeat(rows, 1, 1))[0].view(rows, k, 1, n_states - 1)
    drawn = (z == m.walsh.double()).all(-1)  # (rows, K, N): the outcome each basis drew
    assert (drawn.sum(-1) == 1).all()  # one outcome per basis and shot
    sd = (0.25 / rows) ** 0.5
    torch.testing.assert_close(drawn.double().mean(0), probs.detach(), atol=5 * sd, rtol=0)


def test_gradients_reach_every_parameter():
    m = _layer()
    y, _ = m(torch.randn(2, 5, 6, dtype=torch.float64))
    y.square().sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_classifier_with_mixed_memory_learns_a_toy_task():
    torch.manual_seed(0)
    model = QLAMClassifier(1, 2, d_model=16, n_layers=1, n_heads=2, n_qubits=2, memory="mixed")
    x = torch.randn(64, 20, 1)
    y = (x[:, 0, 0] > 0).long()  # the first token decides: the memory must keep it
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_bad_options_are_refused_clearly():
    with pytest.raises(ValueError, match="memory must be one of"):
        QLAMClassifier(1, 2, memory="bogus")
    with pytest.raises(ValueError, match="options of memory='mixed' only"):
        QLAMClassifier(1, 2, n_bases=2)
    with pytest.raises(ValueError, match="depth must be 1"):
        QLAMClassifier(1, 2, memory="mixed", depth=2)
    with pytest.raises(ValueError, match="1..5 qubits"):
        MixedQLAM(4, n_qubits=6)
    with pytest.raises(ValueError, match="n_bases"):
        MixedQLAM(4, n_bases=0)
    with pytest.raises(ValueError, match="a_min"):
        MixedQLAM(4, a_min=0.5, a_max=0.1)
    m = MixedQLAM(4, n_heads=1, n_qubits=1)
    with pytest.raises(ValueError, match="shape"):
        m(torch.randn(2, 3, 5))
    with pytest.raises(TypeError, match="convert one to the other"):
        m(torch.randn(2, 3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="density matrix"):
        m(torch.randn(2, 3, 4), torch.zeros(2, 1, 2, 2, dtype=torch.complex64))
    m.noise = "depolarizing:0.01"
    with pytest.raises(NotImplementedError, match="mixed"):
        m(torch.randn(2, 3, 4))


def test_export_head_points_to_the_mixed_export():
    from qlam.export import export_head
    from qlam.export_mixed import export_mixed_head

    model = QLAMClassifier(1, 2, d_model=8, n_layers=1, n_heads=2, n_qubits=2, memory="mixed")
    x = torch.randn(5, 1)
    with pytest.raises(ValueError, match="use qlam.export_mixed.export_mixed_head"):
        export_head(model, x)
    ex = export_mixed_head(model, x, head=1)  # checked against Qiskit in tests/export
    assert (ex.circuit.n_qubits, ex.tokens) == (5, 5)
    assert ex.circuit.gate_count()["reset"] == 5 * (2 + 1 + 2)


def test_option_bounds_are_inclusive_and_defaults_documented():
    """The documented ranges include their ends (5 qubits, a_min == a_max), the defaults are
    the docstring's (selective, dephasing, one basis), and the derived buffers are not saved
    (a state dict holds exactly the parameters)."""
    assert MixedQLAM(2, n_heads=1, n_qubits=5).n_qubits == 5
    same = MixedQLAM(2, n_heads=3, n_qubits=1, a_min=0.05, a_max=0.05)
    torch.testing.assert_close(same.gate.bias.detach(),
                               torch.full((3,), math.log(0.05 / 0.95)), rtol=1e-6, atol=0)
    m = MixedQLAM(4, n_heads=2, n_qubits=2)
    assert (m.selective, m.dephasing, m.n_bases, m.shots) == (True, True, 1, None)
    assert set(m.state_dict()) == {name for name, _ in m.named_parameters()}
