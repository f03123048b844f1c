"""Datasets for qlam: verified fetch/cache/import and the sequence tasks built from them.

facts (names, shapes, sums) -> decoders -> bundles -> acquire -> cache -> sources (the fetch
policy) -> tasks (torch: sMNIST ... sCIFAR-10 as sequences, and the generated tasks of
generated.py, listops.py, recall.py, state_tracking.py); cli is ``qlam data``.

>>> from qlam.data import load, get_task, TASKS
>>> images, labels = load("mnist", "train")          # uint8 (60000, 28, 28), (60000,)
>>> task = get_task("smnist", limit_train=1000)        # task.train.x: float32 (1000, 784, 1)
>>> task = get_task("s5", length=64, test_lengths=[256])  # generated: token ids (10000, 64)

The task builders import torch lazily, so ``qlam data ...`` stays quick.
"""

from qlam.data.cache import cache_dir, cache_path
from qlam.data.facts import (
    DATASETS,
    GENERATED_TASKS,
    IMAGE_TASKS,
    SUMS,
    TASK_DATASET,
    TASKS,
    DataError,
)
from qlam.data.sources import fetch, import_dir, info, load

_LAZY = {
    "get_task",
    "Task",
    "Split",
    "psmnist_permutation",
    "tokenize_images",
    "PSMNIST_PERM_SEED",
    "GRAY_WEIGHTS",
    "parse_lengths",
}

__all__ = [
    "DATASETS",
    "SUMS",
    "TASKS",
    "TASK_DATASET",
    "DataError",
    "GENERATED_TASKS",
    "IMAGE_TASKS",
    "cache_dir",
    "cache_path",
    "fetch",
    "import_dir",
    "info",
    "load",
    *sorted(_LAZY),
]


def __getattr__(name):
    if name in _LAZY:
        from qlam.data import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module 'qlam.data' has no attribute {name!r}")
