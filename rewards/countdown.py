"""Reward `countdown`: an expression that uses every given number exactly once and hits the target.

Gold: JSON `{"numbers": [3, 5, 2], "target": 16}`. The expression is the content of the last
\\boxed{} of the completion, or, with no box, its last non-empty line (both searched in the last
TAIL_CHARS characters). It is parsed by a small recursive-descent parser (integers, + - * /,
parentheses, unary +/-; exact Fractions; bounded length, depth and literal size) -- never eval.
A trailing "= N" is accepted when N is the target. LaTeX \\times, \\cdot, \\div (and the unicode signs) are read as * and /.
"""
from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction
from typing import Iterable, Sequence

from rewards.boxed import last_boxed
from rewards.registry import register_reward

MAX_EXPR_CHARS = 256   # longer expressions are malformed
MAX_DEPTH = 32         # nesting of parentheses / unary signs
MAX_LITERAL_DIGITS = 12
TAIL_CHARS = 1024      # only the end of a completion is searched (bounds work on hostile input)

_REPLACE = (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("\u00d7", "*"), ("\u00f7", "/"),
            ("\\left", ""), ("\\right", ""), ("\\(", ""), ("\\)", ""), ("$", ""))


class _ParseError(Exception):
    pass


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/') unary)* ;
    unary := ('+'|'-') unary | atom ; atom := INT | '(' expr ')'."""

    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.depth = 0
        self.literals: list[int] = []

    def parse(self) -> Fraction:
        val = self.expr()
        if self.i != len(self.s):
            raise _ParseError(f"unexpected {self.s[self.i]!r} at {self.i}")
        return val

    def _peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _ParseError("too deep")

    def expr(self) -> Fraction:
        val = self.term()
        while self._peek() in ("+", "-"):
            op = self.s[self.i]
            self.i += 1
            rhs = self.term()
            val = val + rhs if op == "+" else val - rhs
        return val

    def term(self) -> Fraction:
        val = self.unary()
        while self._peek() in ("*", "/"):
            op = self.s[self.i]
            self.i += 1
            rhs = self.unary()
            if op == "*":
                val = val * rhs
            else:
                if rhs == 0:
                    raise _ParseError("division by zero")
                val = val / rhs
        return val

    def unary(self) -> Fraction:
        c = self._peek()
        if c in ("+", "-"):
            self.i += 1
            self._enter()
            val = self.unary()
            self.depth -= 1
            return -val if c == "-" else val
        return self.atom()

    def atom(self) -> Fraction:
        c = self._peek()
        if c == "(":
            self.i += 1
            self._enter()
            val = self.expr()
            if self._peek() != ")":
                raise _ParseError("missing ')'")
            self.i += 1
            self.depth -= 1
            return val
        j = self.i
        while j < len(self.s) and self.s[j] in "0123456789":
            j += 1
        if j == self.i:
            raise _ParseError(f"expected a number at {self.i}")
        if j - self.i > MAX_LITERAL_DIGITS:
            raise _ParseError("literal too long")
        n = int(self.s[self.i:j])
        self.i = j
        self.literals.append(n)
        return Fraction(n)


def parse_expression(text: str) -> tuple[Fraction, list[int]] | None:
    """(exact value, integer literals in order) of an arithmetic expression, or None if malformed."""
    if not isinstance(text, str):
        return None
    s = text
    for a, b in _REPLACE:
        s = s.replace(a, b)
    s = "".join(s.split())
    if not s or len(s) > MAX_EXPR_CHARS:
        return None
    try:
        p = _Parser(s)
        return p.parse(), p.literals
    except (_ParseError, RecursionError, ValueError, ZeroDivisionError, OverflowError):
        return None


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_countdown(expr: str, numbers: Iterable[int], target: int) -> bool:
    """True iff `expr` uses each of `numbers` exactly once (as a multiset) and equals `target`."""
    try:
        if not isinstance(expr, str) or len(expr) > 4 * MAX_EXPR_CHARS:
            return False
        nums = list(numbers)
        if not all(_is_int(n) for n in nums) or not (_is_int(target) or isinstance(target, Fraction)):
            return False
        body = expr.strip().rstrip(".").strip()
        if body.count("=") == 1:  # "(3+5)*2 = 16": the right side must be the target itself
            body, rhs = body.split("=")
            rv = parse_expression(rhs)
            if rv is None or rv[1] != [abs(int(target))] or rv[0] != target:
                return False
        parsed = parse_expression(body)
        if parsed is None:
            return False
        value, literals = parsed
        return Counter(literals) == Counter(nums) and value == target
    except Exception:  # noqa: BLE001 - never raise on model output
        return False


def extract_expression(completion: str) -> str | None:
    """The last \\boxed{} content, or else the last non-empty line (None when there is neither)."""
    if not isinstance(completion, str):
        return None
    tail = completion[-TAIL_CHARS:]
    boxed = last_boxed(tail)
    if boxed is not None:
        return boxed
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    return lines[-1] if lines else None


def parse_gold(gold: str) -> tuple[list[int], int] | None:
    """(numbers, target) from the gold JSON, or None if malformed."""
    try:
        obj = json.loads(gold)
        nums, target = obj["numbers"], obj["target"]
        if isinstance(nums, list) and all(_is_int(n) for n in nums) and _is_int(target):
            return nums, target
    except Exception:  # noqa: BLE001
        pass
    return None


def countdown_score(completion: str, gold: str) -> float:
    """1.0 when the completion's expression solves the gold countdown instance, else 0.0."""
    g = parse_gold(gold)
    expr = extract_expression(completion)
    if g is None or expr is None:
        return 0.0
    return 1.0 if check_countdown(expr, g[0], g[1]) else 0.0


@register_reward("countdown", "expression in the last \\boxed{} uses every number once and hits the target")
def countdown_reward(completions: Sequence[str], golds: Sequence[str]) -> list[float]:
    """Countdown verifier: 1.0 for a correct expression, 0.0 otherwise (malformed included)."""
    if len(completions) != len(golds):
        raise ValueError(f"countdown reward: {len(completions)} completions but {len(golds)} golds")
    return [countdown_score(c, g) for c, g in zip(completions, golds)]
