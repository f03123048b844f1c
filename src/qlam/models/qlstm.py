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

Simulation: the circuit is lowered once (:func:`qlam.sim.lowering.lower`) into layers
W_r · diag(exp(i phi_r)): dense W_r rebuilt from the trainable angles once per forward pass,
phases affine in the inputs and angles; every token then costs a few (batch, gates, 2^n)
products for all four gates at once. The
recurrence is inherently sequential, so a 784-token sequence means 784 small simulation
steps: QLSTM is by far the slowest model here.

The classifier shares QLAM's conventions: Linear embedding, final LayerNorm, mean pooling.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qlam.circuit import Circuit
from qlam.memory.checks import full_precision
from qlam.models.common import (
    SequenceClassifier,
    pool_tokens,
)
from qlam.optim_hints import mark_memory, mark_no_decay
from qlam.sim.gates import bits
from qlam.sim.lowering import lower
from qlam.sim.statevector import complex_dtype

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
        self.lowered = lower(self.circuit)
        # phases of layer r = feats @ phase_lin[r] + theta @ phase_par[r] + phase_bias[r]
        self.register_buffer("phase_lin", self.lowered.input_map.float(), persistent=False)
        self.register_buffer("phase_par", self.lowered.param_map.float(), persistent=False)
        self.register_buffer("phase_bias", self.lowered.offset.float(), persistent=False)
        z = torch.stack([1 - 2 * bits(n_qubits, q) for q in range(n_qubits)], -1)
        self.register_buffer("zsign", z.float(), persistent=False)  # (2^n, n): <Z_q> = probs @ zsign
        # classical maps into the circuits (from [h, x]) and out of them (to d_model)
        self.in_h = nn.Linear(d_model, n_gates * n_qubits, bias=False)
        self.in_x = nn.Linear(d_model, n_gates * n_qubits)
        self.theta = nn.Parameter(torch.empty(n_gates, self.circuit.n_params).uniform_(-math.pi, math.pi))
        mark_memory(self.theta)  # the circuits' angles: no weight decay, own learning rate
        self.out_w = nn.Parameter(torch.randn(n_gates, n_qubits, d_model) / math.sqrt(n_qubits))
        self.out_b = nn.Parameter(torch.zeros(n_gates, d_model))
        mark_no_decay(self.out_b)  # the four gates' biases, one matrix

    def unitaries(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The input-independent part of the four gates' circuits, rebuilt from theta:
        W (G, R, 2^n, 2^n) complex and the angles' share of the phases (G, R, 2^n)."""
        dense = self.lowered.unitaries(self.theta.double()).to(complex_dtype(self.theta.dtype))
        phases = torch.einsum("gp,rpn->grn", self.theta, self.phase_par) + self.phase_bias
        return dense, phases

    @full_precision
    def expectations(self, z: torch.Tensor, us=None) -> torch.Tensor:
        """The gates' readouts: z (B, G, n) circuit angles -> <Z_q> (B, G, n)."""
        dense, fixed_phases = self.unitaries() if us is None else us
        dense = dense.to(complex_dtype(z.dtype))
        feats = torch.cat([torch.atan(z), torch.atan(z * z)], -1)  # (B, G, 2n)
        phases = torch.einsum("bgf,rfn->bgrn", feats, self.phase_lin.to(z.dtype))
        phases = phases + fixed_phases.to(z.dtype)
        rot = torch.polar(torch.ones_like(phases), phases)  # (B, G, R, 2^n)
        psi = dense[:, 0, :, 0] * rot[:, :, 0, :1]  # layer 0 on |0...0>: W_0's first column
        for r in range(1, self.lowered.n_layers):
            psi = torch.einsum("bgj,gij->bgi", psi * rot[:, :, r], dense[:, r])
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


class QLSTMClassifier(SequenceClassifier):
    """(B, L, n_features) -> (B, n_classes) with ``n_layers`` stacked QLSTM layers."""

    def __init__(self, n_features: int, n_classes: int, d_model: int = 16, n_layers: int = 1,
                 n_qubits: int = 4, depth: int = 2, dropout: float = 0.0, pool: str = "mean",
                 discrete: bool = False):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.embed_inputs(n_features, d_model, pool, discrete)
        self.layers = nn.ModuleList(QLSTMCell(d_model, n_qubits, depth) for _ in range(n_layers))
        self.drop = nn.Dropout(dropout)
        self.output_layers(d_model, n_classes)

    def features(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        """(B, L, n_features) -> pooled (B, d_model); ``lengths`` (B,): right padding."""
        self.check_input(x)
        h = self.embed(x)
        for layer in self.layers:
            h, _ = layer(h)
            h = self.drop(h)
        return pool_tokens(self.norm(h), self.pool, lengths)
