"""Conventions shared by every sequence model: input checks, the token embedding and pooling.

Inputs are float features (B, L, n_features), embedded by a Linear map, or, with
``discrete=True``, int token ids (B, L) in ``[0, n_features)``, embedded by nn.Embedding.
Pooling: ``mean`` or ``last`` give one output per sequence (B, D); ``none`` keeps one per
token (B, L, D), for per-token targets.
"""

from __future__ import annotations

import torch
from torch import nn

POOLS = ("mean", "last", "none")


def check_pool(pool: str) -> str:
    if pool not in POOLS:
        raise ValueError(f"pool must be 'mean', 'last' or 'none' (per token), got {pool!r}")
    return pool


def token_embedding(n_features: int, d_model: int, discrete: bool = False) -> nn.Module:
    """Linear(n_features, d_model) for features, Embedding(n_features, d_model) for ids."""
    return nn.Embedding(n_features, d_model) if discrete else nn.Linear(n_features, d_model)


def check_input(x: torch.Tensor, n_features: int, discrete: bool = False) -> None:
    if discrete:
        if x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"input must be int token ids of shape (batch, length), got "
                             f"{tuple(x.shape)} {x.dtype}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= n_features):
            raise ValueError(f"token ids must lie in [0, {n_features}), got "
                             f"{int(x.min())}..{int(x.max())}")
    elif x.dim() != 3 or x.shape[-1] != n_features:
        raise ValueError(f"input must have shape (batch, length, {n_features}), got {tuple(x.shape)}")


def pool_tokens(h: torch.Tensor, pool: str) -> torch.Tensor:
    """(B, L, D) -> (B, D): the mean over tokens or the last token; (B, L, D) for 'none'."""
    if pool == "none":
        return h
    return h.mean(1) if pool == "mean" else h[:, -1]
