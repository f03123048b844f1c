"""Noise channels (qlam.sim.noise) and the noisy scan engines: trajectories against exact
density matrices, against PennyLane's default.mixed, in the QLAM layer; bad specs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import qlam
from qlam.circuit import Circuit
from qlam.export import to_pennylane
from qlam.memory import QLAM
from qlam.sim.noise import (
    CHANNELS,
    Channel,
    apply_channel_density,
    channel_trajectory_all_wires,
    circuit_density_matrix,
    circuit_trajectories,
    parse_noise,
    parse_noise_sweep,
    pure_density,
)
from qlam.sim.scan.density import density_scan
from qlam.sim.scan.noisy import noisy_scan

torch.set_num_threads(1)


@pytest.mark.parametrize("kind", CHANNELS)
def test_kraus_operators_are_complete(kind):
    for p in (0.0, 0.13, 1.0):
        k = Channel(kind, p).kraus()
        torch.testing.assert_close((k.mH @ k).sum(0), torch.eye(2, dtype=k.dtype))


def _small_circuit(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    c = Circuit(n)
    for q in range(n):
        c.ry(q, float(torch.rand((), generator=g)) * 3).rz(q, float(torch.rand((), generator=g)))
    for q in range(n - 1):
        c.rxx(q, q + 1, 0.7).cnot(q, q + 1)
    c.rx(0, 1.3)
    return c


@pytest.mark.parametrize("kind", CHANNELS)
def test_trajectories_average_to_the_density_matrix(kind):
    c = _small_circuit()
    ch = Channel(kind, 0.15)
    rho = circuit_density_matrix(c, ch)
    assert abs(torch.trace(rho).real.item() - 1) < 1e-12
    assert not torch.allclose(rho, pure_density(qlam.statevector(c)[0]), atol=1e-2)  # noisy
    psi = circuit_trajectories(c, ch, 4000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(psi.abs().square().sum(-1), torch.ones(4000, dtype=torch.float64))
    est = pure_density(psi).mean(0)
    assert (est - rho).abs().max().item() < 0.03  # ~4 sigma for 4000 trajectories
    again = circuit_trajectories(c, ch, 4000, torch.Generator().manual_seed(0))
    assert torch.equal(psi, again)  # seeded: deterministic
    # no noise: the pure state
    torch.testing.assert_close(circuit_density_matrix(c), pure_density(qlam.statevector(c)[0]))


@pytest.mark.parametrize("kind", CHANNELS)
def test_all_wire_trajectory_step_matches_kraus_channel(kind):
    """The fast per-token step (one Pauli string per row / damping jumps) has the channel's
    law: its average over trajectories is sum_k K_k rho K_k^dagger on every wire."""
    g = torch.Generator().manual_seed(2)
    psi = torch.randn(8, dtype=torch.complex128, generator=g)
    psi = psi / psi.norm()
    ch = Channel(kind, 0.3)
    rho = pure_density(psi)[None]
    for w in range(3):
        rho = apply_channel_density(rho, ch.kraus(), w, 3)
    out = channel_trajectory_all_wires(psi.expand(4000, -1), ch, 3, g)
    torch.testing.assert_close(out.abs().square().sum(-1), torch.ones(4000, dtype=torch.float64))
    assert (pure_density(out).mean(0) - rho[0]).abs().max().item() < 0.03
    one = channel_trajectory_all_wires(psi[None], Channel(kind, 0.0), 3, g)
    torch.testing.assert_close(one[0], psi)
    if kind == "bitflip":  # P = 1: X on every wire, exactly
        torch.testing.assert_close(channel_trajectory_all_wires(psi[None], Channel(kind, 1.0),
                                                                3, g)[0], psi.flip(0))


@pytest.mark.parametrize("kind", CHANNELS)
def test_density_matrix_matches_pennylane_default_mixed(kind):
    qml = pytest.importorskip("pennylane")
    c = _small_circuit(1)
    ch = Channel(kind, 0.2)
    qfunc = to_pennylane(c, noise=ch)
    node = qml.QNode(lambda: (qfunc(), qml.density_matrix(wires=range(3)))[1],
                     qml.device("default.mixed", wires=3))
    np.testing.assert_allclose(np.asarray(node()), circuit_density_matrix(c, ch).numpy(),
                               atol=1e-6)


def _layer_inputs(mem: QLAM, x):
    """The real-pair tensors QLAM.probabilities hands to the scan, from its own code path."""
    captured = {}
    from qlam.memory import layer as memory

    real_scan = memory.scan

    def spy(*args, **kw):
        captured["args"] = args
        return real_scan(*args, **kw)

    memory.scan = spy
    mode, mem.backward_mode = mem.backward_mode, "reversible"  # (the kernel takes angles)
    try:
        mem.probabilities(x)
    finally:
        memory.scan, mem.backward_mode = real_scan, mode
    return captured["args"]


@pytest.mark.parametrize("kind", CHANNELS)
def test_noisy_qlam_layer_trajectories_match_density_path(kind):
    torch.manual_seed(0)
    mem = QLAM(6, n_heads=2, n_qubits=2, depth=2, dt_min=0.3, dt_max=1.0).double()
    x = torch.randn(1, 5, 6, dtype=torch.float64)
    exact, _ = mem.probabilities(x)
    args = _layer_inputs(mem, x)
    ch = Channel(kind, 0.1)
    probs_dm, rho = density_scan(*args, noise=ch)
    zero, _ = density_scan(*args, noise=None)
    torch.testing.assert_close(zero, exact, atol=1e-12, rtol=0)
    assert (probs_dm - exact).abs().max() > 0.01  # the noise shows
    mem.noise, mem.generator = ch, torch.Generator().manual_seed(0)
    mem.eval()  # trajectories carry no gradient: a training-mode forward is refused
    reps = 3000
    probs, final = mem.probabilities(x.expand(reps, -1, -1))
    assert not probs.requires_grad
    assert (probs.mean(0) - probs_dm[0]).abs().max() < 0.03
    est_rho = pure_density(final).mean(0)
    assert (est_rho - rho[0]).abs().max() < 0.03
    mem.generator = torch.Generator().manual_seed(0)
    again, _ = mem.probabilities(x.expand(reps, -1, -1))
    assert torch.equal(probs, again)
    # strength 0: the noisy path is the noiseless recurrence
    p0, _ = noisy_scan(*args, noise=Channel(kind, 0.0))
    torch.testing.assert_close(p0, exact, atol=1e-12, rtol=0)


def test_zero_strength_noise_reproduces_the_noiseless_outputs():
    """The layer's trajectory path with a channel that does nothing gives its exact path's
    outputs (the test this replaces could not fail)."""
    torch.manual_seed(0)
    mem = QLAM(4, n_heads=2, n_qubits=2)
    x = torch.randn(2, 3, 4)
    with torch.no_grad():
        want, want_state = mem(x)
        mem.noise = Channel("depolarizing", 0.0)
        got, got_state = mem(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_state, want_state, atol=1e-5, rtol=0)


# ---- evaluation and the commands ---------------------------------------------------------------


@pytest.mark.parametrize("spec,msg", [
    ("thermal:0.1", "unknown noise kind 'thermal'"),
    ("depolarizing:1.5", r"must lie in \[0, 1\]"),
    ("bitflip:-0.1", r"must lie in \[0, 1\]"),
    ("amplitude_damping:nan", r"must lie in \[0, 1\]"),
    ("depolarizing", "needs a strength"),
    ("depolarizing:abc", "must be a number"),
])
def test_bad_noise_specs(spec, msg):
    with pytest.raises(ValueError, match=msg):
        parse_noise(spec)
    with pytest.raises(ValueError, match=msg.replace("needs a strength", "needs strengths")):
        parse_noise_sweep(spec)


def test_bad_channels_and_trajectory_counts():
    with pytest.raises(ValueError, match="unknown noise kind"):
        Channel("dephasing", 0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Channel("bitflip", 2.0)
    with pytest.raises(ValueError, match="trajectories must be an int >= 1"):
        circuit_trajectories(_small_circuit(), "bitflip:0.1", 0)
    unbound = Circuit(1)
    unbound.rx(0, unbound.new_param())
    with pytest.raises(ValueError, match="bind it first"):
        circuit_density_matrix(unbound)
    assert parse_noise("none") is None and parse_noise("Depolarising:0.5").kind == "depolarizing"


@pytest.mark.parametrize("p", [np.float32(0.25), np.float64(0.25), np.int64(0), 0.25, 1])
def test_channel_takes_any_real_number_numpy_scalars_included(p):
    c = Channel("bitflip", p)
    assert type(c.p) is float and c.p == float(p)
    torch.testing.assert_close(c.kraus()[1], math.sqrt(float(p)) * torch.tensor(
        [[0, 1], [1, 0]], dtype=torch.complex128))
    for bad in (True, "0.1", None, 0.1j):
        with pytest.raises(TypeError, match="real number"):
            Channel("bitflip", bad)


def test_noiseless_density_matrix_is_a_plain_tensor_equal_to_the_pure_state():
    """Without noise, circuit_density_matrix is |psi><psi| of the state vector, and a plain
    tensor (no lazy conjugate bit: .numpy() works)."""
    c = _small_circuit()
    rho = circuit_density_matrix(c)
    psi = qlam.statevector(c)[0].numpy()
    np.testing.assert_allclose(rho.numpy(), np.outer(psi, psi.conj()), atol=1e-12)
