"""State-space baseline in the S4D style (Gu, Gupta, Goel, Re 2022): the paper's "SSM" row.

Each of the ``d_model`` channels is an independent linear time-invariant system with a
complex diagonal state of ``d_state // 2`` modes (kept as conjugate pairs, so the real state
size is ``d_state``):

    x'(t) = A x(t) + B u(t),   y(t) = 2 Re(C x(t)) + D u(t),   B = 1,
    A_n = -exp(log_A_real_n) + i A_imag_n   (S4D-Lin init: A_n = -1/2 + i pi n).

Zero-order hold with a learnable step dt (log-uniform in [dt_min, dt_max] per channel) gives
dA = exp(dt A), dB = (exp(dt A) - 1) / A, so x_k = dA x_{k-1} + dB u_k and the layer is the
causal convolution y = K * u + D u with K_l = 2 Re(C dB dA^l). Training uses that
convolution (one FFT per layer, O(L log L)); :meth:`S4D.step` runs the same system as a
recurrence, one token at a time.

Blocks are pre-norm residual: x + Dropout(GLU(Linear(GELU(S4D(LN x))))). The classifier
shares QLAM's conventions: Linear embedding, final LayerNorm, mean pooling, Linear head.
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
from qlam.optim_hints import mark_memory


class S4DKernel(nn.Module):
    """The diagonal SSM parameters of ``d_model`` channels and their ZOH discretisation."""

    def __init__(self, d_model: int, d_state: int = 64, dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        if d_state < 2 or d_state % 2:
            raise ValueError(f"d_state must be an even number >= 2 (conjugate pairs), got {d_state}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        h, n = d_model, d_state // 2
        self.log_dt = nn.Parameter(
            torch.rand(h) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.log_A_real = nn.Parameter(torch.full((h, n), math.log(0.5)))
        self.A_imag = nn.Parameter(math.pi * torch.arange(n, dtype=torch.float32).repeat(h, 1))
        # C ~ CN(0, 1), stored as (real, imag) pairs so every parameter is real
        self.C = nn.Parameter(torch.randn(h, n, 2) * math.sqrt(0.5))
        mark_memory(self.log_dt, self.log_A_real, self.A_imag)  # S4's _optim: no decay, own lr

    def _a_dta(self) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.complex(-self.log_A_real.exp(), self.A_imag)
        return a, a * self.log_dt.exp()[:, None]

    def discretize(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dA, dB, C), each (d_model, d_state // 2) complex."""
        a, dta = self._a_dta()
        da = torch.exp(dta)
        return da, (da - 1) / a, torch.view_as_complex(self.C.contiguous())

    def forward(self, length: int) -> torch.Tensor:
        """The convolution kernel K (d_model, length): K_l = 2 Re(sum_n C_n dB_n dA_n^l).

        dA^l = exp(l Re(dt A)) (cos(l Im(dt A)) + i sin(l Im(dt A))) is built from real
        exp/cos/sin (vectorised on CPU, unlike the complex exp), then contracted in reals."""
        a, dta = self._a_dta()
        cb = torch.view_as_complex(self.C.contiguous()) * (torch.exp(dta) - 1) / a
        steps = torch.arange(length, device=dta.device, dtype=dta.real.dtype)
        mag = torch.exp(dta.real[..., None] * steps)  # (H, N, L)
        angle = dta.imag[..., None] * steps
        k = torch.einsum("hn,hnl->hl", cb.real, mag * torch.cos(angle))
        return 2 * (k - torch.einsum("hn,hnl->hl", cb.imag, mag * torch.sin(angle)))


def causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y_t = sum_{s<=t} k_s u_{t-s}, by FFT: u (B, L, H), k (H, L) -> (B, L, H)."""
    length = u.shape[1]
    n = 2 * length
    uf = torch.fft.rfft(u.transpose(1, 2), n=n)  # along the contiguous last axis
    y = torch.fft.irfft(uf * torch.fft.rfft(k, n=n), n=n)[..., :length]
    return y.transpose(1, 2)


class S4D(nn.Module):
    """One S4D layer with its pointwise output map: (B, L, H) -> (B, L, H)."""

    def __init__(self, d_model: int, d_state: int = 64, dropout: float = 0.0,
                 dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        self.d_model, self.d_state = d_model, d_state
        self.kernel = S4DKernel(d_model, d_state, dt_min, dt_max)
        self.D = nn.Parameter(torch.randn(d_model))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, 2 * d_model)  # then GLU: back to d_model

    def _output(self, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        y = self.drop(F.gelu(y + u * self.D))
        return F.glu(self.out(y), dim=-1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        k = self.kernel(u.shape[1]).to(u.dtype)
        return self._output(causal_conv(u, k), u)

    def initial_state(self, batch: int, dtype=torch.float32, device=None) -> torch.Tensor:
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return torch.zeros(batch, self.d_model, self.d_state // 2, dtype=cdtype, device=device)

    def step(self, u_t: torch.Tensor, state: torch.Tensor | None = None):
        """Recurrent mode, one token: u_t (B, H) -> (y_t (B, H), state (B, H, d_state // 2))."""
        if state is None:
            state = self.initial_state(u_t.shape[0], u_t.dtype, u_t.device)
        da, db, c = self.kernel.discretize()
        state = da * state + db * u_t[..., None]
        y = 2 * (c * state).sum(-1).real.to(u_t.dtype)
        return self._output(y, u_t), state


class SSMBlock(nn.Module):
    def __init__(self, d_model: int, d_state: int = 64, dropout: float = 0.0, **kernel_args):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.ssm = S4D(d_model, d_state, dropout, **kernel_args)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.ssm(self.norm(x)))

    def step(self, x_t: torch.Tensor, state=None):
        y, state = self.ssm.step(self.norm(x_t), state)
        return x_t + self.drop(y), state


class SSMClassifier(SequenceClassifier):
    """(B, L, n_features) -> (B, n_classes); ``forward_recurrent`` is the same map token by token."""

    def __init__(self, n_features: int, n_classes: int, d_model: int = 64, n_layers: int = 4,
                 d_state: int = 64, dropout: float = 0.0, pool: str = "mean",
                 dt_min: float = 1e-3, dt_max: float = 1e-1, discrete: bool = False):
        super().__init__()
        if d_model < 1 or n_layers < 1:
            raise ValueError(f"need d_model, n_layers >= 1, got {d_model}, {n_layers}")
        self.embed_inputs(n_features, d_model, pool, discrete)
        self.blocks = nn.ModuleList(SSMBlock(d_model, d_state, dropout, dt_min=dt_min, dt_max=dt_max)
                                    for _ in range(n_layers))
        self.output_layers(d_model, n_classes)

    def features(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        """(B, L, n_features) -> pooled (B, d_model); ``lengths`` (B,): right padding."""
        self.check_input(x)
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return pool_tokens(self.norm(h), self.pool, lengths)

    @torch.no_grad()
    def forward_recurrent(self, x: torch.Tensor) -> torch.Tensor:
        """Logits computed in recurrent mode (constant memory per token, for streaming)."""
        self.check_input(x)
        states = [None] * len(self.blocks)
        outs = []
        for t in range(x.shape[1]):
            h = self.embed(x[:, t])
            for i, block in enumerate(self.blocks):
                h, states[i] = block.step(h, states[i])
            outs.append(self.norm(h))
        h = torch.stack(outs, 1)
        return self.head(pool_tokens(h, self.pool))
