"""Optimizer hints that modules put on their own parameters (as S4's ``_optim``): the
training script turns them into parameter groups, so it needs no list of names.

A hinted parameter carries ``p._optim = {"weight_decay": 0.0, "lr_scale": MEMORY}``;
``MEMORY`` stands for the training config's ``lr_memory_scale``. Unhinted parameters get
the defaults (decay for matrices, none for vectors).
"""

from __future__ import annotations

import torch

MEMORY = "memory"  # lr_scale placeholder: the config's lr_memory_scale


def mark_memory(*params: torch.nn.Parameter) -> None:
    """Recurrent-memory parameters (quantum circuits' angles, SSM state matrices): no weight
    decay, ``lr_memory_scale`` x the learning rate."""
    for p in params:
        p._optim = {"weight_decay": 0.0, "lr_scale": MEMORY}


def mark_no_decay(*params: torch.nn.Parameter) -> None:
    """Biases stored as matrices (several gates' in one tensor): no weight decay, as 1-D
    biases get by default."""
    for p in params:
        p._optim = {"weight_decay": 0.0}


def hints(p: torch.nn.Parameter) -> dict:
    """The hints on ``p`` ({} when it has none)."""
    return dict(getattr(p, "_optim", {}))


__all__ = ["MEMORY", "mark_memory", "mark_no_decay", "hints"]
