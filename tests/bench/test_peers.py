"""The peer adapters of `qlam bench sim` (TensorCircuit-NG on JAX, Qulacs, TorchQuantum in its
own environment): each gives the loss and gradient of qlam's gate-by-gate reference on small
cases (skipped where the peer is not installed), records its versions and compile time; the
side-by-side table."""

from __future__ import annotations

import pytest
import torch

from qlam.bench import sim, sim_impls, sim_peers


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
