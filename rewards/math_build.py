"""Bounded conversion to sympy for the symbolic math verifier: numbers, scalars and powers.

Every sympy number the parser builds goes through here: number literals are length-checked before
they become Integer / Rational, powers are refused when the result would exceed MAX_RESULT_BITS (or a
symbolic exponent MAX_SYMBOLIC_EXP), and `as_scalar` refuses a container where a number is needed.
All failures raise ParseError; nothing is sympified from text.
"""
from __future__ import annotations

import math as _m
from typing import Any

import sympy as sp
from sympy.core.function import AppliedUndef

from rewards.math_types import (
    MAX_LITERAL_DIGITS, MAX_RESULT_BITS, MAX_SYMBOLIC_EXP, Obj, ParseError,
)


def check_pow(base: sp.Expr, exp: sp.Expr) -> None:
    if not exp.is_number:
        return
    if exp.has(sp.oo, -sp.oo, sp.zoo, sp.nan):
        raise ParseError("infinite exponent")
    try:
        e = abs(float(sp.N(exp, 15)))
    except (TypeError, ValueError, OverflowError):
        raise ParseError("exponent not real") from None
    if base.is_number:
        try:
            b = abs(complex(sp.N(base, 15)))
        except (TypeError, ValueError, OverflowError):
            raise ParseError("base too large") from None
        if b in (0.0, 1.0):
            return
        bits = abs(_m.log2(b)) * e if b != 0 else 0
        if bits > MAX_RESULT_BITS or e > 10_000:
            raise ParseError("power too large")
    elif e > MAX_SYMBOLIC_EXP:
        raise ParseError("symbolic exponent too large")


def safe_pow(base: sp.Expr, exp: sp.Expr) -> sp.Expr:
    if isinstance(base, sp.Integer) and abs(int(base)).bit_length() > MAX_RESULT_BITS:
        raise ParseError("base too large")
    check_pow(base, exp)
    return sp.Pow(base, exp)


def is_int_literal(x: Any) -> bool:
    return isinstance(x, sp.Integer)


def number_literal(text: str) -> sp.Rational:
    if len(text) > MAX_LITERAL_DIGITS:
        raise ParseError("number literal too long")
    if "." in text:
        if text.endswith("."):
            text = text[:-1]
        return sp.Rational(text)
    return sp.Integer(int(text))


def as_scalar(x: Obj) -> sp.Expr:
    if isinstance(x, sp.Basic) and isinstance(x, sp.Expr):
        return x
    raise ParseError("container used as a number")


def is_name(x: Any) -> bool:
    """A named quantity rather than a value: x, x_1, f(x) (read as f*x), AB, |AB|, NO/BO, (p, q).

    Sums, numeric coefficients and powers other than -1 are not names (2x + z = 1 states no value).
    """
    if isinstance(x, sp.Symbol):
        return True
    if isinstance(x, sp.Abs):
        return is_name(x.args[0])
    if isinstance(x, sp.Pow):
        return x.exp == -1 and is_name(x.base)
    if isinstance(x, sp.Mul):
        return all(is_name(a) for a in x.args)
    if isinstance(x, AppliedUndef):
        return True  # F_{n-1}: an indexed name
    items = getattr(x, "items", None)
    return isinstance(items, tuple) and bool(items) and all(is_name(i) for i in items)
