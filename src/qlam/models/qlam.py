"""QLAMClassifier: embedding, residual QLAM blocks, pooling, logits (per sequence or token).

Block (pre-norm, Mamba-like gating): x + Out(QLAM(LN x) * silu(G LN x)), then x + MLP(LN x).
The QLAM layer is the only operation that mixes tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qlam.memory import QLAM
from qlam.models.common import check_input, check_pool, pool_tokens, token_embedding


class QLAMBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_qubits: int, depth: int = 1,
                 mlp_ratio: float = 2.0, dropout: float = 0.0, **qlam_kwargs):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.memory = QLAM(d_model, n_heads, n_qubits, depth, **qlam_kwargs)
        self.gate = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        hidden = int(mlp_ratio * d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        h = self.norm1(x)
        y, state = self.memory(h, state)
        x = x + self.drop(y * F.silu(self.gate(h)))
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, state


class QLAMClassifier(nn.Module):
    """(B, L, n_features) -> (B, n_classes), or (B, L, n_classes) with ``pool="none"``;
    ``discrete``: the input is token ids (B, L) (see :mod:`qlam.models.common`)."""

    def __init__(self, n_features: int, n_classes: int, d_model: int = 64, n_layers: int = 2,
                 n_heads: int = 4, n_qubits: int = 4, depth: int = 1, mlp_ratio: float = 2.0,
                 dropout: float = 0.0, pool: str = "mean", discrete: bool = False,
                 **qlam_kwargs):
        super().__init__()
        self.n_features, self.pool, self.discrete = n_features, check_pool(pool), discrete
        self.embed = token_embedding(n_features, d_model, discrete)
        self.blocks = nn.ModuleList(
            QLAMBlock(d_model, n_heads, n_qubits, depth, mlp_ratio, dropout, **qlam_kwargs)
            for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def memories(self) -> list[QLAM]:
        return [b.memory for b in self.blocks]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.n_features, self.discrete)
        h = self.embed(x)
        for block in self.blocks:
            h, _ = block(h)
        return pool_tokens(self.norm(h), self.pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def head_circuit(self, x: torch.Tensor, layer: int = 0, head: int = 0,
                     tokens: int | None = None):
        """The bound Circuit (state preparation + first ``tokens`` token circuits) of one
        QLAM head for one example x (L, n_features); see :mod:`qlam.export`."""
        from qlam.export import head_circuit

        return head_circuit(self, x, layer=layer, head=head, tokens=tokens)
