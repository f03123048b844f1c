"""Recurrent baselines: tanh RNN, LSTM and GRU (torch's fused cuDNN/oneDNN modules).

Same conventions as :class:`qlam.models.qlam.QLAMClassifier`: a Linear embedding of each token
to ``d_model``, ``n_layers`` stacked recurrent layers of width ``d_model``, a final LayerNorm,
mean (or last-token) pooling and a Linear head. (B, L, n_features) -> (B, n_classes).
"""

from __future__ import annotations

import torch
from torch import nn

from qlam.models.common import check_input, check_pool, pool_tokens, token_embedding

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RNNClassifier(nn.Module):
    """A stacked recurrent classifier; ``cell`` is 'rnn' (tanh), 'lstm' or 'gru'."""

    cell = "rnn"

    def __init__(self, n_features: int, n_classes: int, d_model: int = 64, n_layers: int = 2,
                 dropout: float = 0.0, pool: str = "mean", cell: str | None = None,
                 discrete: bool = False):
        super().__init__()
        cell = cell or type(self).cell
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        if d_model < 1 or n_layers < 1:
            raise ValueError(f"need d_model, n_layers >= 1, got {d_model}, {n_layers}")
        self.cell, self.n_features, self.pool = cell, n_features, check_pool(pool)
        self.discrete = discrete
        self.embed = token_embedding(n_features, d_model, discrete)
        self.rnn = CELLS[cell](d_model, d_model, num_layers=n_layers, batch_first=True,
                               dropout=dropout if n_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.n_features, self.discrete)
        h, _ = self.rnn(self.embed(x))
        return pool_tokens(self.norm(self.drop(h)), self.pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LSTMClassifier(RNNClassifier):
    cell = "lstm"


class GRUClassifier(RNNClassifier):
    cell = "gru"
