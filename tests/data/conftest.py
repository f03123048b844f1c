"""Fixtures of the data tests: ``synth`` swaps the real shapes and sums for those of small
synthetic data and isolates the cache."""

from __future__ import annotations

import pytest
from fake_datasets import synth_arrays

from qlam.data import cache, facts


@pytest.fixture
def synth(monkeypatch, tmp_path):
    """Swap the real shapes/sums for those of small synthetic data; isolated cache."""
    data = {}
    for name in facts.DATASETS:
        arrays = synth_arrays(name, seed=len(name))
        data[name] = arrays
        monkeypatch.setitem(facts.SHAPES, name, {k: v.shape for k, v in arrays.items()})
        monkeypatch.setitem(facts.SUMS, name, {k: cache.digest(name, k, v) for k, v in arrays.items()})
    root = tmp_path / "cache"
    monkeypatch.setenv("QLAM_DATA", str(root))
    monkeypatch.delenv("QLAM_DATA_MIRRORS", raising=False)
    return data
