"""Loss and accuracy for each kind of target (``Task.target``).

=============  =====================  ===============================  ==================
target         model output           loss                             accuracy
=============  =====================  ===============================  ==================
class          (B, C) logits          cross-entropy                    argmax == label
regression     (B, 1)                 mean squared error               |error| < 0.04
tokens         (B, L, C) logits       cross-entropy over the target    argmax == label, over
                                      positions (label != -100)        the target positions
=============  =====================  ===============================  ==================

The tolerance accuracy of the regression target is the adding problem's usual "solved"
criterion read per example; its loss, the MSE, is the figure to quote.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qlam.data.generated import REGRESSION_TOLERANCE
from qlam.data.recall import IGNORE_INDEX

TARGETS = ("class", "regression", "tokens")
METRICS = {
    "class": "accuracy",
    "regression": f"mse (loss); acc = fraction with |error| < {REGRESSION_TOLERANCE}",
    "tokens": "accuracy over the target tokens",
}


def check_target(kind: str) -> str:
    if kind not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {kind!r}")
    return kind


def batch_stats(out: torch.Tensor, y: torch.Tensor, kind: str):
    """(mean loss tensor, correct, count) of one batch: ``count`` is the examples, or the
    target tokens for ``tokens``, so ``loss * count`` and ``correct`` sum over batches."""
    check_target(kind)
    if kind == "class":
        return F.cross_entropy(out, y), int((out.argmax(-1) == y).sum()), int(y.shape[0])
    if kind == "regression":
        if out.dim() != 2 or out.shape[-1] != 1:
            raise ValueError(f"a regression model outputs (batch, 1), got {tuple(out.shape)}")
        pred = out[:, 0]
        close = (pred - y).abs() < REGRESSION_TOLERANCE
        return F.mse_loss(pred, y), int(close.sum()), int(y.shape[0])
    if out.dim() != 3 or out.shape[:2] != y.shape:
        raise ValueError(f"per-token targets {tuple(y.shape)} need per-token outputs "
                         f"(batch, length, classes), got {tuple(out.shape)}: use pool 'none'")
    mask = y != IGNORE_INDEX
    count = int(mask.sum())
    if count == 0:
        return out.sum() * 0.0, 0, 0
    logits, labels = out[mask], y[mask]
    return F.cross_entropy(logits, labels), int((logits.argmax(-1) == labels).sum()), count
