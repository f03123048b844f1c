"""Measurements: probabilities, Pauli expectations (exact and finite-shot), sampling."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch
from circuit_oracles import random_args, random_circuit

import qlam
from qlam import Circuit, counts, estimate_expval, expval, probabilities, sample
from qlam.sim.measure import bitstring_counts, rotate_to_z, sample_counts, sampled_readout

PAULI = {
    "I": np.eye(2), "X": np.array([[0, 1], [1, 0]]), "Y": np.array([[0, -1j], [1j, 0]]),
    "Z": np.diag([1, -1]),
}


def random_state(n: int, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    psi = torch.randn(batch, 2**n, dtype=torch.complex128, generator=g)
    return psi / psi.norm(dim=-1, keepdim=True)


def dense_pauli(p: str) -> np.ndarray:
    m = np.eye(1)
    for ch in p:  # wire 0 first: the most significant factor
        m = np.kron(m, PAULI[ch])
    return m


def random_paulis(n: int, k: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("IXYZ") for _ in range(n)) for _ in range(k)]


def test_probabilities():
    psi = random_state(3, 4, 0)
    p = probabilities(psi)
    assert p.shape == (4, 8) and p.dtype == torch.float64
    torch.testing.assert_close(p, psi.abs() ** 2)
    torch.testing.assert_close(p.sum(-1), torch.ones(4, dtype=torch.float64))
    c = Circuit(2).x(0)
    assert probabilities(qlam.statevector(c)).tolist() == [[0.0, 0.0, 1.0, 0.0]]
    assert probabilities(psi[0]).shape == (8,)  # any leading shape


@pytest.mark.parametrize("n", range(1, 6))
def test_expval_matches_dense_matrices_and_qiskit(n):
    try:  # Qiskit (the `peers` extra) where installed; the dense matrices always
        from qiskit.quantum_info import SparsePauliOp, Statevector
    except ImportError:
        SparsePauliOp = Statevector = None
    psi = random_state(n, 3, n)
    paulis = random_paulis(n, 12, n) + ["I" * n, "Z" * n, "Y" * n, "X" * n]
    got = expval(psi, paulis)
    assert got.shape == (3, len(paulis)) and got.dtype == torch.float64
    for b in range(3):
        v = psi[b].numpy()
        for k, p in enumerate(paulis):
            want = np.vdot(v, dense_pauli(p) @ v).real
            assert float(got[b, k]) == pytest.approx(want, abs=1e-12)
            if Statevector is None:
                continue
            qk = Statevector(v).reverse_qargs()  # Qiskit order: its qubit k is our wire k
            want_q = qk.expectation_value(SparsePauliOp(p[::-1])).real
            assert float(got[b, k]) == pytest.approx(want_q, abs=1e-12)
    single = expval(psi, paulis[0])
    assert single.shape == (3,)
    torch.testing.assert_close(single, got[:, 0])


def test_expval_convention_char_i_is_wire_i():
    psi = qlam.statevector(Circuit(3).x(0))  # |100>
    assert expval(psi, ["ZII", "IZI", "IIZ"]).tolist() == [[-1.0, 1.0, 1.0]]
    assert float(expval(psi, "zii")[0]) == -1.0  # lower case accepted
    plus = qlam.statevector(Circuit(2).h(1))
    assert float(expval(plus, "IX")[0]) == pytest.approx(1.0)
    assert float(expval(plus, "XI")[0]) == pytest.approx(0.0)


def test_expval_is_differentiable():
    c = random_circuit(11, n_qubits=3, n_gates=15)
    params, inputs = random_args(c, 0, batch=2)
    inputs.requires_grad_()
    params.requires_grad_()

    def f(theta, x):
        for method in ("reference", "compiled"):
            psi = qlam.statevector(c, x, theta, method=method)
            yield expval(psi, ["XYZ", "ZZI", "IYX"])

    assert torch.autograd.gradcheck(lambda t, x: torch.cat(list(f(t, x)), -1), (params, inputs))


@pytest.mark.parametrize("n", [1, 3, 6])
def test_sample_frequencies(n):
    psi = random_state(n, 2, 10 + n)
    shots = 40_000
    draws = sample(psi, shots, torch.Generator().manual_seed(n))
    assert draws.shape == (2, shots) and draws.dtype == torch.int64
    hist = counts(draws, n)
    assert hist.shape == (2, 2**n) and (hist.sum(-1) == shots).all()
    p = probabilities(psi)
    freq = hist.double() / shots
    sigma = (p * (1 - p) / shots).sqrt()
    assert ((freq - p).abs() <= 5 * sigma + 1e-9).all()
    # from probabilities directly: the same draws for the same seed
    again = sample(p, shots, torch.Generator().manual_seed(n))
    assert torch.equal(draws, again)


def test_sample_is_seeded_and_shapes():
    psi = random_state(2, 3, 0)
    a = sample(psi, 17, torch.Generator().manual_seed(5))
    b = sample(psi, 17, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert sample(psi[0], 5).shape == (5,)
    assert sample(psi.reshape(3, 1, 4), 5).shape == (3, 1, 5)
    basis = qlam.statevector(Circuit(3).x(0).x(2))  # |101> = 5
    assert sample(basis, 10).tolist() == [[5] * 10]
    assert bitstring_counts(sample(basis, 10)[0], 3) == {"101": 10}


def test_rotate_to_z_maps_eigenstates_to_zero():
    plus = qlam.statevector(Circuit(1).h(0))
    plus_i = qlam.statevector(Circuit(1).h(0).s(0))
    torch.testing.assert_close(probabilities(rotate_to_z(plus, "X")),
                               torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(probabilities(rotate_to_z(plus_i, "Y")),
                               torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    psi = random_state(4, 2, 3)
    for p in random_paulis(4, 6, 3):
        # <P> = <Z-parity on the support> after rotation
        support = "".join("I" if ch == "I" else "Z" for ch in p)
        torch.testing.assert_close(expval(rotate_to_z(psi, p), support), expval(psi, p))


def test_estimate_expval_mean():
    psi = random_state(4, 2, 21)
    paulis = random_paulis(4, 8, 21)
    shots = 50_000
    est = estimate_expval(psi, paulis, shots, torch.Generator().manual_seed(0))
    exact = expval(psi, paulis)
    assert est.shape == exact.shape == (2, 8)
    sigma = ((1 - exact**2) / shots).sqrt()
    assert ((est - exact).abs() <= 5 * sigma + 1e-12).all()


@pytest.mark.parametrize("pauli", ["XX", "ZZ", "YY", "IZ", "ZY"])
def test_estimate_expval_variance(pauli):
    """Repeated estimates scatter with variance (1 - <P>^2) / shots."""
    c = Circuit(2).ry(0, 0.9).rx(1, -0.4).cnot(0, 1).rz(1, 0.3).ry(0, 0.5).rx(1, 0.7)
    reps, shots = 4000, 40
    psi = qlam.statevector(c).expand(reps, -1)
    est = estimate_expval(psi, pauli, shots, torch.Generator().manual_seed(1))
    exact = float(expval(psi[:1], pauli)[0])
    want_var = (1 - exact**2) / shots
    assert 0.1 < 1 - exact**2 < 0.95  # neither an eigenstate nor <P> = 0
    assert float(est.mean()) == pytest.approx(exact, abs=5 * math.sqrt(want_var / reps))
    assert float(est.var()) == pytest.approx(want_var, rel=5 * math.sqrt(2 / (reps - 1)))


def test_estimate_expval_eigenstates_and_single_shot():
    psi = qlam.statevector(Circuit(2).x(0).h(1))  # |1>|+>: ZX = -1 exactly
    assert estimate_expval(psi, "ZX", 100).tolist() == [-1.0]
    assert estimate_expval(psi, "II", 3).tolist() == [1.0]
    one = estimate_expval(random_state(3, 50, 0), "XYZ", 1, torch.Generator().manual_seed(0))
    assert set(one.tolist()) <= {-1.0, 1.0}


@pytest.mark.parametrize("shots,exc,match", [
    (0, ValueError, "shots must be >= 1"),
    (-5, ValueError, "shots must be >= 1"),
    (1.5, TypeError, "shots must be an int"),
    (True, TypeError, "shots must be an int"),
    ("10", TypeError, "shots must be an int"),
])
def test_bad_shots(shots, exc, match):
    psi = random_state(2, 1, 0)
    with pytest.raises(exc, match=match):
        sample(psi, shots)
    with pytest.raises(exc, match=match):
        estimate_expval(psi, "XZ", shots)


def test_numpy_int_shots_accepted():
    assert sample(random_state(2, 1, 0), np.int64(3)).shape == (1, 3)


@pytest.mark.parametrize("pauli,exc,match", [
    ("XQ", ValueError, r"invalid character.*'Q'"),
    ("XZ ", ValueError, "invalid character"),
    ("XZZ", ValueError, "length 3 but the state has 2 qubits"),
    ("", ValueError, "length 0"),
    ([], ValueError, "empty"),
    (["XZ", "Z"], ValueError, "length 1"),
    (3, TypeError, "pauli must be a string"),
    (["XZ", 3], TypeError, "must be str"),
])
def test_bad_pauli(pauli, exc, match):
    psi = random_state(2, 1, 0)
    with pytest.raises(exc, match=match):
        expval(psi, pauli)
    with pytest.raises(exc, match=match):
        estimate_expval(psi, pauli, 10)


def test_bad_states_and_probabilities():
    with pytest.raises(ValueError, match="2\\^n"):
        expval(torch.ones(1, 3, dtype=torch.complex128), "Z")
    with pytest.raises(TypeError, match="complex"):
        expval(torch.ones(1, 2, dtype=torch.float64), "Z")
    with pytest.raises(TypeError, match="complex"):
        probabilities(torch.ones(1, 2))
    with pytest.raises(ValueError, match="sum to 1"):
        sample(torch.tensor([[0.5, 0.6]]), 3)
    with pytest.raises(ValueError, match="non-negative"):
        sample(torch.tensor([[1.5, -0.5]]), 3)
    with pytest.raises(ValueError, match="finite"):
        sample(torch.tensor([[float("nan"), 1.0]]), 3)
    with pytest.raises(ValueError, match="must lie in"):
        counts(torch.tensor([[0, 4]]), 2)


def test_counts_all_outcomes():
    samples = torch.tensor([list(range(8)) * 2])
    assert counts(samples, 3).tolist() == [[2] * 8]
    keys = bitstring_counts(samples[0], 3)
    assert list(keys) == ["".join(b) for b in itertools.product("01", repeat=3)]


def test_sample_counts_sum_to_shots_and_have_multinomial_moments():
    # the binomial chain must reproduce the multinomial's mean shots*p_i and covariance
    # shots*(delta_ij p_i - p_i p_j), including the negative correlation between outcomes
    p = torch.tensor([0.05, 0.15, 0.0, 0.3, 0.5], dtype=torch.float64)
    shots, rows = 40, 40000
    gen = torch.Generator().manual_seed(11)
    c = sample_counts(p.expand(rows, 5), shots, gen)
    assert c.shape == (rows, 5)
    assert torch.equal(c.sum(-1), torch.full((rows,), float(shots), dtype=torch.float64))
    assert torch.equal(c, c.round()) and (c[:, 2] == 0).all()
    cov = torch.cov(c.T)
    expected = shots * (torch.diag(p) - torch.outer(p, p))
    sd = (shots * 0.25 / rows) ** 0.5
    assert torch.allclose(c.mean(0), shots * p, atol=5 * sd)
    assert torch.allclose(cov, expected, atol=0.1 * shots * 0.25)
    assert cov[3, 4] < -0.8 * shots * 0.15  # expected -shots * 0.15


def test_sample_counts_deterministic_rows_and_many_shots():
    p = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.5]])
    c = sample_counts(p, 10**9, torch.Generator().manual_seed(0))
    assert c[0].tolist() == [0.0, 1e9, 0.0, 0.0]
    assert c[1, 1] == 0 and c[1, 2] == 0 and abs(c[1, 0] - 5e8) < 6 * (2.5e8) ** 0.5
    with pytest.raises(ValueError, match="shots"):
        sample_counts(p, 0)
    with pytest.raises(TypeError, match="floating point"):
        sample_counts(torch.ones(2, 4, dtype=torch.long), 3)


@pytest.mark.parametrize("row,msg", [
    ([0.0, 0.0, 0.0, 0.0], "sum to 1"),  # was: every shot on outcome 0
    ([0.2, 0.2, 0.0, 0.0], "sum to 1"),  # was: silently renormalised
    ([float("nan"), 0.5, 0.5, 0.0], "finite"),
    ([-0.1, 0.6, 0.5, 0.0], "non-negative"),
])
def test_sample_counts_refuses_rows_that_are_no_distribution(row, msg):
    with pytest.raises(ValueError, match=msg):
        sample_counts(torch.tensor([[0.25] * 4, row]), 10, torch.Generator().manual_seed(0))


def test_sample_counts_of_float32_probabilities_sum_exactly_to_many_shots():
    """float32 holds integers exactly only up to 2^24: the chain runs in float64, so the
    counts of 10^8 + 1 shots sum to exactly that, with the multinomial's mean shots * p."""
    p = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    shots = 10**8 + 1
    c = sample_counts(p, shots, torch.Generator().manual_seed(0))
    assert c.dtype == torch.float64 and torch.equal(c, c.round())
    assert int(c.sum()) == shots
    sd = (shots * 0.25) ** 0.5
    assert (c[0] - shots * p[0].double()).abs().max() < 6 * sd


def test_sampled_readout_samples_each_row_keeps_padding_and_the_exact_gradient():
    """Forward: each row's frequencies of ``shots`` draws (multiples of 1/shots summing to 1),
    all-zero (padded) rows zero; backward: the identity (straight-through)."""
    p = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.5, 0.0, 0.5, 0.0]], [[0.0] * 4, [0.0, 0.0, 0.0, 1.0]]],
                     dtype=torch.float64, requires_grad=True)
    out = sampled_readout(p, 7, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.sum(-1), torch.tensor([[1.0, 1.0], [0.0, 1.0]],
                                                          dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.equal(out * 7, (out * 7).round())
    assert out[0, 1, 1] == out[0, 1, 3] == 0 and out[1, 1, 3] == 1
    w = torch.randn(2, 2, 4, dtype=torch.float64)
    (out * w).sum().backward()
    assert torch.equal(p.grad, w)
