"""Adapters of the peers for `qlam bench sim`: TensorCircuit-NG on JAX, Qulacs and TorchQuantum.

Each adapter runs the benchmark's circuit (:func:`qlam.bench.sim_impls.benchmark_circuit`),
translated op by op from the qlam ``Circuit``, forward + backward on a ``Setup``, leaves the
gradient in ``setup.theta.grad`` and returns the loss, like every row of the benchmark:

- ``tensorcircuit-jax``: ``tc.Circuit(n, inputs=psi)`` per token inside ``jax.lax.scan`` over
  the tokens, ``jax.vmap`` over the batch, ``jax.value_and_grad`` and ``jax.jit``; the
  compilation (ahead of time, once per shape and dtype) is timed apart and recorded as
  ``compile_s``, never inside a timed run. complex64 for float32 setups, complex128 for
  float64 (the agreement check).
- ``qulacs``: one ``ParametricQuantumCircuit`` per sequence length (every token's gates, the
  input angles as parameters set per example), forward by ``update_quantum_state`` and the
  gradient by Qulacs' C++ adjoint ``backprop_inner_product`` with the bra ``diag(w) psi``
  (d loss/d angle = 2 Re <w psi| d psi/d angle>), one example at a time (Qulacs has no
  batch); double precision only.
- ``torchquantum``: TorchQuantum's batched state vector, gate by gate through
  ``torchquantum.functional``, PyTorch autograd for the gradient. Its only release for
  Python 3.11 pins qiskit < 1, so it runs from an environment of its own (the commands in
  ``benchmarks/peers/requirements-torchquantum.txt``).

All honour one thread when torch runs one (TorchQuantum runs on torch's threads; for JAX and
Qulacs ``XLA_FLAGS`` / ``OMP_NUM_THREADS`` are set before their first import; run the
benchmark under ``taskset -c 0`` to be sure).
``s`` is a :class:`qlam.bench.sim_impls.Setup` throughout (not imported: that module imports
this one).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch

# compile seconds of the last compilation per (impl, n_qubits, batch, tokens, dtype)
COMPILE_SECONDS: dict[tuple, float] = {}


def _one_thread_env() -> None:
    """Single-threaded XLA / OpenMP when torch runs one thread (before the first import)."""
    if torch.get_num_threads() == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if "multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                       "intra_op_parallelism_threads=1").strip()
        os.environ.setdefault("OMP_NUM_THREADS", "1")


def structure(circuit) -> tuple:
    """A cache key naming the circuit's gates (not its object id, which Python reuses)."""
    return (circuit.n_qubits, tuple((op.name, tuple(op.wires), tuple(str(a) for a in op.angles))
                                    for op in circuit.ops))


def _angle(a, theta, x_t):
    """An Angle of the benchmark circuit: theta[i] or x_t[i] (with its float a, b)."""
    if a.kind == "param":
        return theta[a.index]
    if a.kind == "input":
        return a.a * x_t[a.index] + a.b
    return a.value


# ---- TensorCircuit-NG (JAX) -----------------------------------------------------------------
_TC_FUNCS: dict = {}


def _jax():
    """JAX, set up before its first use: one thread where torch runs one, 64-bit types
    enabled (float64 for the agreement check; arrays made before would be cut to 32)."""
    _one_thread_env()
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def _tc_function(s, complex_dtype: str):
    """The jitted value-and-grad of the batch loss for this circuit: f(theta, x, w)."""
    key = (structure(s.circuit), complex_dtype)
    if key in _TC_FUNCS:
        return _TC_FUNCS[key]
    jax = _jax()
    import jax.numpy as jnp
    import tensorcircuit as tc

    tc.set_backend("jax")
    tc.set_dtype(complex_dtype)
    n, ops = s.n_qubits, s.circuit.ops

    def token(psi, x_t, theta):
        c = tc.Circuit(n, inputs=psi)
        for op in ops:
            gate = getattr(c, op.name)
            if op.angles:
                gate(*op.wires, theta=_angle(op.angles[0], theta, x_t))
            else:
                gate(*op.wires)
        return c.state()

    def loss_one(theta, xs, w):  # xs (L, F)
        psi0 = jnp.zeros(2**n, dtype=complex_dtype).at[0].set(1)
        psi, _ = jax.lax.scan(lambda p, x_t: (token(p, x_t, theta), None), psi0, xs)
        return jnp.real(jnp.conj(psi) * psi) @ w

    def loss(theta, x, w):
        return jnp.sum(jax.vmap(loss_one, (None, 0, None))(theta, x, w))

    f = jax.jit(jax.value_and_grad(loss))
    _TC_FUNCS.clear()  # one circuit at a time
    _TC_FUNCS[key] = f
    return f


def _jax_device(device_type: str):
    """The JAX device of a torch device type: its CPU, or its first GPU for "cuda"."""
    jax = _jax()
    try:
        return jax.devices("gpu" if device_type == "cuda" else "cpu")[0]
    except RuntimeError as e:
        raise RuntimeError(f"tensorcircuit-jax on {device_type}: this JAX has no "
                           f"{'GPU' if device_type == 'cuda' else 'CPU'} backend "
                           f"(jax {jax.__version__}: {e})") from None


def jax_runs_on(device_type: str) -> bool:
    """Whether JAX has a backend for the device type (CUDA: a GPU plugin)."""
    try:
        _jax_device(device_type)
    except RuntimeError:
        return False
    return True


def _tc_args(s):
    """theta, x, weights as arrays committed to the JAX device of the setup's tensors (so
    the computation runs there, whatever JAX's default backend)."""
    jax = _jax()
    real = np.float64 if s.x.dtype == torch.float64 else np.float32
    arrays = [t.detach().cpu().numpy().astype(real) for t in (s.theta, s.x, s.weights)]
    return tuple(jax.device_put(arrays, _jax_device(s.device.type)))


def _tc_dtype(s) -> str:
    return "complex128" if s.x.dtype == torch.float64 else "complex64"


_TC_COMPILED: dict = {}


def _tc_key(s, args) -> tuple:
    return (structure(s.circuit), _tc_dtype(s), s.device.type,
            tuple((a.shape, str(a.dtype)) for a in args))


def prepare_tensorcircuit(s) -> None:
    """Compile for this shape ahead of time (timed into COMPILE_SECONDS; the run then calls
    the compiled executable)."""
    f, args = _tc_function(s, _tc_dtype(s)), _tc_args(s)
    t0 = time.perf_counter()
    compiled = f.lower(*args).compile()
    COMPILE_SECONDS["tensorcircuit-jax", s.n_qubits, s.batch, s.tokens,
                    str(s.x.dtype)] = time.perf_counter() - t0
    _TC_COMPILED.clear()  # one shape at a time
    _TC_COMPILED[_tc_key(s, args)] = compiled


def run_tensorcircuit(s) -> torch.Tensor:
    args = _tc_args(s)
    f = _TC_COMPILED.get(_tc_key(s, args)) or _tc_function(s, _tc_dtype(s))
    loss, grad = f(*args)
    grad = np.asarray(grad.block_until_ready())
    s.theta.grad = torch.from_numpy(grad.copy()).to(s.theta.device, s.theta.dtype)
    return torch.tensor(float(loss), dtype=torch.float64)


def tensorcircuit_version() -> str:
    import jax
    import tensorcircuit as tc

    return f"tensorcircuit-ng {tc.__version__}, jax {jax.__version__}"


# ---- Qulacs ---------------------------------------------------------------------------------
_QULACS_CACHE: dict = {}


def _qulacs_circuit(s):
    """(circuit, gate list): every token's gates, parametric for every angle; the list maps
    each parametric gate to ("param", theta index) or ("input", token, Angle)."""
    key = (structure(s.circuit), s.tokens)
    if key in _QULACS_CACHE:
        return _QULACS_CACHE[key]
    _one_thread_env()
    from qulacs import ParametricQuantumCircuit

    n = s.n_qubits
    qc = ParametricQuantumCircuit(n)
    slots: list[tuple] = []
    for t in range(s.tokens):
        for op in s.circuit.ops:
            # qlam wire w is bit n-1-w of the amplitude index, Qulacs qubit q is bit q
            wires = [n - 1 - w for w in op.wires]
            if op.name == "cnot":
                qc.add_CNOT_gate(*wires)
                continue
            if op.name not in ("rx", "ry", "rz"):
                raise ValueError(f"the Qulacs adapter cannot translate gate {op.name!r}")
            a = op.angles[0]
            # Qulacs' parametric rotations are exp(+i angle P / 2): pass -angle
            getattr(qc, f"add_parametric_{op.name.upper()}_gate")(wires[0], 0.0)
            slots.append(("param", a.index) if a.kind == "param" else ("input", t, a))
    _QULACS_CACHE.clear()
    _QULACS_CACHE[key] = (qc, slots)
    return qc, slots


def prepare_qulacs(s) -> None:
    t0 = time.perf_counter()
    _qulacs_circuit(s)
    COMPILE_SECONDS["qulacs", s.n_qubits, s.batch, s.tokens,
                    str(s.x.dtype)] = time.perf_counter() - t0


def run_qulacs(s) -> torch.Tensor:
    from qulacs import QuantumState

    qc, slots = _qulacs_circuit(s)
    n = s.n_qubits
    theta = s.theta.detach().double().numpy()
    x = s.x.detach().double().numpy()
    w = s.weights.detach().double().numpy()
    params = [i for i, slot in enumerate(slots) if slot[0] == "param"]
    for i in params:
        qc.set_parameter(i, -theta[slots[i][1]])
    inputs = [(i, slot[1], slot[2]) for i, slot in enumerate(slots) if slot[0] == "input"]
    grad = np.zeros_like(theta)
    total = 0.0
    state, bra = QuantumState(n), QuantumState(n)
    for b in range(s.batch):
        for i, t, a in inputs:
            qc.set_parameter(i, -(a.a * x[b, t, a.index] + a.b))
        state.set_zero_state()
        qc.update_quantum_state(state)
        psi = state.get_vector()
        probs = psi.real**2 + psi.imag**2
        total += float(probs @ w)
        bra.load(w * psi)
        g = np.asarray(qc.backprop_inner_product(bra))
        for i in params:
            grad[slots[i][1]] -= 2 * g[i]  # d/d theta = -d/d (Qulacs angle)
    s.theta.grad = torch.from_numpy(grad).to(s.theta.dtype)
    return torch.tensor(total, dtype=torch.float64)


def qulacs_version() -> str:
    import qulacs

    return f"qulacs {getattr(qulacs, '__version__', '?')}"


# ---- TorchQuantum ---------------------------------------------------------------------------
def run_torchquantum(s) -> torch.Tensor:
    """TorchQuantum's batched state vector (``tq.QuantumDevice(n, bsz=B)``), the circuit's
    gates applied one by one for every token with ``torchquantum.functional`` (one angle per
    example), the gradient by PyTorch autograd through them; complex64 always (TorchQuantum
    builds its gates in single precision), so it agrees with qlam's reference to ~1e-6."""
    import torchquantum as tq
    import torchquantum.functional as tqf

    n, b = s.n_qubits, s.batch
    qdev = tq.QuantumDevice(n_wires=n, bsz=b)  # complex64 only (its gates are built so)
    theta = s.theta.float()  # (the gradient reaches s.theta through the cast)
    for x_t in s.x.float().unbind(1):  # (B, F): the angles broadcast over the batch
        for op in s.circuit.ops:
            if not op.angles:
                getattr(tqf, op.name)(qdev, wires=list(op.wires))
                continue
            angle = op.angles[0].evaluate(theta, x_t)
            params = (angle.expand(b) if angle.dim() == 0 else angle).reshape(b, 1)
            getattr(tqf, op.name)(qdev, wires=list(op.wires), params=params)
    psi = qdev.get_states_1d()
    loss = (psi.real**2 + psi.imag**2) @ s.weights.float()
    loss.sum().backward()
    return loss.detach().sum().to(torch.float64)


def versions_of(*dists: str) -> Callable[[], str]:
    """A peer's ``version()``: "dist X.Y, dist2 Z" of these installed distributions."""
    def version() -> str:
        from importlib.metadata import version as installed

        return ", ".join(f"{d} {installed(d)}" for d in dists)

    return version


torchquantum_version = versions_of("torchquantum", "qiskit")
