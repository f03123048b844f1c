"""What every sequence model shares: input checks, the token embedding, pooling, the head,
and the evaluation-time readout switch (:meth:`SequenceClassifier.set_readout`).

Inputs are float features (B, L, n_features), embedded by a Linear map, or, with
``discrete=True``, int token ids (B, L) in ``[0, n_features)``, embedded by nn.Embedding.
Pooling: ``mean`` or ``last`` give one output per sequence (B, D); ``none`` keeps one per
token (B, L, D), for per-token targets.
"""

from __future__ import annotations

import torch
from torch import nn

from qlam.padding import pool_tokens

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


class SequenceClassifier(nn.Module):
    """(B, L, n_features) -> (B, n_classes): ``head(features(x))``. Subclasses build
    ``self.head`` and define ``features``; :meth:`set_readout` is how evaluation asks for
    finite shots or noise (models with a quantum readout override it)."""

    def embed_inputs(self, n_features: int, d_model: int, pool: str, discrete: bool) -> None:
        """Keep the input conventions (``n_features``, ``pool``, ``discrete``) and build
        ``self.embed`` (:func:`token_embedding`)."""
        self.n_features, self.pool, self.discrete = n_features, check_pool(pool), discrete
        self.embed = token_embedding(n_features, d_model, discrete)

    def output_layers(self, d_model: int, n_classes: int) -> None:
        """The final LayerNorm ``self.norm`` and the head ``self.head`` (built last, after the
        body, so parameters keep their order)."""
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a tensor, got {type(x).__name__}")
        check_input(x, self.n_features, self.discrete)
        if not self.discrete and x.dtype != self.embed.weight.dtype:
            raise TypeError(f"input must be {self.embed.weight.dtype} like the model's "
                            f"parameters, got {x.dtype}")

    def one_example(self, x: torch.Tensor) -> torch.Tensor:
        """One example (L, n_features), or (L,) token ids, as a batch of one on the model's
        device (features in its dtype)."""
        fits = isinstance(x, torch.Tensor) and (x.dim() == 1 if self.discrete else
                                                x.dim() == 2 and x.shape[1] == self.n_features)
        if not fits:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            want = "(length,) token ids" if self.discrete else f"(length, {self.n_features})"
            raise ValueError(f"x must be one example of shape {want}, got {shape}")
        param = next(self.parameters())
        return (x[None].to(param.device) if self.discrete else
                x[None].to(device=param.device, dtype=param.dtype))

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        """(B, L, n_features) -> (B, n_classes); ``lengths`` (B,) for a right-padded batch
        (padding ignored: the output equals each example's run alone)."""
        return self.head(self.features(x, lengths))

    def set_readout(self, shots: int | None = None, noise=None,
                    generator: torch.Generator | None = None) -> None:
        """Measure with ``shots`` samples per readout or under ``noise`` (a
        :class:`qlam.sim.noise.Channel`), sampled from ``generator``; None, None restores the
        exact readout. This model has no quantum readout: it takes neither."""
        if shots is not None or noise is not None:
            raise ValueError(f"shots and noise apply to quantum-memory models only "
                             f"({type(self).__name__} has no quantum readout)")


__all__ = ["POOLS", "SequenceClassifier", "check_input", "check_pool", "pool_tokens",
           "token_embedding"]
