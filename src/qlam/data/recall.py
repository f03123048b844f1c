"""Memory-reach generators: the adding problem, copying memory, selective copying and
multi-query associative recall (MQAR).

* adding (Hochreiter and Schmidhuber 1997; the state-spaces/s4 layout): token t carries a
  value ``u_t ~ U[0, 1]`` and a marker; one marker lies in the first half
  ``[0, L // 2)``, one in the second; the target is the sum of the two marked values.
* copying (Arjovsky et al. 2016; s4's ``copying.py``): ``M`` data tokens (ids
  ``1 .. V - 2``) at the start, blanks (0), then ``M`` markers (``V - 1``): the output at
  the markers is the data tokens in order. selective copying (Gu and Dao 2023) scatters the
  data tokens at random positions of the first ``L - M`` tokens.
* MQAR (Arora et al. 2023, "Zoology"; ``zoology/data/associative_recall.py``): ``P``
  key-value pairs (keys ``1 .. V/2 - 1``, values ``V/2 .. V - 1``, distinct within an
  example), then the keys again at power-law distributed gaps (``a = 0.01``) among random
  tokens; the target at each repeated key is its value.

Per-token targets are -100 (:data:`IGNORE_INDEX`) where there is nothing to predict.
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = -100
MQAR_POWER_A = 0.01


def adding(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """x float32 (N, L, 2) = (value, marker); y float32 (N,) the sum of the marked values."""
    half = length // 2
    values = rng.random((n, length), dtype=np.float32)
    markers = np.zeros((n, length), dtype=np.float32)
    rows = np.arange(n)
    markers[rows, rng.integers(0, half, n)] = 1.0
    markers[rows, half + rng.integers(0, length - half, n)] = 1.0
    return np.stack([values, markers], -1), (values * markers).sum(1, dtype=np.float32)


def copy_layout(tokens: np.ndarray, positions: np.ndarray, length: int,
                marker: int) -> tuple[np.ndarray, np.ndarray]:
    """Place ``tokens`` (N, M) at ``positions`` (N, M, increasing, all < L - M) of a blank
    sequence of ``length`` tokens ending in M ``marker`` tokens. Returns x (N, L) and the
    targets y (N, L): the tokens in order at the markers, IGNORE_INDEX elsewhere."""
    n, m = tokens.shape
    x = np.zeros((n, length), dtype=np.int64)
    np.put_along_axis(x, positions, tokens, axis=1)
    x[:, length - m:] = marker
    y = np.full((n, length), IGNORE_INDEX, dtype=np.int64)
    y[:, length - m:] = tokens
    return x, y


def copying(rng: np.random.Generator, n: int, length: int, vocab: int, m: int,
            selective: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Copying memory (data at the start) or selective copying (data scattered over the
    first ``length - m`` positions); ``vocab`` counts the blank (0) and the marker."""
    tokens = rng.integers(1, vocab - 1, size=(n, m), dtype=np.int64)
    if selective:
        positions = np.sort(np.argpartition(rng.random((n, length - m)), m - 1, axis=1)[:, :m], 1)
    else:
        positions = np.broadcast_to(np.arange(m), (n, m))
    return copy_layout(tokens, positions, length, vocab - 1)


def _distinct(rng: np.random.Generator, n: int, k: int, low: int, high: int) -> np.ndarray:
    """(N, k) integers in [low, high), distinct within each row (uniform: rows with a repeat
    are drawn again)."""
    out = rng.integers(low, high, size=(n, k), dtype=np.int64)
    while True:
        s = np.sort(out, 1)
        bad = (s[:, 1:] == s[:, :-1]).any(1)
        if not bad.any():
            return out
        out[bad] = rng.integers(low, high, size=(int(bad.sum()), k), dtype=np.int64)


def mqar(rng: np.random.Generator, n: int, length: int, vocab: int,
         pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """x (N, L) token ids, y (N, L): the value at each queried key's position."""
    context = 2 * pairs
    keys = _distinct(rng, n, pairs, 1, vocab // 2)
    values = _distinct(rng, n, pairs, vocab // 2, vocab)
    x = np.zeros((n, length), dtype=np.int64)
    x[:, 0:context:2], x[:, 1:context:2] = keys, values
    # gaps: `pairs` distinct slots of the query region, drawn without replacement with
    # probability ~ a * g^(a - 1) (g = 1 .. space), as Zoology's np.random.choice(p=...):
    # the Gumbel top-k trick samples exactly that sequential draw
    space = (length - context) // 2
    logp = np.log(MQAR_POWER_A * np.arange(1, space + 1) ** (MQAR_POWER_A - 1))
    gaps = np.argsort(-(logp + rng.gumbel(size=(n, space))), axis=1)[:, :pairs]
    pos = context + 2 * gaps
    np.put_along_axis(x, pos, keys, axis=1)
    y = np.full((n, length), IGNORE_INDEX, dtype=np.int64)
    np.put_along_axis(y, pos, values, axis=1)
    blank = x == 0
    x[blank] = rng.integers(0, vocab, size=int(blank.sum()), dtype=np.int64)
    return x, y
