"""Your own sequence data as a task: arrays in an ``.npz`` file.

``qlam train --task path/to/data.npz`` (and ``qlam sweep --tasks``, ``qlam eval --task``)
reads a file written by ``numpy.savez`` or ``numpy.savez_compressed`` holding:

==================  ==============  ==========================================================
key                 dtype, shape    meaning
==================  ==============  ==========================================================
``x``               float (N, L, F) the training sequences: N examples of L tokens x F features
``y``               int (N,)        their class labels, 0..C-1
``x_test, y_test``  optional        the test split (same L and F). Without it, 10 % of ``x`` is
                                    held out as the test set (chosen with seed 0, the same for
                                    every run, so seeds are compared on the same examples)
``x_val, y_val``    optional        the validation split. Without it, ``val_fraction`` of the
                                    remaining training examples (chosen with the run's seed)
==================  ==============  ==========================================================

The file is read with ``allow_pickle=False`` (nothing in it can execute); the sequences are
used as given (standardise them yourself) and cast to float32 (values beyond its range are
refused). The number of classes is the largest label + 1 (at most ``MAX_CLASSES``).
``limit_train`` keeps that many training examples; a held-out split must keep at least one.

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "toy.npz")
    >>> np.savez(path, x=np.random.randn(50, 12, 3), y=np.arange(50) % 2)
    >>> from qlam.data import get_task
    >>> task = get_task(path)
    >>> task.seq_len, task.n_features, task.n_classes, len(task.test)
    (12, 3, 2, 5)
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

TEST_FRACTION = 0.1
MAX_CLASSES = 2**16  # a larger label is taken for a mistake (the head would be that wide)
TEST_SEED = 0
KEYS = ("x", "y", "x_val", "y_val", "x_test", "y_test")


def is_file_task(name: str) -> bool:
    """Whether a task name names an .npz file (rather than a built-in task)."""
    return isinstance(name, str) and name.lower().endswith(".npz")


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"task file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a readable .npz file (write it with numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise ValueError(f"{path}: {exc}; store plain numeric arrays") from exc
    unknown = sorted(set(arrays) - set(KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown arrays {', '.join(unknown)}; expected x, y and "
                         f"optionally x_val, y_val, x_test, y_test")
    for k in ("x", "y"):
        if k not in arrays:
            raise ValueError(f"{path}: missing array {k!r} (x: float (N, L, F), y: int (N,))")
    for split in ("val", "test"):
        if (f"x_{split}" in arrays) != (f"y_{split}" in arrays):
            raise ValueError(f"{path}: x_{split} and y_{split} must be given together")
    return arrays


def _split(path: Path, arrays: dict, suffix: str, seq_len: int | None, n_features: int | None):
    xk, yk = "x" + suffix, "y" + suffix
    x, y = arrays[xk], arrays[yk]
    if (x.ndim != 3 or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x)
            or 0 in x.shape[1:]):
        raise ValueError(f"{path}: {xk} must be a real float array (N, L, F) with L, F >= 1, "
                         f"got {x.dtype} {x.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise ValueError(f"{path}: {yk} must be an integer array (N,) of class labels, got "
                         f"{y.dtype} {y.shape}")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"{path}: {xk} has {x.shape[0]} examples and {yk} {y.shape[0]}; they "
                         f"must match and not be empty")
    if seq_len is not None and x.shape[1:] != (seq_len, n_features):
        raise ValueError(f"{path}: {xk} has (L, F) = {x.shape[1:]}, but x has "
                         f"{(seq_len, n_features)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{path}: {xk} contains NaN or inf")
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x32).all():
        raise ValueError(f"{path}: {xk} holds values beyond float32's range (|x| > "
                         f"{np.finfo(np.float32).max:.3g}); rescale them")
    if y.min() < 0:
        raise ValueError(f"{path}: {yk} holds negative labels; use 0..C-1")
    if y.max() >= MAX_CLASSES:
        i = int(np.argmax(y))
        raise ValueError(f"{path}: {yk}[{i}] = {y[i]} is not a class label 0..C-1 with C <= "
                         f"{MAX_CLASSES}")
    return torch.from_numpy(x32), torch.from_numpy(y.astype(np.int64))


def _held_out(path: Path, split: str, n: int, fraction: float,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (held out, kept) of n examples; a fraction > 0 holds out at least one."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = int(round(fraction * n))
    if fraction > 0 and k == 0:
        raise ValueError(f"{path}: {n} examples are too few to hold out {fraction:.0%} as the "
                         f"{split} set (none would be left): give more examples, or "
                         f"x_{split}, y_{split}")
    return order[:k].sort().values, order[k:].sort().values


def load_npz_splits(path, *, val_fraction: float = 0.1, seed: int = 0,
                    limit_train: int | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The splits {"train", "val", "test": (x (N, L, F) float32, y (N,) int64)} of an .npz
    task file (format in the module docstring), with clear errors for a file that does not
    follow it; :func:`qlam.data.get_task` makes them a Task."""
    path = Path(path)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    if limit_train is not None and limit_train < 1:
        raise ValueError(f"limit_train must be >= 1 or None, not {limit_train}")
    arrays = _read(path)
    x, y = _split(path, arrays, "", None, None)
    seq_len, n_features = x.shape[1:]
    if "x_test" in arrays:
        test = _split(path, arrays, "_test", seq_len, n_features)
    else:
        test_idx, keep = _held_out(path, "test", len(y), TEST_FRACTION, TEST_SEED)
        test, (x, y) = (x[test_idx], y[test_idx]), (x[keep], y[keep])
    if "x_val" in arrays:
        val = _split(path, arrays, "_val", seq_len, n_features)
    else:
        val_idx, keep = _held_out(path, "val", len(y), val_fraction, seed)
        val, (x, y) = (x[val_idx], y[val_idx]), (x[keep], y[keep])
    if limit_train is not None:
        x, y = x[:limit_train], y[:limit_train]
    if len(y) == 0:
        raise ValueError(f"{path}: no training examples left after holding out the test and "
                         f"validation sets")
    return {"train": (x, y), "val": val, "test": test}
