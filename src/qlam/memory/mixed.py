"""The mixed memory: a density-matrix QLAM whose channel forgets (``memory="mixed"``).

The paper's memory (:mod:`qlam.memory.layer`, ``memory="unitary"``) is a pure state evolved by
unitaries: nothing is ever forgotten, old inputs only rotate. Here each head is an n-qubit
density matrix rho evolved by a quantum channel that forgets, selectively. In the frame of a
learned unitary V (rho = V r V^dagger), per token x_t:

    r_t = (1 - a_t) · Lambda_t ⊙ r_{t-1} + a_t · s_t s_t^dagger
    Lambda_t[j, k] = exp(i (phi_j(x_t) - phi_k(x_t)) - Gamma_jk)

- the token's unitary V D(x_t) V^dagger, D = diag(exp(i phi(x_t))): a circuit of Z-string
  rotations (RZ, RZZ, RZZZ, ...) in the frame, angles Delta_h · in_proj(x_t) (Delta_h a
  learned time scale per head, as in the unitary memory);
- phase damping on every qubit of the frame at a learned rate gamma_{h,q}:
  Gamma_jk = sum_q gamma_{h,q} [bit q of j != bit q of k] (on hardware: an ancilla, a
  controlled RY and a reset per qubit);
- reset-and-write: with probability a_t = sigmoid(gate(x_t)) the memory is replaced by a
  freshly prepared product state |s(x_t)> = ⊗_q RZ(beta_q) RY(alpha_q) |0> (an ancilla in
  RY(2 asin sqrt(a_t)) |0> controls a SWAP of the memory with the fresh register, then both
  are reset); s_t above is V^dagger |s(x_t)>.
Each step is a CPTP map, so rho stays a density matrix (Hermitian, positive, trace 1).
Vectorised, r_t is a diagonal *selective* linear recurrence over the N^2 entries of rho
(eigenvalues (1 - a_t) e^{i(phi_j - phi_k) - Gamma_jk} inside the unit disk, additive
input): the LRU / Mamba recipe (decay, a spread of time scales, input-dependent forgetting)
as a quantum channel. a_t starts log-uniform in [a_min, a_max] across heads (retention
0.9 .. 0.999 by default), heads that forget slowly also rotate slowly.

Readout as in the unitary memory: Born probabilities of the memory in a learned basis R,
p_t(z) = <z| R rho_t R^dagger |z> (linear in r_t), the 2^n - 1 Pauli-Z strings' expectations
from them, weighted by the token's query (q_weight) and mapped to d_model (out_proj). A
density matrix holds N^2 real numbers and one basis reads N - 1 of them: ``n_bases`` = K
learned bases (K measurement settings on hardware) read K (N - 1). With ``shots``, each
basis is estimated from that many samples (straight-through, as in the unitary memory).
``selective=False`` makes a_t a learned constant per head, ``dephasing=False`` drops Gamma
(ablations).

Shapes: x (B, L, d_model) -> y (B, L, d_model), state rho (B, H, 2^n, 2^n) complex.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qlam.channel_circuit import ChannelCircuit, inverse, z_string_rotation
from qlam.circuit import Circuit
from qlam.memory.checks import full_precision
from qlam.memory.circuits import prep_circuit
from qlam.memory.layer import QLAM, check_index, check_tokens
from qlam.optim_hints import mark_memory
from qlam.padding import padded_lengths, zero_padding
from qlam.sim.measure import sampled_readout, walsh_matrix
from qlam.sim.scan.channel import channel_states
from qlam.sim.statevector import complex_dtype, unitary
from qlam.templates import ring

MAX_MIXED_QUBITS = 5  # the state is (2^n)^2 per head and token


def frame_circuit(n_qubits: int) -> Circuit:
    """The frame V (and the readout basis R): trainable RY, RZ on every qubit, then RXX and
    RYY on the ring."""
    c = Circuit(n_qubits)
    for q in range(n_qubits):
        c.ry(q, c.new_param())
        c.rz(q, c.new_param())
    for a, b in ring(n_qubits):
        c.rxx(a, b, c.new_param())
        c.ryy(a, b, c.new_param())
    return c


def bit_table(n_qubits: int) -> torch.Tensor:
    """(n, N) bits of every basis index, wire 0 the most significant."""
    z = torch.arange(2**n_qubits)
    return torch.stack([(z >> (n_qubits - 1 - q)) & 1 for q in range(n_qubits)])


def product_state(alpha: torch.Tensor, beta: torch.Tensor,
                  scale: torch.Tensor | None = None) -> torch.Tensor:
    """⊗_q RZ(beta_q) RY(alpha_q) |0> (times ``scale`` (..., 1) if given): angles (..., n)
    -> amplitudes (..., 2^n) complex, wire 0 the most significant."""
    half = 0.5 * alpha
    cos, sin = torch.cos(half), torch.sin(half)
    if scale is not None:  # fold the scale into the first qubit's (small) factor
        cos = torch.cat([cos[..., :1] * scale, cos[..., 1:]], -1)
        sin = torch.cat([sin[..., :1] * scale, sin[..., 1:]], -1)
    # cos and sin as factors, not as torch.polar's magnitudes: polar's gradient is wrong for
    # negative magnitudes (alpha < 0 or > pi), which had corrupted the write path's gradients
    phase = torch.polar(torch.ones_like(beta), 0.5 * beta)
    zero, one = cos * phase.conj(), sin * phase  # (..., n)
    state = zero[..., :1].new_ones(*alpha.shape[:-1], 1)
    for q in range(alpha.shape[-1]):
        state = torch.stack([state * zero[..., q, None], state * one[..., q, None]], -1)
        state = state.flatten(-2)
    return state


class MixedQLAM(nn.Module):
    """Density-matrix quantum memory over ``n_heads`` registers of ``n_qubits`` each.

    forward(x (B, L, d_model), state=None, lengths=None) -> (y (B, L, d_model),
    rho (B, H, 2^n, 2^n))
    """

    def __init__(self, d_model: int, n_heads: int = 8, n_qubits: int = 3,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, a_min: float = 1e-3,
                 a_max: float = 1e-1, selective: bool = True, dephasing: bool = True,
                 n_bases: int = 1, shots: int | None = None):
        super().__init__()
        if not 1 <= n_qubits <= MAX_MIXED_QUBITS:
            raise ValueError(f"n_qubits={n_qubits}: the mixed memory supports 1..{MAX_MIXED_QUBITS} "
                             f"qubits per head (a (2^n)^2 density matrix per token)")
        if n_heads < 1 or d_model < 1:
            raise ValueError(f"need n_heads, d_model >= 1, got {n_heads}, {d_model}")
        if not 0 < dt_min <= dt_max < math.inf:
            raise ValueError(f"need 0 < dt_min <= dt_max < inf, got {dt_min}, {dt_max}")
        if n_bases < 1:
            raise ValueError(f"n_bases must be >= 1, got {n_bases}")
        if not 0 < a_min <= a_max < 1:
            raise ValueError(f"need 0 < a_min <= a_max < 1, got {a_min}, {a_max}")
        self.d_model, self.n_heads, self.n_qubits = d_model, n_heads, n_qubits
        self.selective, self.dephasing, self.shots = selective, dephasing, shots
        self.n_bases = n_bases
        self.generator: torch.Generator | None = None
        self.noise = None  # noisy evaluation is not implemented for the mixed memory
        self._cache = None  # (key, constants) of the last forward without gradients
        self._last_state = None  # (weak reference, version) of the last state returned
        h, n_states = n_heads, 2**n_qubits

        # heads ordered slow -> fast, shuffled: slow forgetting goes with slow rotation
        order = torch.randperm(h)
        self.log_dt = nn.Parameter(torch.linspace(math.log(dt_min), math.log(dt_max), h)[order])
        a0 = torch.exp(torch.linspace(math.log(a_min), math.log(a_max), h))[order]
        logit_a0 = torch.log(a0) - torch.log1p(-a0)
        self.in_proj = nn.Linear(d_model, h * (n_states - 1))  # Z-string angles per head
        if selective:
            self.gate = nn.Linear(d_model, h)
            nn.init.normal_(self.gate.weight, std=0.02)
            with torch.no_grad():
                self.gate.bias.copy_(logit_a0)
        else:
            self.gate_logit = nn.Parameter(logit_a0)
        if dephasing:
            self.log_gamma = nn.Parameter(torch.log(a0)[:, None].repeat(1, n_qubits))
        self.write_proj = nn.Linear(d_model, h * 2 * n_qubits)  # alpha, beta per qubit
        self.frame = frame_circuit(n_qubits)
        self.theta = nn.Parameter(0.5 * torch.randn(h, self.frame.n_params))
        # n_bases readout bases per head (measurement settings): R_k = frame_circuit(read_theta[:, k])
        self.read_theta = nn.Parameter(0.1 * torch.randn(h, n_bases, self.frame.n_params))
        self.prep = prep_circuit(n_qubits)
        self.prep_theta = nn.Parameter(self.prep.init_params(torch.float32).repeat(h, 1))
        n_feats = h * n_bases * (n_states - 1)  # Z-string expectations in every basis
        self.q_weight = nn.Linear(d_model, n_feats)
        nn.init.normal_(self.q_weight.weight, std=0.02)
        nn.init.ones_(self.q_weight.bias)
        self.out_proj = nn.Linear(n_feats, d_model)
        # the channel's own parameters: lower lr, no weight decay (qlam.optim_hints)
        mark_memory(self.theta, self.log_dt, self.prep_theta, self.read_theta,
                    *([self.log_gamma] if dephasing else []),
                    *([] if selective else [self.gate_logit]))
        walsh = walsh_matrix(n_qubits).float()
        self.register_buffer("walsh", walsh, persistent=False)
        bits = bit_table(n_qubits)
        self.register_buffer("flips", (bits[:, :, None] != bits[:, None, :]).float(),
                             persistent=False)  # (n, N, N)

    def set_readout(self, shots: int | None = None, noise=None,
                    generator: torch.Generator | None = None) -> None:
        """Measure with ``shots`` samples (None: exact); noisy evaluation is refused."""
        if noise is not None:
            raise NotImplementedError("noisy evaluation is not implemented for memory='mixed' "
                                      "(its state is already a density matrix; use shots)")
        self.shots, self.generator = shots, generator

    exact_copy = QLAM.exact_copy  # a float64 CPU copy with the exact readout

    # ---- the channel's pieces ------------------------------------------------------------
    def dt(self) -> torch.Tensor:
        return self.log_dt.exp()

    def _frames(self, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """V (H, N, N) and M_k = R_k V stacked over the bases (H, K N, N), complex."""
        h, n_states = self.n_heads, 2**self.n_qubits
        v = unitary(self.frame.ops, self.n_qubits, self.theta.double())
        r = unitary(self.frame.ops, self.n_qubits, self.read_theta.double().flatten(0, 1))
        m = (r.view(h, self.n_bases, n_states, n_states) @ v[:, None]).flatten(1, 2)
        cd = complex_dtype(dtype)
        return v.to(cd), m.to(cd)

    def _decay(self, dtype) -> torch.Tensor:
        """exp(-Gamma): (H, N, N) real, 1 on the diagonal."""
        n_states = 2**self.n_qubits
        if not self.dephasing:
            return torch.ones(self.n_heads, n_states, n_states, dtype=dtype,
                              device=self.log_dt.device)
        gamma = self.log_gamma.exp().to(dtype)  # (H, n)
        return torch.exp(-torch.einsum("hq,qjk->hjk", gamma, self.flips.to(dtype)))

    def _phase_linear(self, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight (H N, d) and bias (H N,) of the Linear map from x to the phases of the
        token's diagonal unitary prod_S exp(-i theta_S/2 Z_S), theta = Delta_h in_proj(x): the
        Walsh map and Delta_h folded into one Linear."""
        h, n_states = self.n_heads, 2**self.n_qubits
        scale = -0.5 * self.dt().to(dtype)[:, None, None]  # (H, 1, 1)
        walsh = self.walsh.to(dtype)  # (N, N-1)
        weight = self.in_proj.weight.to(dtype).view(h, n_states - 1, -1) * scale
        bias = self.in_proj.bias.to(dtype).view(h, n_states - 1, 1) * scale
        w_eff = torch.einsum("zs,hsd->hzd", walsh, weight).reshape(h * n_states, -1)
        b_eff = torch.einsum("zs,hsd->hzd", walsh, bias).reshape(-1)
        return w_eff, b_eff

    def _build(self, dtype) -> dict:
        """Everything a forward derives from the parameters alone: the frame V and V^dagger
        (H, N, N), the phase map, exp(-Gamma), the readout map (H, 2 N^2, K N) from
        [Re r, Im r] to the K bases' probabilities, the initial state rho0 (H, N, N)."""
        v, m = self._frames(dtype)
        # p_z = sum_jk M_zj conj(M_zk) r_jk: one real GEMM per head over [Re r, Im r]
        outer = m[:, :, :, None] * m.conj()[:, :, None, :]  # (H, K z, j, k)
        readout = torch.view_as_real(outer.conj().resolve_conj().flatten(2)).flatten(2)
        return {"v": v, "v_dag": v.conj().transpose(-1, -2), "phase": self._phase_linear(dtype),
                "decay": self._decay(dtype), "readout": readout.transpose(1, 2),
                "rho0": self.initial_state(1, dtype)[0]}

    # reused while no parameter changes and no gradient is recorded (as in the unitary layer);
    # pickling drops the cache
    _constants = QLAM._constants
    clear_cache = QLAM.clear_cache
    shots = QLAM.shots  # (checked when set)
    __getstate__ = QLAM.__getstate__

    def reset_prob(self, x: torch.Tensor) -> torch.Tensor:
        """a_t (B, L, H): the probability that token t resets and writes the memory."""
        if self.selective:
            return torch.sigmoid(self.gate(x))
        return torch.sigmoid(self.gate_logit.to(x.dtype)).expand(*x.shape[:2], -1)

    def initial_state(self, batch: int, dtype=torch.float32) -> torch.Tensor:
        """(B, H, N, N) complex: the learned product state of every head, as a density matrix."""
        psi = unitary(self.prep.ops, self.n_qubits, self.prep_theta.double())[:, :, 0]
        rho = psi[:, :, None] * psi.conj()[:, None, :]
        return rho.to(complex_dtype(dtype)).expand(batch, -1, -1, -1)

    # the unitary layer's input check (type, shape, dtype against the parameters, finite),
    # and its skipping of the check for the state it returned last
    _check_input = QLAM._check_input
    _given_state = QLAM._given_state
    _returned = QLAM._returned

    def _check_state(self, state: torch.Tensor, batch: int) -> torch.Tensor:
        n_states = 2**self.n_qubits
        want = (batch, self.n_heads, n_states, n_states)
        if not isinstance(state, torch.Tensor) or not state.is_complex():
            raise TypeError(f"state must be a complex density matrix tensor of shape {want}")
        if tuple(state.shape) != want:
            raise ValueError(f"state must have shape {want}, got {tuple(state.shape)}")
        trace = state.diagonal(dim1=-2, dim2=-1).sum(-1)
        if not torch.allclose(trace, torch.ones_like(trace), atol=1e-4):
            raise ValueError("state is not a density matrix (trace != 1)")
        if not torch.allclose(state, state.mH, atol=1e-4):
            raise ValueError("state is not a density matrix (not Hermitian)")
        low = torch.linalg.eigvalsh(state).min().item()
        if low < -1e-4:
            raise ValueError(f"state is not a density matrix (an eigenvalue is {low:.3g} < 0)")
        return state

    # ---- forward ------------------------------------------------------------------------
    @full_precision
    def probabilities(self, x: torch.Tensor, state: torch.Tensor | None = None,
                      lengths: torch.Tensor | None = None):
        """Born probabilities (B, L, H, K 2^n) of every token's readout in each of the K bases,
        and the final density matrix (B, H, 2^n, 2^n) (after each example's last real token
        when ``lengths`` (B,) is given, as in :meth:`QLAM.probabilities`; padded readouts are
        zero)."""
        if self.noise is not None:
            raise NotImplementedError("noisy evaluation is not implemented for memory='mixed' "
                                      "(its state is already a density matrix; use shots)")
        self._check_input(x)
        b, length, _ = x.shape
        h, n_states = self.n_heads, 2**self.n_qubits
        lengths = padded_lengths(lengths, b, length)
        c = self._constants(x.dtype)
        v, v_dag = c["v"], c["v_dag"]
        rho0 = (c["rho0"].expand(b, -1, -1, -1) if state is None
                else self._given_state(state, b).to(v.dtype))
        r0 = v_dag @ rho0 @ v  # into the frame

        phi = nn.functional.linear(x, *c["phase"]).view(b, length, h, n_states)
        a = self.reset_prob(x)[..., None]  # (B, L, H, 1)
        d = torch.polar(torch.sqrt(1 - a).expand_as(phi), phi)
        alpha, beta = self.write_proj(x).view(b, length, h, 2, self.n_qubits).unbind(-2)
        head_major = (2, 0, 1, 3)  # (B, L, H, .) -> (H, B, L, .): one sequence per (h, b)
        w = product_state(alpha.permute(head_major), beta.permute(head_major),
                          torch.sqrt(a).permute(head_major))  # sqrt(a_t) |s(x_t)>
        w = (w.view(h, b * length, n_states) @ v.conj()).view(h, b, length, n_states)  # V^dag
        rs = channel_states(d.permute(head_major), w, c["decay"],
                            r0.transpose(0, 1))  # (H, B, L, N, N)
        probs = torch.bmm(torch.view_as_real(rs).reshape(h, b * length, -1), c["readout"])
        probs = probs.view(h, b, length, -1).permute(1, 2, 0, 3)  # (B, L, H, K N)
        if lengths is None:
            last = rs[:, :, -1]
        else:
            ends = lengths.to(rs.device)  # (0: no token in this chunk, the state passes)
            last = rs[:, torch.arange(b, device=rs.device), (ends - 1).clamp_min(0)]
            last = torch.where((ends == 0)[None, :, None, None], r0.transpose(0, 1), last)
        return zero_padding(probs, lengths), self._returned(v @ last.transpose(0, 1) @ v_dag)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None):
        """x (B, L, d_model) -> (y (B, L, d_model), rho (B, H, 2^n, 2^n)); ``state`` and
        ``lengths`` as in :meth:`QLAM.forward` (padded outputs are zero)."""
        probs, final = self.probabilities(x, state, lengths)
        probs = probs.unflatten(-1, (self.n_bases, 2**self.n_qubits))  # (B, L, H, K, N)
        if self.shots is not None:  # each basis its own shots; the exact gradient
            probs = sampled_readout(probs, self.shots, self.generator)
        z = probs @ self.walsh.to(probs.dtype)  # (B, L, H, K, N - 1) Z-strings
        feats = z.flatten(2) * self.q_weight(x)
        return zero_padding(self.out_proj(feats), padded_lengths(lengths, *x.shape[:2])), final

    def step(self, x_t: torch.Tensor, state: torch.Tensor | None = None):
        """One token: x_t (B, d_model) -> (y_t (B, d_model), rho)."""
        if not isinstance(x_t, torch.Tensor) or x_t.dim() != 2:
            shape = tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__
            raise ValueError(f"step expects x_t of shape (batch, {self.d_model}), got {shape}")
        y, state = self(x_t.unsqueeze(1), state)
        return y.squeeze(1), state

    @torch.no_grad()
    def bound_channel(self, x: torch.Tensor, head: int, tokens: int | None = None,
                      basis: int = 0) -> tuple[ChannelCircuit, Circuit, int]:
        """One head's channel for one sequence x (1, L, d_model), every angle a number:
        (the initial state and the first ``tokens`` tokens' channels as a
        :class:`~qlam.channel_circuit.ChannelCircuit` on 2n + 1 qubits, the readout basis
        R_basis (an n-qubit Circuit), tokens). Per token: V^dagger, the Z-string rotations,
        phase damping per qubit (CRY onto the ancilla by 2 arccos e^-gamma, reset), V, and the
        reset-and-write (fresh register prepared, ancilla in RY(2 asin sqrt(a_t)), a CSWAP per
        qubit, resets). Angles in x's precision (:meth:`exact_copy` and a float64 x give the
        exported ones)."""
        head = check_index("head", head, self.n_heads)
        basis = check_index("basis", basis, self.n_bases)
        tokens = check_tokens(tokens, x.shape[1])
        x, n = x[:, :tokens], self.n_qubits
        theta = self.in_proj(x).view(tokens, self.n_heads, -1)[:, head] * self.dt()[head]
        reset = self.reset_prob(x)[0, :, head]  # (K,)
        alpha, beta = self.write_proj(x).view(tokens, self.n_heads, 2, n)[:, head].unbind(1)
        gamma = self.log_gamma.exp()[head] if self.dephasing else None  # (n,)
        frame = self.frame.bind(self.theta[head])
        readout = self.frame.bind(self.read_theta[head, basis])
        frame_inv = inverse(frame)
        c = ChannelCircuit(n)
        c.extend(self.prep.bind(self.prep_theta[head]))
        for t in range(tokens):
            c.extend(frame_inv)
            for mask in range(1, 2**n):
                z_string_rotation(c, mask, float(theta[t, mask - 1]))
            for q in range(n if gamma is not None else 0):
                c.append("cry", (q, c.ancilla), [2 * math.acos(math.exp(-float(gamma[q])))])
                c.append("reset", (c.ancilla,))
            c.extend(frame)
            for q, f in enumerate(c.fresh):
                c.append("ry", (f,), [float(alpha[t, q])])
                c.append("rz", (f,), [float(beta[t, q])])
            c.append("ry", (c.ancilla,), [2 * math.asin(math.sqrt(float(reset[t])))])
            for q, f in enumerate(c.fresh):
                c.append("cswap", (c.ancilla, q, f))
            for w in (c.ancilla, *c.fresh):
                c.append("reset", (w,))
        return c, readout, tokens

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, heads={self.n_heads}, qubits={self.n_qubits}, "
                f"selective={self.selective}, dephasing={self.dephasing}, bases={self.n_bases}, "
                f"shots={self.shots}")
