"""The QLAM layer in plain complex arithmetic: token by token, head by head, gate by gate.

The reference to read (and to test the fused path against): no lowering, no real pairs, no
fused unitaries, complex128 throughout. Same parameters as :class:`qlam.memory.QLAM`; exact
readout only (no shots, no noise). Slow: for small inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qlam.sim.measure import walsh_matrix
from qlam.sim.statevector import apply_ops


def _linear(proj: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, proj.weight.double(), proj.bias.double())


def qlam_reference(layer, x: torch.Tensor):
    """x (B, L, d_model) -> y (B, L, d_model) float64 and the final state (B, H, 2^n)."""
    x = x.double()
    b, length, _ = x.shape
    h, n = layer.n_heads, layer.n_qubits
    dt = layer.log_dt.double().exp()                                     # (H,) Delta_h
    angles = _linear(layer.in_proj, x).view(b, length, h, -1) * dt[:, None]  # (B, L, H, F)
    theta = layer.theta.double() * dt[:, None]                           # (H, P) Delta_h theta
    psi = []                                                             # H x (B, 2^n)
    for k in range(h):                                                   # |psi_0>: RY, RZ per qubit
        zero = torch.zeros(b, 2**n, dtype=torch.complex128)
        zero[:, 0] = 1
        psi.append(apply_ops(zero, layer.prep.ops, n, layer.prep_theta[k].double(), None))
    probs = torch.zeros(b, length, h, 2**n, dtype=torch.float64)
    for t in range(length):
        for k in range(h):
            # |psi_t> = U(x_t) |psi_{t-1}>, U = prod_r W_r(Delta theta) D_r(Delta in_proj(x_t))
            psi[k] = apply_ops(psi[k], layer.circuit.ops, n, theta[k], angles[:, t, k])
            read = psi[k]
            if layer.query_basis:                                        # basis chosen by q_t
                q = _linear(layer.q_basis, x[:, t]).view(b, h, n)[:, k]  # (B, n)
                read = apply_ops(read, layer.read.ops, n, layer.read_theta[k].double(), q)
            probs[:, t, k] = read.real.square() + read.imag.square()     # Born rule
    k_max = n if layer.read_order is None else layer.read_order          # strings on <= k qubits
    read = [s - 1 for s in range(1, 2**n) if bin(s).count("1") <= k_max]  # column S-1: string S
    z = probs @ walsh_matrix(n)[:, read]                                 # (B, L, H, n_read) <Z_S>
    feats = z.flatten(2) * _linear(layer.q_weight, x)                    # query-weighted strings
    return _linear(layer.out_proj, feats), torch.stack(psi, 1)


__all__ = ["qlam_reference"]
