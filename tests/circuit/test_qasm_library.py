"""The whole qelib1.inc gate set (Qiskit's copy of the file): every gate reads, and its
matrix equals Qiskit's own gate class exactly, global phase included (issue 21)."""

import math
import re

import pytest
import torch

from qlam.qasm import from_qasm
from qlam.sim.statevector import unitary

qiskit = pytest.importorskip("qiskit")
from qiskit import qasm2  # noqa: E402
from qiskit.quantum_info import Operator  # noqa: E402

QELIB1 = (__import__("pathlib").Path(qiskit.__file__).parent / "qasm" / "libs" / "qelib1.inc")
CLASSES = {ci.name: ci for ci in qasm2.LEGACY_CUSTOM_INSTRUCTIONS}


def qelib1_gates() -> list[str]:
    names = re.findall(r"^\s*gate\s+([A-Za-z_][A-Za-z0-9_]*)", QELIB1.read_text(), re.M)
    assert len(names) >= 40, names
    return names


def test_the_list_is_qiskits_qelib1():
    assert set(qelib1_gates()) <= set(CLASSES)


@pytest.mark.parametrize("name", qelib1_gates())
def test_gate_matches_qiskit_class_matrix(name):
    ci = CLASSES[name]
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    angles = (torch.rand(ci.num_params, generator=g, dtype=torch.float64) * 4 * math.pi
              - 2 * math.pi).tolist()
    if name == "u0":  # Qiskit's u0(n) is n identity "delays": its angle must be an integer
        angles = [3.0]
    k = ci.num_qubits
    args = f"({','.join(repr(a) for a in angles)})" if angles else ""
    wires = ",".join(f"q[{i}]" for i in range(k))
    circuit = from_qasm(f'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[{k}];\n{name}{args} {wires};\n')
    ours = unitary(circuit.ops, k) if circuit.ops else torch.eye(2**k, dtype=torch.complex128)
    # Qiskit orders basis states with qubit 0 least significant; qlam's wire 0 is the most
    theirs = torch.from_numpy(Operator(ci.constructor(*angles)).reverse_qargs().data)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_a_benchmark_style_circuit_matches_qiskit():
    """Library gates mixed with broadcasting and user definitions, against Qiskit's reader."""
    text = """OPENQASM 2.0;
include "qelib1.inc";
gate maj a,b,c { cx c,b; cx c,a; ccx a,b,c; }
qreg q[4];
creg c[4];
h q;
sx q[0]; cu3(0.3,0.2,0.1) q[0],q[1]; maj q[1],q[2],q[3];
crx(0.7) q[3],q[0]; cswap q[0],q[1],q[2]; c3x q[0],q[1],q[2],q[3];
rccx q[1],q[2],q[0]; csx q[2],q[3]; cy q[0],q[3]; ch q[1],q[0];
measure q -> c;
"""
    from qiskit.quantum_info import Statevector

    from qlam import statevector

    ours = statevector(from_qasm(text))[0]
    qc = qasm2.loads(text, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    qc.remove_final_measurements()
    theirs = torch.from_numpy(Statevector(qc.reverse_bits()).data)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
