"""The circuit description: building, parameter sources, binding, reports and templates."""

from __future__ import annotations

import math

import pytest
import torch

import qlam
from qlam import Angle, Circuit, templates
from qlam.circuit import GATES


def test_builder_methods_cover_every_gate_and_chain():
    c = Circuit(2)
    for name, (n_wires, n_angles, _) in GATES.items():
        wires = (0, 1)[:n_wires]
        args = [0.1 * (k + 1) for k in range(n_angles)]
        method = getattr(c, name)
        assert method(*wires, *args) is c
    assert [op.name for op in c.ops] == list(GATES)
    assert len(c) == len(GATES)
    assert c.gate_count() == {name: 1 for name in GATES}


def test_cx_alias_and_case_insensitive_names():
    c = Circuit(2).append("CX", (0, 1)).append("RZ", 1, 0.3)
    assert [op.name for op in c.ops] == ["cnot", "rz"]


def test_parameter_sources():
    c = Circuit(2)
    p = c.new_param(0.5)
    a = c.new_param(2.0)
    c.rx(0, p)
    c.ry(1, c.input(1, a, 0.25))
    c.rz(0, 0.75)
    assert c.n_params == 2 and c.n_inputs == 2
    assert c.init == [0.5, 2.0]
    kinds = [op.angles[0].kind for op in c.ops]
    assert kinds == ["param", "input", "const"]
    assert c.ops[1].is_input and not c.ops[0].is_input
    theta = torch.tensor([0.5, 2.0], dtype=torch.float64)
    x = torch.tensor([[9.0, 3.0]], dtype=torch.float64)
    assert float(c.ops[1].angles[0].evaluate(theta, x)) == pytest.approx(2.0 * 3.0 + 0.25)
    assert str(c.ops[1].angles[0]) == "θ1·x1+0.25"


def test_bind_makes_every_angle_a_number():
    c = Circuit(1)
    c.rx(0, c.input(0, c.new_param(2.0), c.new_param(0.5)))
    b = c.bind(inputs=[0.25])
    assert b.ops[0].angles[0].kind == "const"
    assert b.ops[0].angles[0].value == pytest.approx(2.0 * 0.25 + 0.5)
    # the bound circuit simulates to the same state
    x = torch.tensor([[0.25]], dtype=torch.float64)
    torch.testing.assert_close(qlam.statevector(c, x), qlam.statevector(b))
    b = c.bind(params=[1.0, 0.0], inputs=[0.25])
    assert b.ops[0].angles[0].value == pytest.approx(0.25)


def test_extend_reindexes_parameters():
    a = Circuit(2)
    a.rx(0, a.new_param(0.1))
    b = Circuit(2)
    b.ry(1, b.new_param(0.2))
    b.rz(0, b.input(0, b.new_param(0.3)))
    a.extend(b)
    assert a.n_params == 3 and a.init == [0.1, 0.2, 0.3]
    assert a.ops[1].angles[0] == Angle("param", index=1)
    assert a.ops[2].angles[0].a == Angle("param", index=2)
    with pytest.raises(ValueError, match="2-qubit circuit with 3"):
        a.extend(Circuit(3))


def test_depth_and_summary():
    c = Circuit(3).h(0).h(1).cnot(0, 1).x(2).cz(1, 2).rz(0, 0.1)
    assert c.depth() == 3
    assert Circuit(4).depth() == 0
    s = c.summary()
    assert "3 qubits" in s and "6 gates" in s and "depth 3" in s and "0 trainable" in s


def test_draw_shows_every_wire_and_gate():
    c = Circuit(3)
    c.h(0).cnot(0, 2).rz(1, c.new_param(0.3)).rzz(0, 1, c.input(0, 2.0))
    text = c.draw()
    rows = text.splitlines()
    assert len(rows) == 3
    assert rows[0].startswith("0: ") and rows[2].startswith("2: ")
    assert "H" in rows[0] and "●" in rows[0] and "X" in rows[2]
    assert "│" in rows[1]  # the CNOT crosses wire 1
    assert "RZ(θ0)" in rows[1]
    assert "RZZ(2·x0)" in rows[0] and "RZZ(2·x0)" in rows[1]
    assert str(c).splitlines()[0] == c.summary()


@pytest.mark.parametrize("n,layers", [(1, 1), (2, 2), (4, 3), (6, 1)])
def test_hardware_efficient(n, layers):
    c = templates.hardware_efficient(Circuit(n), layers)
    ring = len(templates.ring(n))
    assert c.n_params == 2 * n * layers
    assert c.gate_count() == {k: v for k, v in
                              {"ry": n * layers, "rz": n * layers, "cnot": ring * layers}.items()
                              if v}
    assert all(abs(v) <= math.pi for v in c.init)
    if n == 4:  # RY RZ, then a ring of 4 CNOTs is 4 deep (each shares a wire with the next)
        assert c.depth() == layers * (2 + 4)


def test_hardware_efficient_is_seeded():
    a = templates.hardware_efficient(Circuit(3), 2, generator=torch.Generator().manual_seed(7))
    b = templates.hardware_efficient(Circuit(3), 2, generator=torch.Generator().manual_seed(7))
    assert a.init == b.init
    small = templates.hardware_efficient(Circuit(3), 1, scale=0.01)
    assert max(abs(v) for v in small.init) <= 0.01


@pytest.mark.parametrize("n,layers", [(1, 1), (3, 2), (5, 4)])
def test_strongly_entangling(n, layers):
    c = templates.strongly_entangling(Circuit(n), layers)
    assert c.n_params == 3 * n * layers
    counts = c.gate_count()
    assert counts["rz"] == 2 * n * layers and counts["ry"] == n * layers
    assert counts.get("cnot", 0) == (n * layers if n > 1 else 0)


@pytest.mark.parametrize("rotation", ["X", "Y", "z"])
def test_angle_encoding(rotation):
    c = templates.angle_encoding(Circuit(3), rotation=rotation, a=2.0, b=0.5)
    assert c.n_params == 0 and c.n_inputs == 3
    assert [op.name for op in c.ops] == ["r" + rotation.lower()] * 3
    assert [op.angles[0].index for op in c.ops] == [0, 1, 2]
    c = templates.angle_encoding(Circuit(3), features=[4, 2])
    assert c.n_inputs == 5 and len(c) == 2
    with pytest.raises(ValueError, match="rotation"):
        templates.angle_encoding(Circuit(2), rotation="W")
    with pytest.raises(ValueError, match="features"):
        templates.angle_encoding(Circuit(2), features=[0, 1, 2])


def test_zz_feature_map_shape():
    n = 4
    c = templates.zz_feature_map(Circuit(n), reps=2)
    assert c.gate_count() == {"h": 2 * n, "rz": 2 * n, "rzz": 2 * n}
    assert c.n_inputs == 2 * n  # n features + n ring-pair products
    x = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    feats = templates.zz_features(x)
    assert feats.shape == (1, 2 * n)
    assert float(feats[0, n]) == pytest.approx((math.pi - 0.1) * (math.pi - 0.2))
    psi = qlam.statevector(c, feats)
    assert psi.shape == (1, 16)


def test_ring():
    assert templates.ring(1) == []
    assert templates.ring(2) == [(0, 1)]
    assert templates.ring(3) == [(0, 1), (1, 2), (2, 0)]


def test_fusing_rule_by_hand():
    from qlam.sim.compiled import fusing_pays

    # (k + B) 2^n < k B: 491 gates on one 10-qubit state never pay for a 1024 x 1024 matrix
    assert not fusing_pays(491, 1, 10)
    assert fusing_pays(50, 1000, 4)  # 16 * 1050 = 16800 < 50000
    assert not fusing_pays(50, 1000, 6)  # 64 * 1050 = 67200 > 50000


def test_default_path_runs_a_general_circuit_gate_by_gate(monkeypatch):
    """One state through a 491-gate Ising circuit must not build the dense 2^10 unitary (it
    took seconds where gate by gate takes milliseconds); a large batch still fuses."""
    import qlam.sim.compiled as compiled
    from qlam.bench.circuits import ising_circuit
    from qlam.sim.statevector import run_reference

    c = ising_circuit(10)
    want = run_reference(c)
    built = []
    real_unitary = compiled.unitary
    monkeypatch.setattr(compiled, "unitary", lambda *a, **k: built.append(a) or real_unitary(*a, **k))
    torch.testing.assert_close(qlam.statevector(c), want, rtol=0, atol=1e-12)
    assert built == []
    small = ising_circuit(3, steps=4)
    batch = qlam.sim.zero_state(3, 64)
    torch.testing.assert_close(qlam.statevector(small, state=batch),
                               run_reference(small, state=batch), rtol=0, atol=1e-12)
    assert len(built) == 1
