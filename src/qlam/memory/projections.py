"""The QLAM layer's maps from tokens x (B, L, d) to its circuits' inputs: each head's input
angles (a Linear map scaled per head), and the phases they set, ``angles . map + offset``
with the lowered circuit's phase map (R, F, N) and offset (R, N), folded into one Linear map
for the engines that take phases; the compiled kernel takes the angles and expands them
itself (:func:`qlam.sim.scan.cpp.scan_kernel`, ``maps``)."""

from __future__ import annotations

import torch
from torch import nn


def angle_linear(proj: nn.Linear, n_heads: int, scale: torch.Tensor | None, dtype):
    """Weight (H, F, d) and bias (H, F) of ``proj``, which gives each of the ``n_heads``
    heads F input angles, times the head's ``scale`` (H,) (None: 1)."""
    weight = proj.weight.view(n_heads, -1, proj.in_features).to(dtype)
    bias = proj.bias.view(n_heads, -1).to(dtype)
    if scale is not None:
        weight, bias = weight * scale[:, None, None], bias * scale[:, None]
    return weight, bias


def phase_linear(proj: nn.Linear, n_heads: int, scale: torch.Tensor | None,
                 a_map: torch.Tensor, offset: torch.Tensor, dtype):
    """Weight (H*R*N, d) and bias (H*R*N,) of one Linear map from x to every head's phases:
    :func:`angle_linear`'s angles through the phase map a_map (R, F, N) and offset (R, N),
    folded into one GEMM over d."""
    a_map, offset = a_map.to(dtype), offset.to(dtype)
    r, _, n = a_map.shape
    weight, bias = angle_linear(proj, n_heads, scale, dtype)
    w_eff = torch.einsum("hfd,rfn->hrnd", weight, a_map).reshape(n_heads * r * n, -1)
    b_eff = (torch.einsum("hf,rfn->hrn", bias, a_map) + offset).reshape(-1)
    return w_eff, b_eff


def angles(x: torch.Tensor, linear) -> torch.Tensor:
    """(B, L, H, F) angles of x (B, L, d) through :func:`angle_linear`'s (weight, bias)."""
    weight, bias = linear
    return nn.functional.linear(x, weight.flatten(0, 1), bias.flatten()).view(
        *x.shape[:2], *bias.shape)
