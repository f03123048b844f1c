"""Rotation matrices as cos I - i sin P, and apply_ops' fusing of consecutive gates on the
same wires: checked against hand-written matrices and one-gate-at-a-time application."""

from __future__ import annotations

import math

import torch

from qlam.circuit import Circuit
from qlam.sim import gates
from qlam.sim.statevector import apply_matrix, apply_ops, unitary


def test_rotation_matrices_by_hand():
    t = torch.tensor([0.3, -1.7], dtype=torch.float64)
    c, s = torch.cos(t / 2), torch.sin(t / 2)
    like = torch.zeros(1, dtype=torch.float64)
    z = torch.zeros_like(c)
    want = {
        "rx": [[c, -1j * s], [-1j * s, c]],
        "ry": [[c, -s], [s, c]],
        "rz": [[c - 1j * s, z], [z, c + 1j * s]],
        "rzz": [[c - 1j * s, z, z, z], [z, c + 1j * s, z, z], [z, z, c + 1j * s, z],
                [z, z, z, c - 1j * s]],
        "rxx": [[c, z, z, -1j * s], [z, c, -1j * s, z], [z, -1j * s, c, z], [-1j * s, z, z, c]],
        "ryy": [[c, z, z, 1j * s], [z, c, -1j * s, z], [z, -1j * s, c, z], [1j * s, z, z, c]],
    }
    for name, rows in want.items():
        m = torch.stack([torch.stack([torch.as_tensor(e).to(torch.complex128) for e in r], -1)
                         for r in rows], -2)
        torch.testing.assert_close(gates.matrix(name, [t], like), m, atol=1e-15, rtol=0)


def test_consecutive_gates_on_the_same_wires_fuse_to_the_same_state():
    c = Circuit(3)
    c.rx(0, 0.4).ry(0, -1.1).rxx(1, 2, 0.7).ryy(1, 2, 0.2).cnot(0, 1).rz(1, 0.9).h(1)
    psi = torch.randn(2, 8, dtype=torch.complex128)
    one_by_one = psi
    for op in c.ops:
        u = gates.matrix(op.name, [a.evaluate(None, None) for a in op.angles], psi)
        one_by_one = apply_matrix(one_by_one, u, op.wires, 3)
    torch.testing.assert_close(apply_ops(psi, c.ops, 3, None, None), one_by_one,
                               atol=1e-14, rtol=0)
    # RX then RY on one qubit: RY RX, the later gate on the left
    cc = Circuit(1)
    cc.rx(0, 0.4).ry(0, -1.1)
    ry = torch.tensor([[math.cos(-0.55), -math.sin(-0.55)], [math.sin(-0.55), math.cos(-0.55)]],
                      dtype=torch.complex128)
    rx = torch.tensor([[math.cos(0.2), -1j * math.sin(0.2)], [-1j * math.sin(0.2), math.cos(0.2)]],
                      dtype=torch.complex128)
    torch.testing.assert_close(unitary(cc.ops, 1), ry @ rx, atol=1e-15, rtol=0)
