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
    for method in ("reference", "compiled"):
        got = qlam.statevector(c, inputs.cuda(), params.cuda(), method=method, dtype=dtype,
                               device="cuda")
        assert got.device.type == "cuda"
        torch.testing.assert_close(got.cpu(), want, atol=tol, rtol=0)
