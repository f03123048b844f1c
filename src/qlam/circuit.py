"""Circuit description: real gates whose angles come from parameter sources.

A :class:`Circuit` is a list of :class:`Op` (gate name, wires, angles). Each angle is an
:class:`Angle`: a constant, a trainable parameter ``theta[i]``, or an affine function of an
input feature ``a * x[j] + b`` (``a`` and ``b`` constants or trainable parameters). The
description holds no simulator state; ``qlam.sim`` executes it (PennyLane's split between
a circuit and the device that runs it).

Wire 0 is the most significant bit of a basis-state index (PennyLane's convention;
Qiskit is the reverse).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch

from qlam import openqasm

# name -> (number of wires, number of angles, diagonal in the computational basis)
GATES: dict[str, tuple[int, int, bool]] = {
    "x": (1, 0, False), "y": (1, 0, False), "z": (1, 0, True), "h": (1, 0, False),
    "s": (1, 0, True), "sdg": (1, 0, True), "t": (1, 0, True), "tdg": (1, 0, True),
    "rx": (1, 1, False), "ry": (1, 1, False), "rz": (1, 1, True),
    "u1": (1, 1, True), "u2": (1, 2, False), "u3": (1, 3, False),
    "cnot": (2, 0, False), "cz": (2, 0, True), "swap": (2, 0, False),
    "rzz": (2, 1, True), "rxx": (2, 1, False), "ryy": (2, 1, False),
}

# 2^n complex128 amplitudes per batch row; beyond this a state no longer fits comfortably.
MAX_QUBITS = 26


@dataclass(frozen=True)
class Angle:
    """Where a rotation angle comes from.

    kind "const": ``value``; kind "param": ``theta[index]``; kind "input":
    ``a * x[index] + b`` where ``a`` and ``b`` are floats or parameter Angles.
    """

    kind: str
    value: float = 0.0
    index: int = -1
    a: float | Angle = 1.0
    b: float | Angle = 0.0

    @property
    def is_input(self) -> bool:
        return self.kind == "input"

    @property
    def param_indices(self) -> list[int]:
        if self.kind == "param":
            return [self.index]
        if self.kind == "input":
            return [s.index for s in (self.a, self.b) if isinstance(s, Angle)]
        return []

    def evaluate(self, theta: torch.Tensor | None, x: torch.Tensor | None) -> torch.Tensor | float:
        """The angle as a float, a 0-d tensor (param) or a tensor of x's leading shape (input)."""
        if self.kind == "const":
            return self.value
        if self.kind == "param":
            return theta[self.index]
        feature = x[..., self.index]
        a = self.a.evaluate(theta, x) if isinstance(self.a, Angle) else self.a
        b = self.b.evaluate(theta, x) if isinstance(self.b, Angle) else self.b
        return a * feature + b

    def __str__(self) -> str:
        if self.kind == "const":
            return f"{self.value:.4g}"
        if self.kind == "param":
            return f"θ{self.index}"
        a = str(self.a) if isinstance(self.a, Angle) else f"{self.a:.3g}"
        b = self.b if isinstance(self.b, Angle) else (f"{self.b:.3g}" if self.b else "")
        return f"{a}·x{self.index}" + (f"+{b}" if b else "")


def const(value: float) -> Angle:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"angle must be finite, got {value}")
    return Angle("const", value=value)


def _as_wire(w):
    """numpy and 0-d tensor integers as ints; anything else unchanged (checked later)."""
    if isinstance(w, (int, bool)):
        return w
    try:
        return operator.index(w)
    except TypeError:
        return w


@dataclass(frozen=True)
class Op:
    name: str
    wires: tuple[int, ...]
    angles: tuple[Angle, ...] = ()

    @property
    def is_input(self) -> bool:
        return any(a.is_input for a in self.angles)

    @property
    def diagonal(self) -> bool:
        return GATES[self.name][2]


@dataclass
class Circuit:
    """An n-qubit circuit of real gates with trainable and input-driven angles.

    Gates chain (each method returns the circuit); angles are numbers, trainable parameters
    (:meth:`new_param`) or affine input features (:meth:`input`). Simulate with
    :func:`qlam.statevector`; train with :class:`qlam.CircuitLayer`.

    Example:
        >>> c = Circuit(2)
        >>> c.h(0).cnot(0, 1).ry(1, c.new_param(0.3)).rz(0, c.input(0, a=0.5))  # doctest: +ELLIPSIS
        Circuit(...)
        >>> c.n_params, c.n_inputs
        (1, 1)
    """

    n_qubits: int
    ops: list[Op] = field(default_factory=list)
    init: list[float] = field(default_factory=list)  # initial values of the trainable parameters

    def __post_init__(self):
        if not isinstance(self.n_qubits, int) or isinstance(self.n_qubits, bool):
            raise TypeError(f"n_qubits must be an int, got {type(self.n_qubits).__name__}")
        if not 1 <= self.n_qubits <= MAX_QUBITS:
            raise ValueError(
                f"n_qubits={self.n_qubits} out of range: a state vector needs 2^n amplitudes, "
                f"qlam supports 1..{MAX_QUBITS} qubits"
            )

    # ---- parameters -------------------------------------------------------------------
    def new_param(self, init: float = 0.0) -> Angle:
        """Allocate a trainable parameter with an initial value; returns its Angle."""
        init = float(init)
        if not math.isfinite(init):
            raise ValueError(f"initial parameter value must be finite, got {init}")
        self.init.append(init)
        return Angle("param", index=len(self.init) - 1)

    @property
    def n_params(self) -> int:
        return len(self.init)

    @property
    def n_inputs(self) -> int:
        """Number of input features the circuit reads (1 + the largest feature index)."""
        idx = [a.index for op in self.ops for a in op.angles if a.is_input]
        return max(idx) + 1 if idx else 0

    def init_params(self, dtype=torch.float64) -> torch.Tensor:
        return torch.tensor(self.init, dtype=dtype)

    # ---- building ---------------------------------------------------------------------
    def _angle(self, value) -> Angle:
        if isinstance(value, Angle):
            for i in value.param_indices:
                if not 0 <= i < self.n_params:
                    raise ValueError(f"parameter index {i} out of range (circuit has {self.n_params})")
            if value.kind == "input" and value.index < 0:
                raise ValueError(f"input feature index must be >= 0, got {value.index}")
            if value.kind not in ("const", "param", "input"):
                raise ValueError(f"angle kind must be const, param or input, got {value.kind!r}")
            for v in (value.value, value.a, value.b):
                if not isinstance(v, Angle) and not math.isfinite(v):
                    raise ValueError(f"angle must be finite, got {value}")
            for v in (value.a, value.b):  # an affine coefficient is a number or a parameter
                if isinstance(v, Angle) and v.kind != "param":
                    raise ValueError(f"input coefficients must be numbers or parameters, got {v}")
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return const(value)
        if isinstance(value, torch.Tensor) and value.requires_grad:
            raise TypeError(
                "a tensor that requires grad cannot be a circuit angle: it would be frozen into "
                "a constant. Declare a trainable angle with c.new_param(init) and pass its values "
                "as params=... to qlam.statevector, or wrap the circuit in qlam.CircuitLayer "
                "(an nn.Module that registers them as parameters)")
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return const(float(value))
        raise TypeError(f"angle must be a number or an Angle, got {type(value).__name__}")

    def input(self, feature: int, a: float | Angle = 1.0, b: float | Angle = 0.0) -> Angle:
        """The angle ``a * x[feature] + b``."""
        if not isinstance(feature, int) or feature < 0:
            raise ValueError(f"input feature index must be an int >= 0, got {feature!r}")
        for s in (a, b):
            if not isinstance(s, Angle):
                const(s)  # validates finiteness
        return self._angle(Angle("input", index=feature, a=a, b=b))

    def append(self, name: str, wires, angles=()) -> Circuit:
        if not isinstance(name, str):
            raise TypeError(f"gate name must be a str, got {type(name).__name__}")
        name = name.lower()
        if name == "cx":
            name = "cnot"
        if name not in GATES:
            raise ValueError(f"unknown gate {name!r}; known: {', '.join(GATES)}")
        n_wires, n_angles, _ = GATES[name]
        wires = tuple(wires) if isinstance(wires, (tuple, list, range)) else (wires,)
        wires = tuple(_as_wire(w) for w in wires)
        if len(wires) != n_wires:
            raise ValueError(f"gate {name} acts on {n_wires} wire(s), got wires {wires}")
        for w in wires:
            if not isinstance(w, int) or isinstance(w, bool):
                raise TypeError(f"gate {name}: wire must be an int, got {w!r}")
            if not 0 <= w < self.n_qubits:
                raise ValueError(f"gate {name}: wire {w} out of range for {self.n_qubits} qubits")
        if len(set(wires)) != len(wires):
            raise ValueError(f"gate {name}: duplicate wires {wires}")
        angles = tuple(angles) if isinstance(angles, (tuple, list)) else (angles,)
        if len(angles) != n_angles:
            raise ValueError(f"gate {name} takes {n_angles} angle(s), got {len(angles)}")
        self.ops.append(Op(name, wires, tuple(self._angle(a) for a in angles)))
        return self

    def x(self, w): return self.append("x", w)
    def y(self, w): return self.append("y", w)
    def z(self, w): return self.append("z", w)
    def h(self, w): return self.append("h", w)
    def s(self, w): return self.append("s", w)
    def sdg(self, w): return self.append("sdg", w)
    def t(self, w): return self.append("t", w)
    def tdg(self, w): return self.append("tdg", w)
    def rx(self, w, angle): return self.append("rx", w, angle)
    def ry(self, w, angle): return self.append("ry", w, angle)
    def rz(self, w, angle): return self.append("rz", w, angle)
    def u1(self, w, lam): return self.append("u1", w, (lam,))
    def u2(self, w, phi, lam): return self.append("u2", w, (phi, lam))
    def u3(self, w, theta, phi, lam): return self.append("u3", w, (theta, phi, lam))
    def cnot(self, control, target): return self.append("cnot", (control, target))
    def cz(self, a, b): return self.append("cz", (a, b))
    def swap(self, a, b): return self.append("swap", (a, b))
    def rzz(self, a, b, angle): return self.append("rzz", (a, b), angle)
    def rxx(self, a, b, angle): return self.append("rxx", (a, b), angle)
    def ryy(self, a, b, angle): return self.append("ryy", (a, b), angle)

    def extend(self, other: Circuit) -> Circuit:
        """Append another circuit's gates, re-indexing its trainable parameters."""
        if other.n_qubits != self.n_qubits:
            raise ValueError(f"cannot extend a {self.n_qubits}-qubit circuit with {other.n_qubits}")
        offset = self.n_params
        self.init.extend(other.init)

        def shift(a):
            if not isinstance(a, Angle):
                return a
            if a.kind == "param":
                return Angle("param", index=a.index + offset)
            if a.kind == "input":
                return Angle("input", index=a.index, a=shift(a.a), b=shift(a.b))
            return a

        self.ops.extend(Op(op.name, op.wires, tuple(shift(a) for a in op.angles)) for op in other.ops)
        return self

    # ---- binding and reports ----------------------------------------------------------
    def bind(self, params=None, inputs=None) -> Circuit:
        """A copy with every angle a number: ``params`` (n_params,), ``inputs`` (n_inputs,)."""
        theta = torch.as_tensor(self.init if params is None else params, dtype=torch.float64)
        if theta.shape != (self.n_params,):
            raise ValueError(f"params must have shape ({self.n_params},), got {tuple(theta.shape)}")
        x = None
        if self.n_inputs:
            if inputs is None:
                raise ValueError(f"circuit reads {self.n_inputs} input feature(s); pass inputs")
            x = torch.as_tensor(inputs, dtype=torch.float64)
            if x.shape != (self.n_inputs,):
                raise ValueError(f"inputs must have shape ({self.n_inputs},), got {tuple(x.shape)}")
        bound = Circuit(self.n_qubits)
        for op in self.ops:
            vals = [float(a.evaluate(theta, x)) for a in op.angles]
            bound.ops.append(Op(op.name, op.wires, tuple(const(v) for v in vals)))
        return bound

    def gate_count(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.name] = counts.get(op.name, 0) + 1
        return counts

    def depth(self) -> int:
        level = [0] * self.n_qubits
        for op in self.ops:
            d = max(level[w] for w in op.wires) + 1
            for w in op.wires:
                level[w] = d
        return max(level, default=0)

    def __len__(self) -> int:
        return len(self.ops)

    def summary(self) -> str:
        counts = ", ".join(f"{k}:{v}" for k, v in sorted(self.gate_count().items()))
        return (f"Circuit({self.n_qubits} qubits, {len(self.ops)} gates [{counts}], "
                f"depth {self.depth()}, {self.n_params} trainable parameters, "
                f"{self.n_inputs} input features)")

    def draw(self) -> str:
        """A text drawing, one row per wire, one column per gate layer."""
        cols: list[dict[int, str]] = []
        level = [0] * self.n_qubits
        for op in self.ops:
            lo, hi = min(op.wires), max(op.wires)
            d = max(level[w] for w in range(lo, hi + 1))
            while len(cols) <= d:
                cols.append({})
            label = op.name.upper()
            if op.angles:
                label += "(" + ",".join(str(a) for a in op.angles) + ")"
            if op.name == "cnot":
                cols[d][op.wires[0]], cols[d][op.wires[1]] = "●", "X"
            elif len(op.wires) == 2:
                cols[d][op.wires[0]] = label
                cols[d][op.wires[1]] = "●" if op.name == "cz" else label
            else:
                cols[d][op.wires[0]] = label
            for w in range(lo, hi + 1):
                cols[d].setdefault(w, "│")
                level[w] = d + 1
        rows = []
        for w in range(self.n_qubits):
            cells = []
            for col in cols:
                width = max(len(s) for s in col.values())
                cells.append(col.get(w, "─").center(width, "─"))
            rows.append(f"{w}: ─" + "─".join(cells) + "─")
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.summary() + "\n" + self.draw()

    # ---- OpenQASM 2.0 -----------------------------------------------------------------
    def to_qasm(self, params=None, inputs=None) -> str:
        """OpenQASM 2.0 text with every angle bound to ``params`` (n_params,) (the initial
        values when None) and ``inputs`` (n_inputs,) (required when the circuit reads input
        features); the format: :mod:`qlam.openqasm`."""
        return openqasm.dumps(self.bind(params, inputs))

    @staticmethod
    def from_qasm(text: str, max_gates: int = openqasm.MAX_GATES) -> Circuit:
        """A circuit with constant angles from OpenQASM 2.0 text (:mod:`qlam.openqasm`); a
        file that expands to more than ``max_gates`` gates is refused."""
        n_qubits, gates = openqasm.loads(text, max_gates)
        circuit = Circuit(n_qubits)
        for name, wires, angles, line in gates:
            try:
                circuit.append(name, wires, angles)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"line {line}: {exc}") from None
        return circuit
