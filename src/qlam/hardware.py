"""From a trained QLAM model to a device, with Qiskit's own tooling (the `hardware` extra:
qiskit, qiskit-aer, qiskit-ibm-runtime).

Backends are the *fake* IBM backends that ship with qiskit-ibm-runtime (``fake_torino``,
``sherbrooke``, ``FakeManila`` ... : their coupling maps, basis gates and reported error
rates and durations, offline).

* :func:`device_report`: one head's exported circuit (state preparation, tokens, readout,
  then a measurement of every wire) transpiled for the backend (Qiskit's preset pass manager,
  ``optimization_level`` 1, fixed seed) with its depth, two-qubit gate count and estimated
  success probability (ESP): the product of (1 - reported error) over every gate and
  measurement of the transpiled circuit (gate and readout errors only: idle decoherence is
  not counted).
* :class:`NoisyDevice`: evaluates QLAM layers under the backend's noise model
  (``AerSimulator.from_backend``: depolarizing and thermal-relaxation errors on every gate
  as reported, density-matrix simulation). The token circuit is transpiled once per initial
  layout as a parameterised template; each example's head then runs prep + token 1 ... token
  L as one noisy circuit, its density matrix saved after every token. The query-chosen
  readout of every token is applied to that density matrix exactly, and each wire's
  measurement assignment error (the backend's, on the physical qubit holding the wire) to the
  resulting probabilities: on hardware each token's readout is its own run of the prefix
  circuit, whose readout gates are the only noise left out here.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

import numpy as np
import torch

from qlam.memory import QLAM, token_circuit
from qlam.sim.noise import pure_density

OPTIMIZATION_LEVEL = 1
EXTRA = "pip install 'qlam[hardware]'"


def _need(what: str):
    raise RuntimeError(f"{what} needs qiskit, qiskit-aer and qiskit-ibm-runtime: {EXTRA}")


def backend_names() -> list[str]:
    """Names of the fake backends available offline (``fake_torino``, ...)."""
    return sorted(b.name for b in _provider().backends())


@lru_cache(maxsize=1)
def _provider():
    try:
        from qiskit_ibm_runtime.fake_provider import FakeProviderForBackendV2
    except ImportError:
        _need("--backend")
    return FakeProviderForBackendV2()


@lru_cache(maxsize=8)
def get_backend(name: str):
    """The fake backend ``name``: "fake_torino", "torino" or "FakeTorino" alike."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"backend must be a name such as fake_torino, got {name!r}")
    key = name.strip().lower().replace("-", "_")
    key = key.removeprefix("fake").strip("_").removesuffix("v2").strip("_")
    names = backend_names()
    if f"fake_{key}" not in names:
        raise ValueError(f"unknown backend {name!r}; the fake backends are: "
                         f"{', '.join(n.removeprefix('fake_') for n in names)}")
    return _provider().backend(f"fake_{key}")


def transpile_for(qc, backend, seed: int = 0, **options):
    """``qc`` transpiled for ``backend`` (preset pass manager, fixed seed)."""
    from qiskit import transpile

    return transpile(qc, backend=backend, optimization_level=OPTIMIZATION_LEVEL,
                     seed_transpiler=seed, **options)


def _qargs(qc, inst) -> tuple[int, ...]:
    return tuple(qc.find_bit(q).index for q in inst.qubits)


def device_cost(tqc, backend) -> dict:
    """Depth, two-qubit gates, gate counts and estimated success probability of a
    transpiled circuit on ``backend`` (errors as the backend reports them)."""
    target = backend.target
    esp, two_qubit, active = 1.0, 0, set()
    for inst in tqc.data:
        op = inst.operation
        if op.name in ("barrier", "delay"):
            continue
        qargs = _qargs(tqc, inst)
        active.update(qargs)
        two_qubit += op.num_qubits == 2
        props = target[op.name].get(qargs) if op.name in target.operation_names else None
        if props is not None and props.error is not None:
            esp *= 1.0 - props.error
    ops = {k: v for k, v in tqc.count_ops().items() if k != "barrier"}
    return {"depth": tqc.depth(lambda i: i.operation.name != "barrier"),
            "two_qubit_gates": int(two_qubit), "ops": dict(ops), "n_ops": int(sum(ops.values())),
            "estimated_success_probability": esp, "physical_qubits": sorted(active)}


def device_report(ex, backend, seed: int = 0) -> tuple[dict, object]:
    """(record, transpiled circuit) for a :class:`qlam.export.HeadExport`: its measured
    circuit (state + readout, then every wire measured into classical bit = wire) on
    ``backend``; ``wire_qubits[i]``: the physical qubit measured for wire i."""
    from qlam.interop import to_qiskit

    qc = to_qiskit(ex.measured)
    qc.measure_all()
    tqc = transpile_for(qc, backend, seed)
    wire_qubits = [None] * ex.n_qubits
    for inst in tqc.data:
        if inst.operation.name == "measure":
            wire_qubits[tqc.find_bit(inst.clbits[0]).index] = _qargs(tqc, inst)[0]
    record = {"backend": backend.name, "backend_qubits": backend.num_qubits,
              "optimization_level": OPTIMIZATION_LEVEL, "seed_transpiler": seed,
              **device_cost(tqc, backend), "wire_qubits": wire_qubits,
              "esp_meaning": "product of (1 - error) over every gate and measurement of the "
                             "transpiled circuit, errors as the backend reports them (idle "
                             "decoherence not counted)"}
    return record, tqc


# ---- noisy evaluation ---------------------------------------------------------------------
def _template(n_qubits: int, depth: int, with_prep: bool):
    """A Qiskit circuit of (prep +) one token with parameter vectors: x (input angles),
    t (trainable angles), p (preparation angles)."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    from qlam.interop import append_qiskit
    from qlam.memory import prep_circuit

    tok = token_circuit(n_qubits, depth)
    xs = np.array(ParameterVector("x", tok.n_inputs), dtype=object)
    ts = np.array(ParameterVector("t", tok.n_params), dtype=object)
    qc = QuantumCircuit(n_qubits)
    if with_prep:
        prep = prep_circuit(n_qubits)
        ps = np.array(ParameterVector("p", prep.n_params), dtype=object)
        for op in prep.ops:
            append_qiskit(qc, op.name, [a.evaluate(ps, None) for a in op.angles], list(op.wires))
    for op in tok.ops:
        append_qiskit(qc, op.name, [a.evaluate(ts, xs) for a in op.angles], list(op.wires))
    return qc


class NoisyDevice:
    """QLAM readout probabilities under ``backend``'s noise model (see the module docstring).
    ``seed`` seeds the transpiler; ``noise=False`` runs the same transpiled circuits without
    noise (a check: it reproduces the model's exact probabilities)."""

    def __init__(self, backend, seed: int = 0, noise: bool = True):
        try:
            from qiskit_aer import AerSimulator
        except ImportError:
            _need("noisy evaluation on a backend")
        self.backend, self.seed = backend, seed
        self.sim = (AerSimulator.from_backend(backend, method="density_matrix") if noise
                    else AerSimulator(method="density_matrix"))
        self._segments: dict[tuple, tuple] = {}
        self.reset_stats()
        target = backend.target
        self.readout_error = {}
        if noise and "measure" in target.operation_names:
            self.readout_error = {q[0]: (p.error or 0.0) for q, p in target["measure"].items()
                                  if p is not None}

    def reset_stats(self) -> None:
        """Clear the per-token distances gathered by :meth:`probabilities`."""
        self._tvd: list[torch.Tensor] = []

    def token_distances(self) -> dict[str, list[float]]:
        """Mean over the examples, heads and layers evaluated since :meth:`reset_stats`, per
        token: ``tvd`` the total-variation distance of the noisy readout distribution from
        the noiseless one, ``tvd_uniform`` that of the uniform distribution (what complete
        decoherence would leave) from the noiseless one."""
        if not self._tvd:
            return {"tvd": [], "tvd_uniform": []}
        length = min(t.shape[1] for t in self._tvd)
        both = torch.cat([t[:, :length] for t in self._tvd]).mean(0)  # (length, 2)
        return {"tvd": both[:, 0].tolist(), "tvd_uniform": both[:, 1].tolist()}

    def _segment(self, n_qubits: int, depth: int, layout: tuple[int, ...] | None):
        """(transpiled template, parameter order, layout after it) of one token (with the
        state preparation when ``layout`` is None: the transpiler chooses the layout)."""
        key = (n_qubits, depth, layout)
        if key not in self._segments:
            qc = _template(n_qubits, depth, layout is None)
            tqc = transpile_for(qc, self.backend, self.seed,
                                **({} if layout is None else {"initial_layout": list(layout)}))
            final = tuple(tqc.layout.final_index_layout())
            order = [(p.vector.name, p.index) for p in tqc.parameters]
            self._segments[key] = (tqc, order, final)
        return self._segments[key]

    def layouts(self, n_qubits: int, depth: int, length: int) -> list[tuple[int, ...]]:
        """The physical qubit of each wire after every token."""
        out, layout = [], None
        for _ in range(length):
            layout = self._segment(n_qubits, depth, layout)[2]
            out.append(layout)
        return out

    def density_matrices(self, n_qubits: int, depth: int, prep, theta, angles) -> np.ndarray:
        """(R, L, 2^n, 2^n) density matrices (qlam's wire order) after every token of R
        head-and-example runs: prep (R, n_prep), theta (R, n_params), angles (R, L, n_in)."""
        runs, length = angles.shape[:2]
        circuits = []
        for r in range(runs):
            values = {"p": prep[r], "t": theta[r]}
            qc, layout = None, None
            for t in range(length):
                tqc, order, layout_next = self._segment(n_qubits, depth, layout)
                values["x"] = angles[r, t]
                seg = tqc.assign_parameters([float(values[v][i]) for v, i in order])
                if qc is None:
                    qc = seg.copy_empty_like()
                qc.compose(seg, inplace=True)
                layout = layout_next
                qc.save_density_matrix(qubits=list(reversed(layout)), label=f"t{t}")
            circuits.append(qc)
        result = self.sim.run(circuits).result()
        if not result.success:
            raise RuntimeError(f"Aer simulation failed: {result.status}")
        return np.stack([np.stack([np.asarray(result.data(i)[f"t{t}"]) for t in range(length)])
                         for i in range(runs)])

    def measurement_flips(self, probs: torch.Tensor, layouts) -> torch.Tensor:
        """probs (..., L, 2^n) with each wire's bit flipped at its physical qubit's readout
        error (the layout of each token)."""
        n = len(layouts[0])
        out = probs.clone()
        for t, layout in enumerate(layouts):
            p = out[..., t, :]
            for wire, q in enumerate(layout):
                e = self.readout_error.get(q, 0.0)
                if e:
                    shaped = p.reshape(*p.shape[:-1], *(2,) * n)
                    p = ((1 - e) * shaped + e * shaped.flip(p.dim() - 1 + wire)).reshape(p.shape)
            out[..., t, :] = p
        return out

    @torch.no_grad()
    def probabilities(self, mem: QLAM, x: torch.Tensor, state=None, lengths=None):
        """Drop-in for :meth:`QLAM.probabilities` (B, L, H, 2^n) under the noise model;
        the returned final state is the noiseless one (the classifier does not use it)."""
        if state is not None:
            raise ValueError("noisy evaluation on a backend starts every head from its "
                             "prepared state (no state argument)")
        if lengths is not None:
            raise ValueError("noisy evaluation on a backend takes unpadded batches (no "
                             "lengths): evaluate examples of one length together")
        exact, final = QLAM.probabilities(mem, x)  # checks x; the noiseless results
        b, length, _ = x.shape
        h, n = mem.n_heads, mem.n_qubits
        dt = mem.dt().double()
        angles = mem.in_proj(x).view(b, length, h, mem.n_angles).double() * dt[:, None]
        theta = mem.theta.double() * dt[:, None]
        # (the density matrices are NumPy's, on the CPU; the model may be on a GPU)
        runs = self.density_matrices(
            n, mem.depth, mem.prep_theta.double().repeat(b, 1).cpu().numpy(),
            theta.repeat(b, 1).cpu().numpy(),
            angles.permute(0, 2, 1, 3).reshape(b * h, length, -1).cpu().numpy())
        rho = torch.from_numpy(runs).to(x.device).view(b, h, length, 2**n, 2**n).transpose(1, 2)
        if mem.query_basis:
            rp = mem._phases(x, mem.q_basis, None, "read")[:, :, :, 0].double()
            pair = mem._dense(mem._read, mem.read_theta)[:, 0]
            m_read = torch.complex(pair[:, 0], pair[:, 1])  # (H, N, N)
            rho = m_read @ (rho * pure_density(torch.polar(torch.ones_like(rp), rp))) @ m_read.mH
        probs = torch.diagonal(rho, dim1=-2, dim2=-1).real.clamp_min(0)
        layouts = self.layouts(n, mem.depth, length)
        probs = self.measurement_flips(probs.transpose(1, 2), layouts).transpose(1, 2)
        exact = exact.double()
        tvd = 0.5 * (probs - exact).abs().sum(-1)  # (B, L, H)
        tvd_u = 0.5 * (exact - 1 / exact.shape[-1]).abs().sum(-1)
        self._tvd.append(torch.stack([tvd, tvd_u], -1).transpose(1, 2).flatten(0, 1))  # (BH, L, 2)
        return probs.to(x.dtype), final

    @contextlib.contextmanager
    def attached(self, memories):
        """Evaluate the QLAM layers ``memories`` on this device inside the block."""
        try:
            for m in memories:
                m.probabilities = (lambda x, state=None, lengths=None, _m=m:
                                   self.probabilities(_m, x, state, lengths))
            yield self
        finally:
            for m in memories:
                m.__dict__.pop("probabilities", None)


__all__ = ["get_backend", "backend_names", "transpile_for", "device_cost", "device_report",
           "NoisyDevice"]
