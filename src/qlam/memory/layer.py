"""The QLAM layer: an input-conditioned quantum memory read by query-dependent measurements.

Per head (an independent register of n qubits), token x_t evolves the memory by a
parameterized circuit built from real gates (:func:`qlam.memory.circuits.token_circuit`):

    |psi_t> = U(x_t) |psi_{t-1}>,   U(x) = prod_r  W_r · D_r(x)

where D_r(x) holds the input-driven RZ / RZZ rotations (angles Delta_h · proj(x)) and W_r the
trainable RX / RY / RXX / RYY layer (angles Delta_h · theta). Delta_h is a learnable time
scale per head: the token circuit is one Trotter step exp(-i Delta_h H(x_t)) of a
Schrodinger evolution, and Delta_h starts log-uniform in [dt_min, dt_max] so that the
rotation accumulated over the sequence (L · Delta) spans O(1) to O(100) across heads (the
S4 lesson: a memory that neither freezes nor scrambles).

The readout is a query-dependent measurement: the token's query q_t picks the measurement
basis (RZ(q_t) then a trained unitary V, :func:`~qlam.memory.circuits.readout_circuit`) and,
by the Born rule,
the probabilities give the expectations of all 2^n - 1 Pauli-Z strings in that basis; the
query also weights them, so each output channel reads <psi_t| O(q_t) |psi_t> with
O(q) = sum_k w_k(q) P_k. Expectations are exact, or estimated from ``shots`` samples.
Setting ``noise`` (a :class:`qlam.sim.noise.Channel` or "depolarizing:0.01") evaluates under
that channel on every qubit after every token, one quantum trajectory per example (seeded by
``generator``; no gradients, see :mod:`qlam.sim.noise`).

The circuits are lowered once to scan layers (:mod:`qlam.sim.lowering`) and run by the scan
(:mod:`qlam.sim.scan`); :mod:`qlam.memory.reference` is the same layer in plain complex
arithmetic, for reading and for tests.

Shapes: x (B, L, d_model) -> y (B, L, d_model), state (B, H, 2^n) complex.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from qlam.circuit import MAX_QUBITS, Circuit
from qlam.memory.circuits import prep_circuit, readout_circuit, token_circuit
from qlam.optim_hints import mark_memory
from qlam.sim.lowering import Lowered, lower
from qlam.sim.measure import sample_probs, walsh_matrix
from qlam.sim.scan import scan
from qlam.sim.scan.noisy import noisy_scan
from qlam.sim.statevector import complex_dtype, unitary

MAX_MEMORY_QUBITS = 12  # one dense 2^n x 2^n unitary per head and layer


def check_index(name: str, value, size: int) -> int:
    """``value`` as an int in 0..size-1, or a TypeError / ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value < size:
        raise ValueError(f"{name} {value} out of range: 0..{size - 1}")
    return int(value)


def check_tokens(tokens, length: int) -> int:
    """The number of tokens to export: ``length`` when None, else an int in 1..length."""
    tokens = length if tokens is None else tokens
    if isinstance(tokens, bool) or not isinstance(tokens, (int, np.integer)):
        raise TypeError(f"tokens must be an int, got {type(tokens).__name__}")
    if not 1 <= tokens <= length:
        raise ValueError(f"tokens must lie in 1..{length} (the sequence length), got {tokens}")
    return int(tokens)


def _lower_checked(circuit) -> Lowered:
    """The memory's circuits as scan layers whose phases take plain input angles."""
    lowered = lower(circuit)
    if lowered.param_map.abs().sum() or any(ops is None for ops in lowered.dense):
        raise ValueError("memory circuits must alternate input phases and trainable dense "
                         "blocks")
    return lowered


class QLAM(nn.Module):
    """Quantum long-attention memory over ``n_heads`` registers of ``n_qubits`` each.

    forward(x (B, L, d_model), state=None) -> (y (B, L, d_model), state (B, H, 2^n) complex)
    """

    def __init__(self, d_model: int, n_heads: int = 4, n_qubits: int = 4, depth: int = 1,
                 query_basis: bool = True, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 backward: str = "auto", shots: int | None = None):
        super().__init__()
        if not 1 <= n_qubits <= min(MAX_MEMORY_QUBITS, MAX_QUBITS):
            raise ValueError(f"n_qubits={n_qubits}: the memory supports 1..{MAX_MEMORY_QUBITS} "
                             f"qubits per head (a dense 2^n x 2^n unitary per head)")
        if n_heads < 1 or depth < 1 or d_model < 1:
            raise ValueError(f"need n_heads, depth, d_model >= 1, got {n_heads}, {depth}, {d_model}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        self.d_model, self.n_heads, self.n_qubits, self.depth = d_model, n_heads, n_qubits, depth
        self.backward_mode = backward
        self.shots = shots
        self.generator: torch.Generator | None = None
        self.noise = None  # a qlam.sim.noise.Channel: noisy evaluation (trajectories)
        n_states = 2**n_qubits

        self.circuit = token_circuit(n_qubits, depth)
        self._token = _lower_checked(self.circuit)
        self.n_angles = self.circuit.n_inputs  # input angles per head and token
        # phases of layer r = angles @ A[r] + c[r]: (R, n_angles, N), (R, N)
        self._register_phase_map("phase", self._token)
        # input -> rotation angles of every head (Delta_h scales them, see module docstring)
        self.in_proj = nn.Linear(d_model, n_heads * self.n_angles)
        self.theta = nn.Parameter(torch.randn(n_heads, self.circuit.n_params))
        self.log_dt = nn.Parameter(
            torch.linspace(math.log(dt_min), math.log(dt_max), n_heads)[torch.randperm(n_heads)])
        self.prep = prep_circuit(n_qubits)
        self.prep_theta = nn.Parameter(self.prep.init_params(torch.float32).repeat(n_heads, 1))

        self.query_basis = query_basis
        if query_basis:
            self.read = readout_circuit(n_qubits)
            self._read = _lower_checked(self.read)
            self._register_phase_map("read", self._read)
            self.q_basis = nn.Linear(d_model, n_heads * n_qubits)
            nn.init.normal_(self.q_basis.weight, std=0.02)
            nn.init.zeros_(self.q_basis.bias)
            self.read_theta = nn.Parameter(0.1 * torch.randn(n_heads, self.read.n_params))
        # query weights over the Pauli-Z strings (1 + small at init), then the output map
        self.q_weight = nn.Linear(d_model, n_heads * (n_states - 1))
        nn.init.normal_(self.q_weight.weight, std=0.02)
        nn.init.ones_(self.q_weight.bias)
        self.register_buffer("walsh", walsh_matrix(n_qubits).float(), persistent=False)
        self.out_proj = nn.Linear(n_heads * (n_states - 1), d_model)
        # the quantum parameters: their own learning-rate scale, no weight decay
        mark_memory(self.theta, self.log_dt, self.prep_theta,
                    *((self.read_theta,) if query_basis else ()))

    # ---- circuits -> tensors -----------------------------------------------------------
    def _register_phase_map(self, name: str, lowered: Lowered) -> None:
        self.register_buffer(f"{name}_map", lowered.input_map.float(), persistent=False)
        self.register_buffer(f"{name}_offset", lowered.offset.float(), persistent=False)

    def _phases(self, x: torch.Tensor, proj: nn.Linear, scale: torch.Tensor | None,
                name: str) -> torch.Tensor:
        """(B, L, H, R, N) phases of x (B, L, d): ``proj`` gives each head's input angles
        (times ``scale`` (H,)), mapped to phases by the buffers ``name``_map / _offset. One
        Linear layer with the maps folded into its weights (a GEMM over d, not a tiny one
        over the angles)."""
        a_map = getattr(self, f"{name}_map").to(x.dtype)  # (R, F, N)
        offset = getattr(self, f"{name}_offset").to(x.dtype)  # (R, N)
        h, (r, f, n) = self.n_heads, a_map.shape
        weight = proj.weight.view(h, f, -1).to(x.dtype)
        bias = proj.bias.view(h, f).to(x.dtype)
        if scale is not None:
            weight, bias = weight * scale[:, None, None], bias * scale[:, None]
        w_eff = torch.einsum("hfd,rfn->hrnd", weight, a_map).reshape(h * r * n, -1)
        b_eff = (torch.einsum("hf,rfn->hrn", bias, a_map) + offset).reshape(-1)
        return nn.functional.linear(x, w_eff, b_eff).view(*x.shape[:2], h, r, n)

    @staticmethod
    def _dense(lowered: Lowered, thetas: torch.Tensor) -> torch.Tensor:
        """(H, R, 2, N, N) real pairs of each head's fused unitaries (built in float64)."""
        u = lowered.unitaries(thetas.double())
        return torch.stack([u.real, u.imag], -3)

    def dt(self) -> torch.Tensor:
        return self.log_dt.exp()

    def initial_state(self, batch: int, dtype=torch.float32) -> torch.Tensor:
        """(B, H, 2^n) complex: the learned product state of every head."""
        psi = unitary(self.prep.ops, self.n_qubits, self.prep_theta.double())[:, :, 0]
        return psi.to(complex_dtype(dtype)).expand(batch, -1, -1)

    def _check_state(self, state: torch.Tensor, batch: int) -> torch.Tensor:
        want = (batch, self.n_heads, 2**self.n_qubits)
        if not isinstance(state, torch.Tensor) or not state.is_complex():
            raise TypeError(f"state must be a complex tensor of shape {want}")
        if tuple(state.shape) != want:
            raise ValueError(f"state must have shape {want}, got {tuple(state.shape)}")
        norms = state.abs().pow(2).sum(-1)
        if not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
            bad = (norms - 1).abs().max().item()
            raise ValueError(f"state is not normalised (max | |psi|^2 - 1 | = {bad:.3g})")
        return state

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got {x.dtype}")
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"input must have shape (batch, length, {self.d_model}), "
                             f"got {tuple(x.shape)}")
        if x.dtype != self.in_proj.weight.dtype:
            raise TypeError(f"input is {x.dtype} but the layer's parameters are "
                            f"{self.in_proj.weight.dtype}: convert one to the other "
                            "(x.to(layer.in_proj.weight.dtype), or layer.to(x.dtype))")
        if not torch.isfinite(x).all():
            raise ValueError("input contains NaN or inf")

    # ---- forward ------------------------------------------------------------------------
    def probabilities(self, x: torch.Tensor, state: torch.Tensor | None = None):
        """Born-rule probabilities (B, L, H, 2^n) of every token's readout, and the final
        state (B, H, 2^n) complex."""
        self._check_input(x)
        b, length, _ = x.shape
        h, n_states = self.n_heads, 2**self.n_qubits
        state = self.initial_state(b, x.dtype) if state is None else self._check_state(state, b)
        psi0 = torch.stack([state.real, state.imag], -2).to(x.dtype)
        dt = self.dt().to(x.dtype)
        # one phase vector per (token, head, layer): (B, L, H, R, N) from Delta_h in_proj(x)
        phases = self._phases(x, self.in_proj, dt, "phase")
        w = self._dense(self._token, self.theta.double() * self.dt().double()[:, None])
        read_phases = w_read = None
        if self.query_basis:
            read_phases = self._phases(x, self.q_basis, None, "read")[:, :, :, 0]
            w_read = self._dense(self._read, self.read_theta)[:, 0].to(x.dtype)
        if self.noise is not None:  # evaluation under noise: trajectories, no gradients
            probs, last = noisy_scan(psi0, phases, w.to(x.dtype), read_phases, w_read,
                                     self.noise, self.generator)
        else:
            probs, last = scan(psi0, phases, w.to(x.dtype), read_phases, w_read,
                               backward=self.backward_mode)
        final = torch.complex(last[..., 0, :], last[..., 1, :])
        assert probs.shape == (b, length, h, n_states)
        return probs, final

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        probs, final = self.probabilities(x, state)
        if self.shots is not None:
            probs = sample_probs(probs.detach(), self.shots, self.generator)
        z = probs @ self.walsh.to(probs.dtype)  # (B, L, H, N-1) Pauli-Z expectations
        feats = z.flatten(2) * self.q_weight(x)
        return self.out_proj(feats), final

    def step(self, x_t: torch.Tensor, state: torch.Tensor | None = None):
        """One token: x_t (B, d_model) -> (y_t (B, d_model), state)."""
        if x_t.dim() != 2:
            raise ValueError(f"step expects x_t of shape (batch, {self.d_model}), "
                             f"got {tuple(x_t.shape)}")
        y, state = self(x_t.unsqueeze(1), state)
        return y[:, 0], state

    # ---- evaluation and export ---------------------------------------------------------
    def set_readout(self, shots: int | None = None, noise=None,
                    generator: torch.Generator | None = None) -> None:
        """Measure with ``shots`` Born-rule samples per readout and/or under ``noise`` (a
        Channel: trajectories, no gradients), sampled from ``generator``; all None: exact."""
        self.shots, self.noise, self.generator = shots, noise, generator

    def exact_copy(self) -> nn.Module:
        """A float64 CPU copy with the exact readout (no shots, no noise)."""
        mem64 = copy.deepcopy(self).cpu().double()
        mem64.set_readout()
        return mem64

    @torch.no_grad()
    def bound_circuits(self, x: torch.Tensor, head: int, tokens: int | None = None):
        """One head's circuits for one sequence x (1, L, d_model), every angle a number:
        (state preparation + the first ``tokens`` token circuits, the readout circuit of
        token ``tokens`` (None without a query basis), tokens). Angles are computed in x's
        precision (:meth:`exact_copy` and a float64 x give the exported ones)."""
        head = check_index("head", head, self.n_heads)
        tokens = check_tokens(tokens, x.shape[1])
        x = x[:, :tokens]
        dt = self.dt()[head]
        angles = self.in_proj(x).view(tokens, self.n_heads, self.n_angles)[:, head] * dt
        theta = self.theta[head] * dt
        circuit = Circuit(self.n_qubits)
        circuit.extend(self.prep.bind(self.prep_theta[head]))
        for t in range(tokens):
            circuit.extend(self.circuit.bind(theta, angles[t]))
        readout = None
        if self.query_basis:
            q = self.q_basis(x[0, -1]).view(self.n_heads, self.n_qubits)[head]
            readout = self.read.bind(self.read_theta[head], q)
        return circuit, readout, tokens

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, heads={self.n_heads}, qubits={self.n_qubits}, "
                f"depth={self.depth}, query_basis={self.query_basis}, shots={self.shots}"
                + (f", noise={self.noise}" if self.noise is not None else ""))
