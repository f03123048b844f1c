"""Right-padded batches: sequence lengths, token masks and masked pooling.

A batch (B, L, ...) holds example b in tokens 0..lengths[b]-1; the tokens after it are
padding. Layers that carry a state leave it unchanged over padding; pooling ignores it.
"""

from __future__ import annotations

import torch


def check_lengths(lengths, batch: int, length: int, least: int = 1) -> torch.Tensor:
    """``lengths`` (B,) integers in least..L as an int64 tensor on the CPU (a clear error
    otherwise)."""
    if isinstance(lengths, (list, tuple)):
        lengths = torch.tensor(lengths)
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(f"lengths must be a tensor or list of ints, got {type(lengths).__name__}")
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must hold integers, got {lengths.dtype}")
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},) (one per example), "
                         f"got {tuple(lengths.shape)}")
    lengths = lengths.detach().to("cpu", torch.int64)
    if batch and (lengths.min() < least or lengths.max() > length):
        raise ValueError(f"lengths must lie in {least}..{length} (the padded length), got "
                         f"{lengths.min().item()}..{lengths.max().item()}")
    return lengths


def padded_lengths(lengths, batch: int, length: int) -> torch.Tensor | None:
    """A stateful layer's :func:`check_lengths`, 0 allowed (a padded batch streamed in
    chunks: an example that ended before this chunk keeps its state), or None when nothing
    is padded (``lengths`` None, or every example fills all L tokens)."""
    if lengths is None:
        return None
    lengths = check_lengths(lengths, batch, length, least=0)
    return None if bool((lengths == length).all()) else lengths


def zero_padding(t: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """t (B, L, ...) with every padded position set to zero (``lengths`` (B,) as returned by
    :func:`padded_lengths`; None: t itself)."""
    if lengths is None:
        return t
    mask = token_mask(lengths, t.shape[1], t.device).to(t.dtype)
    return t * mask.view(*mask.shape, *(1,) * (t.dim() - 2))


def token_mask(lengths: torch.Tensor, length: int, device=None) -> torch.Tensor:
    """(B, L) bool: True on the real tokens of each example."""
    return torch.arange(length, device=device)[None, :] < lengths.to(device)[:, None]


def pool_tokens(h: torch.Tensor, pool: str, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """(B, L, D) -> (B, D): the mean over each example's tokens or its last token
    (``lengths`` (B,) for right-padded batches; None: every token is real); ``pool="none"``
    keeps every token, (B, L, D) (mask the padded ones in the loss)."""
    if pool == "none":
        return h
    if lengths is None:
        return h.mean(1) if pool == "mean" else h[:, -1]
    lengths = check_lengths(lengths, h.shape[0], h.shape[1]).to(h.device)
    if pool == "mean":
        mask = token_mask(lengths, h.shape[1], h.device).to(h.dtype)
        return (h * mask[..., None]).sum(1) / lengths.to(h.dtype)[:, None]
    return h[torch.arange(h.shape[0], device=h.device), lengths - 1]
