"""Shared vocabulary of the symbolic math verifier: size limits, ParseError and the parsed objects.

Holds the bounds every other stage enforces (nesting depth, literal digits, result bits, symbolic
exponents, factorials, item counts), the ParseError raised on anything refused, and the small frozen
dataclasses (Seq, Ivl, Uni, Rel, Mat) that hold sympy expressions for tuples, sets, intervals,
unions, relations and matrices, plus PM, the symbol standing for +-1 in "a \\pm b". No parsing here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union as _U

import sympy as sp

MAX_DEPTH = 40            # nested groups / unary chains
MAX_LITERAL_DIGITS = 100  # digits in one number literal
MAX_RESULT_BITS = 20_000  # |base|^exp may not exceed this many bits
MAX_SYMBOLIC_EXP = 60     # integer exponent on a non-numeric base
MAX_FACTORIAL = 500
MAX_ITEMS = 64            # elements in a tuple / set / matrix


class ParseError(ValueError):
    """The text is not something we can (safely) read."""


# --------------------------------------------------------------------------------------------
# containers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Seq:
    kind: str             # "tuple" (ordered), "set", "list" (bare commas: any order)
    items: tuple
    brackets: str = ""    # "()" or "[]" for tuples that may also be intervals


@dataclass(frozen=True)
class Ivl:
    lo: Any
    hi: Any
    lo_open: bool
    hi_open: bool


@dataclass(frozen=True)
class Uni:
    parts: tuple


@dataclass(frozen=True)
class Rel:
    op: str               # "=", "<", "<=", ">", ">=", "!=", "in"
    lhs: Any
    rhs: Any


@dataclass(frozen=True)
class Mat:
    rows: tuple           # tuple of tuples of sympy expressions


Obj = _U[sp.Expr, Seq, Ivl, Uni, Rel, Mat]

PM = sp.Symbol("PLUSMINUS_", real=True)  # stands for +-1 in "a \pm b"
