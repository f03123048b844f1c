"""How much of a task's validation and test inputs also occur in its training set: generated
tasks draw their splits independently, so at short lengths (parity at length 8 has 256
sequences) the test set is the training set and its accuracy measures memory, not rule."""

from __future__ import annotations

import hashlib

import torch


def _digests(x: torch.Tensor) -> list[bytes]:
    rows = x.detach().cpu().contiguous().reshape(len(x), -1).numpy()
    return [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]


def seen_in_train(train_x: torch.Tensor, splits: dict[str, torch.Tensor]) -> dict[str, float]:
    """For each split's inputs x (N, L, ...), the fraction whose input equals a training input
    (0.0 for an empty x); the training set is hashed once."""
    seen = set(_digests(train_x))
    return {name: sum(d in seen for d in _digests(x)) / len(x) if len(x) else 0.0
            for name, x in splits.items()}
