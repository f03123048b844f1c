"""Channel circuits: real gates plus ``reset`` on the registers of a mixed-memory head
(:class:`qlam.memory.mixed.MixedQLAM`), and their OpenQASM 2.0 writer.

Registers, 2n + 1 qubits in all (n = the head's qubits), every one starting in |0>:

* ``q[0..n-1]``: the memory (wire 0 the most significant bit of a basis-state index);
* ``fresh[0..n-1]``: the register each write prepares and swaps in;
* ``anc[0]``: one ancilla, used by every phase damping and every write, reset after each use.

Why not :class:`qlam.circuit.Circuit`: it describes unitary circuits that qlam's state-vector
simulator runs; ``reset`` is not unitary (and ``cry``, ``cswap`` are not in its gate set), so
a channel is a short list of instructions, :class:`ChannelCircuit`, with its own writer. The
file uses only the original qelib1.inc plus exact ``gate`` definitions for the gates outside
it, so strict readers (Qiskit's ``qasm2.loads``) read it; :func:`qlam.qasm.from_qasm` does not
(it reads unitary circuits only). :meth:`MixedQLAM.bound_channel
<qlam.memory.mixed.MixedQLAM.bound_channel>` builds one head's channel circuit;
:mod:`qlam.export_mixed` exports it with the model's own density matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qlam.circuit import GATES, Circuit
from qlam.openqasm import _DEFINITIONS, _fmt

# instructions outside qlam's gate set: name -> (number of wires, number of angles)
_CHANNEL_OPS = {"cry": (2, 1), "cswap": (3, 0), "reset": (1, 0)}
# exact definitions over the original qelib1.inc, emitted when used
_CHANNEL_DEFINITIONS = {
    "cry": "gate cry(theta) c,t { ry(theta/2) t; cx c,t; ry(-theta/2) t; cx c,t; }",
    "cswap": "gate cswap c,a,b { cx b,a; ccx c,a,b; cx b,a; }",
}
_ROTATIONS = ("rx", "ry", "rz", "rxx", "ryy", "rzz")  # inverse: the same gate, angle negated


@dataclass(frozen=True)
class Instruction:
    name: str  # a qlam gate name, "cry", "cswap" or "reset"
    wires: tuple[int, ...]  # 0..n-1 memory, n..2n-1 fresh, 2n the ancilla
    angles: tuple[float, ...] = ()


class ChannelCircuit:
    """Gates and resets on the registers q (memory), fresh and anc of an n-qubit head."""

    def __init__(self, n_memory: int):
        if isinstance(n_memory, bool) or not isinstance(n_memory, int) or n_memory < 1:
            raise ValueError(f"n_memory must be an int >= 1, got {n_memory!r}")
        self.n_memory = n_memory
        self.ops: list[Instruction] = []

    @property
    def n_qubits(self) -> int:
        return 2 * self.n_memory + 1

    @property
    def fresh(self) -> list[int]:
        return list(range(self.n_memory, 2 * self.n_memory))

    @property
    def ancilla(self) -> int:
        return 2 * self.n_memory

    def append(self, name: str, wires, angles=()) -> ChannelCircuit:
        name = "cnot" if name == "cx" else name
        shape = _CHANNEL_OPS.get(name) or GATES.get(name, (None, None))[:2]
        wires, angles = tuple(int(w) for w in wires), tuple(float(a) for a in angles)
        if shape[0] is None:
            raise ValueError(f"unknown instruction {name!r}")
        if (len(wires), len(angles)) != shape:
            raise ValueError(f"{name} takes {shape[0]} wire(s) and {shape[1]} angle(s), got "
                             f"wires {wires} and {len(angles)} angle(s)")
        if len(set(wires)) != len(wires) or not all(0 <= w < self.n_qubits for w in wires):
            raise ValueError(f"{name}: wires {wires} must be distinct, in 0..{self.n_qubits - 1}")
        if not all(math.isfinite(a) for a in angles):
            raise ValueError(f"{name}: angles must be finite, got {angles}")
        self.ops.append(Instruction(name, wires, angles))
        return self

    def extend(self, circuit: Circuit) -> ChannelCircuit:
        """Append a bound ``n_memory``-qubit Circuit's gates on the memory register."""
        if circuit.n_qubits != self.n_memory:
            raise ValueError(f"expected a {self.n_memory}-qubit circuit, got {circuit.n_qubits}")
        for op in circuit.ops:
            if any(a.kind != "const" for a in op.angles):
                raise ValueError("the circuit has unbound angles: bind it first")
            self.append(op.name, op.wires, [a.value for a in op.angles])
        return self

    # Circuit's reports read only ``ops`` (name, wires) and ``n_qubits``: shared as they are
    gate_count = Circuit.gate_count
    depth = Circuit.depth
    __len__ = Circuit.__len__

    def _wire(self, w: int) -> str:
        n = self.n_memory
        return f"q[{w}]" if w < n else f"fresh[{w - n}]" if w < 2 * n else "anc[0]"

    def to_qasm(self) -> str:
        """OpenQASM 2.0: qreg q (memory), fresh and anc, in that order (Qiskit qubits 0..n-1
        are the memory)."""
        used = {op.name for op in self.ops}
        lines = ["OPENQASM 2.0;", 'include "qelib1.inc";']
        lines += [text for g, text in {**_DEFINITIONS, **_CHANNEL_DEFINITIONS}.items() if g in used]
        lines += [f"qreg q[{self.n_memory}];", f"qreg fresh[{self.n_memory}];", "qreg anc[1];"]
        for op in self.ops:
            name = "cx" if op.name == "cnot" else op.name
            args = "(" + ",".join(_fmt(a) for a in op.angles) + ")" if op.angles else ""
            lines.append(f"{name}{args} {','.join(self._wire(w) for w in op.wires)};")
        return "\n".join(lines) + "\n"


def inverse(circuit: Circuit) -> Circuit:
    """The inverse of a bound circuit of rotation gates (reversed, angles negated)."""
    inv = Circuit(circuit.n_qubits)
    for op in reversed(circuit.ops):
        if op.name not in _ROTATIONS or op.angles[0].kind != "const":
            raise ValueError(f"inverse needs bound rotation gates, got {op.name}")
        inv.append(op.name, op.wires, -op.angles[0].value)
    return inv


def z_string_rotation(c: ChannelCircuit, mask: int, angle: float) -> None:
    """exp(-i angle/2 Z_S) on the memory, S the wires n-1-k of the set bits k of ``mask``."""
    n = c.n_memory
    wires = sorted(n - 1 - k for k in range(n) if (mask >> k) & 1)
    if len(wires) == 1:
        c.append("rz", wires, [angle])
    elif len(wires) == 2:
        c.append("rzz", wires, [angle])
    else:  # the parity of the string onto its last wire, RZ there, undone
        ladder = list(zip(wires[:-1], wires[1:]))
        for a, b in ladder:
            c.append("cx", (a, b))
        c.append("rz", wires[-1:], [angle])
        for a, b in reversed(ladder):
            c.append("cx", (a, b))


__all__ = ["ChannelCircuit", "Instruction", "inverse", "z_string_rotation"]
