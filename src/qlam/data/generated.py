"""Tasks generated locally, seeded, with no download: state tracking, memory reach, ListOps.

=================  ===========  =====================================================  =====
task               target       what                                                   chance
=================  ===========  =====================================================  =====
parity             class (2)    parity of a bit string                                  1/2
parity-running     tokens (2)   parity of every prefix                                  1/2
s3 / s5 / a5       class (G)    product of a word over S3 (G = 6) / S5 (120) / A5 (60)  1/G
s5-running / ...   tokens (G)   the running product, one per token                      1/G
adding             regression   sum of the two marked values (MSE; acc: |error| < 0.04)  see below
copying            tokens (V)   copy M = 10 data tokens after a delay                   1/(V-2)
selective-copying  tokens (V)   copy M = 16 scattered data tokens                       1/(V-2)
mqar               tokens (V)   recall the value of each repeated key                   2/V
listops            class (10)   the value of a ListOps expression                       1/10
=================  ===========  =====================================================  =====

``length`` is the number of tokens a model reads (for copying, data + delay + markers; for
ListOps the padded length, expressions having between length/4 and length tokens). The
group word problems and their generators are in :mod:`qlam.data.state_tracking`, the
memory tasks in :mod:`qlam.data.recall`, ListOps in :mod:`qlam.data.listops`.

Chance: the accuracy of a uniform guess (per target token for per-token tasks). For the
adding problem the "chance" figures are those of the best constant guess, 1.0: MSE 1/6
(the variance of a sum of two U[0, 1]) and tolerance accuracy 2(0.04) - 0.04^2 = 0.0784.

Seeds: the training and validation sets come from ``seed``; the test set at each length
from a fixed stream (the same for every training seed and model), like an official test set.
MQAR keeps the training length's number of pairs at every test length (only the gaps grow).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from qlam.data import listops as lo
from qlam.data import recall, state_tracking

REGRESSION_TOLERANCE = 0.04
TEST_STREAM = 20_241_118  # the test sets' seed, fixed for every run
MQAR_PAIRS = {64: 4, 128: 8, 256: 16, 512: 64}  # Zoology's (length, pairs)
MAX_LENGTH = 1 << 20
LISTOPS_MAX_LENGTH = 8192  # 12 ms an example here (LRA's 2,000: 1.4 ms); 16,000: 0.2 s


@dataclass(frozen=True)
class Spec:
    """A generated task's fixed facts and defaults."""

    target: str  # "class", "regression" or "tokens"
    length: int  # default training length
    sizes: tuple[int, int, int]  # default (train, val, test) examples
    about: str
    vocab: int | None = None  # default input vocabulary; None for float features
    vocab_option: bool = False  # whether --vocab may change it
    copy_tokens: int = 0  # M of the copying tasks


SPECS: dict[str, Spec] = {
    "parity": Spec("class", 64, (10_000, 1_000, 1_000), "parity of a bit string", 2),
    "parity-running": Spec("tokens", 64, (10_000, 1_000, 1_000), "parity of every prefix", 2),
    "s3": Spec("class", 64, (10_000, 1_000, 1_000), "product of a word over S3", 6),
    "s3-running": Spec("tokens", 64, (10_000, 1_000, 1_000), "running product over S3", 6),
    "s5": Spec("class", 64, (10_000, 1_000, 1_000), "product of a word over S5", 120),
    "s5-running": Spec("tokens", 64, (10_000, 1_000, 1_000), "running product over S5", 120),
    "a5": Spec("class", 64, (10_000, 1_000, 1_000), "product of a word over A5", 60),
    "a5-running": Spec("tokens", 64, (10_000, 1_000, 1_000), "running product over A5", 60),
    "adding": Spec("regression", 1_000, (10_000, 1_000, 1_000),
                   "sum of the two marked values (MSE)"),
    "copying": Spec("tokens", 1_000, (10_000, 1_000, 1_000),
                    "copy 10 data tokens after a delay", 10, True, 10),
    "selective-copying": Spec("tokens", 4_096, (10_000, 1_000, 1_000),
                              "copy 16 data tokens scattered among blanks", 16, True, 16),
    "mqar": Spec("tokens", 256, (20_000, 1_000, 3_000),
                 "recall the values of repeated keys (Zoology)", 8_192, True),
    "listops": Spec("class", 2_000, (96_000, 2_000, 2_000),
                    "value of a ListOps expression (LRA rules)", len(lo.VOCAB)),
}
GENERATED_TASKS = tuple(SPECS)


def spec(name: str) -> Spec:
    if name not in SPECS:
        raise ValueError(f"unknown generated task {name!r}; choose one of {', '.join(SPECS)}")
    return SPECS[name]


def vocab_of(name: str, vocab: int | None = None) -> int | None:
    """The input vocabulary (None: float features), checking a ``vocab`` override."""
    s = spec(name)
    if vocab is None:
        return s.vocab
    if not s.vocab_option:
        raise ValueError(f"task {name!r} has a fixed vocabulary; --vocab applies to "
                         "copying, selective-copying and mqar")
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 3:
        raise ValueError(f"vocab must be an int >= 3, got {vocab!r}")
    return vocab


def n_classes(name: str, vocab: int | None = None) -> int:
    """Output width: classes, 1 for regression."""
    s = spec(name)
    if s.target == "regression":
        return 1
    if name in ("parity", "parity-running"):
        return 2
    if name == "listops":
        return lo.N_CLASSES
    return vocab_of(name, vocab)  # group size, or the token vocabulary


def chance(name: str, vocab: int | None = None) -> float:
    """Accuracy of a uniform guess (per target token); adding: the best constant's
    tolerance accuracy (its MSE is 1/6)."""
    s = spec(name)
    if s.target == "regression":
        e = REGRESSION_TOLERANCE
        return 2 * e - e * e
    v = vocab_of(name, vocab)
    if s.copy_tokens:
        return 1.0 / (v - 2)  # the data alphabet
    if name == "mqar":
        return 1.0 / (v - v // 2)  # the values
    return 1.0 / n_classes(name, vocab)


def _pairs(length: int) -> int:
    return MQAR_PAIRS.get(length, max(1, length // 16))


def check(name: str, length, vocab: int | None = None, train_length: int | None = None) -> int:
    """Validate a length for ``name`` (and its vocabulary); returns it. ``train_length``:
    the training length, when ``length`` is a test length."""
    s = spec(name)
    if isinstance(length, bool) or not isinstance(length, numbers.Integral):
        raise ValueError(f"length must be an int, got {length!r}")
    length = int(length)
    if not 1 <= length <= MAX_LENGTH:
        raise ValueError(f"{name}: length must be in 1..{MAX_LENGTH}, got {length}")
    v = vocab_of(name, vocab)
    if name == "adding" and length < 2:
        raise ValueError(f"adding: length must be >= 2 (two marked tokens), got {length}")
    if s.copy_tokens:
        m = s.copy_tokens
        if length < 2 * m + 1:
            raise ValueError(f"{name}: length must be >= {2 * m + 1} ({m} data tokens, a delay "
                             f"and {m} markers), got {length}")
        if v < 3:
            raise ValueError(f"{name}: vocab must be >= 3 (blank, marker and data)")
    if name == "mqar":
        pairs = _pairs(train_length or length)
        if length % 2 or length < 4 * pairs:
            raise ValueError(f"mqar: length must be even and >= 4 x {pairs} pairs, got {length}")
        if v <= length or v // 2 - 1 < pairs:
            raise ValueError(f"mqar: vocab ({v}) must exceed the length ({length}) and hold "
                             f"{pairs} distinct keys")
    if name == "listops" and not 8 <= length <= LISTOPS_MAX_LENGTH:
        raise ValueError(f"listops: length must be in 8..{LISTOPS_MAX_LENGTH} (expressions "
                         f"between length/4 and length tokens; LRA: 2000), got {length}: "
                         "LRA's trees (depth <= 10) seldom reach more tokens (1 % over 2,000, "
                         "0.02 % over 4,000), so longer examples would take hours to draw")
    return length


def generate(name: str, rng: np.random.Generator, n: int, length: int,
             vocab: int | None = None, train_length: int | None = None):
    """``n`` examples at ``length``: (x, y) numpy arrays (see :mod:`qlam.data.tasks`)."""
    check(name, length, vocab, train_length)
    v = vocab_of(name, vocab)
    base, running = name.removesuffix("-running"), name.endswith("-running")
    if base == "parity":
        return state_tracking.parity(rng, n, length, running=running)
    if base in state_tracking.GROUPS:
        return state_tracking.word_problem(rng, n, length, base, running=running)
    if name == "adding":
        return recall.adding(rng, n, length)
    if name in ("copying", "selective-copying"):
        return recall.copying(rng, n, length, v, SPECS[name].copy_tokens,
                              selective=name == "selective-copying")
    if name == "mqar":
        return recall.mqar(rng, n, length, v, _pairs(train_length or length))
    if name == "listops":
        return lo.listops(rng, n, length, length // 4)
    raise AssertionError(name)


def rng_for(split: str, seed: int, length: int) -> np.random.Generator:
    """The seeded stream of a split: train/val from ``seed``, test fixed (per length)."""
    code = {"train": 0, "val": 1, "test": 2}[split]
    key = [TEST_STREAM, code, length] if split == "test" else [seed, code, length]
    return np.random.default_rng(key)
