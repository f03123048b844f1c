"""How much of a task's validation and test inputs also occur in its training set: generated
tasks draw their splits independently, so at short lengths (parity at length 8 has 256
sequences) the test set is the training set and its accuracy measures memory, not rule."""

from __future__ import annotations

import hashlib

import torch


def _digests(x: torch.Tensor) -> list[bytes]:
    rows = x.detach().cpu().contiguous().reshape(len(x), -1).numpy()
    return [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]


def seen_in_train(train_x: torch.Tensor, x: torch.Tensor) -> float:
    """The fraction of the examples of x (N, L, ...) whose input equals a training input
    (0.0 for an empty x)."""
    if len(x) == 0:
        return 0.0
    seen = set(_digests(train_x))
    return sum(d in seen for d in _digests(x)) / len(x)
