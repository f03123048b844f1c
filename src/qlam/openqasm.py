"""The OpenQASM 2.0 format for the qelib1.inc gate set, circuit-free: :func:`dumps` writes a
bound circuit's gates, :func:`loads` reads text into a qubit count and a gate list.
:class:`qlam.circuit.Circuit` (``to_qasm`` / ``from_qasm``) and :mod:`qlam.qasm` build on them.

``dumps`` writes every angle at full float precision. ``swap``, ``rzz``, ``rxx`` and ``ryy`` are not in the
original qelib1.inc, so when a circuit uses them their ``gate`` definitions (exact, no global
phase) are emitted after the include; any OpenQASM 2 reader, Qiskit's strict
``qasm2.loads`` included, can then read the file back.

``loads`` reads the whole qelib1.inc gate set (expanded exactly, global phase included, into
native gates: :mod:`qlam.qelib1`) plus ``ryy``, ``U``, ``CX``, user ``gate`` definitions
(expanded in place; one named like a library gate means that gate), several ``qreg``s,
broadcasting (``h q;``) and angle expressions (numbers, ``pi``, ``+ - * / ^``, sin cos tan exp
ln sqrt; never ``eval``: :mod:`qlam.openqasm_expr`). Reading is bounded: an angle expression
holds at most :data:`qlam.openqasm_expr.MAX_EXPRESSION` operands and operators, expansion at
most ``max_gates`` gates, :data:`MAX_NESTING` levels of definitions and
:data:`WORK_PER_GATE` x ``max_gates`` evaluated expression nodes. ``measure`` is accepted at
the end of a qubit's circuit; a gate after it (mid-circuit measurement), a measure into an
undeclared or too small creg, ``reset``, ``if``, ``opaque`` and unknown gates are a
``ValueError`` naming the line.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from qlam.openqasm_expr import TokenReader, evaluate, expr_size
from qlam.qelib1 import LIBRARY

# QASM name -> (qlam name, number of angles, number of qubits): qlam's native gates.
_QASM_GATES: dict[str, tuple[str, int, int]] = {
    "x": ("x", 0, 1), "y": ("y", 0, 1), "z": ("z", 0, 1), "h": ("h", 0, 1),
    "s": ("s", 0, 1), "sdg": ("sdg", 0, 1), "t": ("t", 0, 1), "tdg": ("tdg", 0, 1),
    "rx": ("rx", 1, 1), "ry": ("ry", 1, 1), "rz": ("rz", 1, 1),
    "u1": ("u1", 1, 1), "p": ("u1", 1, 1),
    "u2": ("u2", 2, 1),
    "u3": ("u3", 3, 1), "u": ("u3", 3, 1), "U": ("u3", 3, 1),
    "cx": ("cnot", 0, 2), "CX": ("cnot", 0, 2), "cz": ("cz", 0, 2), "swap": ("swap", 0, 2),
    "rzz": ("rzz", 1, 2), "rxx": ("rxx", 1, 2), "ryy": ("ryy", 1, 2),
}

# Exact definitions in terms of qelib1.inc gates, emitted when a circuit uses them.
_DEFINITIONS = {
    "swap": "gate swap a,b { cx a,b; cx b,a; cx a,b; }",
    "rzz": "gate rzz(theta) a,b { cx a,b; rz(theta) b; cx a,b; }",
    "rxx": "gate rxx(theta) a,b { h a; h b; cx a,b; rz(theta) b; cx a,b; h a; h b; }",
    "ryy": ("gate ryy(theta) a,b { rx(pi/2) a; rx(pi/2) b; cx a,b; rz(theta) b; cx a,b; "
            "rx(-pi/2) a; rx(-pi/2) b; }"),
}

MAX_GATES = 1_000_000  # default bound on the expanded gate count of one file
MAX_NESTING = 64  # gate definitions within definitions
WORK_PER_GATE = 64  # expression nodes evaluated per expanded gate, on average, at most



# ---- writing ------------------------------------------------------------------------------
def _fmt(value: float) -> str:
    """Shortest repr that round-trips, always with a decimal point (QASM 2 reals need one)."""
    s = repr(float(value))
    mant, e, exp = s.partition("e")
    if "." not in mant:
        mant += ".0"
    return mant + e + exp


def dumps(bound) -> str:
    """OpenQASM 2.0 text of a bound circuit (``n_qubits`` and ``ops`` whose angles are all
    constants)."""
    used = {op.name for op in bound.ops}
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";']
    lines += [text for g, text in _DEFINITIONS.items() if g in used]
    lines.append(f"qreg q[{bound.n_qubits}];")
    for op in bound.ops:
        name = "cx" if op.name == "cnot" else op.name
        args = "(" + ",".join(_fmt(a.value) for a in op.angles) + ")" if op.angles else ""
        wires = ",".join(f"q[{w}]" for w in op.wires)
        lines.append(f"{name}{args} {wires};")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Def:
    """A gate definition: parameter and qubit names, body [(name, exprs, args, line)], and
    what it expands to: ``size`` native gates, ``nesting`` levels of definitions, ``work``
    expression nodes evaluated."""

    params: list[str]
    qargs: list[str]
    body: list
    size: int
    nesting: int
    work: int


class _Parser(TokenReader):
    def __init__(self, text: str, max_gates: int = MAX_GATES, library: dict | None = None):
        super().__init__(text)
        self.max_gates = max_gates
        self.qregs: dict[str, tuple[int, int]] = {}  # name -> (offset, size)
        self.cregs: dict[str, int] = {}
        self.n_qubits = 0
        self.library = library or {}  # qelib1.inc gates outside the native set
        self.defs: dict[str, _Def] = dict(self.library)
        self.ops: list[tuple[str, list[float], list[int], int]] = []  # (qasm name, angles, wires, line)
        self.work = 0  # expression nodes the expansion evaluates
        self.measured: dict[int, int] = {}  # wire -> line of its measurement

    # -- statements
    def parse(self) -> tuple[int, list]:
        if self.tok.kind == "id" and self.tok.text == "OPENQASM":
            t = self.next()
            ver = self.next()
            if ver.text not in ("2.0", "2"):
                raise ValueError(f"line {t.line}: only OpenQASM 2.0 is supported, got {ver.text}")
            self.expect(";")
        while self.tok.kind != "eof":
            self.statement()
        if not self.qregs:
            raise ValueError("no qreg declared")
        gates = []
        for name, angles, wires, line in self.ops:
            qname = _QASM_GATES[name][0]
            for a in angles:
                if not math.isfinite(a):
                    raise ValueError(f"line {line}: gate {name}: angle {a} is not finite")
            gates.append((qname, wires, angles, line))
        return self.n_qubits, gates

    def statement(self):
        t = self.ident("a statement")
        kw = t.text
        if kw == "OPENQASM":
            raise ValueError(f"line {t.line}: OPENQASM must be the first statement")
        if kw == "include":
            s = self.next()
            if s.kind != "string":
                raise ValueError(f"line {t.line}: include needs a quoted file name")
            if s.text.strip('"') != "qelib1.inc":
                raise ValueError(f"line {t.line}: cannot include {s.text}; only qelib1.inc")
            self.expect(";")
        elif kw in ("qreg", "creg"):
            name = self.ident("a register name").text
            self.expect("[")
            size = self.integer()
            self.expect("]")
            self.expect(";")
            if name in self.qregs or name in self.cregs:
                raise ValueError(f"line {t.line}: register {name!r} declared twice")
            if kw == "qreg":
                if size < 1:
                    raise ValueError(f"line {t.line}: qreg {name} must have at least 1 qubit")
                self.qregs[name] = (self.n_qubits, size)
                self.n_qubits += size
                if self.n_qubits > 64:  # Circuit reports the real limit; keep ints small
                    raise ValueError(f"line {t.line}: {self.n_qubits} qubits is too many")
            else:
                self.cregs[name] = size
        elif kw == "gate":
            self.gate_definition(t.line)
        elif kw == "barrier":
            self.qubit_args()
            self.expect(";")
        elif kw == "measure":
            self.measure(t.line)
        elif kw in ("opaque", "reset", "if"):
            what = {"opaque": "opaque gate declarations", "reset": "reset (not unitary)",
                    "if": "classically controlled gates (if)"}[kw]
            raise ValueError(f"line {t.line}: unsupported statement {kw!r}: {what}")
        else:
            exprs = self.expr_list()
            args = self.qubit_args()
            self.expect(";")
            angles = [evaluate(e, {}, t.line) for e in exprs]
            self.call(kw, angles, args, t.line)

    def measure(self, line: int):
        """``measure q[i] -> c[j];`` or equal-size registers: no gate may follow on q."""
        qubits = self.qubit_arg()
        self.expect("->")
        c = self.ident("a classical register")
        if c.text not in self.cregs:
            kind = "a qubit register" if c.text in self.qregs else "not declared"
            raise ValueError(f"line {c.line}: measure into {c.text!r}: classical register {kind}")
        size = n_bits = self.cregs[c.text]
        if self.accept("["):
            k = self.integer()
            self.expect("]")
            if k >= size:
                raise ValueError(f"line {c.line}: {c.text}[{k}] out of range (size {size})")
            n_bits = 1
        self.expect(";")
        if n_bits != len(qubits):
            raise ValueError(f"line {line}: measure of {len(qubits)} qubit(s) into {n_bits} bit(s)")
        for w in qubits:
            self.measured.setdefault(w, line)

    def skip_to_semicolon(self):
        while not self.accept(";"):
            if self.tok.kind == "eof":
                raise ValueError(f"line {self.tok.line}: expected ';'")
            self.i += 1

    def qubit_args(self) -> list[list[int]]:
        """Each argument as a list of wires (a whole register or one qubit)."""
        args = [self.qubit_arg()]
        while self.accept(","):
            args.append(self.qubit_arg())
        return args

    def qubit_arg(self) -> list[int]:
        t = self.ident("a qubit register")
        if t.text not in self.qregs:
            kind = "a classical register" if t.text in self.cregs else "not declared"
            raise ValueError(f"line {t.line}: qubit register {t.text!r} is {kind}")
        offset, size = self.qregs[t.text]
        if self.accept("["):
            k = self.integer()
            self.expect("]")
            if k >= size:
                raise ValueError(f"line {t.line}: {t.text}[{k}] out of range (size {size})")
            return [offset + k]
        return list(range(offset, offset + size))

    def gate_definition(self, line: int):
        name = self.ident("a gate name").text
        params = []
        if self.accept("("):
            if not self.accept(")"):
                params.append(self.ident("a parameter name").text)
                while self.accept(","):
                    params.append(self.ident("a parameter name").text)
                self.expect(")")
        qargs = [self.ident("a qubit argument").text]
        while self.accept(","):
            qargs.append(self.ident("a qubit argument").text)
        names = params + qargs
        if len(set(names)) != len(names) or "pi" in params:
            raise ValueError(f"line {line}: gate {name}: its parameter and qubit names must be "
                             f"distinct and not pi, got ({', '.join(params)}) {', '.join(qargs)}")
        self.expect("{")
        body, size, nesting, work = [], 0, 0, 0
        while not self.accept("}"):
            t = self.ident("a gate call in the body")
            if t.text == "barrier":
                self.skip_to_semicolon()
                continue
            exprs = self.expr_list()
            bargs = [self.ident("a qubit argument").text]
            while self.accept(","):
                bargs.append(self.ident("a qubit argument").text)
            self.expect(";")
            for b in bargs:
                if b not in qargs:
                    raise ValueError(f"line {t.line}: {b!r} is not an argument of gate {name}")
            n_angles, n_wires = self.arity(t.text, t.line, f" (in the definition of {name})")
            if (len(exprs), len(bargs)) != (n_angles, n_wires):
                raise ValueError(f"line {t.line}: gate {t.text} takes {n_angles} angle(s) and "
                                 f"{n_wires} qubit(s), got {len(exprs)} and {len(bargs)}")
            sub = self.defs.get(t.text)
            size += sub.size if sub else 1
            nesting = max(nesting, sub.nesting if sub else 0)
            work += sum(map(expr_size, exprs)) + (sub.work if sub else 0)
            body.append((t.text, exprs, bargs, t.line))
        if name in _QASM_GATES or name in self.library:
            n_angles, n_wires = self.arity(name, line)
            if (len(params), len(qargs)) != (n_angles, n_wires):
                raise ValueError(
                    f"line {line}: definition of {name} has {len(params)} parameter(s) and "
                    f"{len(qargs)} qubit(s); the standard gate has {n_angles} and {n_wires}")
            return  # the standard gate itself (e.g. our own rzz/rxx/ryy definitions)
        if name in self.defs:
            raise ValueError(f"line {line}: gate {name} is defined twice")
        if nesting + 1 > MAX_NESTING:
            raise ValueError(f"line {line}: gate definitions nested too deeply ({name} sits "
                             f"{nesting + 1} levels deep; the limit is {MAX_NESTING})")
        self.defs[name] = _Def(params, qargs, body, size, nesting + 1, work)

    def arity(self, name: str, line: int, where: str = "") -> tuple[int, int]:
        """(angles, qubits) of a native or defined gate; a ValueError for any other name."""
        if name not in _QASM_GATES and name not in self.defs:
            raise ValueError(f"line {line}: unsupported gate {name!r}{where}")
        d = self.defs.get(name)
        return _QASM_GATES[name][1:] if d is None else (len(d.params), len(d.qargs))

    def call(self, name: str, angles: list[float], args: list[list[int]], line: int):
        n_angles, n_wires = self.arity(name, line)
        if len(angles) != n_angles:
            raise ValueError(f"line {line}: gate {name} takes {n_angles} angle(s), got {len(angles)}")
        if len(args) != n_wires:
            raise ValueError(f"line {line}: gate {name} acts on {n_wires} qubit(s), got {len(args)}")
        sizes = {len(a) for a in args if len(a) > 1}
        if len(sizes) > 1:
            raise ValueError(f"line {line}: gate {name}: registers of different sizes")
        width = sizes.pop() if sizes else 1
        need = width * (self.defs[name].size if name in self.defs else 1)
        if len(self.ops) + need > self.max_gates:
            raise ValueError(
                f"line {line}: gate {name} expands to {need} gates, {len(self.ops) + need} in "
                f"all: more than the limit of {self.max_gates} (from_qasm's max_gates)")
        self.work += width * (self.defs[name].work if name in self.defs else 0)
        if self.work > WORK_PER_GATE * self.max_gates:
            raise ValueError(
                f"line {line}: the gate definitions' angle expressions take more than "
                f"{WORK_PER_GATE} x max_gates = {WORK_PER_GATE * self.max_gates} evaluations "
                "to expand (from_qasm's max_gates)")
        for k in range(width):
            wires = [a[k] if len(a) > 1 else a[0] for a in args]
            if len(set(wires)) != len(wires):
                raise ValueError(f"line {line}: gate {name}: duplicate qubits {wires}")
            self.expand(name, angles, wires, line)

    def expand(self, name: str, angles: list[float], wires: list[int], line: int):
        """Append the native gates of one (checked) gate call."""
        if name in _QASM_GATES:
            for w in wires:
                if w in self.measured:
                    raise ValueError(
                        f"line {line}: gate {name} acts on qubit {w} after its measurement on "
                        f"line {self.measured[w]}: mid-circuit measurement is not supported "
                        "(measure at the end of the circuit)")
            self.ops.append((name, angles, wires, line))
            return
        d = self.defs[name]
        env, qmap = dict(zip(d.params, angles)), dict(zip(d.qargs, wires))
        for bname, exprs, bargs, bline in d.body:
            vals = [evaluate(e, env, bline) for e in exprs]
            self.expand(bname, vals, [qmap[b] for b in bargs], line)


@functools.cache
def _library() -> dict[str, _Def]:
    """The parsed :mod:`qlam.qelib1` definitions (parsed once)."""
    parser = _Parser(LIBRARY)
    while parser.tok.kind != "eof":
        parser.statement()
    return parser.defs


def loads(text: str, max_gates: int = MAX_GATES) -> tuple[int, list[tuple[str, list[int], list[float], int]]]:
    """Parse OpenQASM 2.0 text: (number of qubits, [(qlam gate name, wires, angles, line)]);
    a file that expands to more than ``max_gates`` gates is refused."""
    if not isinstance(text, str):
        raise TypeError(f"from_qasm expects the QASM text as a str, got {type(text).__name__}")
    return _Parser(text, max_gates, _library()).parse()
