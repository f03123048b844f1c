"""A tiny synthetic two-class task that stands in for every named task (no dataset), for
tests whose training runs in other processes (Ray workers): ``install()`` patches
qlam.config.build_task there."""

import torch

from qlam.data.tasks import Split, Task


def tiny_task(cfg=None) -> Task:
    """Label = whether the sequence's mean is above 0 (6 tokens, 1 feature)."""
    g = torch.Generator().manual_seed(0)

    def split(n):
        y = torch.arange(n) % 2
        return Split(torch.randn(n, 6, 1, generator=g) + y[:, None, None], y)

    return Task(name="smnist", dataset="fake", seq_len=6, n_features=1, n_classes=2,
                train=split(16), val=split(6), test=split(6))


def install() -> None:
    import qlam.config

    qlam.config.build_task = tiny_task
