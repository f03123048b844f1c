"""The QLAM classifier on each device against the PyTorch path on the CPU, in float64: the
loss and every parameter's gradient of a right-padded batch longer than the renormalisation
interval (64 tokens), d_model inside the Triton engine's state widths (16..64), with the
device's compiled engine running the unitary memory (the C++ kernel on the CPU, Triton on
CUDA). The CUDA cases carry the ``cuda`` marker (skipped without a GPU;
scripts/cuda_check.py runs them); this module imports nothing beyond qlam and torch."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from qlam.memory import QLAM
from qlam.memory.mixed import MixedQLAM
from qlam.models.qlam import QLAMClassifier
from qlam.models.qlstm import QLSTMCell
from qlam.sim.scan import cpp

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def _devices(tree) -> set:
    if isinstance(tree, torch.Tensor):
        return {tree.device.type}
    if isinstance(tree, (tuple, list)):
        return set().union(*map(_devices, tree))
    if isinstance(tree, dict):
        return _devices(list(tree.values()))
    return set()


@pytest.mark.parametrize("make", [
    lambda: QLAM(8, n_heads=2, n_qubits=3), lambda: QLAM(8, n_heads=2, n_qubits=3, depth=2),
    lambda: MixedQLAM(8, n_heads=2, n_qubits=3), lambda: QLSTMCell(8, 3, 2)],
    ids=["qlam", "qlam-depth2", "mixed", "qlstm"])
def test_what_a_layer_builds_from_its_parameters_lives_on_their_device(make):
    """The unitaries, initial states and maps built from the parameters follow the module to
    its device. PyTorch's "meta" device (shapes, no data) stands in for CUDA here: anything
    built on the CPU instead shows up as a CPU tensor (the dense unitaries were, so every
    quantum model failed on CUDA with a device mismatch)."""
    module = make().to("meta")
    built = (module.unitaries() if isinstance(module, QLSTMCell)
             else module._build(torch.float32))
    assert _devices(built) == {"meta"}
    if not isinstance(module, QLSTMCell):
        assert module.initial_state(2).device.type == "meta"


def _spy(monkeypatch, device: str) -> list:
    """Calls of the device's compiled engine by the layer."""
    if device == "cpu":
        module, name = cpp, "scan_kernel"  # the layer calls it directly (angles + maps)
    else:
        from qlam.sim.scan import triton_engine

        module, name = triton_engine, "run"  # through the dispatcher
    calls, real = [], getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


@pytest.mark.parametrize("memory", ["unitary", "mixed"])
@pytest.mark.parametrize("device", DEVICES)
def test_classifier_on_the_device_matches_the_cpu_pytorch_path(device, memory, monkeypatch):
    if device == "cpu" and memory == "unitary" and not cpp.available():
        pytest.skip("the C++ kernel does not build here")
    torch.manual_seed(0)
    ref = QLAMClassifier(n_features=3, n_classes=4, d_model=32, n_layers=2, n_heads=2,
                         n_qubits=4, memory=memory).double()
    model = copy.deepcopy(ref).to(device)
    calls = None
    if memory == "unitary":
        for m in ref.memories():
            m.backward_mode = "reversible"  # the PyTorch path
        calls = _spy(monkeypatch, device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 70, 3, generator=g, dtype=torch.float64)
    lengths, y = torch.tensor([70, 33, 70, 1, 64]), torch.tensor([0, 1, 2, 3, 1])
    losses = []
    for net, dev in ((ref, "cpu"), (model, device)):
        loss = F.cross_entropy(net(x.to(dev), lengths=lengths.to(dev)), y.to(dev))
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], abs=1e-10)
    for (name, p), q in zip(ref.named_parameters(), model.parameters()):
        assert q.grad is not None and q.grad.device.type == device, name
        torch.testing.assert_close(q.grad.cpu(), p.grad, atol=1e-9, rtol=1e-7, msg=name)
    if calls is not None:
        assert calls  # the compiled engine ran the memory
