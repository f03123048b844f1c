"""Sequence tasks: classification of the cached image datasets (below) and the tasks
generated locally (:mod:`qlam.data.generated`: parity, S5/A5 word problems, adding, copying,
selective copying, MQAR, ListOps), all behind one :class:`Task` API.

Target kinds (``Task.target``): ``class`` (y int64 (N,), one label per sequence),
``regression`` (y float32 (N,), one output, MSE) and ``tokens`` (y int64 (N, L), a label per
token, -100 where there is nothing to predict). Inputs are float features x (N, L, F), or
token ids x int64 (N, L) when ``Task.discrete`` (then ``n_features`` is the vocabulary size
and models embed the ids). ``Task.chance`` is the accuracy of a uniform guess.

=========  ================  ==========================================================
task       dataset           pixel tokens (default)
=========  ================  ==========================================================
smnist     mnist             784 tokens x 1 feature, row-major pixel order
psmnist    mnist             784 x 1, pixels in a fixed random order (see below)
sfashion   fashion-mnist     784 x 1
scifar10   cifar10           1024 x 3 (RGB); ``grayscale=True`` gives 1024 x 1
=========  ================  ==========================================================

Tokenizations: ``pixel`` (one pixel per token, its C channels as features), ``patch``
(non-overlapping ``p x p`` patches in row-major order, features ordered ``(dy, dx, c)``, so
``(H/p)(W/p)`` tokens of ``p*p*C`` features) and ``row`` (one image row per token, ``W*C``
features). For psMNIST the permuted pixel sequence is grouped instead: ``row`` takes 28
consecutive permuted pixels per token, ``patch`` ``p*p`` consecutive permuted pixels.

psMNIST permutation: ``torch.randperm(784, generator=torch.Generator().manual_seed(0))``
(seed :data:`PSMNIST_PERM_SEED`); the test suite pins its SHA-256 so a change in torch's
generator would be noticed.

Grayscale (scifar10 only): ``0.2989 R + 0.5870 G + 0.1140 B`` (ITU-R BT.601, as
``tf.image.rgb_to_grayscale`` used by the LRA image task), kept as a float (not rounded).

Splits: a validation set of ``round(val_fraction * N)`` images is held out from the official
training set by ``torch.randperm(N)`` under ``seed``; ``test`` is the official test set.
``limit_train`` keeps a random subset (same seeded order) of the remaining training images.

Normalisation: pixels are scaled to [0, 1], then standardised per colour channel with the
mean and (population) std of the training images left after holding out validation
(independent of ``limit_train``, so a quick run is normalised like a full one). For pixel
tokens this is exactly per feature; for patch/row tokens each feature uses the statistics of
its channel (per-position statistics would divide the always-black MNIST borders by ~0).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from qlam.data import generated
from qlam.data.facts import N_CLASSES, TASK_DATASET, TASKS
from qlam.data.npz_task import is_file_task, load_npz_splits
from qlam.data.sources import load

__all__ = [
    "GRAY_WEIGHTS",
    "PSMNIST_PERM_SEED",
    "TASKS",
    "TASK_DATASET",
    "Split",
    "Task",
    "get_task",
    "psmnist_permutation",
    "tokenize_images",
]

TARGETS = ("class", "regression", "tokens")
TOKENIZATIONS = ("pixel", "patch", "row")
VAL_FRACTION = 0.1  # the default share of the training set held out for validation
PSMNIST_PERM_SEED = 0
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def psmnist_permutation(seed: int = PSMNIST_PERM_SEED, n: int = 784) -> torch.Tensor:
    """The fixed pixel permutation of psMNIST (int64 tensor of length ``n``)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


class Split:
    """One split held in memory: ``x`` float32 ``(N, L, F)`` (or int64 token ids ``(N, L)``),
    ``y`` int64 ``(N,)`` (float32 for regression, int64 ``(N, L)`` per token)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y

    def __repr__(self) -> str:
        return f"Split(x={tuple(self.x.shape)} {self.x.dtype}, y={tuple(self.y.shape)})"


@dataclass
class Task:
    name: str
    dataset: str
    seq_len: int
    n_features: int
    n_classes: int
    train: Split
    val: Split
    test: Split
    tokenize: str = "pixel"
    patch: int | None = None
    grayscale: bool = False
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    perm_seed: int | None = None
    seed: int = 0
    val_fraction: float = VAL_FRACTION
    limit_train: int | None = None
    target: str = "class"
    discrete: bool = False
    chance: float | None = None
    test_lengths: tuple[int, ...] = ()
    # generated tasks: the test split at another length (a fresh Split per call)
    make_test: Callable[[int], Split] | None = field(default=None, repr=False)

    def split(self, name: str | Split) -> Split:
        """A split by name, or ``name`` itself when it is a Split (e.g. from ``test_at``)."""
        if isinstance(name, Split):
            return name
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', not {name!r}")
        return getattr(self, name)

    def test_at(self, length: int) -> Split:
        """The test split at ``length`` tokens (generated tasks only)."""
        if self.make_test is None:
            raise ValueError(f"task {self.name!r} has a fixed length; --length and "
                             "--test-lengths apply to the generated tasks")
        return self.make_test(length)

    def batches(
        self,
        split: str | Split,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(x, y)`` batches by tensor indexing (a ``randperm`` when shuffling); without
        shuffling the batches are views of the split's tensors."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        s = self.split(split)
        n = len(s)
        stop = n - n % batch_size if drop_last else n
        order = torch.randperm(n, generator=generator) if shuffle else None
        for i in range(0, stop, batch_size):
            if order is None:
                yield s.x[i : i + batch_size], s.y[i : i + batch_size]
            else:
                idx = order[i : i + batch_size]
                yield s.x[idx], s.y[idx]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "seq_len": self.seq_len,
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "tokenize": self.tokenize,
            "patch": self.patch,
            "grayscale": self.grayscale,
            "sizes": {k: len(self.split(k)) for k in ("train", "val", "test")},
            "mean": list(self.mean),
            "std": list(self.std),
            "perm_seed": self.perm_seed,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "limit_train": self.limit_train,
            "target": self.target,
            "discrete": self.discrete,
            "chance": self.chance,
            "test_lengths": list(self.test_lengths),
        }


def tokenize_images(
    x: torch.Tensor, tokenize: str = "pixel", patch: int = 4, perm: torch.Tensor | None = None
) -> torch.Tensor:
    """Images ``(N, H, W, C)`` to token sequences ``(N, L, F)`` (channel fastest in F)."""
    n, h, w, c = x.shape
    if tokenize not in TOKENIZATIONS:
        raise ValueError(f"tokenize must be one of {TOKENIZATIONS}, not {tokenize!r}")
    if tokenize == "patch" and (patch < 1 or h % patch or w % patch):
        raise ValueError(f"patch size {patch} does not divide the {h}x{w} image")
    if perm is not None:
        flat = x.reshape(n, h * w, c)[:, perm]
        group = {"pixel": 1, "row": w, "patch": patch * patch}[tokenize]
        return flat.reshape(n, h * w // group, group * c)
    if tokenize == "pixel":
        return x.reshape(n, h * w, c)
    if tokenize == "row":
        return x.reshape(n, h, w * c)
    p = patch
    t = x.reshape(n, h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(n, (h // p) * (w // p), p * p * c)


def _gray(imgs: np.ndarray, chunk: int = 10000) -> torch.Tensor:
    """RGB uint8 ``(N, H, W, 3)`` to float32 grey ``(N, H, W, 1)`` in 0..255."""
    w = torch.tensor(GRAY_WEIGHTS, dtype=torch.float32)
    src = torch.from_numpy(imgs)
    out = torch.empty(src.shape[:3] + (1,), dtype=torch.float32)
    for s in range(0, src.shape[0], chunk):
        out[s : s + chunk, ..., 0] = src[s : s + chunk].to(torch.float32) @ w
    return out


def _stats_uint8(imgs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean/std (0..255 scale) of uint8 ``(N, H, W, C)`` via histograms."""
    v = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(imgs.shape[-1]):
        counts = np.bincount(imgs[..., c].ravel(), minlength=256).astype(np.float64)
        total = counts.sum()
        m = (counts @ v) / total
        var = (counts @ (v * v)) / total - m * m
        means.append(m)
        stds.append(np.sqrt(max(var, 0.0)))
    return np.array(means), np.array(stds)


def _stats_float(x: torch.Tensor, chunk: int = 10000) -> tuple[np.ndarray, np.ndarray]:
    c = x.shape[-1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, x.shape[0], chunk):
        part = x[i : i + chunk].reshape(-1, c).to(torch.float64)
        s += part.sum(0)
        s2 += (part * part).sum(0)
    n = x.numel() // c
    m = s / n
    var = (s2 / n - m * m).clamp_min(0)
    return m.numpy(), var.sqrt().numpy()


def npz_task(path, *, val_fraction: float = 0.1, seed: int = 0,
             limit_train: int | None = None) -> Task:
    """Your own sequences from an .npz file as a Task (format: :mod:`qlam.data.npz_task`)."""
    splits = load_npz_splits(path, val_fraction=val_fraction, seed=seed, limit_train=limit_train)
    labels = [y for _, y in splits.values() if len(y)]
    x = splits["train"][0]
    return Task(name=str(path), dataset="npz", seq_len=int(x.shape[1]),
                n_features=int(x.shape[2]), n_classes=int(max(y.max() for y in labels)) + 1,
                train=Split(*splits["train"]), val=Split(*splits["val"]),
                test=Split(*splits["test"]), tokenize="file", seed=seed,
                val_fraction=val_fraction, limit_train=limit_train)


def get_task(
    name: str,
    *,
    tokenize: str = "pixel",
    patch: int = 4,
    grayscale: bool = False,
    val_fraction: float = VAL_FRACTION,
    seed: int = 0,
    limit_train: int | None = None,
    root=None,
    length: int | None = None,
    test_lengths=None,
    vocab: int | None = None,
    limit_test: int | None = None,
    splits=("train", "val", "test"),
) -> Task:
    """Build a sequence task (see the module docstring). ``root`` is the cache directory
    (default ``$QLAM_DATA`` or ``~/.cache/qlam``); missing datasets are fetched. A name
    ending in ``.npz`` is your own data (:mod:`qlam.data.npz_task`; the image and generator
    options do not apply).

    Generated tasks only: ``length`` (training length, default the task's), ``test_lengths``
    (ints, or a string "256,1024"), ``vocab``, ``limit_train`` / ``limit_test`` (examples
    generated) and ``splits`` (which splits to generate now; the others are empty).

    Example:
        >>> task = get_task("smnist", limit_train=1000)  # doctest: +SKIP
        >>> task.train.x.shape, task.n_classes  # doctest: +SKIP
        (torch.Size([1000, 784, 1]), 10)
    """
    _check_seed(seed)
    if not is_file_task(name) and name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}, or give "
                         f"a .npz file of your own sequences (see qlam.data.npz_task)")
    image_options = {"tokenize": tokenize != "pixel", "patch": patch != 4, "grayscale": grayscale}
    if name not in generated.SPECS:
        for option, value in (("length", length), ("test_lengths", test_lengths),
                              ("vocab", vocab)):
            if value is not None and value != ():
                raise ValueError(f"{option} applies to the generated tasks "
                                 f"({', '.join(generated.SPECS)}), not to {name!r}")
    if name in generated.SPECS or is_file_task(name):
        given = [option for option, changed in image_options.items() if changed]
        if given:  # (they had been ignored, and recorded in config.json as if applied)
            raise ValueError(f"{', '.join(given)} applies to the image tasks, not to {name!r}")
    if is_file_task(name):
        return npz_task(name, val_fraction=val_fraction, seed=seed, limit_train=limit_train)
    if name in generated.SPECS:
        return generated_task(name, length=length, test_lengths=test_lengths, vocab=vocab,
                              val_fraction=val_fraction, seed=seed, limit_train=limit_train,
                              limit_test=limit_test, splits=splits)
    if tokenize not in TOKENIZATIONS:
        raise ValueError(f"tokenize must be one of {TOKENIZATIONS}, not {tokenize!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    if limit_train is not None and limit_train < 1:
        raise ValueError(f"limit_train must be >= 1 or None, not {limit_train}")
    dataset = TASK_DATASET[name]
    grayscale = bool(grayscale) and dataset == "cifar10"  # MNIST-like data are grey already

    xtr, ytr = load(dataset, "train", root)
    xte, yte = load(dataset, "test", root)
    if xtr.ndim == 3:
        xtr, xte = xtr[..., None], xte[..., None]
    h, w = xtr.shape[1:3]
    if tokenize == "patch" and (patch < 1 or h % patch or w % patch):
        raise ValueError(f"patch size {patch} does not divide the {h}x{w} image")

    n = xtr.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(val_fraction * n))
    val_idx = order[:n_val].sort().values.numpy()
    fit_idx = order[n_val:]
    train_idx = fit_idx if limit_train is None else fit_idx[:limit_train]
    fit_idx, train_idx = fit_idx.sort().values.numpy(), train_idx.sort().values.numpy()

    perm = psmnist_permutation() if name == "psmnist" else None

    if grayscale:
        gtr, gte = _gray(xtr), _gray(xte)
        mean, std = _stats_float(gtr[torch.from_numpy(fit_idx)])
        parts = {
            "train": (gtr[torch.from_numpy(train_idx)], ytr[train_idx]),
            "val": (gtr[torch.from_numpy(val_idx)], ytr[val_idx]),
            "test": (gte, yte),
        }
    else:
        mean, std = _stats_uint8(xtr[fit_idx])
        parts = {
            "train": (torch.from_numpy(xtr[train_idx]), ytr[train_idx]),
            "val": (torch.from_numpy(xtr[val_idx]), ytr[val_idx]),
            "test": (torch.from_numpy(np.ascontiguousarray(xte)), yte),
        }
    std = np.where(std > 0, std, 1.0)

    splits = {}
    for key, (imgs, labels) in parts.items():
        tok = tokenize_images(imgs, tokenize, patch, perm)
        f = tok.shape[-1]
        reps = f // mean.shape[0]
        m = torch.tensor(np.tile(mean, reps), dtype=torch.float32)
        inv = torch.tensor(np.tile(1.0 / std, reps), dtype=torch.float32)
        # a fresh float32 tensor for uint8 input; for grey input it is our own tensor
        x = tok.to(torch.float32).contiguous()
        x.sub_(m).mul_(inv)
        y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        splits[key] = Split(x, y)

    seq_len, n_features = splits["train"].x.shape[1:]
    return Task(
        name=name,
        dataset=dataset,
        seq_len=int(seq_len),
        n_features=int(n_features),
        n_classes=N_CLASSES,
        chance=1.0 / N_CLASSES,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        tokenize=tokenize,
        patch=patch if tokenize == "patch" else None,
        grayscale=grayscale,
        mean=[float(v) / 255.0 for v in mean],
        std=[float(v) / 255.0 for v in std],
        perm_seed=PSMNIST_PERM_SEED if perm is not None else None,
        seed=seed,
        val_fraction=val_fraction,
        limit_train=limit_train,
    )


def parse_lengths(value) -> tuple[int, ...]:
    """Test lengths from "256,1024" or a list of ints; () for None or ""."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for item in items:
        if isinstance(item, str):
            item = item.strip()
            if not item:
                continue
            try:
                item = int(item)
            except ValueError:
                raise ValueError(f"bad test length {item!r} in {value!r}: use e.g. "
                                 "256,1024,4096") from None
        if isinstance(item, bool) or not isinstance(item, numbers.Integral) or item < 1:
            raise ValueError(f"test lengths must be positive ints, got {item!r}")
        out.append(int(item))
    return tuple(dict.fromkeys(out))


def _to_split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(torch.from_numpy(x), torch.from_numpy(y))


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in 0..2^32 - 1, got {seed!r}")


def generated_task(name: str, *, length: int | None = None, test_lengths=None,
                   vocab: int | None = None, val_fraction: float = VAL_FRACTION, seed: int = 0,
                   limit_train: int | None = None, limit_test: int | None = None,
                   splits=("train", "val", "test")) -> Task:
    """A task of :mod:`qlam.data.generated`: train/val seeded by ``seed``, test sets fixed."""
    spec = generated.spec(name)
    _check_seed(seed)
    length = generated.check(name, spec.length if length is None else length, vocab)
    lengths = parse_lengths(test_lengths)
    for t in lengths:
        generated.check(name, t, vocab, train_length=length)
    for key, value in (("limit_train", limit_train), ("limit_test", limit_test)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"{key} must be an int >= 1 or None, got {value!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    n_train, n_val, n_test = spec.sizes
    if limit_train is None and val_fraction != VAL_FRACTION:  # (it had been ignored)
        raise ValueError(f"{name}: the validation set has a fixed size ({n_val:,} examples); "
                         "val_fraction applies with limit_train")
    if isinstance(splits, str) or not set(splits) <= {"train", "val", "test"}:
        raise ValueError(f"splits must be a collection of train, val and test, got {splits!r}")
    if limit_train is not None:
        held = round(val_fraction * limit_train)
        n_train, n_val = limit_train, min(n_val, max(1, held) if val_fraction > 0 else 0)
    n_test = limit_test or n_test
    sizes = {"train": n_train, "val": n_val, "test": n_test}

    def make(split: str, at: int, n: int) -> Split:
        rng = generated.rng_for(split, seed, at)
        return _to_split(*generated.generate(name, rng, n, at, vocab, train_length=length))

    vocab_size = generated.vocab_of(name, vocab)
    parts = {k: make(k, length, n if k in splits else 0) for k, n in sizes.items()}
    x = parts["train"].x
    return Task(
        name=name,
        dataset="generated",
        seq_len=length,
        n_features=vocab_size if vocab_size is not None else int(x.shape[-1]),
        n_classes=generated.n_classes(name, vocab),
        train=parts["train"],
        val=parts["val"],
        test=parts["test"],
        seed=seed,
        val_fraction=val_fraction,
        limit_train=limit_train,
        target=spec.target,
        discrete=vocab_size is not None,
        chance=generated.chance(name, vocab),
        test_lengths=lengths,
        make_test=lambda at: make("test", at, n_test),
    )
