"""OpenQASM 2.0 in and out: round trips, Qiskit interop, expressions and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from circuit_oracles import qiskit_circuit, qiskit_vector, random_args, random_circuit

import qlam
from qlam import Circuit
from qlam.qasm import from_qasm, to_qasm

HEADER = 'OPENQASM 2.0;\ninclude "qelib1.inc";\n'


def _state(c: Circuit) -> torch.Tensor:
    return qlam.statevector(c, method="reference")[0]


@pytest.mark.parametrize("seed", range(200))
def test_round_trip_gives_same_state_and_exact_angles(seed):
    c = random_circuit(seed)
    params, inputs = random_args(c, seed, batch=1)
    x = inputs[0, : c.n_inputs] if c.n_inputs else None
    text = c.to_qasm(params, x)
    back = Circuit.from_qasm(text)
    bound = c.bind(params, x)
    assert back.n_qubits == c.n_qubits
    assert [(op.name, op.wires) for op in back.ops] == [(op.name, op.wires) for op in bound.ops]
    assert [a.value for op in back.ops for a in op.angles] == \
        [a.value for op in bound.ops for a in op.angles]  # full precision, bit for bit
    want = qlam.statevector(c, inputs, params, method="reference")[0]
    torch.testing.assert_close(_state(back), want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("seed", range(0, 200, 4))
def test_qiskit_reads_our_qasm(seed):
    qasm2 = pytest.importorskip("qiskit.qasm2")
    c = random_circuit(seed)
    params, inputs = random_args(c, seed, batch=1)
    x = inputs[0, : c.n_inputs] if c.n_inputs else None
    text = to_qasm(c, params, x)
    want = qlam.statevector(c, inputs, params, method="reference")[0].numpy()
    qc = qasm2.loads(text)  # strict: the paper's qelib1.inc
    np.testing.assert_allclose(qiskit_vector(qc), want, atol=1e-9, rtol=0)
    qc = qasm2.loads(text, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)  # Qiskit's
    np.testing.assert_allclose(qiskit_vector(qc), want, atol=1e-9, rtol=0)


@pytest.mark.parametrize("seed", range(1, 200, 4))
def test_we_read_qiskit_qasm(seed):
    qasm2 = pytest.importorskip("qiskit.qasm2")
    c = random_circuit(seed)
    params, inputs = random_args(c, seed, batch=1)
    bound = c.bind(params, inputs[0, : c.n_inputs] if c.n_inputs else None)
    qc = qiskit_circuit(bound)  # Qiskit writes its own names and definitions
    ours = from_qasm(qasm2.dumps(qc))
    np.testing.assert_allclose(_state(ours).numpy(), qiskit_vector(qc), atol=1e-9, rtol=0)


def test_output_format():
    c = Circuit(2)
    c.h(0).cnot(0, 1).rz(1, c.new_param(0.1)).u3(0, 1e-20, -2.5, 3.0).rzz(0, 1, c.input(0))
    text = c.to_qasm(inputs=[0.5])
    lines = text.splitlines()
    assert lines[:2] == ["OPENQASM 2.0;", 'include "qelib1.inc";']
    assert lines[2].startswith("gate rzz(theta) a,b {")
    assert "qreg q[2];" in lines
    assert "h q[0];" in lines and "cx q[0],q[1];" in lines and "rz(0.1) q[1];" in lines
    assert "u3(1.0e-20,-2.5,3.0) q[0];" in lines
    assert "rzz(0.5) q[0],q[1];" in lines
    assert text.endswith(";\n")
    # no definitions when rzz/rxx/ryy are not used
    assert "gate" not in Circuit(1).h(0).to_qasm()


def test_to_qasm_binds_params_and_requires_inputs():
    c = Circuit(1)
    c.rx(0, c.input(0, c.new_param(2.0)))
    assert "rx(1.0) q[0];" in c.to_qasm(inputs=[0.5])
    assert "rx(1.5) q[0];" in c.to_qasm(params=[3.0], inputs=[0.5])
    assert "rx(0.5) q[0];" in c.to_qasm(params=torch.tensor([1.0]), inputs=torch.tensor([0.5]))
    with pytest.raises(ValueError, match="input"):
        c.to_qasm()
    with pytest.raises(ValueError, match="params must have shape"):
        c.to_qasm(params=[1.0, 2.0], inputs=[0.5])


@pytest.mark.parametrize("expr,value", [
    ("pi", math.pi),
    ("-pi/2", -math.pi / 2),
    ("- -pi", math.pi),
    ("+0.5", 0.5),
    ("pi/4 + 3*(0.5 - 1/4)", math.pi / 4 + 0.75),
    ("2*pi - (pi/3)*2", 2 * math.pi - 2 * math.pi / 3),
    ("1.5e-3", 1.5e-3),
    (".5E+1", 5.0),
    ("3.", 3.0),
    ("2^3^2", 2.0 ** 9),
    ("-2^2", -4.0),
    ("sin(pi/6)*2", 2 * math.sin(math.pi / 6)),
    ("sqrt(2) * cos(0) + exp(0) - ln(1) + tan(0)", math.sqrt(2) + 1),
    ("((((1))))", 1.0),
    ("1 - 2 - 3", -4.0),
    ("8 / 4 / 2", 1.0),
])
def test_angle_expressions(expr, value):
    c = from_qasm(HEADER + f"qreg q[1];\nrz({expr}) q[0];\n")
    assert c.ops[0].angles[0].value == pytest.approx(value, rel=1e-15, abs=1e-15)


def test_statements_that_do_not_change_the_state():
    text = HEADER + """
// a comment
qreg q[3];   // trailing comment
creg c[3];
barrier q;
h q[0];
barrier q[0], q[2];
id q[1];
cx q[0], q[1];
measure q[0] -> c[0];
measure q -> c;
"""
    c = from_qasm(text)
    assert [(op.name, op.wires) for op in c.ops] == [("h", (0,)), ("cnot", (0, 1))]


def test_register_broadcast_and_several_registers():
    c = from_qasm(HEADER + "qreg a[2];\nqreg b[2];\nh a;\ncx a, b;\ncz a[1], b;\n")
    assert c.n_qubits == 4
    assert [(op.name, op.wires) for op in c.ops] == [
        ("h", (0,)), ("h", (1,)), ("cnot", (0, 2)), ("cnot", (1, 3)),
        ("cz", (1, 2)), ("cz", (1, 3))]


def test_builtins_and_aliases():
    c = from_qasm("OPENQASM 2.0;\nqreg q[2];\nU(0.1,0.2,0.3) q[0];\nCX q[0],q[1];\n"
                  "u(1,2,3) q[1];\np(0.5) q[0];\n")
    assert [(op.name, [a.value for a in op.angles]) for op in c.ops] == [
        ("u3", [0.1, 0.2, 0.3]), ("cnot", []), ("u3", [1.0, 2.0, 3.0]), ("u1", [0.5])]


def test_user_gate_definitions_are_expanded():
    text = HEADER + """
gate my(a, b) x, y { rx(a/2) x; cx x, y; ry(-b) y; }
gate twice(t) x, y { my(t, 2*t) x, y; barrier x, y; my(t, t) y, x; }
qreg q[2];
twice(0.3) q[1], q[0];
"""
    c = from_qasm(text)
    manual = Circuit(2).rx(1, 0.15).cnot(1, 0).ry(0, -0.6).rx(0, 0.15).cnot(0, 1).ry(1, -0.3)
    assert [(op.name, op.wires) for op in c.ops] == [(op.name, op.wires) for op in manual.ops]
    torch.testing.assert_close(_state(c), _state(manual), atol=1e-14, rtol=0)


def test_definition_of_a_standard_gate_means_that_gate():
    text = HEADER + "gate rzz(theta) a,b { cx a,b; u1(theta) b; cx a,b; }\nqreg q[2];\n" \
        "rzz(0.4) q[0],q[1];\n"
    c = from_qasm(text)
    assert [(op.name, op.wires) for op in c.ops] == [("rzz", (0, 1))]


def test_no_eval():
    for evil in ("__import__('os').system('true')", "exec", "().__class__"):
        with pytest.raises(ValueError):
            from_qasm(HEADER + f"qreg q[1];\nrx({evil}) q[0];\n")


@pytest.mark.parametrize("body,match", [
    ("ccz q[0],q[1],q[2];", r"line 4: unsupported gate 'ccz'"),
    ("h q[0];\n\nsy q[1];", r"line 6: unsupported gate 'sy'"),
    ("ccx q[0],q[1];", r"line 4: gate ccx acts on 3 qubit"),
    ("cu1 q[0],q[1];", r"line 4: gate cu1 takes 1 angle"),
    ("measure q[0] -> d[0];", r"line 4: measure into 'd': classical register not declared"),
    ("creg c[2];\nmeasure q[0] -> c[2];", r"line 5: c\[2\] out of range \(size 2\)"),
    ("creg c[2];\nmeasure q -> c;", r"line 5: measure of 3 qubit\(s\) into 2 bit"),
    ("measure q[0] -> q[1];", r"classical register 'q'.*qubit register|'q': classical register a qubit"),
    ("creg c[3];\nmeasure q[1] -> c[1];\nh q[0];\ncx q[0], q[1];",
     r"line 7: gate cx acts on qubit 1 after its measurement on line 5: mid-circuit"),
    ("gate g a { g a; }", r"line 4: unsupported gate 'g' \(in the definition of g\)"),
    ("gate g a { h a; }\ngate g a { x a; }", r"line 5: gate g is defined twice"),
    ("gate g a, b { cx a; }", r"line 4: gate cx takes 0 angle\(s\) and 2 qubit\(s\), got 0 and 1"),
    ("reset q[0];", r"line 4: unsupported statement 'reset'"),
    ("creg c[1];\nif (c==1) x q[0];", r"line 5: unsupported statement 'if'"),
    ("opaque g q;", r"line 4: unsupported statement 'opaque'"),
    ("rx q[0];", r"line 4: gate rx takes 1 angle"),
    ("rx(0.1, 0.2) q[0];", r"line 4: gate rx takes 1 angle"),
    ("cx q[0];", r"line 4: gate cx acts on 2 qubit"),
    ("cx q[1],q[1];", r"line 4: gate cx: duplicate qubits"),
    ("h q[3];", r"line 4: q\[3\] out of range"),
    ("h r[0];", r"line 4: qubit register 'r' is not declared"),
    ("rx(1/0) q[0];", r"line 4: division by zero"),
    ("rx(theta) q[0];", r"line 4: unknown identifier 'theta'"),
    ("rx(sqrt(-1)) q[0];", r"line 4: sqrt"),
    ("rx(10^400) q[0];", r"line 4"),
    ("rx(0.1) q[0]", r"expected ';'"),
    ("rx(0.1 q[0];", r"line 4: expected '\)'"),
    ("h q[0]; $", r"line 4: unexpected character '\$'"),
    ("gate g a { foo a; }\ng q[0];", r"line 4: unsupported gate 'foo'"),
    ("gate g a { h b; }", r"line 4: 'b' is not an argument of gate g"),
    ("gate rx(t, u) a { h a; }", r"line 4: definition of rx has 2 parameter"),
    ("qreg q[2];", r"line 4: register 'q' declared twice"),
])
def test_errors_name_the_problem_and_line(body, match):
    with pytest.raises(ValueError, match=match):
        from_qasm(HEADER + "qreg q[3];\n" + body + "\n")


def test_header_errors():
    with pytest.raises(ValueError, match="only OpenQASM 2.0"):
        from_qasm("OPENQASM 3.0;\nqreg q[1];\n")
    with pytest.raises(ValueError, match="only qelib1.inc"):
        from_qasm('OPENQASM 2.0;\ninclude "stdgates.inc";\nqreg q[1];\n')
    with pytest.raises(ValueError, match="no qreg"):
        from_qasm(HEADER)
    with pytest.raises(ValueError, match="out of range|too many"):
        from_qasm(HEADER + "qreg q[40];\n")
    with pytest.raises(TypeError, match="str"):
        from_qasm(b"OPENQASM 2.0;")


def _bomb(levels: int) -> str:
    """Each definition calls the previous one twice: 2^levels gates from a few hundred bytes."""
    lines = [HEADER, "qreg q[1];", "gate g0 a { x a; x a; }"]
    lines += [f"gate g{k} a {{ g{k - 1} a; g{k - 1} a; }}" for k in range(1, levels)]
    lines.append(f"g{levels - 1} q[0];")
    return "\n".join(lines) + "\n"


def test_a_definition_bomb_is_refused_quickly():
    """917 bytes of nested definitions expand to 2^30 gates: refused before expanding."""
    import time

    text = _bomb(30)
    t0 = time.process_time()
    with pytest.raises(ValueError, match=r"gate g29 expands to 1073741824 gates.*limit of "
                                         r"1000000 \(from_qasm's max_gates\)"):
        from_qasm(text)
    assert time.process_time() - t0 < 5  # a bound for a hang, not a timing claim
    assert len(from_qasm(_bomb(10))) == 1024  # within the limit: expanded exactly
    with pytest.raises(ValueError, match="limit of 1000"):
        from_qasm(_bomb(10), max_gates=1000)


def test_definitions_nested_too_deeply_are_refused():
    lines = [HEADER, "qreg q[1];", "gate g0 a { x a; }"]
    lines += [f"gate g{k} a {{ g{k - 1} a; }}" for k in range(1, 70)]
    with pytest.raises(ValueError, match=r"line 69: gate definitions nested too deeply \(g64 "
                                         r"sits 65 levels deep; the limit is 64\)"):
        from_qasm("\n".join(lines) + "\n")


def test_long_or_deep_angle_expressions_are_refused_not_recursed():
    """1000 terms or 1000 nested parentheses had ended in RecursionError; 100 operands and
    operators is the limit (counted with the nesting), and up to it the value is exact."""
    body = "+".join(["0.001"] * 1000)
    for angle in (body, "(" * 1000 + "0.1" + ")" * 1000, "-" * 1000 + "0.1"):
        with pytest.raises(ValueError, match=r"line 4: angle expression too long or too "
                                             r"deeply nested \(more than 100"):
            from_qasm(HEADER + f"qreg q[1];\nrx({angle}) q[0];\n")
    c = from_qasm(HEADER + "qreg q[1];\nrx(" + "+".join(["0.01"] * 50) + ") q[0];\n"
                  "ry(" + "(" * 49 + "0.3" + ")" * 49 + ") q[0];\n")
    assert [op.angles[0].value for op in c.ops] == pytest.approx([0.5, 0.3])


def test_expanding_costly_expressions_is_bounded_by_max_gates():
    """Each expansion of a definition evaluates its angle expressions again: 64 nodes per
    allowed gate on average is the budget (a 2 KB file had taken seconds per 10k gates)."""
    sum99 = "+".join(["a"] * 50)  # 99 nodes
    lines = [HEADER, "qreg q[1];", f"gate g(a) t {{ rx({sum99}) t; }}"]
    fits = "\n".join(lines + ["g(0.001) q[0];"] * 600) + "\n"
    assert len(from_qasm(fits, max_gates=1000)) == 600  # 59,400 evaluations: within
    with pytest.raises(ValueError, match=r"take more than 64 x max_gates = 64000 evaluations"):
        from_qasm("\n".join(lines + ["g(0.001) q[0];"] * 700) + "\n", max_gates=1000)


@pytest.mark.parametrize("definition", ["gate g a,a { x a; }", "gate g(t,t) a { rx(t) a; }",
                                        "gate g(a) a { rx(a) a; }", "gate g(pi) a { rx(pi) a; }"])
def test_a_definition_with_clashing_names_is_refused(definition):
    """Repeated names (gate g a,a) had been accepted, the last binding winning, and a
    parameter named pi silently ignored."""
    with pytest.raises(ValueError, match=r"line 4: gate g: its parameter and qubit names must "
                                         r"be distinct and not pi"):
        from_qasm(HEADER + "qreg q[2];\n" + definition + "\n")


def test_measurement_at_the_end_and_on_other_qubits_is_accepted():
    c = from_qasm(HEADER + "qreg q[2];\ncreg c[2];\nh q[0];\nmeasure q[0] -> c[0];\n"
                           "barrier q;\nh q[1];\nmeasure q[1] -> c[1];\n")
    assert [(op.name, op.wires) for op in c.ops] == [("h", (0,)), ("h", (1,))]


def test_mid_circuit_measurement_is_refused_not_dropped():
    """h; measure; h gives P(0) = 1/2 on hardware; dropping the measurement gave P(0) = 1."""
    with pytest.raises(ValueError, match="gate h acts on qubit 0 after its measurement on "
                                         "line 6: mid-circuit measurement is not supported"):
        from_qasm(HEADER + "qreg q[1];\ncreg c[1];\nh q[0];\nmeasure q[0] -> c[0];\nh q[0];\n")
    # through a user gate too
    with pytest.raises(ValueError, match="mid-circuit"):
        from_qasm(HEADER + "gate hh a { h a; }\nqreg q[1];\ncreg c[1];\n"
                           "measure q -> c;\nhh q[0];\n")
