"""Checks and helpers shared by the memory layers (:mod:`qlam.memory.layer`,
:mod:`qlam.memory.mixed`): head / token-count arguments, the parameters a layer's cache is
keyed on, whether calling a module runs forward hooks, a layer's input, and the simulation
kept in full precision under autocast (also used by :mod:`qlam.models.qlstm`)."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn
from torch.nn.modules import module as torch_module


def check_index(name: str, value, size: int) -> int:
    """``value`` as an int in 0..size-1, or a TypeError / ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value < size:
        raise ValueError(f"{name} {value} out of range: 0..{size - 1}")
    return int(value)


def check_tokens(tokens, length: int) -> int:
    """The number of tokens to export: ``length`` when None, else an int in 1..length."""
    tokens = length if tokens is None else tokens
    if isinstance(tokens, bool) or not isinstance(tokens, (int, np.integer)):
        raise TypeError(f"tokens must be an int, got {type(tokens).__name__}")
    if not 1 <= tokens <= length:
        raise ValueError(f"tokens must lie in 1..{length} (the sequence length), got {tokens}")
    return int(tokens)


def parameters_of(module: nn.Module) -> list[nn.Parameter]:
    """Every parameter of ``module`` and its submodules, as ``module.parameters()`` lists them
    (a shared one may repeat), several times faster: it is read on every streaming step."""
    params = [p for p in module._parameters.values() if p is not None]
    for child in module._modules.values():
        if child is not None:
            params += parameters_of(child)
    return params


def hooked(module: nn.Module) -> bool:
    """Whether calling ``module`` runs forward hooks, its own or global ones."""
    return bool(module._forward_hooks or module._forward_pre_hooks
                or torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks)


def check_input(x, d_model: int, dtype: torch.dtype) -> None:
    """A memory layer's input: a finite floating-point tensor (B, L, d_model) of the layer's
    parameter ``dtype`` (another dtype only under autocast), or an error naming the problem."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if dtype not in (torch.float32, torch.float64):  # (layer.half(), layer.to(bfloat16))
        raise TypeError(f"the memory's parameters are {dtype}; they must be float32 or float64: "
                        "keep the layer in float32 and run under torch.autocast for bfloat16")
    if not x.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got {x.dtype}")
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"input must have shape (batch, length, {d_model}), "
                         f"got {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"input must hold at least one example of at least one token, got "
                         f"shape {tuple(x.shape)}")
    if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"input is {x.dtype} but the layer's parameters are {dtype}: convert "
                        "one to the other (x.to(layer.in_proj.weight.dtype), or "
                        "layer.to(x.dtype))")
    if not torch.compiler.is_compiling() and not all_finite(x):
        raise ValueError("input contains NaN or inf")


def all_finite(x: torch.Tensor) -> bool:
    """Whether every entry of ``x`` is finite, in one reduction without a boolean tensor of
    x's size: a finite sum has no NaN or inf among its terms; only a sum that is not finite
    (NaN or inf in x, or finite values whose sum overflows) takes the entrywise test."""
    with torch.no_grad():
        return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def full_precision(method):
    """Decorates a method ``f(self, x, ...)`` whose simulation needs float32 / float64 (complex
    states have no bfloat16 form): under autocast it runs with autocast off and a float16 /
    bfloat16 ``x`` as float32; the model around it keeps its low-precision matrix products."""

    @functools.wraps(method)
    def run(self, x, *args, **kwargs):
        if not (isinstance(x, torch.Tensor) and torch.is_autocast_enabled(x.device.type)):
            return method(self, x, *args, **kwargs)
        with torch.autocast(x.device.type, enabled=False):
            low = x.dtype in (torch.float16, torch.bfloat16)
            return method(self, x.float() if low else x, *args, **kwargs)

    return run
