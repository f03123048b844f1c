"""OpenQASM 2.0 reading below the statements: tokens, and angle expressions (numbers, ``pi``,
``+ - * / ^``, sin cos tan exp ln sqrt) parsed into a small tree and evaluated without
``eval``, at most :data:`MAX_EXPRESSION` operands and operators each.
:class:`TokenReader` is the base of :mod:`qlam.openqasm`'s reader."""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass

MAX_EXPRESSION = 100  # operands and operators of one angle expression (nesting included)

FUNCTIONS = {"sin": math.sin, "cos": math.cos, "tan": math.tan, "exp": math.exp,
              "ln": math.log, "sqrt": math.sqrt}


# ---- reading: tokens ----------------------------------------------------------------------
TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>//[^\n]*)
  | (?P<real>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"[^"\n]*")
  | (?P<sym>->|==|[;,()\[\]{}+\-*/^])
""", re.VERBOSE)


@dataclass(frozen=True)
class Tok:
    kind: str  # real, id, string, sym, eof
    text: str
    line: int


def tokenize(text: str) -> list[Tok]:
    newlines = [m.start() for m in re.finditer("\n", text)]
    toks: list[Tok] = []
    pos = 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        line = bisect.bisect_right(newlines, pos - 1) + 1
        if m is None:
            raise ValueError(f"line {line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup
        if kind not in ("ws", "comment"):
            toks.append(Tok(kind, m.group(), line))
        pos = m.end()
    line = len(newlines) + 1
    toks.append(Tok("eof", "", line))
    return toks


# ---- reading: expressions -----------------------------------------------------------------
# AST: ("num", v) | ("var", name) | ("neg", e) | ("bin", op, a, b) | ("call", fn, e)

def evaluate(node, env: dict[str, float], line: int) -> float:
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "var":
        if node[1] not in env:
            raise ValueError(f"line {line}: unknown identifier {node[1]!r} in an angle")
        return env[node[1]]
    if kind == "neg":
        return -evaluate(node[1], env, line)
    if kind == "call":
        arg = evaluate(node[2], env, line)
        try:
            value = FUNCTIONS[node[1]](arg)
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"line {line}: {node[1]}({arg}) is undefined: {exc}") from None
        return value
    op, a, b = node[1], evaluate(node[2], env, line), evaluate(node[3], env, line)
    try:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a / b
        return math.pow(a, b)
    except ZeroDivisionError:
        raise ValueError(f"line {line}: division by zero in an angle") from None
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"line {line}: {a} {op} {b} is undefined: {exc}") from None


def expr_size(node) -> int:
    """Nodes of an expression (evaluated once each)."""
    return 1 + sum(expr_size(child) for child in node[1:] if isinstance(child, tuple))


class TokenReader:
    """A cursor over the tokens of ``text``, with the angle-expression grammar."""

    def __init__(self, text: str):
        self.toks = tokenize(text)
        self.i = 0
        self.factors = 0  # operands and operators of the expression being read

    # -- token helpers
    @property
    def tok(self) -> Tok:
        return self.toks[self.i]

    def next(self) -> Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def accept(self, text: str) -> bool:
        if self.tok.kind in ("sym", "id") and self.tok.text == text:
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> Tok:
        t = self.tok
        if t.kind in ("sym", "id") and t.text == text:
            self.i += 1
            return t
        got = "end of input" if t.kind == "eof" else repr(t.text)
        raise ValueError(f"line {t.line}: expected {text!r}, got {got}")

    def ident(self, what: str) -> Tok:
        t = self.tok
        if t.kind != "id":
            got = "end of input" if t.kind == "eof" else repr(t.text)
            raise ValueError(f"line {t.line}: expected {what}, got {got}")
        self.i += 1
        return t

    def integer(self) -> int:
        t = self.tok
        if t.kind != "real" or not t.text.isdigit():
            raise ValueError(f"line {t.line}: expected a non-negative integer, got {t.text!r}")
        self.i += 1
        return int(t.text)

    # -- expressions
    def _left_assoc(self, ops: str, operand):
        """operand (op operand)*, left-associative, for the operators in ``ops``."""
        node = operand()
        while self.tok.kind == "sym" and self.tok.text in ops:
            op = self.next().text
            node = ("bin", op, node, operand())
        return node

    def expr(self):
        return self._left_assoc("+-", self.term)

    def term(self):
        return self._left_assoc("*/", self.factor)

    def angle(self):
        """One angle expression, at most :data:`MAX_EXPRESSION` operands and operators."""
        self.factors = 0
        return self.expr()

    def factor(self):
        self.factors += 1
        if self.factors > MAX_EXPRESSION:
            raise ValueError(f"line {self.tok.line}: angle expression too long or too deeply "
                             f"nested (more than {MAX_EXPRESSION} operands and operators)")
        if self.accept("-"):
            return ("neg", self.factor())
        if self.accept("+"):
            return self.factor()
        base = self.atom()
        if self.accept("^"):
            return ("bin", "^", base, self.factor())
        return base

    def atom(self):
        t = self.next()
        if t.kind == "real":
            return ("num", float(t.text))
        if t.kind == "id":
            if t.text == "pi":
                return ("num", math.pi)
            if t.text in FUNCTIONS:
                self.expect("(")
                arg = self.expr()
                self.expect(")")
                return ("call", t.text, arg)
            return ("var", t.text)
        if t.kind == "sym" and t.text == "(":
            node = self.expr()
            self.expect(")")
            return node
        got = "end of input" if t.kind == "eof" else repr(t.text)
        raise ValueError(f"line {t.line}: expected an angle expression, got {got}")

    def expr_list(self) -> list:
        exprs = []
        if self.accept("("):
            if not self.accept(")"):
                exprs.append(self.angle())
                while self.accept(","):
                    exprs.append(self.angle())
                self.expect(")")
        return exprs
