"""The old default (main before issue 21, commit c68fb6d): qlam.statevector(c) on the Ising
circuit of qlam.bench.circuits (copied here: the old tree has no such module). Run with
PYTHONPATH pointing at the old tree's src/ (`git archive c68fb6d src | tar -x -C OLD`)."""

import time

import torch

import qlam
from qlam.circuit import Circuit


def ising_circuit(n, steps=13):
    c = Circuit(n)
    for q in range(n):
        c.h(q)
    for s in range(steps):
        for q in range(n - 1):
            c.cnot(q, q + 1)
            c.rz(q + 1, 0.1 * (s + 1))
            c.cnot(q, q + 1)
        for q in range(n):
            c.rx(q, 0.05 * (q + 1))
    return c


torch.set_num_threads(1)
c = ising_circuit(10)
t0, c0 = time.perf_counter(), time.process_time()
qlam.statevector(c)
print(f"old default qlam.statevector, {qlam.__file__}: n=10 gates={len(c)}: "
      f"{time.perf_counter() - t0:.4g} s wall, {time.process_time() - c0:.4g} s CPU")
