"""Equivalence of parsed answers for the symbolic math verifier.

`scalars_equal` compares two sympy expressions numerically at high precision (at fixed sample points
when free symbols are present), and `objects_equal` extends that to the parsed containers: relations
(x = 3 against 3, equations up to a constant factor), ordered tuples, unordered sets and lists,
intervals, unions and matrices. It takes already-parsed objects and never parses text itself.
"""
from __future__ import annotations

from typing import Any

import sympy as sp

from rewards.math_build import is_name
from rewards.math_types import Ivl, Mat, Obj, Rel, Seq, Uni

_POINTS = [sp.Rational(p) for p in ("0.5377", "1.8339", "-2.2588", "0.8622", "-1.3077", "2.7694")]
_PREC = 30
_TOL = sp.Float("1e-20", _PREC)


def _num(e: sp.Expr) -> complex | None:
    try:
        v = sp.N(e, _PREC)
    except Exception:
        return None
    if not v.is_number or v.has(sp.oo, -sp.oo, sp.zoo, sp.nan):
        return None
    try:
        re_, im_ = v.as_real_imag()
        return (sp.Float(re_, _PREC), sp.Float(im_, _PREC))  # type: ignore[return-value]
    except Exception:
        return None


def _close(a: Any, b: Any) -> bool:
    (ar, ai), (br, bi) = a, b
    scale = max(sp.Float(1), abs(br), abs(bi), abs(ar), abs(ai))
    return abs(ar - br) <= _TOL * scale and abs(ai - bi) <= _TOL * scale


def scalars_equal(a: sp.Expr, b: sp.Expr) -> bool:
    """Symbolic equality of two expressions; different free symbols mean different answers."""
    if a == b:
        return True
    if a.has(sp.Sum, sp.Product) or b.has(sp.Sum, sp.Product):  # symbolic bounds: compared structurally
        return False
    if a.has(sp.oo, -sp.oo, sp.zoo, sp.nan) or b.has(sp.oo, -sp.oo, sp.zoo, sp.nan):
        return False
    fa, fb = a.free_symbols, b.free_symbols
    fa = fa | fb  # a symbol missing on one side must cancel on the other (sin^2 x + cos^2 x = 1)
    if not fa:
        va, vb = _num(a), _num(b)
        return va is not None and vb is not None and _close(va, vb)
    syms = sorted(fa, key=lambda s: s.name)
    agree = 0
    for k in range(4):
        sub = {s: _POINTS[(k + j) % len(_POINTS)] + sp.Rational(j, 7) for j, s in enumerate(syms)}
        va, vb = _num(a.xreplace(sub)), _num(b.xreplace(sub))
        if va is None and vb is None:
            continue
        if va is None or vb is None or not _close(va, vb):
            return False
        agree += 1
    return agree >= 2


def _proportional(d1: sp.Expr, d2: sp.Expr, positive: bool = False) -> bool:
    """d1 = c * d2 for a nonzero constant c (c > 0 when `positive`): the same (in)equation rewritten."""
    if d1.free_symbols != d2.free_symbols or not d1.free_symbols:
        return False
    syms = sorted(d1.free_symbols, key=lambda s: s.name)
    ratio = None
    for k in range(4):
        sub = {s: _POINTS[(k + j) % len(_POINTS)] + sp.Rational(j, 7) for j, s in enumerate(syms)}
        v1, v2 = _num(d1.xreplace(sub)), _num(d2.xreplace(sub))
        if v1 is None or v2 is None:
            return False
        z1, z2 = complex(v1[0], v1[1]), complex(v2[0], v2[1])
        if abs(z2) < 1e-12:
            if abs(z1) > 1e-12:
                return False
            continue
        r = z1 / z2
        if ratio is None:
            if abs(r) < 1e-12:
                return False
            ratio = r
        elif abs(r - ratio) > 1e-9 * max(1.0, abs(ratio)):
            return False
    if positive and ratio is not None and not (ratio.real > 0 and abs(ratio.imag) < 1e-12):
        return False
    return ratio is not None


_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "!=": "!="}


def _oriented(r: Rel) -> Rel:
    """5 >= x -> x <= 5: the name (if any) on the left."""
    if r.op in _FLIP and is_name(r.rhs) and not is_name(r.lhs):
        return Rel(_FLIP[r.op], r.rhs, r.lhs)
    return r


def _rel_value(r: Rel) -> Obj | None:
    """The value a relation states about a name: x = 3 -> 3 ; f(x) = 1 -> 1 ; (p, q) = (3, 2) -> (3, 2) ;
    x \\in [1,2] -> [1,2] ; 3 = x -> 3 ; x <= 5 -> (-oo, 5] ; 1 + 1 = 2 (no unknowns) -> 2."""
    r = _oriented(r)
    if r.op in ("=", "in") and is_name(r.lhs):
        if isinstance(r.lhs, sp.Symbol) and isinstance(r.rhs, sp.Expr) and r.rhs.has(r.lhs):
            return None
        if isinstance(r.lhs, sp.Expr) and not isinstance(r.lhs, sp.Symbol) and isinstance(r.rhs, sp.Expr) \
                and r.rhs.has(r.lhs):
            return None
        return r.rhs
    if r.op == "=" and all(isinstance(x, sp.Expr) and not x.free_symbols for x in (r.lhs, r.rhs)):
        return r.rhs
    if r.op in ("<", "<=", ">", ">=") and is_name(r.lhs) and isinstance(r.rhs, sp.Expr) and not r.rhs.free_symbols:
        if r.op in ("<", "<="):
            return Ivl(-sp.oo, r.rhs, True, r.op == "<")
        return Ivl(r.rhs, sp.oo, r.op == ">", True)
    return None


def _ineq_equal(a: Rel, g: Rel) -> bool:
    """-x > -1 vs x < 1: both as d > 0 (or d >= 0) with d1 = c * d2, c > 0."""
    if a.op not in _FLIP or g.op not in _FLIP or a.op in ("=", "!=") or g.op in ("=", "!="):
        return False
    if not all(isinstance(x, sp.Expr) for x in (a.lhs, a.rhs, g.lhs, g.rhs)):
        return False
    if (a.op in ("<", ">")) != (g.op in ("<", ">")):
        return False
    da = a.lhs - a.rhs if a.op in (">", ">=") else a.rhs - a.lhs
    dg = g.lhs - g.rhs if g.op in (">", ">=") else g.rhs - g.lhs
    return _proportional(da, dg, positive=True)


def _match_unordered(xs: tuple, ys: tuple) -> bool:
    if len(xs) != len(ys):
        return False
    used = [False] * len(ys)
    for x in xs:
        for j, y in enumerate(ys):
            if not used[j] and objects_equal(x, y):
                used[j] = True
                break
        else:
            return False
    return True


def _dedupe(xs: tuple) -> tuple:
    out: list = []
    for x in xs:
        if not any(objects_equal(x, y) for y in out):
            out.append(x)
    return tuple(out)


def objects_equal(a: Obj, g: Obj) -> bool:
    """Equivalence of two parsed answers (answer first, gold second)."""
    if isinstance(a, sp.Expr) and isinstance(g, sp.Expr):
        return scalars_equal(a, g)
    if isinstance(a, Rel) and isinstance(g, Rel):
        a, g = _oriented(a), _oriented(g)
        if _ineq_equal(a, g):
            return True
        if a.op != g.op:
            va, vg = _rel_value(a), _rel_value(g)
            return va is not None and vg is not None and objects_equal(va, vg)
        if a.op == "=" and all(isinstance(x, sp.Expr) for x in (a.lhs, a.rhs, g.lhs, g.rhs)):
            if scalars_equal(a.lhs, g.lhs) and scalars_equal(a.rhs, g.rhs):
                return True
            if scalars_equal(a.lhs, g.rhs) and scalars_equal(a.rhs, g.lhs):
                return True
            return _proportional(a.lhs - a.rhs, g.lhs - g.rhs)
        if objects_equal(a.lhs, g.lhs) and objects_equal(a.rhs, g.rhs):
            return True
        va, vg = _rel_value(a), _rel_value(g)
        return va is not None and vg is not None and objects_equal(va, vg)
    if isinstance(a, Rel):
        v = _rel_value(a)
        return v is not None and objects_equal(v, g)
    if isinstance(g, Rel):
        v = _rel_value(g)
        return v is not None and objects_equal(a, v)
    if isinstance(a, Seq) and isinstance(g, Seq):
        if a.kind == "tuple" and g.kind == "tuple":
            return (len(a.items) == len(g.items) and (a.brackets == g.brackets or "" in (a.brackets, g.brackets)
                    or len(a.items) != 2)
                    and all(objects_equal(x, y) for x, y in zip(a.items, g.items)))
        if a.kind == "set" and g.kind == "tuple" or a.kind == "tuple" and g.kind == "set":
            return False
        if "tuple" in (a.kind, g.kind):  # bare list vs tuple: ordered
            return len(a.items) == len(g.items) and all(objects_equal(x, y) for x, y in zip(a.items, g.items))
        return _match_unordered(_dedupe(a.items), _dedupe(g.items))
    if isinstance(a, Seq) and not isinstance(g, Seq):
        if isinstance(g, Ivl) and a.kind == "tuple" and a.brackets in ("()", "[]") and len(a.items) == 2:
            return objects_equal(Ivl(a.items[0], a.items[1], a.brackets == "()", a.brackets == "()"), g)
        if isinstance(g, Mat):
            return _mat_vs_seq(g, a)
        return a.kind != "tuple" and len(a.items) == 1 and objects_equal(a.items[0], g)
    if isinstance(g, Seq) and not isinstance(a, Seq):
        if isinstance(a, Ivl) and g.kind == "tuple" and g.brackets in ("()", "[]") and len(g.items) == 2:
            return objects_equal(a, Ivl(g.items[0], g.items[1], g.brackets == "()", g.brackets == "()"))
        if isinstance(a, Mat):
            return _mat_vs_seq(a, g)
        return g.kind != "tuple" and len(g.items) == 1 and objects_equal(a, g.items[0])
    if isinstance(a, Ivl) and isinstance(g, Ivl):
        return (a.lo_open == g.lo_open and a.hi_open == g.hi_open
                and objects_equal(a.lo, g.lo) and objects_equal(a.hi, g.hi))
    if isinstance(a, Uni) or isinstance(g, Uni):
        pa = a.parts if isinstance(a, Uni) else (a,)
        pg = g.parts if isinstance(g, Uni) else (g,)
        return _match_unordered(pa, pg)
    if isinstance(a, Mat) and isinstance(g, Mat):
        if len(a.rows) != len(g.rows) or len(a.rows[0]) != len(g.rows[0]):
            return False
        return all(scalars_equal(x, y) for ra, rg in zip(a.rows, g.rows) for x, y in zip(ra, rg))
    return False


def _mat_vs_seq(m: Mat, s: Seq) -> bool:
    """A row or column vector written as a tuple."""
    if s.kind != "tuple":
        return False
    flat = [x for r in m.rows for x in r]
    if len(m.rows) != 1 and len(m.rows[0]) != 1:
        return False
    return len(flat) == len(s.items) and all(objects_equal(x, y) for x, y in zip(flat, s.items))
