"""Transformer baseline: a pre-norm encoder with sinusoidal positions and pooled classification.

``causal=True`` masks attention to earlier tokens (as recurrent models see them), for
per-token targets and length generalisation in the causal setting.

Linear token embedding + fixed sinusoidal positional encoding, ``n_layers`` pre-norm blocks
x + Attn(LN x), x + MLP(LN x) (bidirectional multi-head self-attention through
``F.scaled_dot_product_attention``; padding, given ``lengths``, is never attended), a final
LayerNorm, mean (or last-token) pooling and a Linear head. Attention costs O(L^2) per layer:
fine for the 784 tokens of sMNIST.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from qlam.models.common import (
    SequenceClassifier,
    pool_tokens,
)
from qlam.padding import check_lengths, token_mask


def sinusoidal_positions(length: int, d_model: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(L, d_model): sin on even channels, cos on odd ones, wavelengths 2pi .. 10^4 * 2pi."""
    pos = torch.arange(length, device=device, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, device=device,
                                                       dtype=torch.float64) / d_model)
    pe = torch.zeros(length, d_model, device=device, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d_model // 2])
    return pe.to(dtype)


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, causal: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads, self.dropout, self.causal = n_heads, dropout, causal
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, d) -> (B, L, d); ``keys`` (B, L) bool: the tokens that may be attended
        (None: all)."""
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        # padding (keys False) is never attended; causal: only earlier tokens
        mask = None if keys is None else keys[:, None, None, :]
        if mask is not None and self.causal:
            mask = mask & torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=self.causal and mask is None)
        return self.out(y.transpose(1, 2).reshape(b, length, d))


class TransformerBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0,
                 causal: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout, causal)
        self.norm2 = nn.LayerNorm(d_model)
        hidden = int(mlp_ratio * d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), keys))
        return x + self.drop(self.mlp(self.norm2(x)))


class TransformerClassifier(SequenceClassifier):
    """(B, L, n_features) -> (B, n_classes), or (B, L, n_classes) with ``pool="none"``."""

    d_model_multiple_of = "n_heads"  # for qlam.models.size_to_budget

    def __init__(self, n_features: int, n_classes: int, d_model: int = 64, n_layers: int = 2,
                 n_heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.0,
                 pool: str = "mean", discrete: bool = False, causal: bool = False):
        super().__init__()
        if d_model < 1 or n_layers < 1:
            raise ValueError(f"need d_model, n_layers >= 1, got {d_model}, {n_layers}")
        self.d_model = d_model
        self.embed_inputs(n_features, d_model, pool, discrete)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, n_heads, mlp_ratio, dropout, causal)
                                    for _ in range(n_layers))
        self.output_layers(d_model, n_classes)

    def features(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        """(B, L, n_features) -> pooled (B, d_model); ``lengths`` (B,): right padding."""
        self.check_input(x)
        h = self.embed(x)
        h = h + sinusoidal_positions(x.shape[1], self.d_model, h.device, h.dtype)
        h = self.drop(h)
        keys = None
        if lengths is not None:  # padding is never attended
            lengths = check_lengths(lengths, *x.shape[:2])
            keys = token_mask(lengths, x.shape[1], x.device)
        for block in self.blocks:
            h = block(h, keys)
        return pool_tokens(self.norm(h), self.pool, lengths)
