"""The QLAM layer as a researcher uses it in their own model: shots and noise in training,
options checked at construction, autocast, streaming with step() (both memories)."""

from __future__ import annotations

import pytest
import torch

from qlam import QLAM
from qlam.memory.mixed import MixedQLAM

READOUT = ("q_weight.", "out_proj.")  # what the sampled values feed; the rest feeds the probabilities


def _grads(layer, x, w):
    """Every parameter's gradient of the loss sum(w * y), linear in the readout."""
    layer.zero_grad()
    (layer(x)[0] * w).sum().backward()
    return {k: p.grad for k, p in layer.named_parameters()}


@pytest.mark.parametrize("cls,opts", [(QLAM, {}), (MixedQLAM, {"n_bases": 2})])
def test_shots_train_every_parameter_with_the_exact_expectation_gradient(cls, opts):
    """The straight-through estimator: with shots, in training, every parameter learns, and for
    a loss linear in the readout the gradient of each parameter before the readout (the
    quantum memory's, the input maps') is the exact one: the samples enter only the forward."""
    torch.manual_seed(0)
    layer = cls(6, n_heads=2, n_qubits=2, dt_min=0.1, dt_max=1.0, **opts).double().train()
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    w = torch.randn(3, 5, 6, dtype=torch.float64)
    exact = _grads(layer, x, w)
    layer.shots, layer.generator = 50, torch.Generator().manual_seed(0)
    sampled = _grads(layer, x, w)
    for k, g in sampled.items():
        assert g is not None and g.abs().sum() > 0, k
        if not k.startswith(READOUT):
            torch.testing.assert_close(g, exact[k], atol=1e-12, rtol=1e-10, msg=k)
    assert not torch.allclose(sampled["out_proj.weight"], exact["out_proj.weight"])  # sampled


def test_noise_with_shots_is_refused_saying_why():
    """Shots under the trajectory noise would all come from one trajectory per example
    (counts far wider than Multinomial(shots, diag rho)): refused however the two are set."""
    why = "each shot is an independent noise trajectory.*one or the other"
    with pytest.raises(ValueError, match=why):
        QLAM(4, shots=10, noise="bitflip:0.1")
    layer = QLAM(4, n_heads=1, n_qubits=2).eval()
    with pytest.raises(ValueError, match=why):
        layer.set_readout(10, "bitflip:0.1")
    assert (layer.shots, layer.noise) == (None, None)  # left as it was
    layer.set_readout(10, "none")
    layer.set_readout(None, "bitflip:0.1")
    layer.shots = 10  # attribute by attribute: refused at the forward
    with pytest.raises(ValueError, match=why):
        layer(torch.randn(2, 3, 4))
    layer.noise = None
    assert layer(torch.randn(2, 3, 4))[0].shape == (2, 3, 4)


def test_shots_forward_uses_samples():
    layer = QLAM(4, n_heads=1, n_qubits=2).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    layer.shots, layer.generator = 10, torch.Generator().manual_seed(1)
    probs, _ = layer.probabilities(x)
    y, _ = layer(x)
    layer.shots = None
    assert not torch.allclose(y, layer(x)[0])  # 10 shots differ from the expectation


def test_noise_in_a_training_forward_is_refused_and_evaluation_runs():
    layer = QLAM(4, n_heads=1, n_qubits=2)
    layer.noise = "depolarizing:0.01"
    x = torch.randn(2, 3, 4)
    with pytest.raises(RuntimeError, match="no gradient"):
        layer(x)
    with torch.no_grad():
        y, _ = layer(x)
    layer.eval()
    y, _ = layer(x)
    assert y.shape == (2, 3, 4)


def test_options_are_checked_at_construction():
    with pytest.raises(ValueError, match="backward must be one of"):
        QLAM(4, backward="bogus")
    with pytest.raises(ValueError, match="shots must be an int"):
        QLAM(4, shots=0)
    with pytest.raises(ValueError, match="unknown noise kind"):
        QLAM(4, noise="bogus:0.1")
    layer = QLAM(4, n_heads=1, n_qubits=2)
    with pytest.raises(ValueError, match="shots must be an int"):
        layer.shots = 2.5


def test_autocast_bfloat16_runs_and_matches_float32():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8))
    layer = QLAM(8, n_heads=2, n_qubits=2, dt_min=0.1, dt_max=1.0)
    x = torch.randn(2, 6, 5)
    ref, ref_state = layer(model(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = layer(model(x))
    assert y.dtype == torch.bfloat16 and state.dtype == torch.complex64
    torch.testing.assert_close(y.float(), ref, atol=0.1, rtol=0.05)
    torch.testing.assert_close(state, ref_state, atol=0.05, rtol=0)
    y.float().sum().backward()
    assert layer.theta.grad is not None and torch.isfinite(layer.theta.grad).all()


@pytest.mark.parametrize("cls", [QLAM, MixedQLAM])
def test_step_streams_like_forward_and_the_cache_follows_optimizer_steps(cls):
    torch.manual_seed(0)
    layer = cls(6, n_heads=2, n_qubits=2, dt_min=0.1, dt_max=1.0).double()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(3, 7, 6, dtype=torch.float64)
    for _ in range(2):
        with torch.no_grad():
            y, final = layer(x)
            state, ys = None, []
            for t in range(x.shape[1]):
                y_t, state = layer.step(x[:, t], state)
                ys.append(y_t)
        torch.testing.assert_close(torch.stack(ys, 1), y, atol=1e-12, rtol=0)
        torch.testing.assert_close(state, final, atol=1e-12, rtol=0)
        assert layer._cache is not None  # built once, reused by every step
        # a training step changes the parameters in place: the cache must not survive it
        opt.zero_grad()
        layer(x)[0].square().sum().backward()
        opt.step()
        with torch.no_grad():
            layer(x)  # the cache is built again, then changed in place outside training:
            layer.log_dt.add_(0.05)
            fresh = cls(6, n_heads=2, n_qubits=2).double()
            fresh.load_state_dict(layer.state_dict())
            torch.testing.assert_close(layer(x)[0], fresh(x)[0])


@pytest.mark.parametrize("cls,opts", [(QLAM, {}), (MixedQLAM, {})])
def test_clear_cache_after_an_edit_through_data(cls, opts):
    """An edit through .data bumps no version counter, so the constants reused without
    gradients stay those of the old parameters until clear_cache (documented there)."""
    torch.manual_seed(0)
    layer = cls(8, n_heads=2, n_qubits=2, **opts).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    with torch.no_grad():
        layer(x)  # builds the cache
        layer.log_dt.data.add_(1.0)
        layer.clear_cache()
        y = layer(x)[0]
    assert torch.allclose(y, layer(x)[0].detach(), atol=1e-12)  # the gradient path: no cache


@pytest.mark.parametrize("cls", [QLAM, MixedQLAM])
def test_a_half_precision_layer_and_bad_steps_are_named(cls):
    """layer.half() had failed inside the scan ('dtype must be float32/float64'), MixedQLAM
    took shots=0 until its forward and a list in step failed with an AttributeError."""
    for dtype in (torch.float16, torch.bfloat16):
        layer = cls(8, n_heads=2, n_qubits=2).to(dtype)
        with pytest.raises(TypeError, match=rf"the memory's parameters are {dtype}; they must be "
                                            r"float32 or float64: .*torch.autocast"):
            layer(torch.randn(1, 3, 8, dtype=dtype))
    with pytest.raises(ValueError, match="shots must be an int >= 1 or None, got 0"):
        cls(8, n_heads=2, n_qubits=2, shots=0)
    with pytest.raises(ValueError, match=r"step expects x_t of shape \(batch, 8\), got list"):
        cls(8, n_heads=2, n_qubits=2).step([1.0])


@pytest.mark.parametrize("cls", [QLAM, MixedQLAM])
def test_a_padded_batch_streams_in_chunks(cls):
    """Chunk 2 gives length 0 to the example that ended in chunk 1 (refused before: 'lengths
    must lie in 1..2'): the chunks' outputs and final state are the whole sequence's."""
    torch.manual_seed(0)
    layer = cls(8, n_heads=2, n_qubits=2).double()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    lengths = torch.tensor([5, 2, 4])
    y, final = layer(x, lengths=lengths)
    y1, s = layer(x[:, :3], lengths=lengths.clamp(max=3))
    y2, s = layer(x[:, 3:], s, lengths=(lengths - 3).clamp(min=0))
    assert torch.allclose(torch.cat([y1, y2], 1), y, atol=1e-12)
    assert torch.allclose(s, final, atol=1e-12)
    with pytest.raises(ValueError, match=r"lengths must lie in 0..5"):
        layer(x, lengths=torch.tensor([5, -1, 4]))
