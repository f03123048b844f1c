"""Quantum LSTM baseline (Chen, Yoo and Fang, "Quantum Long Short-Term Memory", 2020).

An LSTM whose four gates are variational quantum circuits (VQCs) simulated with qlam:

    v_t = [h_{t-1}, x_t]                               (x_t: the embedded token)
    z_g = W_g v_t + b_g                                (n_qubits angles per gate g)
    q_g = <Z_0 .. Z_{n-1}> of VQC_g(z_g)               (n_qubits expectations)
    f, i, o = sigmoid(P_g q_g + c_g),  g~ = tanh(P_g q_g + c_g)   (P_g: n_qubits -> d_model)
    c_t = f * c_{t-1} + i * g~,   h_t = o * tanh(c_t)

Each VQC (:func:`gate_circuit`) follows the paper: H on every qubit, angle encoding
RY(arctan z) RZ(arctan z^2), then ``depth`` variational layers of CNOT rings (qubit distance 1
and 2) and a general rotation R(a, b, c) = RZ RY RZ on every qubit, then Pauli-Z readouts.
The classical maps in and out of the circuits (W_g, P_g) let the hidden width ``d_model``
differ from ``n_qubits``, as in the common PennyLane implementations; the paper's extra
VQCs for h_t and y_t are replaced by this classical P_g.

Simulation: the circuit is compiled once (:class:`qlam.sim.CompiledCircuit`) into dense
blocks, rebuilt from the trainable angles once per forward pass, and input phase vectors;
every token then costs a few (batch, gates, 2^n) products for all four gates at once. The
recurrence is inherently sequential, so a 784-token sequence means 784 small simulation
steps: QLSTM is by far the slowest model here.

The classifier shares QLAM's conventions: Linear embedding, final LayerNorm, mean pooling.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qlam.circuit import Angle, Circuit
from qlam.models.common import check_input, check_pool, pool_tokens, token_embedding
from qlam.sim.compiled import CompiledCircuit, FixedBlock, PhaseBlock
from qlam.sim.gates import bits
from qlam.sim.statevector import complex_dtype, unitary

GATES = ("forget", "input", "update", "output")


def gate_circuit(n_qubits: int, depth: int = 2) -> Circuit:
    """One gate's VQC. Inputs: ``x[q] = arctan z_q`` and ``x[n + q] = arctan z_q^2``.

    The encoding H, RY(x_q), RZ(x_{n+q}) is written with RY(a) = S H RZ(a) H S^dagger
    so that the compiler fuses every qubit's encoding into two phase vectors."""
    c = Circuit(n_qubits)
    qubits = range(n_qubits)
    for q in qubits:  # H, then the basis change of RY: H S^dagger
        c.h(q).sdg(q).h(q)
    for q in qubits:
        c.rz(q, c.input(q))
    for q in qubits:
        c.h(q).s(q)
    for q in qubits:
        c.rz(q, c.input(n_qubits + q))
    for _ in range(depth):
        for dist in (1, 2):
            if n_qubits > dist:
                for q in qubits:
                    c.cnot(q, (q + dist) % n_qubits)
        for q in qubits:
            c.rz(q, c.new_param())
            c.ry(q, c.new_param())
            c.rz(q, c.new_param())
    return c


def _phase_map(block: PhaseBlock, n_inputs: int, n_params: int):
    """A phase block as phases = x @ lin + theta @ par + bias: lin (n_inputs, 2^n),
    par (n_params, 2^n), bias (2^n,), for angles that are constants, parameters, or affine in
    the inputs with constant coefficients."""
    coeff = block.coeff_matrix(torch.float64, None)  # (K, N)
    k_count = len(block.angles)
    lin = torch.zeros(k_count, n_inputs, dtype=torch.float64)
    par = torch.zeros(k_count, n_params, dtype=torch.float64)
    bias = torch.zeros(k_count, dtype=torch.float64)
    for k, a in enumerate(block.angles):
        if a is None:
            bias[k] = 1.0
        elif a.kind == "const":
            bias[k] = a.value
        elif a.kind == "param":
            par[k, a.index] = 1.0
        elif not isinstance(a.a, Angle) and not isinstance(a.b, Angle):
            lin[k, a.index], bias[k] = a.a, a.b
        else:
            raise ValueError(f"phase angle {a}: trainable input coefficients are not supported")
    return lin.t() @ coeff, par.t() @ coeff, bias @ coeff


class QLSTMCell(nn.Module):
    """One QLSTM layer over a whole sequence: (B, L, d_model) -> (B, L, d_model)."""

    def __init__(self, d_model: int, n_qubits: int = 4, depth: int = 2):
        super().__init__()
        if not 1 <= n_qubits <= 10:
            raise ValueError(f"n_qubits must be in 1..10 for the QLSTM gates, got {n_qubits}")
        if depth < 1 or d_model < 1:
            raise ValueError(f"need depth, d_model >= 1, got {depth}, {d_model}")
        self.d_model, self.n_qubits, self.depth = d_model, n_qubits, depth
        n_gates = len(GATES)
        self.circuit = gate_circuit(n_qubits, depth)
        self.compiled = CompiledCircuit(self.circuit)
        self._plan: list[tuple[str, int]] = []  # ("U", fixed index) or ("D", phase index)
        fixed, lins, pars, biases = [], [], [], []
        for block in self.compiled.blocks:
            if isinstance(block, FixedBlock):
                self._plan.append(("U", len(fixed)))
                fixed.append(block)
            else:
                lin, par, bias = _phase_map(block, self.circuit.n_inputs, self.circuit.n_params)
                self._plan.append(("D", len(lins)))
                lins.append(lin)
                pars.append(par)
                biases.append(bias)
        self._fixed = fixed
        self.register_buffer("phase_lin", torch.stack(lins).float(), persistent=False)
        self.register_buffer("phase_par", torch.stack(pars).float(), persistent=False)
        self.register_buffer("phase_bias", torch.stack(biases).float(), persistent=False)
        z = torch.stack([1 - 2 * bits(n_qubits, q) for q in range(n_qubits)], -1)
        self.register_buffer("zsign", z.float(), persistent=False)  # (2^n, n): <Z_q> = probs @ zsign
        # classical maps into the circuits (from [h, x]) and out of them (to d_model)
        self.in_h = nn.Linear(d_model, n_gates * n_qubits, bias=False)
        self.in_x = nn.Linear(d_model, n_gates * n_qubits)
        self.theta = nn.Parameter(torch.empty(n_gates, self.circuit.n_params).uniform_(-math.pi, math.pi))
        self.out_w = nn.Parameter(torch.randn(n_gates, n_qubits, d_model) / math.sqrt(n_qubits))
        self.out_b = nn.Parameter(torch.zeros(n_gates, d_model))

    def unitaries(self) -> list[torch.Tensor]:
        """The input-independent part of the four gates' circuits, rebuilt from theta: per
        fixed block a (G, 2^n, 2^n) complex unitary, then per phase block (G, 2^n) phases."""
        dense = [unitary(block.ops, self.n_qubits, self.theta.double()).to(
            complex_dtype(self.theta.dtype)) for block in self._fixed]
        phases = [self.theta @ par + bias for par, bias in zip(self.phase_par, self.phase_bias)]
        return dense + phases

    def expectations(self, z: torch.Tensor, us: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The gates' readouts: z (B, G, n) circuit angles -> <Z_q> (B, G, n)."""
        us = self.unitaries() if us is None else us
        feats = torch.cat([torch.atan(z), torch.atan(z * z)], -1)  # (B, G, 2n)
        psi = None
        for kind, i in self._plan:
            if kind == "U":
                u = us[i].to(complex_dtype(z.dtype))
                if psi is None:  # first block acts on |0...0>: its first column
                    psi = u[:, :, 0].expand(z.shape[0], -1, -1)
                else:
                    psi = torch.einsum("bgj,gij->bgi", psi, u)
            else:
                phase = feats @ self.phase_lin[i].to(z.dtype) + us[len(self._fixed) + i].to(z.dtype)
                if psi is None:  # a phase on |0...0> is a global phase
                    psi = torch.zeros(*z.shape[:2], 2**self.n_qubits, dtype=complex_dtype(z.dtype),
                                      device=z.device)
                    psi[..., 0] = 1
                psi = psi * torch.polar(torch.ones_like(phase), phase)
        probs = psi.real.square() + psi.imag.square()
        return probs @ self.zsign.to(z.dtype)

    def gates(self, q: torch.Tensor) -> torch.Tensor:
        """Readouts (B, G, n) -> gate pre-activations (B, G, d_model)."""
        return torch.einsum("bgn,gnd->bgd", q, self.out_w) + self.out_b

    def forward(self, x: torch.Tensor, state=None):
        """x (B, L, d_model) -> (h for every token (B, L, d_model), (h_L, c_L))."""
        b, length, _ = x.shape
        g, n = len(GATES), self.n_qubits
        h, c = state if state is not None else (x.new_zeros(b, self.d_model),) * 2
        zx = self.in_x(x).view(b, length, g, n)  # the token part of every step, at once
        us = self.unitaries()
        outs = []
        for t in range(length):
            z = zx[:, t] + self.in_h(h).view(b, g, n)
            pre = self.gates(self.expectations(z, us))
            f, i, u, o = pre.unbind(1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(u)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs, 1), (h, c)


class QLSTMClassifier(nn.Module):
    """(B, L, n_features) -> (B, n_classes) with ``n_layers`` stacked QLSTM layers."""

    def __init__(self, n_features: int, n_classes: int, d_model: int = 16, n_layers: int = 1,
                 n_qubits: int = 4, depth: int = 2, dropout: float = 0.0, pool: str = "mean",
                 discrete: bool = False):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.n_features, self.pool, self.discrete = n_features, check_pool(pool), discrete
        self.embed = token_embedding(n_features, d_model, discrete)
        self.layers = nn.ModuleList(QLSTMCell(d_model, n_qubits, depth) for _ in range(n_layers))
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.n_features, self.discrete)
        h = self.embed(x)
        for layer in self.layers:
            h, _ = layer(h)
            h = self.drop(h)
        return pool_tokens(self.norm(h), self.pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
