"""Shared test setup. The tests are laid out like the code (tests/sim for qlam.sim, tests/data
for qlam.data, ...); this folder is on sys.path, so helper modules here (circuit_oracles.py)
import by name. ``use_task`` makes every task lookup return a synthetic task, so training and
evaluation tests run offline."""

from __future__ import annotations

import pytest
import torch

from qlam import config


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` need a GPU: skipped where torch sees none (scripts/cuda_check.py
    runs them on one: ``pytest -m cuda``)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def use_task(monkeypatch):
    """``use_task(make)``: qlam.config.build_task(cfg) returns ``make(cfg)`` for this test."""

    def use(make):
        monkeypatch.setattr(config, "build_task", make)

    return use
