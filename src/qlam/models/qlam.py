"""QLAMClassifier: embedding, residual QLAM blocks, pooling, logits (per sequence or token).

Block (pre-norm, Mamba-like gating): x + Out(QLAM(LN x) * silu(G LN x)), then x + MLP(LN x).
With ``conv`` k the memory reads silu(Conv_k(LN x)) instead, a depthwise causal convolution
over the last k tokens (Mamba's short convolution); without it (the default) the QLAM layer
is the only operation that mixes tokens: ``memory="unitary"`` is the paper's
pure-state memory (:class:`qlam.memory.QLAM`), ``memory="mixed"`` the density-matrix memory
that forgets (:class:`qlam.memory.mixed.MixedQLAM`).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from qlam.memory.layer import QLAM, check_index
from qlam.memory.mixed import MixedQLAM
from qlam.models.common import (
    SequenceClassifier,
    pool_tokens,
)

MEMORIES = ("unitary", "mixed")


def build_memory(memory: str, d_model: int, n_heads: int, n_qubits: int, depth: int = 1,
                 **kwargs) -> nn.Module:
    """The token-mixing layer of a block: QLAM (``"unitary"``) or MixedQLAM (``"mixed"``)."""
    if memory == "unitary":
        return QLAM(d_model, n_heads, n_qubits, depth, **kwargs)
    if memory == "mixed":
        if depth != 1:
            raise ValueError(f"memory='mixed' has one channel per token; depth must be 1, got {depth}")
        return MixedQLAM(d_model, n_heads, n_qubits, **kwargs)
    raise ValueError(f"memory must be one of {', '.join(MEMORIES)}, got {memory!r}")


class QLAMBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_qubits: int, depth: int = 1,
                 mlp_ratio: float = 2.0, dropout: float = 0.0, memory: str = "unitary",
                 conv: int | None = None, **qlam_kwargs):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        # depthwise causal convolution over the last ``conv`` tokens (left padding only)
        self.conv = (None if conv is None else
                     nn.Conv1d(d_model, d_model, conv, groups=d_model, padding=conv - 1))
        self.memory = build_memory(memory, d_model, n_heads, n_qubits, depth, **qlam_kwargs)
        self.gate = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        hidden = int(mlp_ratio * d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None, lengths=None):
        """x (B, L, d_model) -> (x', state (B, H, 2^n) complex); ``lengths`` as in QLAM."""
        h = self.norm1(x)
        m = h
        if self.conv is not None:  # (B, d, L + k - 1) -> the first L outputs are causal
            m = F.silu(self.conv(h.transpose(1, 2))[..., :h.shape[1]].transpose(1, 2))
        y, state = self.memory(m, state, lengths=lengths)
        x = x + self.drop(y * F.silu(self.gate(h)))
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, state


class QLAMClassifier(SequenceClassifier):
    """(B, L, n_features) -> (B, n_classes), or (B, L, n_classes) with ``pool="none"``;
    ``discrete``: the input is token ids (B, L) (see :mod:`qlam.models.common`).
    ``memory`` picks the layer (``"unitary"``: :class:`~qlam.memory.QLAM`, ``"mixed"``:
    :class:`~qlam.memory.mixed.MixedQLAM`); ``dt_min``, ``dt_max`` and ``qlam_kwargs`` go to
    every memory layer, ``query_basis`` and ``read_order`` to the unitary one, ``selective``, ``dephasing``,
    ``n_bases``, ``a_min``, ``a_max`` to the mixed one (None: its default); ``conv`` k puts
    a depthwise causal convolution over the last k tokens before every memory (None: none).

    ``forward(x, lengths=None)``: with ``lengths`` (B,) for a right-padded batch, every
    layer's memory ignores the padding and pooling covers each example's real tokens only,
    so the logits equal those of each example run alone.

    Example:
        >>> model = QLAMClassifier(n_features=3, n_classes=5, d_model=16, n_layers=1,
        ...                        n_heads=2, n_qubits=2)
        >>> x = torch.randn(2, 12, 3)
        >>> model(x, lengths=torch.tensor([12, 7])).shape
        torch.Size([2, 5])
    """

    def __init__(self, n_features: int, n_classes: int, d_model: int = 64, n_layers: int = 2,
                 n_heads: int = 4, n_qubits: int = 4, depth: int = 1, mlp_ratio: float = 2.0,
                 dropout: float = 0.0, pool: str = "mean", discrete: bool = False,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, query_basis: bool = True,
                 memory: str = "unitary", selective: bool | None = None,
                 dephasing: bool | None = None, n_bases: int | None = None,
                 a_min: float | None = None, a_max: float | None = None,
                 read_order: int | None = None, conv: int | None = None, **qlam_kwargs):
        super().__init__()
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be an int >= 1, got {n_layers!r}")
        if conv is not None and (isinstance(conv, bool) or not isinstance(conv, int)
                                 or conv < 1):
            raise ValueError(f"conv must be a kernel size >= 1 or None, got {conv!r}")
        qlam_kwargs.update(dt_min=dt_min, dt_max=dt_max)
        mixed = dict(selective=selective, dephasing=dephasing, n_bases=n_bases, a_min=a_min,
                     a_max=a_max)
        if memory == "mixed":
            if read_order is not None:
                raise ValueError("read_order: an option of memory='unitary' only")
            qlam_kwargs.update({k: v for k, v in mixed.items() if v is not None})
        else:
            given = [k for k, v in mixed.items() if v is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: options of memory='mixed' only")
            qlam_kwargs.update(query_basis=query_basis, read_order=read_order)
        self.embed_inputs(n_features, d_model, pool, discrete)
        self.blocks = nn.ModuleList(
            QLAMBlock(d_model, n_heads, n_qubits, depth, mlp_ratio, dropout, memory, conv,
                      **qlam_kwargs)
            for _ in range(n_layers))
        self.output_layers(d_model, n_classes)

    def memories(self) -> list[nn.Module]:
        return [b.memory for b in self.blocks]

    def features(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        """(B, L, n_features) -> pooled features (B, d_model)."""
        self.check_input(x)
        h = self.embed(x)
        for block in self.blocks:
            h, _ = block(h, lengths=lengths)
        return pool_tokens(self.norm(h), self.pool, lengths)

    def set_readout(self, shots: int | None = None, noise=None,
                    generator: torch.Generator | None = None) -> None:
        """Every QLAM layer measures with ``shots`` samples or under ``noise`` (not both)."""
        for m in self.memories():
            m.set_readout(shots, noise, generator)

    @contextlib.contextmanager
    def _exact(self):
        saved = [(m.shots, m.noise, m.generator) for m in self.memories()]
        try:
            self.set_readout()
            yield
        finally:
            for m, s in zip(self.memories(), saved):
                m.set_readout(*s)

    def memory_input(self, x: torch.Tensor, layer: int = 0) -> torch.Tensor:
        """The input (1, L, d_model) that block ``layer``'s QLAM layer receives for one
        example x (L, n_features) (token ids (L,) when ``discrete``), from an exact (no shots,
        no noise) evaluation pass."""
        layer = check_index("layer", layer, len(self.blocks))
        batch = self.one_example(x)
        captured = []
        handle = self.blocks[layer].memory.register_forward_pre_hook(
            lambda _module, args: captured.append(args[0].detach()))
        was_training = self.training
        try:
            self.eval()
            with torch.no_grad(), self._exact():
                self(batch)
        finally:
            handle.remove()
            self.train(was_training)
        return captured[0]

    def head_circuit(self, x: torch.Tensor, layer: int = 0, head: int = 0,
                     tokens: int | None = None):
        """The bound Circuit (state preparation + first ``tokens`` token circuits) of one
        QLAM head for one example x (L, n_features); :func:`qlam.export.export_head` adds the
        readout circuit and the model's own state."""
        h_in = self.memory_input(x, layer).cpu().double()
        mem64 = self.blocks[layer].memory.exact_copy()
        return mem64.bound_circuits(h_in, head, tokens)[0]


class MixedQLAMClassifier(QLAMClassifier):
    """QLAMClassifier with the mixed (density-matrix) memory, ``--model qlam-mixed``: the
    same as ``QLAMClassifier(..., memory="mixed")``, 8 heads x 3 qubits by default."""

    def __init__(self, n_features: int, n_classes: int, d_model: int = 64, n_layers: int = 2,
                 n_heads: int = 8, n_qubits: int = 3, mlp_ratio: float = 2.0,
                 dropout: float = 0.0, pool: str = "mean", discrete: bool = False,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, selective: bool | None = None,
                 dephasing: bool | None = None, n_bases: int | None = None,
                 a_min: float | None = None, a_max: float | None = None,
                 conv: int | None = None):
        super().__init__(n_features, n_classes, d_model, n_layers, n_heads, n_qubits, 1,
                         mlp_ratio, dropout, pool, discrete, dt_min, dt_max, memory="mixed",
                         selective=selective, dephasing=dephasing, n_bases=n_bases,
                         a_min=a_min, a_max=a_max, conv=conv)
