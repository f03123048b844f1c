"""ListOps following the Long Range Arena generator's rules (Tay et al. 2021;
``google-research/long-range-arena`` ``lra_benchmarks/data/listops.py``).

A tree: at depth < 10 a node is an operator with probability 0.25 (otherwise a digit
0-9); an operator (MIN, MAX, MED, SUM_MOD) takes 2-10 arguments. MED is
``int(np.median(args))``, SUM_MOD the sum mod 10. The sequence is the prefix notation
without parentheses, as the LRA input pipelines read it: ``[MAX 2 9 [MIN 4 7 ] 0 ]`` is 9.
An example is kept when its token count lies strictly between the minimum and maximum
length (LRA: 500 and 2,000); sequences are left-padded with PAD (0) to the maximum length,
so every expression ends at the last token. Label: the value (10 classes).

Token ids: PAD 0, digits ``d`` -> ``d + 1``, then ``[MIN [MAX [MED [SM ]`` -> 11 .. 15.
The random stream is numpy's, not Python's ``random``: the rules are LRA's, the samples not.
"""

from __future__ import annotations

import numpy as np

VALUE_P = 0.25
MAX_DEPTH = 10
MAX_ARGS = 10
OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
PAD = 0
VOCAB = ["<pad>", *map(str, range(10)), *OPERATORS, END]
TOKEN = {t: i for i, t in enumerate(VOCAB)}
N_CLASSES = 10


def apply(op: str, args: list[int]) -> int:
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":  # int(np.median(args)) for these non-negative ints
        s = sorted(args)
        return (s[(len(s) - 1) // 2] + s[len(s) // 2]) // 2
    if op == "[SM":
        return sum(args) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


class _TooLong(Exception):
    pass


class Uniforms:
    """Uniform [0, 1) numbers from ``rng``, drawn in blocks (a numpy call per node would
    cost more than the rest of the generator)."""

    def __init__(self, rng: np.random.Generator, block: int = 1 << 16):
        self.rng, self.block, self.buf, self.i = rng, block, [], 0

    def __call__(self) -> float:
        if self.i == len(self.buf):
            self.buf, self.i = self.rng.random(self.block).tolist(), 0
        self.i += 1
        return self.buf[self.i - 1]


def _tree(draw: Uniforms, depth: int, out: list[int], limit: int) -> int:
    """Append one subtree's tokens to ``out`` and return its value (LRA's generate_tree)."""
    if len(out) >= limit:
        raise _TooLong
    if depth < MAX_DEPTH and draw() <= VALUE_P:
        op = OPERATORS[int(draw() * len(OPERATORS))]
        out.append(TOKEN[op])
        n_args = 2 + int(draw() * (MAX_ARGS - 1))  # 2 .. MAX_ARGS
        args = [_tree(draw, depth + 1, out, limit) for _ in range(n_args)]
        out.append(TOKEN[END])
        return apply(op, args)
    value = int(draw() * 10)
    out.append(value + 1)
    return value


def sample(draw: Uniforms, min_length: int, max_length: int) -> tuple[list[int], int]:
    """One expression with ``min_length < tokens < max_length``: (token ids, value)."""
    while True:
        out: list[int] = []
        try:
            value = _tree(draw, 1, out, max_length)
        except _TooLong:
            continue
        if min_length < len(out) < max_length:
            return out, value


def evaluate(tokens) -> int:
    """The value of a token-id sequence (PAD ignored), by a stack: an independent check of
    the generator. Raises ValueError on a malformed expression."""
    stack: list[list] = []
    result = None
    for t in (int(t) for t in tokens if int(t) != PAD):
        word = VOCAB[t] if 0 <= t < len(VOCAB) else None
        if word in OPERATORS:
            stack.append([word])
            continue
        if word == END:
            if not stack or len(stack[-1]) < 2:
                raise ValueError("']' without an operator and arguments")
            op, *args = stack.pop()
            value = apply(op, args)
        elif word is not None and word.isdigit():
            value = int(word)
        else:
            raise ValueError(f"bad ListOps token id {t}")
        if stack:
            stack[-1].append(value)
        elif result is None:
            result = value
        else:
            raise ValueError("more than one expression")
    if stack or result is None:
        raise ValueError("unfinished ListOps expression")
    return result


def listops(rng: np.random.Generator, n: int, length: int,
            min_length: int) -> tuple[np.ndarray, np.ndarray]:
    """x (N, length) left-padded token ids, y (N,) values."""
    x = np.zeros((n, length), dtype=np.int64)
    y = np.empty(n, dtype=np.int64)
    draw = Uniforms(rng)
    for i in range(n):
        tokens, y[i] = sample(draw, min_length, length)
        x[i, length - len(tokens):] = tokens
    return x, y
