"""Symbolic stage of the math verifier: entry point that parses two answers and compares them.

The parser reads a token stream and builds sympy objects directly (Integer, Rational, Symbol,
Add, Mul, Pow, sqrt, pi, Eq ...); model text is never handed to any sympy string parser and never
executed. Containers (tuples, sets, intervals, unions, matrices, equations) are small dataclasses
holding sympy expressions. Every size is bounded before a number is built: input length, nesting
depth, literal digits, exponents (by the bit size of the result), factorials and binomials.

The stages live in their own modules: rewards.math_types (limits, ParseError, containers),
rewards.math_lex (tokenizer), rewards.math_build (bounded sympy numbers and powers),
rewards.math_atoms and rewards.math_grammar (the parser) and rewards.math_compare (equivalence).
This module holds `parse_answer` and `symbolic_equivalent` and re-exports the public names.

This module is meant to run inside a killable worker process (see rewards.math); it raises
ParseError on anything it refuses and `symbolic_equivalent` returns False on anything it cannot
decide.
"""
from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

import sympy as sp

from rewards.math_compare import objects_equal, scalars_equal
from rewards.math_grammar import Parser
from rewards.math_lex import tokenize
from rewards.math_norm import MAX_ANSWER_CHARS, long_decimal, normalize, terminates
from rewards.math_types import (
    MAX_DEPTH, MAX_FACTORIAL, MAX_ITEMS, MAX_LITERAL_DIGITS, MAX_RESULT_BITS, MAX_SYMBOLIC_EXP, PM,
    Ivl, Mat, Obj, ParseError, Rel, Seq, Uni,
)

__all__ = [
    "MAX_DEPTH", "MAX_FACTORIAL", "MAX_ITEMS", "MAX_LITERAL_DIGITS", "MAX_RESULT_BITS",
    "MAX_SYMBOLIC_EXP", "PM", "Ivl", "Mat", "Obj", "ParseError", "Rel", "Seq", "Uni",
    "tokenize", "parse_answer", "scalars_equal", "objects_equal", "symbolic_equivalent",
]

_PREFIX = re.compile(r"^(?:[a-zA-Z](?:_\{?\w+\}?)?|\\[a-zA-Z]+)\s*\\in\s*")


@lru_cache(maxsize=4096)
def parse_answer(text: str) -> tuple[Obj, ...]:
    """Readings of an answer string (two when it carries a percent: x/100 and x). Raises ParseError."""
    if len(text) > MAX_ANSWER_CHARS:
        raise ParseError("too long")
    s = normalize(text)
    s = _PREFIX.sub("", s)
    if not s:
        raise ParseError("empty")
    toks = tokenize(s)
    p = Parser(list(toks), sp.Rational(1, 100))
    obj = p.parse()
    out = [obj]
    if p.saw_percent:
        q = Parser(list(toks), sp.Integer(1))
        out.append(q.parse())
    return tuple(_expand_pm(o) for o in out)


def _expand_pm(o: Obj) -> Obj:
    if isinstance(o, sp.Expr) and o.has(PM):
        return Seq("set", (o.xreplace({PM: sp.Integer(1)}), o.xreplace({PM: sp.Integer(-1)})))
    if isinstance(o, Seq) and any(isinstance(x, sp.Expr) and x.has(PM) for x in o.items):
        items: list[Obj] = []
        for x in o.items:
            e = _expand_pm(x)
            items.extend(e.items if isinstance(e, Seq) and e is not x and isinstance(x, sp.Expr) else (e,))
        return Seq("set" if o.kind == "list" else o.kind, tuple(items), o.brackets)
    return o


def _long_decimal_equal(ld: tuple, rg: tuple) -> bool:
    """A long decimal against a gold number: exact, or within one unit in its last place of a value
    that does not terminate (see rewards.math_norm.long_decimal)."""
    v, ulp = ld
    for g in rg:
        if not (isinstance(g, sp.Expr) and g.is_number):
            continue
        if isinstance(g, sp.Rational):
            if sp.Rational(v.numerator, v.denominator) == g:
                return True
            if terminates(Fraction(int(g.p), int(g.q))):
                continue
        try:
            gv = sp.N(g, 40)
            if gv.is_real and abs(gv - sp.Rational(v.numerator, v.denominator)) < sp.Rational(ulp.numerator, ulp.denominator):
                return True
        except Exception:
            continue
    return False


def symbolic_equivalent(answer: str, gold: str) -> bool:
    """Parse both (already extracted) answers and compare; False on anything undecidable."""
    try:
        ld = long_decimal(normalize(answer))
        if ld is not None:
            return _long_decimal_equal(ld, parse_answer(gold))
        ra = parse_answer(answer)
        rg = parse_answer(gold)
    except (ParseError, RecursionError):
        return False
    except Exception:
        return False
    if len(ra) > 1 and len(rg) > 1:  # percent on both sides: compare like with like
        pairs = list(zip(ra, rg))
    else:
        pairs = [(x, y) for x in ra for y in rg]
    try:
        return any(objects_equal(x, y) for x, y in pairs)
    except Exception:
        return False
