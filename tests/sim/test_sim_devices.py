"""The simulator on CUDA against the CPU (``cuda`` marker: skipped without a GPU,
scripts/cuda_check.py runs them). Kept apart from the oracle tests, whose module needs
Qiskit and PennyLane: these import nothing beyond qlam and torch, so they run on a GPU
machine without the peers."""

from __future__ import annotations

import pytest
import torch
from circuit_oracles import random_args, random_circuit

import qlam


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_statevector_on_cuda_matches_the_cpu_reference(dtype):
    c = random_circuit(5000, n_qubits=6, n_gates=40)
    params, inputs = random_args(c, 0, batch=8, dtype=dtype)
    want = qlam.statevector(c, inputs, params, method="reference", dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    for method in ("reference", "compiled"):  # params on the GPU, and left on the CPU
        for p in (params.cuda(), params):
            got = qlam.statevector(c, inputs.cuda(), p, method=method, dtype=dtype,
                                   device="cuda")
            assert got.device.type == "cuda"
            torch.testing.assert_close(got.cpu(), want, atol=tol, rtol=0)


def test_dense_unitaries_are_built_on_the_parameters_device():
    """``unitary`` and the structured build above GENERIC_W_MAX_QUBITS give matrices on
    theta's device. PyTorch's "meta" device (shapes, no data) stands in for CUDA: a matrix
    built on the CPU from a meta theta fails or shows up as a CPU tensor (unitary built its
    identity on the CPU; meta does not catch the CPU tail matrix meeting a meta one, which
    CUDA would)."""
    from qlam.sim.lowering import GENERIC_W_MAX_QUBITS, structured_unitary
    from qlam.sim.statevector import unitary

    c = qlam.Circuit(3)
    for q in range(3):
        c.ry(q, c.new_param(0.1 * q))
    c.rxx(0, 2, c.new_param(0.4))
    c.cnot(1, 2)
    theta = c.init_params(torch.float64).to("meta")
    assert unitary(c.ops, 3, theta).device.type == "meta"
    assert unitary(c.ops, 3, theta.expand(2, -1)).shape == (2, 8, 8)
    n = GENERIC_W_MAX_QUBITS + 1
    big = qlam.Circuit(n)
    for q in range(n):
        big.ry(q, big.new_param(0.3))
    big.h(0)  # a parameter-free tail that is not a permutation: a cached dense matrix
    u = structured_unitary(big.ops, n, big.init_params(torch.float64).to("meta"))
    assert u.device.type == "meta" and u.shape == (2**n, 2**n)


def test_the_factored_kernel_is_chosen_for_cpu_tensors_only():
    """``circuit_scan(..., backward="kernel")`` runs the factored scan on the C++ kernel only
    for CPU tensors; on other devices "kernel" means that device's engine (Triton, dense)
    and the factored scan runs in PyTorch ("meta" stands in for CUDA: the CPU-only kernel
    had been picked for any device)."""
    from qlam.sim.circuit_scan import _kernel_runs
    from qlam.sim.scan import cpp

    cpu, meta = torch.zeros(2, 1, 2, 16), torch.zeros(2, 1, 2, 16, device="meta")
    assert _kernel_runs("kernel", 4, cpu, cpu)
    assert not _kernel_runs("kernel", 4, meta, meta)
    assert not _kernel_runs("auto", 4, meta, meta)
    assert _kernel_runs("auto", 4, cpu, cpu) == cpp.available()
    assert not _kernel_runs("reversible", 4, cpu, cpu)
