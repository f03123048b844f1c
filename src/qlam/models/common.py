"""Conventions shared by every sequence classifier: input checks and pooling."""

from __future__ import annotations

import torch

POOLS = ("mean", "last")


def check_pool(pool: str) -> str:
    if pool not in POOLS:
        raise ValueError(f"pool must be 'mean' or 'last', got {pool!r}")
    return pool


def check_input(x: torch.Tensor, n_features: int) -> None:
    if x.dim() != 3 or x.shape[-1] != n_features:
        raise ValueError(f"input must have shape (batch, length, {n_features}), got {tuple(x.shape)}")


def pool_tokens(h: torch.Tensor, pool: str) -> torch.Tensor:
    """(B, L, D) -> (B, D): the mean over tokens or the last token."""
    return h.mean(1) if pool == "mean" else h[:, -1]
