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
by the Born rule, the probabilities give the expectations of the 2^n - 1 Pauli-Z strings in
that basis (or, with ``read_order`` k, of those on at most k qubits: n + C(n, 2) for k = 2,
so the readout's parameters stop growing as 2^n); the query also weights them, so each
output channel reads <psi_t| O(q_t) |psi_t> with O(q) = sum_k w_k(q) P_k. Expectations are
exact, or estimated from ``shots`` samples (the forward uses the samples, the backward the
exact expectation's gradient: straight-through).
Setting ``noise`` (a :class:`qlam.sim.noise.Channel` or "depolarizing:0.01") evaluates under
that channel on every qubit after every token, one quantum trajectory per example (seeded by
``generator``; trajectories have no gradient, so a training-mode forward recording one is
refused). Noise and shots together are refused (:func:`qlam.sim.scan.noisy.check_readout`).

Padded batches: ``lengths`` (B,) leaves each example's state unchanged after its last token.

The circuits are lowered once to scan layers (:mod:`qlam.sim.lowering`) and run by the scan
(:mod:`qlam.sim.scan`); :mod:`qlam.memory.reference` is the same layer in plain complex
arithmetic, for reading and for tests.

Shapes: x (B, L, d_model) -> y (B, L, d_model), state (B, H, 2^n) complex.
"""

from __future__ import annotations

import copy
import math
import weakref
from typing import TYPE_CHECKING

import torch
from torch import nn

from qlam.circuit import MAX_QUBITS, Circuit
from qlam.memory.checks import check_index, check_input, check_tokens, full_precision, hooked, parameters_of
from qlam.memory.circuits import lower_checked, prep_circuit, readout_circuit, token_circuit
from qlam.memory.projections import angle_linear, angles, phase_linear
from qlam.optim_hints import mark_memory
from qlam.padding import padded_lengths, zero_padding
from qlam.sim.lowering import Lowered
from qlam.sim.measure import sampled_readout, walsh_matrix
from qlam.sim.scan import BACKWARDS, cpp, scan
from qlam.sim.scan.dispatch import pick_engine, resolve
from qlam.sim.scan.noisy import check_readout, noisy_scan
from qlam.sim.statevector import complex_dtype, unitary

if TYPE_CHECKING:
    from qlam.sim.noise import Channel

MAX_MEMORY_QUBITS = 12  # one dense 2^n x 2^n unitary per head and layer


def _version(t: torch.Tensor) -> int | None:  # bumped by in-place edits; inference tensors: none
    return None if t.is_inference() else t._version


class QLAM(nn.Module):
    """Quantum long-attention memory over ``n_heads`` registers of ``n_qubits`` each.

    Args:
        d_model: width of the input and output tokens.
        n_heads: independent quantum registers (heads).
        n_qubits: qubits per head (1..12; the state of a head has 2^n amplitudes).
        depth: Trotter layers per token circuit.
        query_basis: read each token in a query-chosen basis (else the Z basis).
        dt_min: smallest initial time scale Delta_h (the heads' are log-spaced).
        dt_max: largest initial time scale Delta_h.
        backward: ``"auto"`` (compiled kernel where it applies), ``"kernel"``,
            ``"reversible"`` or ``"autograd"`` (see :func:`qlam.sim.recurrence.scan`).
        shots: estimate every readout from this many samples (None: exact). In the
            forward pass the layer uses the sampled frequencies; the gradient is the exact
            gradient of the expectation (a straight-through estimator:
            ``probs + (sampled - probs).detach()``), unbiased for losses linear in the
            readout. Draws use :attr:`generator` (None: torch's global generator).
        noise: a :class:`qlam.sim.noise.Channel` or spec such as ``"depolarizing:0.01"``:
            the channel on every qubit after every token, one quantum trajectory per example.
            Trajectories carry no gradient, so a training-mode forward that records
            gradients is refused; evaluate in ``eval()`` mode or under ``torch.no_grad()``.
            Not with ``shots``: all of an example's shots would share its one trajectory.
        read_order: read only the Pauli-Z strings acting on at most this many qubits
            (1..n_qubits; None: all 2^n - 1). The features per head, and with them the
            query weights and the output map, shrink to sum_{j<=k} C(n, j).

    Shapes: ``forward(x (B, L, d_model), state=None, lengths=None)`` returns
    ``(y (B, L, d_model), state (B, n_heads, 2^n_qubits) complex)``.

    Example:
        >>> layer = QLAM(d_model=16, n_heads=2, n_qubits=3)
        >>> y, state = layer(torch.randn(4, 10, 16))
        >>> y.shape, state.shape
        (torch.Size([4, 10, 16]), torch.Size([4, 2, 8]))
    """

    def __init__(self, d_model: int, n_heads: int = 4, n_qubits: int = 4, depth: int = 1,
                 query_basis: bool = True, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 backward: str = "auto", shots: int | None = None,
                 noise: str | Channel | None = None, read_order: int | None = None):
        super().__init__()
        if not 1 <= n_qubits <= min(MAX_MEMORY_QUBITS, MAX_QUBITS):
            raise ValueError(f"n_qubits={n_qubits}: the memory supports 1..{MAX_MEMORY_QUBITS} "
                             f"qubits per head (a dense 2^n x 2^n unitary per head)")
        if n_heads < 1 or depth < 1 or d_model < 1:
            raise ValueError(f"need n_heads, depth, d_model >= 1, got {n_heads}, {depth}, {d_model}")
        if not 0 < dt_min <= dt_max < math.inf:
            raise ValueError(f"need 0 < dt_min <= dt_max < inf, got {dt_min}, {dt_max}")
        if read_order is not None and (isinstance(read_order, bool)
                                       or not isinstance(read_order, int)
                                       or not 1 <= read_order <= n_qubits):
            raise ValueError(f"read_order must be an int in 1..n_qubits={n_qubits} or None, "
                             f"got {read_order!r}")
        if backward not in BACKWARDS:
            raise ValueError(f"backward must be one of {', '.join(BACKWARDS)}, got {backward!r}")
        check_readout(shots, noise)
        self.d_model, self.n_heads, self.n_qubits, self.depth = d_model, n_heads, n_qubits, depth
        self.backward_mode = backward
        self.shots = shots
        self.generator: torch.Generator | None = None
        self.noise = noise
        self._cache = None  # (key, constants) of the last forward without gradients
        self._last_state = None  # (weak reference, version) of the last state returned
        n_states = 2**n_qubits

        self.circuit = token_circuit(n_qubits, depth)
        self._token = lower_checked(self.circuit)
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
            self._read = lower_checked(self.read)
            self._register_phase_map("read", self._read)
            self.q_basis = nn.Linear(d_model, n_heads * n_qubits)
            nn.init.normal_(self.q_basis.weight, std=0.02)
            nn.init.zeros_(self.q_basis.bias)
            self.read_theta = nn.Parameter(0.1 * torch.randn(n_heads, self.read.n_params))
        # the Z-strings read (columns of the Walsh matrix: string S is column S - 1)
        self.read_order = read_order
        walsh = walsh_matrix(n_qubits)
        if read_order is not None:
            weight = torch.tensor([bin(s).count("1") for s in range(1, n_states)])
            walsh = walsh[:, weight <= read_order]
        self.register_buffer("walsh", walsh.float(), persistent=False)
        self.n_read = walsh.shape[1]
        # query weights over the Pauli-Z strings (1 + small at init), then the output map
        self.q_weight = nn.Linear(d_model, n_heads * self.n_read)
        nn.init.normal_(self.q_weight.weight, std=0.02)
        nn.init.ones_(self.q_weight.bias)
        self.out_proj = nn.Linear(n_heads * self.n_read, d_model)
        # the quantum parameters: their own learning-rate scale, no weight decay
        mark_memory(self.theta, self.log_dt, self.prep_theta,
                    *((self.read_theta,) if query_basis else ()))

    def __getstate__(self):  # pickling (torch.save of the module): no weak reference, no cache
        return {**nn.Module.__getstate__(self), "_last_state": None, "_cache": None}

    # ---- options ------------------------------------------------------------------------
    @property
    def shots(self) -> int | None:
        """Samples per readout (None: exact expectations)."""
        return self._shots

    @shots.setter
    def shots(self, value) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"shots must be an int >= 1 or None, got {value!r}")
        self._shots = value

    @property
    def noise(self):
        """The per-token noise channel (a :class:`qlam.sim.noise.Channel`) or None."""
        return self._noise

    @noise.setter
    def noise(self, value) -> None:
        from qlam.sim.noise import parse_noise

        self._noise = parse_noise(value)

    # ---- circuits -> tensors -----------------------------------------------------------
    def _register_phase_map(self, name: str, lowered: Lowered) -> None:
        self.register_buffer(f"{name}_map", lowered.input_map.float(), persistent=False)
        self.register_buffer(f"{name}_offset", lowered.offset.float(), persistent=False)

    def _phase_linear(self, proj: nn.Linear, scale, name: str, dtype):  # maps: buffers `name`_*
        return phase_linear(proj, self.n_heads, scale, getattr(self, f"{name}_map"),
                            getattr(self, f"{name}_offset"), dtype)

    def _phases(self, x: torch.Tensor, proj: nn.Linear, scale: torch.Tensor | None,
                name: str) -> torch.Tensor:
        """(B, L, H, R, N) phases of x (B, L, d) through :meth:`_phase_linear`."""
        w_eff, b_eff = self._phase_linear(proj, scale, name, x.dtype)
        n = getattr(self, f"{name}_map").shape[-1]
        return nn.functional.linear(x, w_eff, b_eff).view(*x.shape[:2], self.n_heads, -1, n)

    @staticmethod
    def _dense(lowered: Lowered, thetas: torch.Tensor) -> torch.Tensor:
        """(H, R, 2, N, N) real pairs of each head's fused unitaries (built in float64)."""
        u = lowered.unitaries(thetas.double())
        return torch.stack([u.real, u.imag], -3)

    def _build(self, dtype) -> dict:
        """Everything a forward pass derives from the parameters alone: the maps from x to the
        phases and to the angles (with the kernel's ``maps``), the heads' unitaries
        (H, R, 2, N, N) and readout unitaries, the initial state (H, N)."""
        dt = self.dt()
        out = {"phase": self._phase_linear(self.in_proj, dt.to(dtype), "phase", dtype),
               "angle": angle_linear(self.in_proj, self.n_heads, dt.to(dtype), dtype),
               "maps": (self.phase_map.to(dtype), self.phase_offset.to(dtype), None, None),
               "w": self._dense(self._token,
                                self.theta.double() * dt.double()[:, None]).to(dtype),
               "psi0": unitary(self.prep.ops, self.n_qubits, self.prep_theta.double())[:, :, 0]}
        if self.query_basis:
            out["read"] = self._phase_linear(self.q_basis, None, "read", dtype)
            out["read_angle"] = angle_linear(self.q_basis, self.n_heads, None, dtype)
            out["maps"] = (*out["maps"][:2], self.read_map[0].to(dtype), self.read_offset[0].to(dtype))
            out["w_read"] = self._dense(self._read, self.read_theta)[:, 0].to(dtype)
        return out

    def _constants(self, dtype) -> dict:
        """:meth:`_build`, reused while no parameter has changed and no gradient is recorded
        (streaming with :meth:`step` under ``torch.no_grad()``): keyed on every parameter's
        storage and version counter, which an optimizer step or ``load_state_dict`` bumps."""
        if torch.compiler.is_compiling():
            return self._build(dtype)
        params = parameters_of(self)
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            self._cache = None
            return self._build(dtype)
        # (inference tensors must not meet autograd later: one cache per mode)
        key = (dtype, torch.is_inference_mode_enabled(),
               *[(p.data_ptr(), p._version) for p in params])
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._build(dtype))
        return self._cache[1]

    def dt(self) -> torch.Tensor:
        """(H,) the heads' time scales Delta_h = exp(log_dt)."""
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
        if torch.compiler.is_compiling():  # no data-dependent branch inside a compiled graph
            return state
        norms = state.abs().pow(2).sum(-1)
        if not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
            bad = (norms - 1).abs().max().item()
            raise ValueError(f"state is not normalised (max | |psi|^2 - 1 | = {bad:.3g})")
        return state

    def _given_state(self, state: torch.Tensor, batch: int) -> torch.Tensor:
        """``state`` after :meth:`_check_state`, unless it is the state this layer returned
        last, unchanged since (checked when made: streaming skips the check; an inference
        tensor keeps no version counter, so its in-place edits go unseen)."""
        ref, version = self._last_state or (None, None)
        unchanged = ref is not None and state is ref() and len(state) == batch
        return state if unchanged and _version(state) == version else self._check_state(state, batch)

    def _returned(self, final: torch.Tensor) -> torch.Tensor:
        """``final``, remembered (weakly, with its version) as the last state returned."""
        if not torch.compiler.is_compiling():
            self._last_state = (weakref.ref(final), _version(final))
        return final

    def _check_input(self, x: torch.Tensor) -> None:
        check_input(x, self.d_model, self.in_proj.weight.dtype)

    # ---- forward ------------------------------------------------------------------------
    def _scan(self, psi0, phases, w, read_phases, w_read, maps=None):
        """The scan; with ``maps``, on the kernel, ``phases`` and ``read_phases`` as angles."""
        if maps is not None:
            return cpp.scan_kernel(psi0, phases, w, read_phases, w_read, maps=maps)
        if self.noise is None:
            return scan(psi0, phases, w, read_phases, w_read, backward=self.backward_mode)
        if self.training and torch.is_grad_enabled():
            raise RuntimeError(
                "QLAM.noise: noisy trajectories carry no gradient, so training under noise "
                "would silently freeze the quantum memory; evaluate with layer.eval() or under "
                "torch.no_grad() (as qlam eval --noise does), or set layer.noise = None to train")
        return noisy_scan(psi0, phases, w, read_phases, w_read, self.noise, self.generator)

    def _scan_padded(self, psi0, phases, w, read_phases, w_read, lengths, maps=None):
        """The scan of a right-padded batch: each stretch of tokens between two distinct
        lengths runs on the examples still inside their sequence, so every example's final
        state is the one after its last real token; padded readouts are zero."""
        (b, length, h), n = phases.shape[:3], w.shape[-1]
        probs = phases.new_zeros(b, length, h, n)
        state = psi0
        bounds = sorted({0, *lengths.tolist()})
        for lo, hi in zip(bounds, bounds[1:]):
            idx = (lengths >= hi).nonzero().squeeze(1).to(phases.device)
            rp = None if read_phases is None else read_phases[idx, lo:hi]
            p, last = self._scan(state[idx], phases[idx, lo:hi], w, rp, w_read, maps)
            state = state.index_copy(0, idx, last)
            span = torch.arange(lo, hi, device=phases.device)
            probs = probs.index_put((idx[:, None], span[None, :]), p)
        return probs, state

    @full_precision
    def probabilities(self, x: torch.Tensor, state: torch.Tensor | None = None,
                      lengths: torch.Tensor | None = None):
        """Born-rule probabilities (B, L, H, 2^n) of every token's readout, and the final
        state (B, H, 2^n) complex (after each example's last real token when ``lengths``
        (B,) is given; padded readouts are zero)."""
        self._check_input(x)
        b, length, _ = x.shape
        h, n_states = self.n_heads, 2**self.n_qubits
        lengths = padded_lengths(lengths, b, length)
        k = self._constants(x.dtype)
        state = (k["psi0"].to(complex_dtype(x.dtype)).expand(b, -1, -1) if state is None
                 else self._given_state(state, b))
        psi0 = torch.stack([state.real, state.imag], -2).to(x.dtype)
        read_phases = w_read = maps = None
        on_kernel = pick_engine(*resolve(self.backward_mode), (psi0, x, k["w"])) == "cpp"
        if self.noise is None and on_kernel:  # it expands angles (B, L, H, F) to phases itself
            maps, phases = k["maps"], angles(x, k["angle"])
            if self.query_basis:
                read_phases, w_read = angles(x, k["read_angle"]), k["w_read"]
        else:
            # one phase vector per (token, head, layer): (B, L, H, R, N) from Delta_h in_proj(x)
            phases = nn.functional.linear(x, *k["phase"]).view(b, length, h, -1, n_states)
            if self.query_basis:
                read_phases = nn.functional.linear(x, *k["read"]).view(b, length, h, n_states)
                w_read = k["w_read"]
        args = (psi0, phases, k["w"], read_phases, w_read)
        if lengths is None:
            probs, last = self._scan(*args, maps)
        else:
            probs, last = self._scan_padded(*args, lengths, maps)
        return probs, self._returned(torch.complex(last[..., 0, :], last[..., 1, :]))

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None):
        """Run the memory over a sequence.

        Args:
            x: (B, L, d_model) tokens.
            state: (B, H, 2^n) complex state to continue from (None: the learned initial
                state), e.g. the state returned by the previous chunk.
            lengths: (B,) ints in 1..L for a right-padded batch: example b is tokens
                0..lengths[b]-1; the state is carried over its real tokens only and the
                outputs at padded positions are zero.

        The result is ``(y (B, L, d_model), final state (B, H, 2^n) complex)``.
        """
        check_readout(self.shots, self.noise)
        if lengths is None and self._streams(x, 3):
            return self._stream(x, state)
        # (probabilities(x, state) when unpadded: qlam.hardware swaps in a two-argument one)
        probs, final = (self.probabilities(x, state) if lengths is None
                        else self.probabilities(x, state, lengths=lengths))
        if self.shots is not None:  # sampled values, the exact expectation's gradient
            probs = sampled_readout(probs, self.shots, self.generator)
        z = probs @ self.walsh.to(probs.dtype)  # (B, L, H, n_read) Pauli-Z expectations
        feats = z.flatten(2) * self.q_weight(x)
        y = self.out_proj(feats)
        return zero_padding(y, padded_lengths(lengths, *x.shape[:2])), final

    def _streams(self, x, dim: int) -> bool:
        """Whether ``x`` takes the fused one-token path (:meth:`_stream`): one token per
        example, (B, d_model) for ``dim`` 2 (step) or (B, 1, d_model) for 3 (forward), no
        gradient recorded, exact readout, on the CPU kernel in the layer's dtype."""
        return (not torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.is_cpu
                and x.dim() == dim and x.shape[0] > 0 and x.shape[-1] == self.d_model
                and (dim == 2 or x.shape[1] == 1) and x.dtype in (torch.float32, torch.float64)
                and x.dtype == self.in_proj.weight.dtype
                and self._shots is None and self._noise is None
                and self.read_order is None  # (the kernel reads all 2^n - 1 strings)
                and self.backward_mode in ("auto", "kernel")
                and "probabilities" not in self.__dict__  # qlam.hardware's noisy readout
                and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
                and cpp.load() is not None)

    def _stream(self, x: torch.Tensor, state: torch.Tensor | None):
        """One token (x (B, d_model) or (B, 1, d_model), y of the same shape) as one call of
        the compiled step
        (:func:`qlam.sim.scan.cpp` ``step``), on constants derived once per parameter
        version: the input, read and query maps in one matrix, the unitaries transposed."""
        k = self._constants(x.dtype)
        if "stream" not in k:
            maps = [k["phase"], *([k["read"]] if self.query_basis else []),
                    (self.q_weight.weight, self.q_weight.bias)]
            mats = (torch.cat([k["w"], k["w_read"][:, None]], 1) if self.query_basis
                    else k["w"])
            k["stream"] = (torch.cat([w for w, _ in maps]).to(x.dtype).t().contiguous(),
                           torch.cat([b for _, b in maps]).to(x.dtype),
                           mats.transpose(-1, -2).contiguous(), self.walsh.to(x.dtype),
                           self.out_proj.weight.to(x.dtype).t().contiguous(),
                           self.out_proj.bias.to(x.dtype), self.query_basis)
        b, cd = x.shape[0], complex_dtype(x.dtype)
        if state is None:
            state = k["psi0"].to(cd).expand(b, -1, -1)
        else:
            state = self._given_state(state, b).to(cd)
        y, final = cpp.load().step(x, state, *k["stream"])
        return y, self._returned(final)

    def step(self, x_t: torch.Tensor, state: torch.Tensor | None = None):
        """One token: x_t (B, d_model) -> (y_t (B, d_model), state (B, H, 2^n) complex).

        Streaming token by token gives the same outputs as :meth:`forward` on the whole
        sequence. Without gradients (``torch.no_grad()`` or ``torch.inference_mode()``), on
        the CPU with the exact readout, a step is one call of a compiled kernel on constants
        derived once per parameter version (see ``qlam bench stream``); otherwise it is a
        one-token :meth:`forward`.

        Example:
            >>> layer = QLAM(d_model=8, n_heads=2, n_qubits=2)
            >>> with torch.no_grad():
            ...     y_t, state = layer.step(torch.randn(3, 8))
            ...     y_t, state = layer.step(torch.randn(3, 8), state)
            >>> y_t.shape
            torch.Size([3, 8])
        """
        if self._streams(x_t, 2) and not hooked(self):  # (hooks: through self(...))
            return self._stream(x_t, state)
        if not isinstance(x_t, torch.Tensor) or x_t.dim() != 2:
            shape = tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__
            raise ValueError(f"step expects x_t of shape (batch, {self.d_model}), got {shape}")
        y, state = self(x_t.unsqueeze(1), state)
        return y.squeeze(1), state

    def clear_cache(self) -> None:
        """Forget the constants reused without gradients: needed after editing parameters
        through ``.data``, which no version counter sees (optimizer steps are seen)."""
        self._cache = None

    # ---- evaluation and export ---------------------------------------------------------
    def set_readout(self, shots: int | None = None, noise=None,
                    generator: torch.Generator | None = None) -> None:
        """Measure with ``shots`` Born-rule samples per readout or under ``noise`` (a
        Channel: trajectories, no gradients; not both), sampled from ``generator``; all None:
        exact."""
        check_readout(shots, noise)
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
                + (f", read_order={self.read_order}" if self.read_order is not None else "")
                + (f", noise={self.noise}" if self.noise is not None else ""))
