"""Device-aware export and noisy evaluation on Qiskit's fake IBM backends (the `hardware`
extra), offline: the transpiled circuit against the exported one, the noiseless backend
path against the model, readout errors against a hand computation, and `qlam robustness
--backend` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_export import QLAM_OPTS, SEQ, _save, _trained, synthetic_task

import qlam.train as train_mod
from qlam.cli import main
from qlam.export import export_head, to_qiskit

pytest.importorskip("qiskit_aer")
pytest.importorskip("qiskit_ibm_runtime")
from qiskit import QuantumCircuit, qasm2  # noqa: E402
from qiskit.quantum_info import Operator, Statevector  # noqa: E402

from qlam.hardware import NoisyDevice, device_cost, device_report, get_backend  # noqa: E402

BACKEND = "fake_manila"  # 5 qubits: operators of the whole device stay small


@pytest.fixture
def ckpt(use_task, tmp_path):
    use_task(synthetic_task)
    model, cfg = _trained(**QLAM_OPTS)
    return _save(model, cfg, tmp_path / "model.pt")


def test_backend_names():
    assert get_backend("manila") is get_backend("FakeManila") is get_backend("fake_manila")
    with pytest.raises(ValueError, match="unknown backend 'nowhere'.*torino"):
        get_backend("nowhere")


def test_export_backend_circuit_is_the_exported_one(ckpt, tmp_path):
    """The transpiled QASM file, read back, gives the model's readout probabilities on the
    physical qubits it measures; the in-memory transpiled circuit's operator (layouts
    undone) equals the exported circuit's on every input with the two spare qubits in |0>."""
    out = tmp_path / "circuit.qasm"
    assert main(["export", "--checkpoint", str(ckpt), "--index", "3", "--layer", "1",
                 "--tokens", "3", "--backend", "manila", "--out", str(out)]) == 0
    rec = json.loads(out.with_suffix(".json").read_text())
    hw = rec["hardware"]
    assert hw["backend"] == BACKEND and hw["backend_qubits"] == 5
    assert hw["depth"] > 10 and hw["two_qubit_gates"] >= 2 * 3 * 3  # ring of 3: 3 RZZ/RXX/RYY
    assert 0 < hw["estimated_success_probability"] < 1
    wires = hw["wire_qubits"]
    assert len(set(wires)) == 3 and set(wires) <= set(range(5))

    tqc = qasm2.loads((tmp_path / hw["qasm"]).read_text(),
                      custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    tqc.remove_final_measurements()
    probs = Statevector(tqc).probabilities(qargs=list(reversed(wires)))  # wire 0 the top bit
    np.testing.assert_allclose(probs, rec["readout"]["probabilities"], atol=1e-8)

    model, _ = train_mod.load_model(ckpt)
    ex = export_head(model, synthetic_task().test.x[3], layer=1, head=0, tokens=3)
    _, tqc = device_report(ex, get_backend(BACKEND))
    tqc.remove_final_measurements()
    full = Operator.from_circuit(tqc).data[:, :8]  # spare (virtual 3, 4: the top bits) in |0>
    want = np.kron(np.eye(4), Operator(to_qiskit(ex.measured)).data)[:, :8]
    phase = np.vdot(want[:, 0], full[:, 0])
    assert abs(abs(phase) - 1) < 1e-9
    np.testing.assert_allclose(full, phase * want, atol=1e-9)


def test_esp_is_the_product_of_reported_errors():
    backend = get_backend(BACKEND)
    target = backend.target
    qc = QuantumCircuit(5, 1)
    qc.sx(0)
    qc.cx(0, 1)
    qc.cx(0, 1)
    qc.measure(1, 0)
    want = ((1 - target["sx"][(0,)].error) * (1 - target["cx"][(0, 1)].error) ** 2
            * (1 - target["measure"][(1,)].error))
    cost = device_cost(qc, backend)
    assert cost["estimated_success_probability"] == pytest.approx(want, rel=1e-12)
    assert (cost["two_qubit_gates"], cost["depth"], cost["physical_qubits"]) == (2, 4, [0, 1])


def test_noiseless_backend_path_reproduces_the_model():
    """The transpiled token templates, chained over the sequence in Aer without noise, give
    the layer's own readout probabilities for every token, head and example."""
    model, _ = _trained(**QLAM_OPTS)
    mem = model.blocks[1].memory
    h = torch.randn(2, SEQ, mem.d_model, generator=torch.Generator().manual_seed(3))
    exact, _ = mem.probabilities(h)
    device = NoisyDevice(get_backend(BACKEND), noise=False)
    got, _ = device.probabilities(mem, h)
    torch.testing.assert_close(got, exact, atol=2e-6, rtol=0)
    with device.attached([mem]), pytest.raises(ValueError, match="unpadded"):
        mem(h, lengths=torch.tensor([SEQ, SEQ - 1]))  # was a TypeError about the keyword


def test_readout_errors_flip_each_wire():
    device = NoisyDevice(get_backend(BACKEND))
    e = device.readout_error
    probs = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).view(1, 1, 4)  # |00>
    got = device.measurement_flips(probs, [(2, 4)])[0, 0]  # wire 0 on qubit 2, wire 1 on 4
    e0, e1 = e[2], e[4]
    want = [(1 - e0) * (1 - e1), (1 - e0) * e1, e0 * (1 - e1), e0 * e1]  # wire 0 the top bit
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)


def test_robustness_on_a_fake_backend(ckpt, tmp_path, capsys):
    out = tmp_path / "rob"
    args = ["robustness", "--checkpoint", str(ckpt), "--shots", "", "--noise", "--limit", "2",
            "--out", str(out), "--no-plot"]
    assert main(args + ["--backend", "manila"]) == 0
    rows = json.loads((out / "robustness.json").read_text())["rows"]
    assert [r["kind"] for r in rows] == ["exact", "backend"]
    noisy = rows[1]
    assert noisy["backend"] == BACKEND and noisy["n_test"] == 2
    assert len(noisy["tvd"]) == len(noisy["tvd_uniform"]) == SEQ
    assert all(0 < d <= 1 for d in noisy["tvd"])
    assert "fake_manila noise model" in (out / "robustness.md").read_text()
    capsys.readouterr()
    assert main(["robustness", "--checkpoint", str(ckpt), "--out", str(tmp_path / "r"),
                 "--backend", "manila"]) == 2
    assert "give --limit" in capsys.readouterr().err


def test_backend_is_refused_for_a_mixed_memory_head(use_task, tmp_path, capsys):
    use_task(synthetic_task)
    model, cfg = _trained(memory="mixed", n_heads=2, n_qubits=2)
    ckpt = _save(model, cfg, tmp_path / "mixed.pt")
    out = tmp_path / "m.qasm"
    assert main(["export", "--checkpoint", str(ckpt), "--index", "0", "--backend", BACKEND,
                 "--out", str(out)]) == 2
    assert "--noise and --backend are for memory='unitary'" in capsys.readouterr().err
    assert not out.exists()
