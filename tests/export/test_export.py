"""Export of trained QLAM heads (vs qlam, Qiskit Aer and PennyLane), noisy/shot evaluation,
`qlam export` / `qlam robustness` and their errors. Tiny models on a synthetic task: no
dataset download. The noise channels themselves: tests/sim/test_noise.py."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from plots_check import check_plot

import qlam
import qlam.train as train_mod
from qlam.circuit import Circuit
from qlam.cli import main
from qlam.data.tasks import Split, Task
from qlam.export import export_head, qiskit_to_qlam_order, to_pennylane, to_qiskit
from qlam.memory import QLAM
from qlam.models import build_model
from qlam.robustness import robustness
from qlam.sim.noise import (
    Channel,
    circuit_density_matrix,
)
from qlam.train import TrainConfig, eval_checkpoint

torch.set_num_threads(1)

SEQ, FEAT, CLASSES = 10, 2, 3


def synthetic_task(cfg=None) -> Task:
    g = torch.Generator().manual_seed(0)

    def split(n):
        x = torch.randn(n, SEQ, FEAT, generator=g)
        y = (x[:, :3].sum((1, 2)) > 0).long() + (x[:, -1, 0] > 1).long()
        return Split(x, y)

    return Task(name="synthetic", dataset="synthetic", seq_len=SEQ, n_features=FEAT,
                n_classes=CLASSES, train=split(32), val=split(8), test=split(12))


def _trained(model_name="qlam", steps=3, **opts):
    """A model after a few SGD steps on random data, and its TrainConfig."""
    cfg = TrainConfig(task="synthetic", model=model_name, d_model=8, n_layers=2, **opts)
    torch.manual_seed(0)
    model = build_model(model_name, FEAT, CLASSES, **cfg.model_options())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(4, SEQ, FEAT, generator=g), torch.randint(0, CLASSES, (4,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), cfg


QLAM_OPTS = dict(n_heads=2, n_qubits=3, depth=1, dt_min=0.1, dt_max=1.0)


@pytest.fixture(scope="module")
def models():
    a, _ = _trained(**QLAM_OPTS)
    b, _ = _trained(n_heads=3, n_qubits=2, depth=2, query_basis=False, dt_min=0.2, dt_max=2.0)
    # QLAM v2 (issue 17): a causal convolution before each memory, Z-strings on <= 2 qubits
    c, _ = _trained(conv=3, read_order=2, **QLAM_OPTS)
    return [a, b, c]


def _save(model, cfg, path):
    torch.save({"model_name": cfg.model, "task": cfg.task, "config": dataclasses.asdict(cfg),
                "n_features": FEAT, "n_classes": CLASSES, "model": model.state_dict(),
                "val_acc": 0.5, "epoch": 1}, path)
    return path


@pytest.fixture
def ckpt(use_task, tmp_path, monkeypatch):
    use_task(synthetic_task)
    model, cfg = _trained(**QLAM_OPTS)
    return _save(model, cfg, tmp_path / "model.pt")


CASES = [(0, 0, 0, None), (0, 1, 1, 4), (1, 0, 0, 1), (1, 1, 2, 7),  # model, layer, head, K
         (2, 0, 1, None), (2, 1, 0, 6)]


def _example(seed):
    return torch.randn(SEQ, FEAT, generator=torch.Generator().manual_seed(seed))


# ---- export: the circuit is the model's computation -----------------------------------------
@pytest.mark.parametrize("which,layer,seed,tokens", CASES)
def test_exported_circuit_reproduces_model_state(models, which, layer, seed, tokens):
    model = models[which]
    x = _example(seed)
    mem = model.blocks[layer].memory
    for head in range(mem.n_heads):
        ex = export_head(model, x, layer=layer, head=head, tokens=tokens)
        k = tokens or SEQ
        assert ex.tokens == k and ex.circuit.n_params == 0 and ex.circuit.n_inputs == 0
        n_gates = len(mem.prep) + k * len(mem.circuit)
        assert len(ex.circuit) == n_gates
        psi = qlam.statevector(ex.circuit)[0]
        torch.testing.assert_close(psi, ex.state, atol=1e-10, rtol=0)  # global phase included
        torch.testing.assert_close(ex.probabilities.sum(), torch.tensor(1.0, dtype=torch.float64))
        got = qlam.probabilities(qlam.statevector(ex.measured))[0]
        torch.testing.assert_close(got, ex.readout_probabilities, atol=1e-10, rtol=0)
        assert (ex.readout is None) == (not mem.query_basis)
    # the float32 model itself (not the float64 copy) computes the same probabilities
    captured = []
    hook = mem.register_forward_pre_hook(lambda _m, a: captured.append(a[0]))
    with torch.no_grad():
        model(x[None])
        probs, final = mem.probabilities(captured[0][:, : (tokens or SEQ)])
    hook.remove()
    np.testing.assert_allclose(probs[0, -1, head].numpy(), ex.readout_probabilities.numpy(),
                               atol=2e-5)
    # the model's own final state (its scan), against a gate-by-gate run of the circuit that
    # the model's head_circuit method returns
    psi = qlam.statevector(model.head_circuit(x, layer, head, tokens), method="reference")[0]
    np.testing.assert_allclose(psi.numpy(), final[0, head].numpy(), atol=2e-5)


@pytest.mark.parametrize("shots,noise", [(7, None), (None, Channel("depolarizing", 0.3))])
def test_export_does_not_depend_on_shots_or_noise_settings(models, shots, noise):
    model, x = models[0], _example(3)
    want = export_head(model, x, layer=1, head=1, tokens=5)
    model.set_readout(shots, noise)
    try:
        got = export_head(model, x, layer=1, head=1, tokens=5)
        assert [(m.shots, m.noise) for m in model.memories()] == [(shots, noise)] * 2  # restored
    finally:
        model.set_readout()
    torch.testing.assert_close(got.state, want.state, atol=0, rtol=0)


# ---- other simulators ----------------------------------------------------------------------
@pytest.mark.parametrize("which,layer,seed,tokens", CASES)
def test_qiskit_aer_and_pennylane_agree_with_qlam(models, which, layer, seed, tokens):
    pytest.importorskip("qiskit")
    qml = pytest.importorskip("pennylane")
    aer = pytest.importorskip("qiskit_aer")
    from qiskit import qasm2, transpile
    from qiskit.quantum_info import Statevector

    model = models[which]
    head = seed % model.blocks[layer].memory.n_heads
    ex = export_head(model, _example(seed), layer=layer, head=head, tokens=tokens)
    n = ex.n_qubits
    sim = aer.AerSimulator(method="statevector", precision="double")
    for circ, want in ((ex.circuit, ex.probabilities), (ex.measured, ex.readout_probabilities)):
        want = want.numpy()
        qc = to_qiskit(circ)
        # Qiskit's own simulator, our QASM read by Qiskit, and Aer
        np.testing.assert_allclose(qiskit_to_qlam_order(Statevector(qc).probabilities(), n),
                                   want, atol=1e-5, rtol=0)
        qc_text = qasm2.loads(circ.to_qasm())
        np.testing.assert_allclose(Statevector(qc_text).reverse_qargs().probabilities(), want,
                                   atol=1e-5, rtol=0)
        qc_aer = qc_text.copy()
        qc_aer.save_statevector()
        sv = sim.run(transpile(qc_aer, sim)).result().get_statevector()
        np.testing.assert_allclose(qiskit_to_qlam_order(np.abs(np.asarray(sv)) ** 2, n), want,
                                   atol=1e-5, rtol=0)
        # PennyLane default.qubit (wire 0 the most significant bit, as in qlam)
        qfunc = to_pennylane(circ)
        node = qml.QNode(lambda qf=qfunc: (qf(), qml.probs(wires=range(n)))[1],
                         qml.device("default.qubit", wires=n))
        np.testing.assert_allclose(np.asarray(node()), want, atol=1e-5, rtol=0)


def test_converters_bind_unbound_circuits_and_reorder():
    pytest.importorskip("qiskit")
    from qiskit.quantum_info import Statevector

    c = Circuit(2)
    c.ry(0, c.new_param(0.3)).rx(1, c.input(0)).cnot(0, 1)
    qc = to_qiskit(c, inputs=[1.1])
    want = qlam.statevector(c.bind(inputs=[1.1]))[0].numpy()
    np.testing.assert_allclose(Statevector(qc).reverse_qargs().data, want, atol=1e-12)
    assert qiskit_to_qlam_order([0, 1, 2, 3], 2).tolist() == [0, 2, 1, 3]
    with pytest.raises(ValueError, match="length 4"):
        qiskit_to_qlam_order([0, 1, 2], 2)


# ---- noise: channels, trajectories, density matrices -------------------------------------------
def test_eval_with_noise_and_shots_is_seeded(ckpt, tmp_path):
    a = eval_checkpoint(ckpt, device="cpu", noise="depolarizing:0.05", seed=3)
    b = eval_checkpoint(ckpt, device="cpu", noise="depolarizing:0.05", seed=3)
    assert a == b and a["noise"] == "depolarizing:0.05" and a["n_test"] == 12
    c = eval_checkpoint(ckpt, device="cpu", shots=5, seed=3, limit=4)
    assert c == eval_checkpoint(ckpt, device="cpu", shots=5, seed=3, limit=4)
    assert c["shots"] == 5 and c["n_test"] == 4 and c["noise"] is None
    out = tmp_path / "e.json"
    assert main(["eval", "--checkpoint", str(ckpt), "--device", "cpu", "--noise",
                 "amplitude_damping:0.01", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["noise"] == "amplitude_damping:0.01"


def test_export_command_writes_qasm_and_json(ckpt, tmp_path):
    out = tmp_path / "c" / "circuit.qasm"
    assert main(["export", "--checkpoint", str(ckpt), "--index", "5", "--layer", "1",
                 "--head", "1", "--tokens", "6", "--out", str(out)]) == 0
    rec = json.loads(out.with_suffix(".json").read_text())
    md = rec["metadata"]
    assert (md["index"], md["layer"], md["head"], md["tokens"], md["n_qubits"]) == (5, 1, 1, 6, 3)
    circ = Circuit.from_qasm(out.read_text())
    probs = qlam.probabilities(qlam.statevector(circ))[0].numpy()
    np.testing.assert_allclose(probs, rec["probabilities"], atol=1e-9)
    amp = np.array(rec["amplitudes"]["real"]) + 1j * np.array(rec["amplitudes"]["imag"])
    np.testing.assert_allclose(qlam.statevector(circ)[0].numpy(), amp, atol=1e-9)
    full = Circuit.from_qasm(out.read_text()).extend(Circuit.from_qasm(rec["readout"]["qasm"]))
    np.testing.assert_allclose(qlam.probabilities(qlam.statevector(full))[0].numpy(),
                               rec["readout"]["probabilities"], atol=1e-9)
    # with per-gate noise: the density-matrix probabilities of the same circuits
    out2 = tmp_path / "n.qasm"
    assert main(["export", "--checkpoint", str(ckpt), "--index", "5", "--tokens", "2",
                 "--noise", "bitflip:0.02", "--out", str(out2)]) == 0
    noisy = json.loads(out2.with_suffix(".json").read_text())["noisy"]
    c2 = Circuit.from_qasm(out2.read_text())
    rho = circuit_density_matrix(c2, "bitflip:0.02")
    np.testing.assert_allclose(torch.diagonal(rho).real.numpy(), noisy["probabilities"],
                               atol=1e-9)
    read2 = json.loads(out2.with_suffix(".json").read_text())["readout"]["qasm"]
    rho_read = circuit_density_matrix(c2.extend(Circuit.from_qasm(read2)), "bitflip:0.02")
    np.testing.assert_allclose(torch.diagonal(rho_read).real.numpy(),
                               noisy["readout_probabilities"], atol=1e-9)
    # the same example through the Python API
    model, _ = train_mod.load_model(ckpt)
    x = synthetic_task().test.x[5]
    ex = export_head(model, x, layer=1, head=1, tokens=6)
    np.testing.assert_allclose(ex.probabilities.numpy(), rec["probabilities"], atol=1e-12)


def test_robustness_command_table_plot_and_resume(ckpt, tmp_path, capsys):
    out = tmp_path / "rob"
    args = ["robustness", "--checkpoint", str(ckpt), "--shots", "10,100", "--noise",
            "depolarizing:0.01,0.1", "bitflip:0.05", "--limit", "8", "--device", "cpu",
            "--out", str(out)]
    assert main(args) == 0
    said = capsys.readouterr().err
    assert said.count("test accuracy") == 6
    rec = json.loads((out / "robustness.json").read_text())
    kinds = [(r["kind"], r["strength"], r["shots"]) for r in rec["rows"]]
    assert kinds == [("exact", None, None), ("shots", None, 10), ("shots", None, 100),
                     ("depolarizing", 0.01, None), ("depolarizing", 0.1, None),
                     ("bitflip", 0.05, None)]
    assert all(0 <= r["test_acc"] <= 1 and r["n_test"] == 8 for r in rec["rows"])
    exact = eval_checkpoint(ckpt, device="cpu", limit=8)["test_acc"]
    assert rec["rows"][0]["test_acc"] == exact
    check_plot(out / "robustness.png", said)
    assert "| depolarizing:0.1 |" in (out / "robustness.md").read_text()
    assert main(args) == 0  # a rerun reuses every finished row
    assert "test accuracy" not in capsys.readouterr().err
    assert json.loads((out / "robustness.json").read_text())["rows"] == rec["rows"]


# ---- bad input --------------------------------------------------------------------------------
def test_bad_eval_and_export_inputs(ckpt, tmp_path, capsys):
    with pytest.raises(ValueError, match="shots must be an int >= 1"):
        eval_checkpoint(ckpt, device="cpu", shots=0)
    with pytest.raises(ValueError, match="unknown noise kind"):
        eval_checkpoint(ckpt, device="cpu", noise="phase:0.1")
    assert main(["eval", "--checkpoint", str(ckpt), "--device", "cpu", "--shots", "0"]) == 2
    assert "shots must be an int >= 1" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(ckpt), "--device", "cpu", "--noise",
                 "depolarizing:2"]) == 2
    assert "must lie in [0, 1]" in capsys.readouterr().err
    # shots under noise would all share one trajectory per example: refused, not a traceback
    assert main(["eval", "--checkpoint", str(ckpt), "--device", "cpu", "--noise",
                 "bitflip:0.2", "--shots", "5"]) == 2
    said = capsys.readouterr().err
    assert "each shot is an independent noise trajectory" in said and "one or the other" in said
    out = str(tmp_path / "c.qasm")
    for flags, msg in ((["--index", "12"], "index 12 out of range: the synthetic test split has 12"),
                       (["--index", "-1"], "index -1 out of range"),
                       (["--index", "0", "--layer", "2"], "layer 2 out of range"),
                       (["--index", "0", "--head", "5"], "head 5 out of range"),
                       (["--index", "0", "--tokens", "0"], "tokens must be >= 1"),
                       (["--index", "0", "--tokens", "11"], "tokens must lie in 1..10")):
        assert main(["export", "--checkpoint", str(ckpt), "--out", out, *flags]) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "c.qasm").exists()
    with pytest.raises(ValueError, match="shots must be >= 1"):
        robustness(ckpt, tmp_path / "r", shots="10,0", noise=[], device="cpu")
    with pytest.raises(ValueError, match="shots must be integers"):
        robustness(ckpt, tmp_path / "r", shots="ten", noise=[], device="cpu")
    with pytest.raises(ValueError, match="unknown noise kind"):
        robustness(ckpt, tmp_path / "r", shots="", noise=["warp:0.1"], device="cpu")
    assert main(["robustness", "--checkpoint", str(ckpt), "--shots", "0",
                 "--out", str(tmp_path / "r")]) == 2
    assert "shots must be >= 1" in capsys.readouterr().err
    model, _ = train_mod.load_model(ckpt)
    with pytest.raises(ValueError, match="tokens must lie in 1..10"):
        export_head(model, _example(0), tokens=11)
    with pytest.raises(ValueError, match="x must be one example"):
        export_head(model, torch.zeros(1, SEQ, FEAT))
    with pytest.raises(TypeError, match="contains no QLAM layer"):
        export_head(torch.nn.Linear(2, 2), _example(0))


def test_non_qlam_checkpoint_is_refused(use_task, tmp_path, monkeypatch, capsys):
    use_task(synthetic_task)
    model, cfg = _trained("lstm", steps=1)
    path = _save(model, cfg, tmp_path / "lstm.pt")
    assert main(["export", "--checkpoint", str(path), "--index", "0",
                 "--out", str(tmp_path / "c.qasm")]) == 2
    assert "holds a 'lstm' model; this command needs a QLAM model" in capsys.readouterr().err
    assert main(["robustness", "--checkpoint", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "needs a QLAM model" in capsys.readouterr().err
    with pytest.raises(ValueError, match="quantum-memory models only"):
        eval_checkpoint(path, device="cpu", noise="bitflip:0.1")
    junk = tmp_path / "junk.pt"
    torch.save({"weights": 1}, junk)
    assert main(["export", "--checkpoint", str(junk), "--index", "0",
                 "--out", str(tmp_path / "c.qasm")]) == 2
    assert "not a qlam model checkpoint" in capsys.readouterr().err


# ---- export from a QLAM layer, or from any model that contains one ---------------------------
class _MyModel(torch.nn.Module):
    """A user's own model: a QLAM layer between two maps of theirs, called with a batch."""

    def __init__(self):
        super().__init__()
        self.inp = torch.nn.Linear(3, 6)
        self.mem = QLAM(6, n_heads=2, n_qubits=3, dt_min=0.1, dt_max=1.0)
        self.out = torch.nn.Linear(6, 2)

    def forward(self, x):
        y, _ = self.mem(torch.tanh(self.inp(x)))
        return self.out(y).mean(1)


def _check_export(ex, layer, h_in):
    psi = qlam.statevector(ex.circuit)[0]
    layer64 = copy.deepcopy(layer).double()
    with torch.no_grad():
        probs, final = layer64.probabilities(h_in.double()[None])
    torch.testing.assert_close(psi, final[0, ex.head], atol=1e-10, rtol=0)
    got = qlam.probabilities(qlam.statevector(ex.measured))[0]
    torch.testing.assert_close(got, probs[0, -1, ex.head], atol=1e-10, rtol=0)


def test_export_from_a_qlam_layer_and_its_input():
    torch.manual_seed(0)
    layer = QLAM(6, n_heads=2, n_qubits=3, dt_min=0.1, dt_max=1.0)
    x = torch.randn(8, 6)
    for head in range(2):
        _check_export(export_head(layer, x, head=head), layer, x)
    batch = torch.randn(4, 8, 6)
    ex = export_head(layer, batch, head=1, example=2, tokens=5)
    _check_export(ex, layer, batch[2, :5])
    with pytest.raises(ValueError, match=r"shape \(length, 6\)"):
        export_head(layer, torch.randn(8, 5))


def test_export_from_a_users_model_containing_qlam():
    torch.manual_seed(1)
    model = _MyModel()
    x = torch.randn(3, 7, 3)
    ex = export_head(model, x, head=0, example=1)
    with torch.no_grad():
        h_in = torch.tanh(model.inp(x))[1]
    _check_export(ex, model.mem, h_in)
    with pytest.raises(ValueError, match="layer 1 out of range"):
        export_head(model, x, layer=1)
