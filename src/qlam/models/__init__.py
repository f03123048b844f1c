"""Sequence classifiers: QLAM and the baselines, built by name.

Every model maps (batch, length, n_features) float inputs to (batch, n_classes) logits.
"""

from __future__ import annotations

from torch import nn

from qlam.models.qlam import QLAMBlock, QLAMClassifier

# name -> (class, the keyword arguments it accepts from a training config)
REGISTRY: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "qlam": (QLAMClassifier, ("d_model", "n_layers", "n_heads", "n_qubits", "depth", "mlp_ratio",
                              "dropout", "pool", "dt_min", "dt_max", "query_basis")),
}


def build_model(name: str, n_features: int, n_classes: int, **options) -> nn.Module:
    """Build model ``name``; options it does not take are ignored, None means default."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    cls, accepted = REGISTRY[name]
    kwargs = {k: v for k, v in options.items() if k in accepted and v is not None}
    return cls(n_features, n_classes, **kwargs)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["REGISTRY", "build_model", "count_params", "QLAMClassifier", "QLAMBlock"]
