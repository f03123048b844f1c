"""Export of mixed-memory heads (memory="mixed") as channel circuits with resets, checked
against Qiskit: Aer's density-matrix simulator and quantum_info's DensityMatrix, run on the
OpenQASM text, ancillas traced out, against the model's own density matrix and readout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_export import FEAT, SEQ, _save, _trained, synthetic_task

from qlam.channel_circuit import ChannelCircuit, inverse
from qlam.circuit import Circuit
from qlam.cli import main
from qlam.evaluate import load_model
from qlam.export import export_head
from qlam.export_mixed import export_mixed_head
from qlam.models.qlam import QLAMClassifier

qasm2 = pytest.importorskip("qiskit.qasm2")
quantum_info = pytest.importorskip("qiskit.quantum_info")

torch.set_num_threads(1)
CUSTOM = ["cry", "cswap", "rzz", "rxx", "ryy", "swap"]  # gates the file defines itself


def _model(n_qubits: int, selective: bool, dephasing: bool, n_bases: int = 1) -> QLAMClassifier:
    """A float64 mixed-memory classifier whose channel forgets visibly: rates gamma in
    [0.14, 1], reset probabilities near 1/2 that vary with the input, fast phases."""
    torch.manual_seed(n_qubits + 2 * selective + 4 * dephasing)
    model = QLAMClassifier(FEAT, 3, d_model=8, n_layers=2, n_heads=2, n_qubits=n_qubits,
                           memory="mixed", selective=selective, dephasing=dephasing,
                           n_bases=n_bases)
    with torch.no_grad():
        for mem in model.memories():
            mem.log_dt.fill_(0.3)
            if dephasing:
                mem.log_gamma.copy_(-2 * torch.rand(mem.n_heads, n_qubits))
            if selective:
                mem.gate.weight.normal_()
                mem.gate.bias.zero_()
            else:
                mem.gate_logit.fill_(0.2)
    return model.double().eval()


def _aer_memory(ex) -> tuple[np.ndarray, np.ndarray]:
    """Aer (density matrix, float64) on the exported QASM: the memory's reduced density matrix
    after the state circuit and after the readout basis, in qlam's wire order."""
    aer = pytest.importorskip("qiskit_aer")
    n = ex.n_qubits
    memory = list(range(n))  # qreg q comes first: Qiskit qubits 0..n-1
    qc = qasm2.loads(ex.circuit.to_qasm())
    qc.save_density_matrix(qubits=memory, label="state")
    qc.compose(qasm2.loads(ex.readout.to_qasm()), qubits=memory, inplace=True)
    qc.save_density_matrix(qubits=memory, label="read")
    sim = aer.AerSimulator(method="density_matrix", precision="double", max_parallel_threads=1)
    data = sim.run(qc.decompose(gates_to_decompose=CUSTOM)).result().data()
    return tuple(quantum_info.DensityMatrix(data[k]).reverse_qargs().data
                 for k in ("state", "read"))


def _quantum_info_memory(qasm: str, n: int) -> np.ndarray:
    """quantum_info's DensityMatrix of the whole file, fresh and anc traced out, qlam order."""
    rho = quantum_info.DensityMatrix(qasm2.loads(qasm))
    return quantum_info.partial_trace(rho, list(range(n, 2 * n + 1))).reverse_qargs().data


CASES = [  # n_qubits, selective, dephasing, layer, head, tokens, (n_bases, basis)
    (2, True, True, 0, 1, 3, (1, 0)), (2, False, True, 1, 0, None, (2, 1)),
    (3, True, True, 1, 1, 4, (3, 2)), (3, False, False, 0, 0, 3, (1, 0)),
    (3, True, False, 1, 0, 2, (2, 0)),
]


@pytest.mark.parametrize("n,selective,dephasing,layer,head,tokens,bases", CASES)
def test_channel_circuit_matches_qiskit_aer(n, selective, dephasing, layer, head, tokens, bases):
    n_bases, basis = bases
    model = _model(n, selective, dephasing, n_bases)
    x = torch.randn(5, FEAT, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    ex = export_mixed_head(model, x, layer=layer, head=head, tokens=tokens, basis=basis)
    k = tokens or 5
    rho, rho_read = _aer_memory(ex)
    np.testing.assert_allclose(rho, ex.state.numpy(), atol=1e-8, rtol=0)
    np.testing.assert_allclose(rho_read, ex.readout_state.numpy(), atol=1e-8, rtol=0)
    np.testing.assert_allclose(np.diag(rho_read).real, ex.readout_probabilities.numpy(),
                               atol=1e-8, rtol=0)
    # the state is really mixed: forgetting shows (a pure state has purity 1)
    assert np.trace(rho @ rho).real < 0.99
    # the model's own readout of token K for this example, from the whole layer's forward
    h = [None]
    handle = model.blocks[layer].memory.register_forward_hook(lambda m, a, out: h.__setitem__(0, a))
    with torch.no_grad():
        model(x[None])
        handle.remove()
        probs, _ = model.blocks[layer].memory.probabilities(h[0][0])
    want = probs[0, k - 1, head].view(n_bases, 2**n)[basis]  # the layer's reading in that basis
    np.testing.assert_allclose(want.numpy(), ex.readout_probabilities.numpy(), atol=1e-12, rtol=0)
    # gate budget: per token n cswaps, n + 1 resets for the write, n cry + n resets to dephase
    counts = ex.circuit.gate_count()
    assert counts["cswap"] == n * k and counts.get("cry", 0) == (n * k if dephasing else 0)
    assert counts["reset"] == k * (n + 1 + (n if dephasing else 0))
    assert ex.circuit.n_qubits == 2 * n + 1


def test_capture_ignores_shots_and_pieces_are_exact():
    model = _model(2, True, True)
    x = torch.randn(6, FEAT, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    want = export_mixed_head(model, x, layer=1, head=1)
    model.blocks[0].memory.shots = 2  # a sampled readout in block 0 would change block 1's input
    got = export_mixed_head(model, x, layer=1, head=1)
    assert model.blocks[0].memory.shots == 2
    torch.testing.assert_close(got.state, want.state, atol=1e-12, rtol=0)
    # V^dag V = identity, through the QASM writer and quantum_info
    mem = model.blocks[0].memory
    frame = mem.frame.bind(mem.theta[0].detach())
    c = ChannelCircuit(2).extend(frame).extend(inverse(frame))
    qc = qasm2.loads(c.to_qasm())
    op = quantum_info.Operator(qc.decompose(gates_to_decompose=CUSTOM)).data
    np.testing.assert_allclose(op, np.eye(32), atol=1e-12)


def test_bad_channel_circuits_and_wrong_memory_are_refused():
    c = ChannelCircuit(2)
    with pytest.raises(ValueError, match="unknown instruction 'measure'"):
        c.append("measure", (0,))
    with pytest.raises(ValueError, match="cswap takes 3 wire"):
        c.append("cswap", (0, 1))
    with pytest.raises(ValueError, match=r"must be distinct, in 0\.\.4"):
        c.append("reset", (5,))
    with pytest.raises(ValueError, match="angles must be finite"):
        c.append("cry", (0, 4), [float("nan")])
    unbound = Circuit(2)
    unbound.ry(0, unbound.new_param())
    with pytest.raises(ValueError, match="bind it first"):
        c.extend(unbound)
    with pytest.raises(ValueError, match="expected a 2-qubit circuit"):
        c.extend(Circuit(3))
    with pytest.raises(ValueError, match="bound rotation gates"):
        inverse(Circuit(1).h(0))
    x = torch.randn(4, FEAT, dtype=torch.float64)
    with pytest.raises(ValueError, match="use qlam.export_mixed.export_mixed_head"):
        export_head(_model(2, True, True), x)
    unitary, _ = _trained(n_heads=2, n_qubits=2, depth=1)
    with pytest.raises(ValueError, match="use qlam.export.export_head"):
        export_mixed_head(unitary, x.float())
    with pytest.raises(ValueError, match="tokens must lie in 1..4"):
        export_mixed_head(_model(2, True, True), x, tokens=5)
    with pytest.raises(ValueError, match=r"basis 2 out of range: 0\.\.1"):
        export_mixed_head(_model(2, True, True, n_bases=2), x, basis=2)


@pytest.fixture
def mixed_ckpt(use_task, tmp_path):
    use_task(synthetic_task)
    model, cfg = _trained(memory="mixed", n_heads=2, n_qubits=2, dt_min=0.1, dt_max=1.0,
                          extra={"a_min": 0.2, "a_max": 0.6, "n_bases": 2})
    return _save(model, cfg, tmp_path / "mixed.pt")


def test_export_command_writes_the_channel_and_its_memory(mixed_ckpt, tmp_path, capsys):
    out = tmp_path / "c" / "circuit.qasm"
    assert main(["export", "--checkpoint", str(mixed_ckpt), "--index", "5", "--layer", "1",
                 "--head", "1", "--tokens", "4", "--basis", "1", "--out", str(out)]) == 0
    rec = json.loads(out.with_suffix(".json").read_text())
    assert set(rec) == {"probabilities", "amplitudes", "density_matrix", "readout", "metadata"}
    md = rec["metadata"]
    assert (md["memory"], md["tokens"], md["n_qubits"], md["n_qubits_total"]) == ("mixed", 4, 2, 5)
    assert set(md["registers"]) == {"q", "fresh", "anc"} and md["resets"] == 4 * 5
    text = out.read_text()
    assert "reset anc[0];" in text and "qreg q[2];" in text and text.count("cswap anc[0]") == 8
    rho = _quantum_info_memory(text, 2)  # the whole file, readout basis included
    want = np.array(rec["density_matrix"]["real"]) + 1j * np.array(rec["density_matrix"]["imag"])
    np.testing.assert_allclose(rho, want, atol=1e-8, rtol=0)
    np.testing.assert_allclose(np.diag(rho).real, rec["probabilities"], atol=1e-8, rtol=0)
    assert rec["readout"]["probabilities"] == rec["probabilities"]
    assert (rec["readout"]["basis"], rec["readout"]["n_bases"]) == (1, 2)
    # the same example through the Python API
    model, _ = load_model(mixed_ckpt)
    ex = export_mixed_head(model, synthetic_task().test.x[5], layer=1, head=1, tokens=4, basis=1)
    np.testing.assert_allclose(ex.readout_probabilities.numpy(), rec["probabilities"], atol=1e-12)
    # all tokens by default; --noise is for unitary exports
    assert main(["export", "--checkpoint", str(mixed_ckpt), "--index", "0",
                 "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["metadata"]["tokens"] == SEQ
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(mixed_ckpt), "--index", "0", "--noise",
                 "bitflip:0.1", "--out", str(tmp_path / "n.qasm")]) == 2
    assert "a memory='mixed' head is exported as its channel" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(mixed_ckpt), "--index", "0", "--basis", "2",
                 "--out", str(tmp_path / "n.qasm")]) == 2
    assert "basis 2 out of range: block 0's readout basis list has 2" in capsys.readouterr().err
    assert not (tmp_path / "n.qasm").exists()


def test_basis_flag_is_refused_for_the_unitary_memory(use_task, tmp_path, capsys):
    use_task(synthetic_task)
    model, cfg = _trained(n_heads=2, n_qubits=2, depth=1)
    ckpt = _save(model, cfg, tmp_path / "u.pt")
    assert main(["export", "--checkpoint", str(ckpt), "--index", "0", "--basis", "0",
                 "--out", str(tmp_path / "u.qasm")]) == 2
    assert "--basis picks one of a memory='mixed' head's readout bases" in capsys.readouterr().err
