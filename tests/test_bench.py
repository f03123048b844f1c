"""`qlam bench sim`: the implementations agree, and the command writes its table and JSON."""

from __future__ import annotations

import json

import pytest
import torch

from qlam import Circuit
from qlam.bench import sim
from qlam.cli import main


def test_every_implementation_computes_the_same_loss_and_gradient():
    sim.check_agreement([n for n in sim.IMPLS if sim.IMPLS[n].available()], n_qubits=3,
                        tokens=4, atol=1e-9)


def test_token_circuit():
    c = sim.token_circuit(4)
    assert c.gate_count() == {"rz": 8, "ry": 4, "cnot": 4}
    assert c.n_params == 8 and c.n_inputs == 1
    assert [op.name for op in c.ops[:4]] == ["rz"] * 4 and all(op.is_input for op in c.ops[:4])


def test_compiled_tables_handle_any_block_order():
    """Leading dense and trailing phase blocks become identity-phase / identity-W layers."""
    c = Circuit(2)
    c.ry(0, c.new_param(0.3)).cnot(0, 1)  # dense first
    c.rz(1, c.input(0))  # phase
    c.rx(0, c.new_param(-0.4))  # dense
    c.rzz(0, 1, c.input(0, 2.0))  # trailing phase
    theta = c.init_params().requires_grad_()
    s = sim.Setup(c, theta, torch.rand(3, 5, 1, dtype=torch.float64),
                  torch.randn(4, dtype=torch.float64))
    phases, w = sim.compiled_tables(c, theta, s.x)
    assert phases.shape == (3, 5, 1, 3, 4) and w.shape == (1, 3, 2, 4, 4)
    loss = sim.run_compiled(s)
    grad = theta.grad.clone()
    theta.grad = None
    assert torch.allclose(sim.run_reference(s), loss, atol=1e-12)
    assert torch.allclose(theta.grad, grad, atol=1e-12)


def test_register_a_new_implementation():
    calls = []

    def run(s):
        calls.append(s.tokens)
        return sim.run_compiled(s)

    sim.register(sim.Impl("test-impl", run, quick_tokens=3))
    try:
        recs = sim.run_benchmark([2], batch=2, seq_len=6, quick=True,
                                 impls=["test-impl", "qlam-compiled"], repeats=1)
    finally:
        del sim.IMPLS["test-impl"]
    assert [r["impl"] for r in recs] == ["test-impl", "qlam-compiled"]
    assert recs[0]["seq_len"] == 3 and recs[1]["seq_len"] == 6
    assert 3 in calls
    with pytest.raises(ValueError, match="unknown implementation"):
        sim.run_benchmark([2], impls=["nope"])


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    pytest.importorskip("pennylane")
    out = tmp_path / "bench.json"
    rc = main(["bench", "sim", "--quick", "--n", "2", "3", "--batch", "4", "--seq-len", "8",
               "--repeats", "1", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| impl | n | batch | tokens run | tokens/s |" in text
    assert "n=3: qlam-compiled " in text
    records = json.loads(out.read_text())
    assert len(records) == 2 * len(sim.IMPLS)
    for r in records:
        assert {"impl", "n_qubits", "batch", "seq_len", "tokens_per_s"} <= set(r)
        assert r["tokens_per_s"] > 0 and r["batch"] == 4 and r["n_qubits"] in (2, 3)


def test_cli_rejects_bad_sizes(capsys):
    assert main(["bench", "sim", "--batch", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
