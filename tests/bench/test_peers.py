"""The peer adapters of `qlam bench sim` (TensorCircuit-NG on JAX, Qulacs, TorchQuantum in its
own environment): each gives the loss and gradient of qlam's gate-by-gate reference on small
cases (skipped where the peer is not installed), records its versions and compile time; the
side-by-side table; the agreement check at the sizes where qlam's dispatch changes; peers that
cannot run or fail are recorded."""

from __future__ import annotations

import json

import pytest
import torch

from qlam.bench import sim, sim_impls, sim_peers
from qlam.cli import main
from qlam.sim import circuit_scan
from qlam.sim.scan import cpp


def _reference(n_qubits, batch, tokens, seed):
    s = sim_impls.make_setup(n_qubits, batch, tokens, torch.float64, seed=seed)
    loss = sim_impls.run_reference(s)
    return loss, s.theta.grad.clone()


@pytest.mark.parametrize("name,module", [("tensorcircuit-jax", "tensorcircuit"),
                                         ("qulacs", "qulacs")])
@pytest.mark.parametrize("n_qubits", [3])
def test_peer_matches_the_reference(name, module, n_qubits):
    pytest.importorskip(module)
    impl = sim_impls.IMPLS[name]
    s = sim_impls.make_setup(n_qubits, 3, 4, torch.float64, seed=7)
    impl.prepare(s)
    s.theta.grad = None
    loss = impl.run(s)
    ref_loss, ref_grad = _reference(n_qubits, 3, 4, seed=7)
    assert abs(float(loss) - float(ref_loss)) < 1e-10
    torch.testing.assert_close(s.theta.grad, ref_grad, atol=1e-10, rtol=0)
    key = (name, n_qubits, 3, 4, "torch.float64")
    assert sim_peers.COMPILE_SECONDS[key] >= 0
    assert module.split("-")[0] in impl.version()


def test_torchquantum_matches_the_reference_in_single_precision():
    """TorchQuantum builds its gates in complex64: the loss and gradient of the reference to
    its precision, and the agreement check (float64 elsewhere) admits it at its atol only."""
    pytest.importorskip("torchquantum")
    impl = sim_impls.IMPLS["torchquantum"]
    s = sim_impls.make_setup(3, 3, 5, torch.float64, seed=11)
    loss = impl.run(s)
    ref_loss, ref_grad = _reference(3, 3, 5, seed=11)
    assert abs(float(loss) - float(ref_loss)) < 1e-5
    torch.testing.assert_close(s.theta.grad, ref_grad, atol=1e-5, rtol=0)
    assert 1e-8 < impl.atol <= 1e-5 and "torchquantum" in impl.version()
    sim.check_agreement(["qlam-reference", "torchquantum"])


def test_agreement_check_names_a_disagreeing_peer(monkeypatch):
    """A peer whose gradient is off by more than its tolerance stops the benchmark."""
    def off(s):
        loss = sim_impls.run_reference(s)
        s.theta.grad[0] += 1e-6
        return loss

    monkeypatch.setitem(sim_impls.IMPLS, "bad", sim_impls.Impl("bad", off))
    with pytest.raises(RuntimeError, match="bad vs qlam-reference"):
        sim.check_agreement(["qlam-reference", "bad"])
    monkeypatch.setitem(sim_impls.IMPLS, "bad", sim_impls.Impl("bad", off, atol=1e-5))
    sim.check_agreement(["qlam-reference", "bad"])


def test_float32_tensorcircuit_is_close():
    pytest.importorskip("tensorcircuit")
    s = sim_impls.make_setup(3, 2, 6, torch.float32, seed=2)
    loss = sim_impls.IMPLS["tensorcircuit-jax"].run(s)
    ref_loss, ref_grad = _reference(3, 2, 6, seed=2)
    assert abs(float(loss) - float(ref_loss)) < 1e-4
    torch.testing.assert_close(s.theta.grad.double(), ref_grad, atol=1e-4, rtol=0)


def test_peers_table_and_large_sizes(monkeypatch):
    """--large: from LARGE_N on, one other batch and length; the side-by-side table has one
    column per implementation and qlam over the fastest training peer."""
    monkeypatch.setattr(sim, "LARGE_N", 3)
    recs = sim.run_benchmark([2, 3], batch=4, seq_len=6, quick=True, repeats=1,
                             impls=["qlam-auto", "qlam-reference"], large=(2, 5))
    assert [(r["n_qubits"], r["batch"], r["requested_seq_len"]) for r in recs] == [
        (2, 4, 6), (2, 4, 6), (3, 2, 5), (3, 2, 5)]
    fake = [dict(r) for r in recs if r["impl"] == "qlam-auto"]
    for r, rate in zip(list(fake), (1000.0, 400.0)):
        fake.append({**r, "impl": "qulacs", "tokens_per_s": rate})
    fake.append({**fake[0], "impl": "qiskit-aer-forward", "tokens_per_s": 1e9})  # forward only
    table = sim.peers_table(fake)
    assert table.splitlines()[0] == "| n | batch | qlam-auto | qulacs | qiskit-aer-forward | " \
                                    "qlam-auto ÷ fastest peer |"
    x = fake[0]["tokens_per_s"] / 1000.0
    assert f"| {x:,.2f}x qulacs |" in table.splitlines()[2]


@pytest.mark.skipif(not cpp.available(), reason="C++ kernel unavailable")
@pytest.mark.parametrize("name", ["qlam-auto", "qlam-factored"])
@pytest.mark.parametrize("wrong_from", [cpp.FACTORED_LOW_QUBITS, circuit_scan.WIRE_MIN_QUBITS])
def test_a_wrong_factored_kernel_is_refused_before_it_is_timed(monkeypatch, name, wrong_from):
    """qlam-auto and qlam-factored run the C++ factored kernel from 4 qubits and its per-wire
    form from WIRE_MIN_QUBITS (PyTorch at 3): the agreement check runs at those sizes too, so
    a kernel whose final state is off from there stops the benchmark, naming the row and n,
    before anything is timed."""
    real = cpp.scan_factored_kernel

    def wrong(psi0, *args, **kwargs):
        probs, last = real(psi0, *args, **kwargs)
        return probs, last * 1.1 if psi0.shape[-1] >= 2**wrong_from else last

    def timed(*args, **kwargs):
        raise AssertionError("timed before the agreement check")

    monkeypatch.setattr(cpp, "scan_factored_kernel", wrong)
    monkeypatch.setattr(sim, "measure", timed)
    with pytest.raises(RuntimeError, match=f"n = {wrong_from}: {name} vs qlam-reference"):
        sim.run_benchmark([wrong_from + 1], batch=2, seq_len=8, quick=True, impls=[name],
                          repeats=1)


def test_every_row_is_checked_at_a_size_it_takes(monkeypatch):
    """A wrong row that takes only 3 qubits is refused beside one that takes 4..6."""
    def wrong(s):
        return sim_impls.run_reference(s) + 1

    monkeypatch.setattr(sim, "IMPLS", {
        "four-to-six": sim_impls.Impl("four-to-six", sim_impls.run_reference, qubits=(4, 6)),
        "three-only": sim_impls.Impl("three-only", wrong, qubits=(3, 3))})
    with pytest.raises(RuntimeError, match="n = 3: three-only vs qlam-reference"):
        sim.run_benchmark([3, 4], batch=1, seq_len=4, quick=True, repeats=1)


def _peer_failing_at(n_qubits):
    """The reference, raising MemoryError from ``n_qubits`` on in the (float32) timed runs."""
    def run(s):
        if s.n_qubits >= n_qubits and s.x.dtype == torch.float32:
            raise MemoryError(f"out of memory at n={s.n_qubits}")
        return sim_impls.run_reference(s)

    return run


def test_peers_that_cannot_run_or_fail_are_recorded(monkeypatch, tmp_path, capsys):
    """A peer not installed or failing to start is skipped with its reason; one that raises
    in the agreement check or at a timed size is recorded as failed with its error, and the
    others are still timed and written; a disagreeing peer and a failing qlam row raise."""
    def broken(s):
        raise ImportError("undefined symbol (broken install)")

    def wrong(s):
        return sim_impls.run_reference(s) + 1

    impl = sim_impls.Impl
    rows = {"qlam-compiled": sim_impls.IMPLS["qlam-compiled"],
            "absent-peer": impl("absent-peer", broken, available=lambda: False),
            "unstartable-peer": impl("unstartable-peer", broken, start=lambda: broken(None)),
            "broken-peer": impl("broken-peer", broken),
            "flaky-peer": impl("flaky-peer", _peer_failing_at(3))}
    monkeypatch.setattr(sim, "IMPLS", rows)
    out = tmp_path / "sim.json"
    assert main(["bench", "sim", "--quick", "--n", "2", "3", "--batch", "1", "--seq-len", "8",
                 "--threads", "1", "--repeats", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert sorted((r["impl"], r["n_qubits"]) for r in data["records"]) == [
        ("flaky-peer", 2), ("qlam-compiled", 2), ("qlam-compiled", 3)]
    error = "ImportError: undefined symbol (broken install)"
    assert data["meta"]["skipped"] == {"absent-peer": "not installed",
                                       "unstartable-peer": f"failed to start: {error}"}
    assert data["meta"]["failed"] == [
        {"impl": "broken-peer", "n_qubits": 3, "batch": 3, "stage": "agreement check",
         "error": error},
        {"impl": "flaky-peer", "n_qubits": 3, "batch": 1, "stage": "timing",
         "error": "MemoryError: out of memory at n=3"}]
    assert "flaky-peer failed (timing, n=3 batch=1): MemoryError" in capsys.readouterr().out
    rows["wrong-peer"] = impl("wrong-peer", wrong)
    with pytest.raises(RuntimeError, match="n = 3: wrong-peer vs qlam-reference"):
        sim.run_benchmark([3], batch=1, seq_len=4, impls=["qlam-compiled", "wrong-peer"])
    rows["qlam-flaky"] = impl("qlam-flaky", _peer_failing_at(3))
    with pytest.raises(MemoryError, match="n=3"):
        sim.run_benchmark([3], batch=1, seq_len=4, impls=["qlam-compiled", "qlam-flaky"])


def test_lightning_failing_to_start_is_reported_with_its_error(monkeypatch):
    """lightning.qubit installed but its device cannot be created: "failed to start" with
    the error, not "not installed"; named explicitly, the benchmark refuses with it."""
    qml = pytest.importorskip("pennylane")
    pytest.importorskip("pennylane_lightning")
    real = qml.device

    def device(name, *args, **kwargs):
        if name == "lightning.qubit":
            raise ImportError("liblightning: undefined symbol")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(qml, "device", device)
    lightning = sim_impls.IMPLS["pennylane-lightning.qubit"]
    why = "failed to start: ImportError: liblightning: undefined symbol"
    assert sim.unavailable(lightning, "cpu") == why
    with pytest.raises(ValueError, match=f"pennylane-lightning.qubit: {why}"):
        sim.run_benchmark([2], batch=1, seq_len=4, impls=["pennylane-lightning.qubit"])


def test_aer_rows_record_their_versions():
    qiskit = pytest.importorskip("qiskit")
    aer = pytest.importorskip("qiskit_aer")
    rec = sim.measure(sim_impls.IMPLS["qiskit-aer-forward"], 2, 1, 4, quick=True, repeats=1)
    assert rec["version"] == f"qiskit {qiskit.__version__}, qiskit-aer {aer.__version__}"
