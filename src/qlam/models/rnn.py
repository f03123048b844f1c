"""Recurrent baselines: tanh RNN, LSTM and GRU (torch's fused cuDNN/oneDNN modules).

Same conventions as :class:`qlam.models.qlam.QLAMClassifier`: a Linear embedding of each token
to ``d_model``, ``n_layers`` stacked recurrent layers of width ``d_model``, a final LayerNorm,
mean (or last-token) pooling and a Linear head. (B, L, n_features) -> (B, n_classes).
"""

from __future__ import annotations

import torch
from torch import nn

from qlam.models.common import (
    SequenceClassifier,
    pool_tokens,
)

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RNNClassifier(SequenceClassifier):
    """A stacked recurrent classifier; the class's ``cell`` is 'rnn' (tanh), 'lstm' or 'gru'."""

    cell = "rnn"

    def __init__(self, n_features: int, n_classes: int, d_model: int = 64, n_layers: int = 2,
                 dropout: float = 0.0, pool: str = "mean", discrete: bool = False):
        super().__init__()
        if d_model < 1 or n_layers < 1:
            raise ValueError(f"need d_model, n_layers >= 1, got {d_model}, {n_layers}")
        self.embed_inputs(n_features, d_model, pool, discrete)
        self.rnn = CELLS[self.cell](d_model, d_model, num_layers=n_layers, batch_first=True,
                               dropout=dropout if n_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.output_layers(d_model, n_classes)

    def features(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        """(B, L, n_features) -> pooled (B, d_model); ``lengths`` (B,): right padding."""
        self.check_input(x)
        h, _ = self.rnn(self.embed(x))
        return pool_tokens(self.norm(self.drop(h)), self.pool, lengths)


class LSTMClassifier(RNNClassifier):
    cell = "lstm"


class GRUClassifier(RNNClassifier):
    cell = "gru"
