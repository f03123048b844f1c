"""Right-padded batches (``lengths``): the QLAM layers' (unitary and mixed) states and every
classifier's pooled output equal those of each example run alone, unpadded."""

from __future__ import annotations

import pytest
import torch

from qlam import QLAM
from qlam.memory.mixed import MixedQLAM
from qlam.models import build_model

LENGTHS = [9, 4, 6, 9, 1]


def _padded(n_features: int, dtype=torch.float64):
    torch.manual_seed(0)
    x = torch.randn(len(LENGTHS), max(LENGTHS), n_features, dtype=dtype)
    for b, n in enumerate(LENGTHS):
        x[b, n:] = 100.0  # padding far from the data: any leak shows
    return x, torch.tensor(LENGTHS)


def _layer(memory: str, d_model: int, **options):
    cls = QLAM if memory == "unitary" else MixedQLAM
    return cls(d_model, n_heads=2, n_qubits=3 if memory == "unitary" else 2, dt_min=0.1,
               dt_max=1.0, **options).double()


LAYERS = [("unitary", {"backward": b}) for b in ("auto", "reversible", "autograd")] + [
    ("mixed", {}), ("mixed", {"n_bases": 2, "selective": False})]


@pytest.mark.parametrize(("memory", "options"), LAYERS)
def test_qlam_layer_state_and_outputs_ignore_padding(memory, options):
    torch.manual_seed(0)
    layer = _layer(memory, 6, **options)
    x, lengths = _padded(6)
    y, state = layer(x, lengths=lengths)
    for b, n in enumerate(LENGTHS):
        y_b, s_b = layer(x[b:b + 1, :n])
        torch.testing.assert_close(state[b:b + 1], s_b, atol=1e-12, rtol=0)
        torch.testing.assert_close(y[b:b + 1, :n], y_b, atol=1e-12, rtol=0)
        assert torch.equal(y[b, n:], torch.zeros_like(y[b, n:]))


@pytest.mark.parametrize("memory", ["unitary", "mixed"])
def test_qlam_layer_padding_gradients_match_unpadded(memory):
    torch.manual_seed(0)
    layer = _layer(memory, 4)
    x, lengths = _padded(4)
    y, state = layer(x, lengths=lengths)
    (y.sum() + state.abs().square().flatten(2)[..., :2].sum()).backward()
    padded = {k: p.grad.clone() for k, p in layer.named_parameters()}
    layer.zero_grad()
    for b, n in enumerate(LENGTHS):
        y_b, s_b = layer(x[b:b + 1, :n])
        (y_b.sum() + s_b.abs().square().flatten(2)[..., :2].sum()).backward()
    for k, p in layer.named_parameters():
        torch.testing.assert_close(padded[k], p.grad, atol=1e-10, rtol=1e-8, msg=k)


@pytest.mark.parametrize("memory", ["unitary", "mixed"])
def test_lengths_are_validated(memory):
    layer = _layer(memory, 4).float()
    x = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match=r"lengths must lie in 0\.\.5"):  # 0: streamed chunks
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
    "mixed-qlam": dict(d_model=8, n_layers=2, n_heads=2, n_qubits=2, dt_min=0.1, dt_max=1.0,
                       memory="mixed"),
    "qlam-conv": dict(d_model=8, n_layers=2, n_heads=2, n_qubits=2, dt_min=0.1, dt_max=1.0,
                      conv=3),
}
MODEL_NAMES = {"causal-transformer": "transformer", "mixed-qlam": "qlam", "qlam-conv": "qlam"}


@pytest.mark.parametrize("pool", ["mean", "last"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_classifiers_pool_each_example_as_if_unpadded(name, pool):
    torch.manual_seed(1)
    model = build_model(MODEL_NAMES.get(name, name), 3, 4, pool=pool, **MODELS[name]).double().eval()
    x, lengths = _padded(3)
    with torch.no_grad():
        logits = model(x, lengths=lengths)
        alone = torch.cat([model(x[b:b + 1, :n]) for b, n in enumerate(LENGTHS)])
    torch.testing.assert_close(logits, alone, atol=1e-9, rtol=1e-9)
