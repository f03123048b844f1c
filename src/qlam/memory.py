"""The QLAM layer: an input-conditioned quantum memory read by query-dependent measurements.

Per head (an independent register of n qubits), token x_t evolves the memory by a
parameterized circuit built from real gates (:func:`token_circuit`):

    |psi_t> = U(x_t) |psi_{t-1}>,   U(x) = prod_r  W_r · D_r(x)

where D_r(x) holds the input-driven RZ / RZZ rotations (angles Delta_h · proj(x)) and W_r the
trainable RX / RY / RXX / RYY layer (angles Delta_h · theta). Delta_h is a learnable time
scale per head: the token circuit is one Trotter step exp(-i Delta_h H(x_t)) of a
Schrodinger evolution, and Delta_h starts log-uniform in [dt_min, dt_max] so that the
rotation accumulated over the sequence (L · Delta) spans O(1) to O(100) across heads (the
S4 lesson: a memory that neither freezes nor scrambles).

The readout is a query-dependent measurement: the token's query q_t picks the measurement
basis (RZ(q_t) then a trained unitary V, :func:`readout_circuit`) and, by the Born rule,
the probabilities give the expectations of all 2^n - 1 Pauli-Z strings in that basis; the
query also weights them, so each output channel reads <psi_t| O(q_t) |psi_t> with
O(q) = sum_k w_k(q) P_k. Expectations are exact, or estimated from ``shots`` samples.
Setting ``noise`` (a :class:`qlam.sim.noise.Channel` or "depolarizing:0.01") evaluates under
that channel on every qubit after every token, one quantum trajectory per example (seeded by
``generator``; no gradients, see :mod:`qlam.sim.noise`).

Shapes: x (B, L, d_model) -> y (B, L, d_model), state (B, H, 2^n) complex.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qlam.circuit import MAX_QUBITS, Circuit
from qlam.sim.compiled import CompiledCircuit, FixedBlock, PhaseBlock
from qlam.sim.measure import sample_counts
from qlam.sim.recurrence import scan
from qlam.sim.statevector import complex_dtype, unitary
from qlam.templates import ring

MAX_MEMORY_QUBITS = 12  # one dense 2^n x 2^n unitary per head and layer


def token_circuit(n_qubits: int, depth: int = 1) -> Circuit:
    """One token's evolution: per layer, input RZ on every qubit and RZZ on the ring
    (inputs ``depth * (n + pairs)`` angles, in that order), then trainable RX, RY on every
    qubit and RXX, RYY on the ring. Trainable values are placeholders (the layer supplies
    Delta_h · theta)."""
    c = Circuit(n_qubits)
    pairs = ring(n_qubits)
    j = 0
    for _ in range(depth):
        for q in range(n_qubits):
            c.rz(q, c.input(j))
            j += 1
        for a, b in pairs:
            c.rzz(a, b, c.input(j))
            j += 1
        for q in range(n_qubits):
            c.rx(q, c.new_param())
            c.ry(q, c.new_param())
        for a, b in pairs:
            c.rxx(a, b, c.new_param())
            c.ryy(a, b, c.new_param())
    return c


def readout_circuit(n_qubits: int) -> Circuit:
    """The measurement basis: RZ(query) on every qubit, then trainable RY, RZ on every qubit
    and RXX on the ring (then measure in the computational basis)."""
    c = Circuit(n_qubits)
    for q in range(n_qubits):
        c.rz(q, c.input(q))
    for q in range(n_qubits):
        c.ry(q, c.new_param())
        c.rz(q, c.new_param())
    for a, b in ring(n_qubits):
        c.rxx(a, b, c.new_param())
    return c


def prep_circuit(n_qubits: int) -> Circuit:
    """The learned product initial state: RY, RZ on every qubit (starts at |+>^n)."""
    c = Circuit(n_qubits)
    for q in range(n_qubits):
        c.ry(q, c.new_param(math.pi / 2))
        c.rz(q, c.new_param(0.0))
    return c


def _split(compiled: CompiledCircuit) -> tuple[list[PhaseBlock], list[FixedBlock]]:
    """A circuit compiled as (D_0, W_0, D_1, W_1, ...), checked."""
    blocks = compiled.blocks
    ok = len(blocks) % 2 == 0 and all(
        isinstance(b, PhaseBlock if i % 2 == 0 else FixedBlock) for i, b in enumerate(blocks))
    if not ok:
        raise ValueError(f"expected alternating phase/dense blocks, got {compiled.describe()}")
    return blocks[0::2], blocks[1::2]


def walsh_matrix(n_qubits: int) -> torch.Tensor:
    """(2^n, 2^n - 1): column S is the sign (-1)^{popcount(z & S)} of the Z-string S on basis
    state z, so ``probs @ walsh`` are the expectations of every non-identity Z-string."""
    z = torch.arange(2**n_qubits)
    s = torch.arange(1, 2**n_qubits)
    par = torch.zeros(len(z), len(s), dtype=torch.long)
    both = z[:, None] & s[None, :]
    for k in range(n_qubits):
        par ^= (both >> k) & 1
    return (1 - 2 * par).double()


def sample_probs(probs: torch.Tensor, shots: int, generator=None) -> torch.Tensor:
    """Empirical frequencies of ``shots`` Born-rule samples from each row of probs (..., N)."""
    return sample_counts(probs, shots, generator) / shots


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
        phase_blocks, self._fixed_blocks = _split(CompiledCircuit(self.circuit))
        self.n_angles = self.circuit.n_inputs  # input angles per head and token
        # phases of layer r = angles @ A[r] + c[r]: (R, n_angles, N), (R, N)
        self._register_phase_map("phase", phase_blocks, self.n_angles)
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
            read_phase, self._read_fixed = (b[0] for b in _split(CompiledCircuit(self.read)))
            self._register_phase_map("read", [read_phase], n_qubits)
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

    # ---- circuits -> tensors -----------------------------------------------------------
    def _register_phase_map(self, name: str, blocks, n_inputs: int) -> None:
        maps = [blk.affine_map(n_inputs) for blk in blocks]
        assert all(m is not None for m in maps), "memory circuits take plain input angles"
        self.register_buffer(f"{name}_map", torch.stack([m[0] for m in maps]).float(),
                             persistent=False)
        self.register_buffer(f"{name}_offset", torch.stack([m[1] for m in maps]).float(),
                             persistent=False)

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

    def _dense(self, blocks, thetas: torch.Tensor) -> torch.Tensor:
        """(H, R, 2, N, N) real pairs of each head's fused unitaries (built in float64)."""
        u = torch.stack([unitary(b.ops, self.n_qubits, thetas.double()) for b in blocks], 1)
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
        w = self._dense(self._fixed_blocks, self.theta.double() * self.dt().double()[:, None])
        read_phases = w_read = None
        if self.query_basis:
            read_phases = self._phases(x, self.q_basis, None, "read")[:, :, :, 0]
            w_read = self._dense([self._read_fixed], self.read_theta)[:, 0].to(x.dtype)
        if self.noise is not None:  # evaluation under noise: trajectories, no gradients
            from qlam.sim.noise import noisy_scan

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

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, heads={self.n_heads}, qubits={self.n_qubits}, "
                f"depth={self.depth}, query_basis={self.query_basis}, shots={self.shots}"
                + (f", noise={self.noise}" if self.noise is not None else ""))
