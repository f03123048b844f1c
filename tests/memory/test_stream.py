"""Streaming with ``step()`` without gradients: the fused one-token kernel (``step`` of
:mod:`qlam.sim.scan.cpp`) against the full-sequence forward, where it steps aside, its checks."""

from __future__ import annotations

import pytest
import torch

from qlam import QLAM
from qlam.sim.scan import cpp

pytestmark = pytest.mark.skipif(not cpp.available(), reason="compiled kernel unavailable")


def _stream(layer, x, state=None):
    ys = []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t], state)
        ys.append(y_t)
    return torch.stack(ys, 1), state


# float32 rounding accumulates over the tokens (the unfused one-token forward drifts as much),
# and the two round the phases differently (the forward's kernel maps angles to phases, the
# step folds the map into its input matrix); 150 tokens pass the forward's renormalisation
# (every 64 tokens; the step renormalises always)
@pytest.mark.parametrize(("dtype", "tokens", "tol"), [
    (torch.float32, 30, 2e-6), (torch.float32, 150, 5e-6), (torch.float64, 150, 1e-12)])
@pytest.mark.parametrize(("depth", "query_basis"), [(1, True), (2, False), (3, True)])
def test_fused_step_equals_forward(dtype, tokens, tol, depth, query_basis):
    torch.manual_seed(0)
    layer = QLAM(8, n_heads=3, n_qubits=3, depth=depth, query_basis=query_basis, dt_min=0.1,
                 dt_max=1.0).to(dtype)
    x = torch.randn(4, tokens, 8, dtype=dtype)
    with torch.no_grad():
        y, final = layer(x)
        ys, state = _stream(layer, x)
    assert "stream" in layer._cache[1]  # the fused path ran
    torch.testing.assert_close(ys, y, atol=tol, rtol=tol)
    torch.testing.assert_close(state, final, atol=tol, rtol=0)


def test_fused_step_continues_a_carried_state_in_inference_mode():
    torch.manual_seed(0)
    layer = QLAM(6, n_heads=2, n_qubits=2).double()
    x = torch.randn(1, 9, 6, dtype=torch.float64)
    with torch.inference_mode():
        y, final = layer(x)
        _, s = layer(x[:, :4])
        ys, state = _stream(layer, x[:, 4:], s.clone())  # a copy: checked, not trusted
    torch.testing.assert_close(ys, y[:, 4:], atol=1e-12, rtol=0)
    torch.testing.assert_close(state, final, atol=1e-12, rtol=0)


def test_fused_step_checks_input_and_state():
    layer = QLAM(6, n_heads=2, n_qubits=2)
    x = torch.randn(2, 6)
    with torch.no_grad():
        with pytest.raises(ValueError, match="NaN or inf"):
            layer.step(torch.full((2, 6), float("nan")))
        y, state = layer.step(x)
        with pytest.raises(ValueError, match="not normalised"):
            layer.step(x, 2 * state)
        with pytest.raises(ValueError, match="shape"):
            layer.step(x, state[:1])
        # a state of another precision is converted, as forward does
        y64, _ = layer.step(x, state.to(torch.complex128))
        y32, _ = layer.step(x, state)
    torch.testing.assert_close(y64, y32)


@pytest.mark.parametrize("memory", ["unitary", "mixed"])
def test_a_returned_state_edited_in_place_is_checked_again(memory):
    """The state a layer returned is trusted unchecked only while unchanged: zeroing a row
    in place (nn.LSTM's episode reset) or passing it with another batch is refused, not run
    (the in-place edit had run silently, the other batch failed inside the kernel)."""
    from qlam.memory.mixed import MixedQLAM

    torch.manual_seed(0)
    layer = QLAM(6, 2, 2) if memory == "unitary" else MixedQLAM(6, 2, 2)
    x = torch.randn(3, 6)
    bad = "not normalised" if memory == "unitary" else "trace"
    with torch.no_grad():
        _, s = layer.step(x)
        _, s = layer.step(x, s)  # the returned state, unchanged: trusted
        s[1] = 0
        with pytest.raises(ValueError, match=bad):
            layer.step(x, s)
        _, s = layer(x[:, None])
        with pytest.raises(ValueError, match="shape"):
            layer(x[:2, None], s)
        with pytest.raises(ValueError, match="shape"):
            layer.step(x[:2], s)


def test_one_token_forward_without_gradients_takes_the_fused_path():
    torch.manual_seed(0)
    layer = QLAM(6, n_heads=2, n_qubits=2)
    x = torch.randn(3, 1, 6)
    y_grad, s_grad = layer(x)  # recording gradients: the general path
    assert layer._cache is None or "stream" not in layer._cache[1]
    with torch.no_grad():
        y, s = layer(x)
    assert "stream" in layer._cache[1]  # (B, 1, d_model) as the docstring of _streams says
    torch.testing.assert_close(y, y_grad.detach())
    torch.testing.assert_close(s, s_grad.detach())


def test_step_steps_aside_for_hooks_shots_and_a_replaced_readout():
    torch.manual_seed(0)
    layer = QLAM(6, n_heads=2, n_qubits=2)
    x = torch.randn(3, 6)
    calls = []
    handle = layer.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    with torch.no_grad():
        layer.step(x)
    handle.remove()
    assert calls == [(3, 1, 6)]
    # global hooks too, either kind alone
    for register in (torch.nn.modules.module.register_module_forward_hook,
                     torch.nn.modules.module.register_module_forward_pre_hook):
        seen: list[str] = []
        handle = register(lambda m, *args, seen=seen: seen.append(type(m).__name__))
        try:
            with torch.no_grad():
                layer.step(x)
        finally:
            handle.remove()
        assert "QLAM" in seen, register.__name__
    # shots: the sampled readout of forward, not the fused exact one
    layer.shots = 20
    with torch.no_grad():
        layer.generator = torch.Generator().manual_seed(3)
        y_step, _ = layer.step(x)
        layer.generator = torch.Generator().manual_seed(3)
        y_fwd, _ = layer(x[:, None])
    torch.testing.assert_close(y_step, y_fwd[:, 0])
    layer.shots = None
    # a readout swapped in on the instance (as qlam.hardware does) is used
    layer.probabilities = lambda x, state=None: (
        torch.zeros(x.shape[0], 1, 2, 4), layer.initial_state(x.shape[0]))
    with torch.no_grad():
        y, _ = layer.step(x)
    del layer.probabilities
    torch.testing.assert_close(y, layer.out_proj.bias.expand(3, -1))
