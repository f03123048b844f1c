"""Right-padded batches (``lengths``): the QLAM layer's state and every classifier's pooled
output equal those of each example run alone, unpadded."""

from __future__ import annotations

import pytest
import torch

from qlam import QLAM
from qlam.models import build_model

LENGTHS = [9, 4, 6, 9, 1]


def _padded(n_features: int, dtype=torch.float64):
    torch.manual_seed(0)
    x = torch.randn(len(LENGTHS), max(LENGTHS), n_features, dtype=dtype)
    for b, n in enumerate(LENGTHS):
        x[b, n:] = 100.0  # padding far from the data: any leak shows
    return x, torch.tensor(LENGTHS)


@pytest.mark.parametrize("backward", ["auto", "reversible", "autograd"])
def test_qlam_layer_state_and_outputs_ignore_padding(backward):
    layer = QLAM(6, n_heads=2, n_qubits=3, dt_min=0.1, dt_max=1.0, backward=backward).double()
    x, lengths = _padded(6)
    y, state = layer(x, lengths=lengths)
    for b, n in enumerate(LENGTHS):
        y_b, s_b = layer(x[b:b + 1, :n])
        torch.testing.assert_close(state[b:b + 1], s_b, atol=1e-12, rtol=0)
        torch.testing.assert_close(y[b:b + 1, :n], y_b, atol=1e-12, rtol=0)
        assert torch.equal(y[b, n:], torch.zeros_like(y[b, n:]))


def test_qlam_layer_padding_gradients_match_unpadded():
    layer = QLAM(4, n_heads=2, n_qubits=2, dt_min=0.1, dt_max=1.0).double()
    x, lengths = _padded(4)
    y, state = layer(x, lengths=lengths)
    (y.sum() + state.abs().square()[..., 0].sum()).backward()
    padded = {k: p.grad.clone() for k, p in layer.named_parameters()}
    layer.zero_grad()
    for b, n in enumerate(LENGTHS):
        y_b, s_b = layer(x[b:b + 1, :n])
        (y_b.sum() + s_b.abs().square()[..., 0].sum()).backward()
    for k, p in layer.named_parameters():
        torch.testing.assert_close(padded[k], p.grad, atol=1e-10, rtol=1e-8, msg=k)


def test_lengths_are_validated():
    layer = QLAM(4, n_heads=1, n_qubits=2)
    x = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match=r"lengths must lie in 1\.\.5"):
        layer(x, lengths=torch.tensor([5, 6]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        layer(x, lengths=torch.tensor([5]))
    with pytest.raises(TypeError, match="integers"):
        layer(x, lengths=torch.tensor([5.0, 2.0]))


MODELS = {
    "qlam": dict(d_model=8, n_layers=2, n_heads=2, n_qubits=2, dt_min=0.1, dt_max=1.0),
    "rnn": dict(d_model=8), "lstm": dict(d_model=8), "gru": dict(d_model=8),
    "transformer": dict(d_model=8, n_heads=2), "ssm": dict(d_model=8, d_state=4),
    "causal-transformer": dict(d_model=8, n_heads=2, causal=True),
    "qlstm": dict(d_model=4, n_qubits=2, depth=1),
}


@pytest.mark.parametrize("pool", ["mean", "last"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_classifiers_pool_each_example_as_if_unpadded(name, pool):
    torch.manual_seed(1)
    model = build_model(name.replace("causal-", ""), 3, 4, pool=pool, **MODELS[name]).double().eval()
    x, lengths = _padded(3)
    with torch.no_grad():
        logits = model(x, lengths=lengths)
        alone = torch.cat([model(x[b:b + 1, :n]) for b, n in enumerate(LENGTHS)])
    torch.testing.assert_close(logits, alone, atol=1e-9, rtol=1e-9)
