"""Reference simulator: batched state vectors, one gate at a time.

States are complex tensors (batch, 2^n) with wire 0 the most significant bit of the index.
This path runs any circuit and is the ground truth for the compiled fast path.
"""

from __future__ import annotations

import os

import torch

from qlam.circuit import Circuit
from qlam.sim import gates

REAL_TO_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype in REAL_TO_COMPLEX:
        return REAL_TO_COMPLEX[dtype]
    if dtype in (torch.complex64, torch.complex128):
        return dtype
    raise TypeError(f"dtype must be float32/float64 (or complex64/128), got {dtype}")


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 / float64 for a real or complex ``dtype`` (a TypeError for any other)."""
    complex_dtype(dtype)  # checks it
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


@torch.compiler.assume_constant_result  # torch.compile: a constant, not traced
def memory_limit(device=None) -> int:
    """Bytes one tensor may take: half the machine's RAM (CPU) or the free GPU memory."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def check_memory(rows: int, n_qubits: int, dtype, device=None, what: str = "state") -> None:
    """Raise ValueError when a (rows, 2^n) complex tensor would not fit in memory."""
    itemsize = torch.empty((), dtype=complex_dtype(dtype)).element_size()
    need = rows * 2**n_qubits * itemsize
    limit = memory_limit(device)
    if need > limit:
        raise ValueError(
            f"too many qubits for memory: the {what} for {n_qubits} qubits "
            f"({rows} x 2^{n_qubits} {complex_dtype(dtype)}) needs {need / 2**30:.3g} GiB, "
            f"more than the {limit / 2**30:.3g} GiB available")


def zero_state(n_qubits: int, batch: int = 1, dtype=torch.float64, device=None) -> torch.Tensor:
    """|0...0> repeated ``batch`` times: (batch, 2^n) complex."""
    check_memory(batch, n_qubits, dtype, device, f"batch of {batch} state vectors")
    psi = torch.zeros(batch, 2**n_qubits, dtype=complex_dtype(dtype), device=device)
    psi[:, 0] = 1
    return psi


def apply_matrix(psi: torch.Tensor, u: torch.Tensor, wires: tuple[int, ...], n_qubits: int):
    """Apply a k-qubit matrix u, (d, d) or per-batch-row (batch, d, d), to ``wires`` of psi
    (batch, ..., 2^n)."""
    k = len(wires)
    lead = psi.shape[:-1]
    t = psi.reshape(lead + (2,) * n_qubits)
    src = [len(lead) + w for w in wires]
    dst = list(range(len(lead) + n_qubits - k, len(lead) + n_qubits))
    t = t.movedim(src, dst)
    moved_shape = t.shape
    t = t.reshape(lead[0], t[:1].numel() // 2**k, 2**k)  # (an empty batch too)
    t = t @ u.transpose(-1, -2) if u.dim() == 2 else torch.einsum("brj,bij->bri", t, u)
    return t.reshape(moved_shape).movedim(dst, src).reshape(lead + (2**n_qubits,))


def check_params(circuit: Circuit, params, dtype, device) -> torch.Tensor:
    """``params`` (the circuit's initial values when None) checked, in ``dtype`` on
    ``device`` (differentiably)."""
    if params is None:
        return circuit.init_params(dtype).to(device)
    if not isinstance(params, torch.Tensor):
        params = torch.as_tensor(params, dtype=dtype, device=device)
    if params.shape != (circuit.n_params,):
        raise ValueError(f"params must have shape ({circuit.n_params},), got {tuple(params.shape)}")
    if not params.is_floating_point():
        raise TypeError(f"params must be a float tensor, got {params.dtype}")
    if not torch.isfinite(params).all():
        raise ValueError("params contain NaN or inf")
    return params.to(device=device, dtype=dtype)


def check_inputs(circuit: Circuit, inputs, batch_dims: int = 1) -> torch.Tensor | None:
    """Validate inputs of shape (*batch, F) with F >= circuit.n_inputs; returns a tensor."""
    if inputs is None:
        if circuit.n_inputs:
            raise ValueError(f"circuit reads {circuit.n_inputs} input feature(s) but inputs=None")
        return None
    if not isinstance(inputs, torch.Tensor):
        try:
            inputs = torch.as_tensor(inputs)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"inputs must be a tensor or array of numbers: {exc}") from exc
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be a floating-point tensor, got dtype {inputs.dtype}")
    if inputs.dim() != batch_dims + 1:
        want = "(batch, features)" if batch_dims == 1 else f"{batch_dims} batch dims + features"
        raise ValueError(f"inputs must have shape {want}, got {tuple(inputs.shape)}")
    if inputs.shape[-1] < circuit.n_inputs:
        raise ValueError(
            f"inputs have {inputs.shape[-1]} features but the circuit reads {circuit.n_inputs}")
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or inf")
    return inputs


def initial_state(circuit: Circuit, state, batch: int, dtype, device) -> torch.Tensor:
    n = circuit.n_qubits
    if state is None:
        return zero_state(n, batch, dtype, device)
    if not isinstance(state, torch.Tensor) or not state.is_complex():
        raise TypeError("state must be a complex tensor (batch, 2^n)")
    if state.dim() == 1:
        state = state.unsqueeze(0)
    if state.shape[-1] != 2**n or state.dim() != 2:
        raise ValueError(f"state must have shape (batch, {2**n}), got {tuple(state.shape)}")
    norms = state.abs().pow(2).sum(-1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
        raise ValueError(f"state is not normalised (squared norms {norms.detach().tolist()[:4]})")
    if state.shape[0] not in (1, batch):
        raise ValueError(f"state holds {state.shape[0]} states for a batch of {batch} inputs "
                         "(give one state, or one per input)")
    if state.shape[0] != batch:
        state = state.expand(batch, -1)
    return state.to(complex_dtype(dtype))


def batch_size(inputs, state) -> int:
    if inputs is not None:
        return inputs.shape[0]
    if state is not None:
        return 1 if state.dim() == 1 else state.shape[0]
    return 1


def run_reference(circuit: Circuit, inputs=None, params=None, state=None,
                  dtype=torch.float64, device=None) -> torch.Tensor:
    """Simulate gate by gate. inputs (batch, F); returns (batch, 2^n) complex."""
    dtype = real_dtype(dtype)
    theta = check_params(circuit, params, dtype, device)
    x = check_inputs(circuit, inputs)
    if x is not None:
        x = x.to(dtype=dtype, device=device)
    psi = initial_state(circuit, state, batch_size(x, state), dtype, device)
    return apply_ops(psi, circuit.ops, circuit.n_qubits, theta, x)


def apply_ops(psi, ops, n_qubits, theta, x):
    """Apply ``ops`` in order; consecutive gates on the same wires are multiplied into one
    matrix first (one pass over psi for RX then RY on a qubit, RXX then RYY on a pair)."""
    u = wires = None
    for op in ops:
        m = gates.matrix(op.name, [a.evaluate(theta, x) for a in op.angles], psi)
        if op.wires == wires:
            u = m @ u  # the later gate on the left
            continue
        if u is not None:
            psi = apply_matrix(psi, u, wires, n_qubits)
        u, wires = m, op.wires
    return psi if u is None else apply_matrix(psi, u, wires, n_qubits)


def unitary(ops, n_qubits: int, theta=None, dtype=torch.float64, device=None) -> torch.Tensor:
    """The dense (2^n, 2^n) matrix of input-free ``ops`` (differentiable in theta); theta of
    shape (H, P) gives the H matrices (H, 2^n, 2^n), built together; on ``device``, else on
    theta's (a CUDA theta gives a CUDA matrix), else on the CPU."""
    n = 2**n_qubits
    if device is None and isinstance(theta, torch.Tensor):
        device = theta.device
    batched = isinstance(theta, torch.Tensor) and theta.dim() == 2
    check_memory(theta.shape[0] * n if batched else n, n_qubits, dtype, device,
                 "dense unitary (compiled path; method='reference' avoids it)")
    eye = torch.eye(n, dtype=complex_dtype(dtype), device=device)
    if batched:  # a batch of parameter vectors
        eye = eye.expand(theta.shape[0], n, n)
        theta = theta.T  # theta[index]: that parameter of every matrix
    return apply_ops(eye, ops, n_qubits, theta, None).transpose(-2, -1)
