"""State-tracking generators: parity and the word problems of S3, S5 and A5.

Merrill, Petty and Sabharwal ("The Illusion of State in State-Space Models", 2024) show that
diagonal state-space models and Transformers cannot track state on non-abelian groups such
as S5 at long lengths, while products of non-commuting matrices can; Grazzi et al. (2024)
show that parity needs negative (or non-diagonal) transition eigenvalues.

Group elements are permutations of ``range(k)`` as arrays (``p[i]`` is where ``i`` goes),
indexed in lexicographic order (``itertools.permutations``): S5 has 120 elements, index 0
the identity; A5 the 60 even ones, in the same order; S3, the smallest non-abelian group
(6 elements, k = 3), is solvable, so it separates "non-commuting" from "NC1-complete".
A word ``a_1 .. a_t`` (token ids) acts left to right: the state after ``t`` tokens is
``s_t = a_t o s_{t-1}`` with ``(a o s)[i] = a[s[i]]``, ``s_0`` the identity. The *final*
product is ``s_L``, the *running* product the sequence ``s_1 .. s_L``.
"""

from __future__ import annotations

import itertools

import numpy as np

GROUPS = ("s3", "s5", "a5")


def permutation_sign(p) -> int:
    """+1 for an even permutation, -1 for an odd one (by counting inversions)."""
    inv = sum(1 for i in range(len(p)) for j in range(i + 1, len(p)) if p[i] > p[j])
    return -1 if inv % 2 else 1


def group_elements(group: str) -> np.ndarray:
    """(G, k) int64: the group's permutations of range(k) in lexicographic order."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(GROUPS)}, not {group!r}")
    perms = list(itertools.permutations(range(3 if group == "s3" else 5)))
    if group == "a5":
        perms = [p for p in perms if permutation_sign(p) == 1]
    return np.array(perms, dtype=np.int64)


def multiplication_table(elements: np.ndarray) -> np.ndarray:
    """(G, G) int64: ``table[s, a]`` is the index of ``a o s`` (state ``s``, then token ``a``)."""
    index = {tuple(p): i for i, p in enumerate(elements.tolist())}
    g = len(elements)
    table = np.empty((g, g), dtype=np.int64)
    for s in range(g):
        for a in range(g):
            table[s, a] = index[tuple(elements[a][elements[s]].tolist())]
    return table


def running_products(words: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(N, L) token ids -> (N, L) state ids ``s_1 .. s_L`` (``s_0`` = index 0, the identity)."""
    out = np.empty_like(words)
    state = np.zeros(words.shape[0], dtype=np.int64)
    for t in range(words.shape[1]):
        state = table[state, words[:, t]]
        out[:, t] = state
    return out


def word_problem(rng: np.random.Generator, n: int, length: int, group: str,
                 running: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random words: x (N, L) token ids in ``[0, G)``; y the final product (N,) or
    the running product (N, L)."""
    elements = group_elements(group)
    words = rng.integers(0, len(elements), size=(n, length), dtype=np.int64)
    states = running_products(words, multiplication_table(elements))
    return words, (states if running else states[:, -1].copy())


def parity(rng: np.random.Generator, n: int, length: int,
           running: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random bit strings: x (N, L) in {0, 1}; y the parity of all bits (N,) or of
    every prefix (N, L)."""
    bits = rng.integers(0, 2, size=(n, length), dtype=np.int64)
    prefix = np.cumsum(bits, axis=1) % 2
    return bits, (prefix if running else prefix[:, -1].copy())
