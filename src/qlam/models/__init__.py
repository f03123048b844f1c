"""Sequence models: QLAM and the baselines, built by name.

Every model maps (batch, length, n_features) float inputs (or (batch, length) token ids with
``discrete=True``) to (batch, n_classes) outputs and shares QLAM's conventions: a Linear
token embedding (nn.Embedding for ids) to ``d_model``, a final LayerNorm, mean (or
last-token, ``pool="last"``) pooling and a Linear head; ``pool="none"`` gives one output per
token, (batch, length, n_classes). A regression output is a head of width 1.
"""

from __future__ import annotations

import inspect

from torch import nn

from qlam.models.common import SequenceClassifier
from qlam.models.qlam import MixedQLAMClassifier, QLAMBlock, QLAMClassifier
from qlam.models.qlstm import QLSTMClassifier
from qlam.models.rnn import GRUClassifier, LSTMClassifier, RNNClassifier
from qlam.models.ssm import SSMClassifier
from qlam.models.transformer import TransformerClassifier

# name -> classifier; the options each takes from a training config are its named
# keyword parameters (:func:`model_options`)
REGISTRY: dict[str, type[SequenceClassifier]] = {
    "qlam": QLAMClassifier,
    "qlam-mixed": MixedQLAMClassifier,
    "rnn": RNNClassifier,
    "lstm": LSTMClassifier,
    "gru": GRUClassifier,
    "transformer": TransformerClassifier,
    "ssm": SSMClassifier,
    "qlstm": QLSTMClassifier,
}


def _check_name(name: str) -> None:
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(REGISTRY))}")


def model_options(name: str) -> tuple[str, ...]:
    """The options model ``name`` takes: its constructor's named parameters after
    (n_features, n_classes)."""
    _check_name(name)
    params = list(inspect.signature(REGISTRY[name]).parameters.values())[2:]
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def build_model(name: str, n_features: int, n_classes: int, **options) -> SequenceClassifier:
    """Build model ``name`` with ``options`` (None: the model's default). Options that only
    other registered models take are ignored, so one set of options builds every model (as
    in a sweep); a model whose constructor takes ``**kwargs`` (QLAM: its memory layer's
    options, e.g. ``backward``) passes the rest on; any other option is an error naming it."""
    accepted = model_options(name)
    cls = REGISTRY[name]
    forwards = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls).parameters.values())
    others = set().union(*(model_options(m) for m in REGISTRY)) - set(accepted)
    kwargs = {k: v for k, v in options.items() if v is not None and k not in others}
    unknown = [k for k in kwargs if k not in accepted]
    if unknown and not forwards:
        raise ValueError(f"model {name!r} does not take {', '.join(unknown)}; its options: "
                         f"{', '.join(accepted)}")
    try:
        return cls(n_features, n_classes, **kwargs)
    except TypeError as e:  # an option that the layer behind **kwargs does not take either
        if not unknown or "unexpected keyword argument" not in str(e):
            raise
        raise ValueError(f"model {name!r} does not take {', '.join(unknown)} ({e})") from None


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _d_model_step(name: str, options: dict) -> int:
    """d_model must be a multiple of this (the head count for attention models)."""
    cls = REGISTRY[name]
    key = getattr(cls, "d_model_multiple_of", None)
    if key is None:
        return 1
    value = options.get(key)
    if value is None:
        value = inspect.signature(cls).parameters[key].default
    return int(value)


def size_to_budget(name: str, n_features: int, n_classes: int, target_params: int,
                   max_d_model: int = 4096, **options) -> int:
    """The ``d_model`` whose parameter count is closest to ``target_params`` (the other
    ``options`` fixed). Counts grow monotonically with d_model, so a binary search over
    the allowed widths (multiples of the head count for the transformer) finds it."""
    _check_name(name)
    if target_params < 1:
        raise ValueError(f"target_params must be >= 1, got {target_params}")
    options = {k: v for k, v in options.items() if k != "d_model"}
    step = _d_model_step(name, options)
    cache: dict[int, int] = {}

    def count(m: int) -> int:  # m multiples of step
        if m not in cache:
            cache[m] = count_params(build_model(name, n_features, n_classes,
                                                d_model=m * step, **options))
        return cache[m]

    top = max(1, max_d_model // step)
    if count(1) > 1.1 * target_params:  # (d_model 1 had been returned without a word)
        raise ValueError(f"{name}: even d_model={step} has {count(1)} parameters, over the "
                         f"target {target_params} by more than 10 %; give a larger --params")
    lo, hi = 1, 1
    while count(hi) < target_params:  # grow geometrically: huge widths are slow to build
        if hi == top:
            raise ValueError(f"{name}: even d_model={hi * step} has {count(hi)} parameters, "
                             f"fewer than the target {target_params}")
        lo, hi = hi + 1, min(2 * hi, top)
    while lo < hi:  # smallest m with count(m) >= target
        mid = (lo + hi) // 2
        if count(mid) >= target_params:
            hi = mid
        else:
            lo = mid + 1
    best = min((m for m in (lo - 1, lo) if m >= 1), key=lambda m: abs(count(m) - target_params))
    return best * step


__all__ = ["REGISTRY", "SequenceClassifier", "model_options", "build_model", "count_params",
           "size_to_budget", "QLAMClassifier", "MixedQLAMClassifier",
           "QLAMBlock", "RNNClassifier", "LSTMClassifier", "GRUClassifier", "TransformerClassifier",
           "SSMClassifier", "QLSTMClassifier"]
