"""Shared test setup. The tests are laid out like the code (tests/sim for qlam.sim, tests/data
for qlam.data, ...); this folder is on sys.path, so helper modules here (circuit_oracles.py)
import by name. ``use_task`` makes every task lookup return a synthetic task, so training and
evaluation tests run offline."""

from __future__ import annotations

import pytest

from qlam import config


@pytest.fixture
def use_task(monkeypatch):
    """``use_task(make)``: qlam.config.build_task(cfg) returns ``make(cfg)`` for this test."""

    def use(make):
        monkeypatch.setattr(config, "build_task", make)

    return use
