"""Symbolic stage of the math verifier: a hand-written LaTeX / plain-math parser and comparator.

The parser reads a token stream and builds sympy objects directly (Integer, Rational, Symbol,
Add, Mul, Pow, sqrt, pi, Eq ...); model text is never handed to any sympy string parser and never
executed. Containers (tuples, sets, intervals, unions, matrices, equations) are small dataclasses
holding sympy expressions. Every size is bounded before a number is built: input length, nesting
depth, literal digits, exponents (by the bit size of the result), factorials and binomials.

This module is meant to run inside a killable worker process (see rewards.math); it raises
ParseError on anything it refuses and `equivalent` returns False on anything it cannot decide.
"""
from __future__ import annotations

import math as _m
import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator, Union as _U

import sympy as sp

from rewards.math_norm import MAX_ANSWER_CHARS, normalize

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

# --------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<num>\d+(?:\.\d*)?|\.\d+)"
    r"|(?P<begin>\\begin\{[a-zA-Z*]+\}(?:\{[^{}]*\})?)"
    r"|(?P<end>\\end\{[a-zA-Z*]+\})"
    r"|(?P<text>\\text\{[^{}]*\})"
    r"|(?P<cmd>\\[a-zA-Z]+|\\\\|\\\{|\\\}|\\\|)"
    r"|(?P<word>[a-zA-Z]+)"
    r"|(?P<op><=|>=|!=|\*\*|[-+*/^_()\[\]{},;=<>!|%&'])"
    r")"
)
_FUNCS = {
    "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "cot": sp.cot, "sec": sp.sec, "csc": sp.csc,
    "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan, "sinh": sp.sinh, "cosh": sp.cosh,
    "tanh": sp.tanh, "ln": sp.log, "log": sp.log, "exp": sp.exp, "sqrt": sp.sqrt,
}
_CMD_ALIASES = {
    "\\le": "<=", "\\leq": "<=", "\\leqslant": "<=", "\\ge": ">=", "\\geq": ">=", "\\geqslant": ">=",
    "\\lt": "<", "\\gt": ">", "\\ne": "!=", "\\neq": "!=", "\\cdot": "*", "\\times": "*", "\\ast": "*",
    "\\div": "/", "\\lbrace": "\\{", "\\rbrace": "\\}", "\\lbrack": "[", "\\rbrack": "]",
    "\\vert": "|", "\\mid": "|", "\\lvert": "|", "\\rvert": "|", "\\colon": ":",
}
_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta",
    "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi",
    "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega",
}


def tokenize(s: str) -> list[tuple[str, str]]:
    """Tokens (kind, text); raises ParseError on any character we do not understand."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(s)
    while i < n:
        m = _TOKEN.match(s, i)
        if not m or m.end() == i:
            if s[i:].strip() == "":
                break
            raise ParseError(f"bad character {s[i]!r}")
        i = m.end()
        kind = m.lastgroup
        text = m.group(kind)
        if kind == "cmd":
            text = _CMD_ALIASES.get(text, text)
            if text in ("<=", ">=", "!=", "*", "/", "[", "]", "|", "<", ">"):
                kind = "op"
        if kind == "word":
            # split letter runs into single-letter symbols, keeping function names whole
            j = 0
            while j < len(text):
                for fname in sorted(_FUNCS, key=len, reverse=True):
                    if text.startswith(fname, j):
                        out.append(("func", fname))
                        j += len(fname)
                        break
                else:
                    out.append(("id", text[j]))
                    j += 1
            continue
        out.append((kind, text))
    return out


# --------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------
def _check_pow(base: sp.Expr, exp: sp.Expr) -> None:
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


def _safe_pow(base: sp.Expr, exp: sp.Expr) -> sp.Expr:
    if isinstance(base, sp.Integer) and abs(int(base)).bit_length() > MAX_RESULT_BITS:
        raise ParseError("base too large")
    _check_pow(base, exp)
    return sp.Pow(base, exp)


def _is_int_literal(x: Any) -> bool:
    return isinstance(x, sp.Integer)


class _Parser:
    def __init__(self, toks: list[tuple[str, str]], percent_scale: sp.Expr):
        self.t = toks
        self.i = 0
        self.depth = 0
        self.percent_scale = percent_scale
        self.saw_percent = False

    # -- helpers --
    def peek(self, k: int = 0) -> tuple[str, str] | None:
        j = self.i + k
        return self.t[j] if j < len(self.t) else None

    def next(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise ParseError("unexpected end")
        self.i += 1
        return tok

    def at(self, *texts: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] in texts and tok[0] in ("op", "cmd")

    def expect(self, text: str) -> None:
        tok = self.next()
        if tok[1] != text:
            raise ParseError(f"expected {text}, got {tok[1]}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError("nesting too deep")

    @contextmanager
    def nested(self) -> Iterator[None]:
        """One level deeper for the block (bounded by MAX_DEPTH), restored on the way out."""
        self.enter()
        try:
            yield
        finally:
            self.depth -= 1

    # -- grammar --
    def parse(self) -> Obj:
        items = self.comma_list(("",))
        if self.peek() is not None:
            raise ParseError(f"trailing {self.peek()[1]}")
        if len(items) == 1:
            return items[0]
        return Seq("list", tuple(items))

    def comma_list(self, closers: tuple[str, ...]) -> list[Obj]:
        items = [self.relation()]
        while self.at(",", ";"):
            self.next()
            if self.peek() is None or self.at(*closers):
                break
            items.append(self.relation())
            if len(items) > MAX_ITEMS:
                raise ParseError("too many items")
        return items

    def relation(self) -> Obj:
        first = self.setexpr()
        parts: list[Any] = [first]
        ops: list[str] = []
        while self.at("=", "<", ">", "<=", ">=", "!=", "\\in", ":"):
            op = self.next()[1]
            if op == "\\in":
                op = "in"
            if op == ":":
                op = "="
            ops.append(op)
            parts.append(self.setexpr())
        if not ops:
            return first
        if len(ops) == 1:
            return Rel(ops[0], parts[0], parts[1])
        if len(ops) == 2 and all(o in ("<", "<=") for o in ops) and isinstance(parts[1], sp.Symbol):
            return Rel("in", parts[1], Ivl(parts[0], parts[2], ops[0] == "<", ops[1] == "<"))
        if len(ops) == 2 and all(o in (">", ">=") for o in ops) and isinstance(parts[1], sp.Symbol):
            return Rel("in", parts[1], Ivl(parts[2], parts[0], ops[1] == ">", ops[0] == ">"))
        if all(o == "=" for o in ops):
            return Rel("=", parts[-2], parts[-1])
        raise ParseError("chained relation")

    def setexpr(self) -> Obj:
        first = self.expr()
        if not self.at("\\cup"):
            return first
        parts = [first]
        while self.at("\\cup"):
            self.next()
            parts.append(self.expr())
            if len(parts) > MAX_ITEMS:
                raise ParseError("too many parts")
        return Uni(tuple(parts))

    def expr(self) -> Obj:
        left = self.term()
        while self.at("+", "-", "\\pm", "\\mp"):
            op = self.next()[1]
            right = self.term()
            left = _scalar(left)
            right = _scalar(right)
            if op == "+":
                left = left + right
            elif op == "-":
                left = left - right
            elif op == "\\pm":
                left = left + PM * right
            else:
                left = left - PM * right
        return left

    def _starts_atom(self) -> bool:
        tok = self.peek()
        if tok is None:
            return False
        kind, text = tok
        if kind in ("num", "id", "func", "begin", "text"):
            return True
        if kind == "op":
            return text in ("(", "{")
        if kind == "cmd":
            return (text in ("\\frac", "\\sqrt", "\\pi", "\\infty", "\\binom", "\\{")
                    or text[1:] in _FUNCS or text[1:] in _GREEK)
        return False

    def term(self) -> Obj:
        start_tok = self.peek()
        left = self.unary()
        first = True
        while True:
            if self.at("*", "/"):
                op = self.next()[1]
                right = self.unary()
                left, right = _scalar(left), _scalar(right)
                if op == "*":
                    left = left * right
                else:
                    if right == 0:
                        raise ParseError("division by zero")
                    left = left / right
            elif self._starts_atom():
                nxt = self.peek()
                right = self.unary()
                if (first and start_tok is not None and start_tok[0] == "num" and _is_int_literal(left)
                        and nxt is not None and nxt[1] == "\\frac" and isinstance(right, sp.Rational)
                        and not isinstance(right, sp.Integer) and 0 < right < 1):
                    left = left + right  # mixed number 1\frac{4}{5}
                else:
                    left = _scalar(left) * _scalar(right)
            else:
                return left
            first = False

    def unary(self) -> Obj:
        with self.nested():
            if self.at("-"):
                self.next()
                return -_scalar(self.unary())
            if self.at("+"):
                self.next()
                return self.unary()
            if self.at("\\pm"):
                self.next()
                return PM * _scalar(self.unary())
            return self.power()

    def power(self) -> Obj:
        base = self.postfix()
        if self.at("^", "**"):
            self.next()
            with self.nested():
                if self.at("-"):
                    self.next()
                    exp = -_scalar(self.power_operand())
                else:
                    exp = _scalar(self.power_operand())
            base = _safe_pow(_scalar(base), exp)
            base = self.postfix_ops(base)
        return base

    def power_operand(self) -> Obj:
        if self.at("{"):
            return self.power()  # {..} group, possibly followed by its own ^
        return self.power()

    def postfix(self) -> Obj:
        return self.postfix_ops(self.atom())

    def postfix_ops(self, x: Obj) -> Obj:
        while self.at("!", "%", "'"):
            op = self.next()[1]
            if op == "!":
                x = _scalar(x)
                if not (isinstance(x, sp.Integer) and 0 <= x <= MAX_FACTORIAL):
                    raise ParseError("factorial out of range")
                x = sp.factorial(x)
            elif op == "%":
                self.saw_percent = True
                x = _scalar(x) * self.percent_scale
            else:
                raise ParseError("prime")
        return x

    def group_arg(self) -> Obj:
        """Argument of \\frac, \\sqrt ...: a {group}, or a single token (\\frac12, \\sqrt2)."""
        tok = self.peek()
        if tok is None:
            raise ParseError("missing argument")
        if tok == ("op", "{"):
            self.next()
            with self.nested():
                inner = self.relation_or_list("}")
            self.expect("}")
            return inner
        if tok[0] == "num":
            self.next()
            if len(tok[1]) > 1 and "." not in tok[1]:
                # \frac43 : first digit is the argument, the rest goes back to the stream
                self.t.insert(self.i, ("num", tok[1][1:]))
                return sp.Integer(tok[1][0])
            return _number(tok[1])
        if tok[0] in ("id", "cmd"):
            return self.atom()
        raise ParseError("bad argument")

    def relation_or_list(self, closer: str) -> Obj:
        items = self.comma_list((closer,))
        if len(items) == 1:
            return items[0]
        return Seq("set", tuple(items))

    def subscript(self) -> str:
        self.expect("_")
        tok = self.next()
        if tok == ("op", "{"):
            parts = []
            while not self.at("}"):
                t = self.next()
                if t[0] not in ("num", "id"):
                    raise ParseError("complex subscript")
                parts.append(t[1])
                if len(parts) > 10:
                    raise ParseError("long subscript")
            self.next()
            return "".join(parts)
        if tok[0] in ("num", "id"):
            return tok[1]
        raise ParseError("bad subscript")

    def atom(self) -> Obj:
        tok = self.next()
        kind, text = tok
        if kind == "num":
            if self.at("_"):
                return sp.Symbol("base_" + text + "_" + self.subscript())
            return _number(text)
        if kind == "id":
            if self.at("_"):
                return sp.Symbol(text + "_" + self.subscript())
            if text == "i":
                return sp.I
            if text == "e":
                return sp.E
            return sp.Symbol(text)
        if kind == "text":
            content = text[6:-1].strip()
            if not content:
                raise ParseError("empty text")
            return sp.Symbol("text_" + re.sub(r"\s+", " ", content).lower())
        if kind == "func":
            return self.function(_FUNCS[text])
        if kind == "begin":
            return self.matrix(text)
        if kind == "op":
            if text in ("(", "["):
                return self.bracket(text)
            if text == "{":
                with self.nested():
                    inner = self.relation_or_list("}")
                self.expect("}")
                return inner
            if text == "|":
                with self.nested():
                    inner = _scalar(self.expr())
                self.expect("|")
                return sp.Abs(inner)
            raise ParseError(f"unexpected {text}")
        if kind == "cmd":
            name = text[1:]
            if text == "\\frac":
                num = _scalar(self.group_arg())
                den = _scalar(self.group_arg())
                if den == 0:
                    raise ParseError("division by zero")
                return num / den
            if text == "\\sqrt":
                index = None
                if self.at("["):
                    self.next()
                    index = _scalar(self.expr())
                    self.expect("]")
                arg = _scalar(self.group_arg())
                if index is None:
                    return sp.sqrt(arg)
                if not (isinstance(index, sp.Integer) and 2 <= index <= 100):
                    raise ParseError("bad root index")
                return sp.root(arg, index)
            if text == "\\binom":
                n = _scalar(self.group_arg())
                k = _scalar(self.group_arg())
                if not (isinstance(n, sp.Integer) and isinstance(k, sp.Integer) and 0 <= n <= 2000):
                    raise ParseError("binomial out of range")
                return sp.binomial(n, k)
            if text == "\\pi":
                return sp.pi
            if text == "\\infty":
                return sp.oo
            if text in ("\\emptyset", "\\varnothing"):
                return Seq("set", ())
            if text == "\\mathbb":
                arg = self.next()
                if arg == ("op", "{"):
                    arg = self.next()
                    self.expect("}")
                if arg[1] == "R":
                    return Ivl(-sp.oo, sp.oo, True, True)
                raise ParseError("unknown set")
            if text == "\\{":
                if self.at("\\}"):
                    self.next()
                    return Seq("set", ())
                with self.nested():
                    items = self.comma_list(("\\}",))
                self.expect("\\}")
                return Seq("set", tuple(items))
            if name in _FUNCS:
                return self.function(_FUNCS[name])
            if name in _GREEK:
                return sp.Symbol(name)
        raise ParseError(f"unexpected {text}")

    def function(self, fn: Any) -> sp.Expr:
        power = None
        if self.at("^"):  # \sin^2 x
            self.next()
            power = _scalar(self.group_arg())
        if self.at("("):
            self.next()
            with self.nested():
                arg = _scalar(self.expr())
            self.expect(")")
        else:
            arg = _scalar(self.group_arg()) if self.at("{") else _scalar(self.unary())
        out = fn(arg)
        if power is not None:
            out = _safe_pow(out, power)
        return out

    def bracket(self, opener: str) -> Obj:
        with self.nested():
            items = self.comma_list((")", "]"))
        closer = self.next()[1]
        if closer not in (")", "]"):
            raise ParseError("unclosed bracket")
        if len(items) == 1:
            if opener == "(" and closer == ")" or opener == "[" and closer == "]":
                return items[0]
            raise ParseError("half interval")
        pair = opener + closer
        if len(items) == 2:
            lo, hi = items
            if not (isinstance(lo, sp.Expr) and isinstance(hi, sp.Expr)):
                return Seq("tuple", tuple(items), pair)
            if pair in ("(]", "[)") or lo in (-sp.oo, sp.oo) or hi in (sp.oo, -sp.oo):
                return Ivl(lo, hi, opener == "(", closer == ")")
            return Seq("tuple", tuple(items), pair)
        return Seq("tuple", tuple(items), pair)

    def matrix(self, begin: str) -> Mat:
        env = re.match(r"\\begin\{([a-zA-Z*]+)\}", begin).group(1)
        rows: list[list[sp.Expr]] = [[]]
        while True:
            if self.peek() is None:
                raise ParseError("unclosed environment")
            if self.peek()[0] == "end":
                if self.next()[1] != "\\end{" + env + "}":
                    raise ParseError("mismatched environment")
                break
            if self.at("\\\\"):
                self.next()
                rows.append([])
                continue
            if self.at("&"):
                self.next()
                continue
            rows[-1].append(_scalar(self.expr()))
            if sum(len(r) for r in rows) > MAX_ITEMS:
                raise ParseError("matrix too large")
        rows = [r for r in rows if r]
        if not rows or len({len(r) for r in rows}) != 1:
            raise ParseError("ragged matrix")
        return Mat(tuple(tuple(r) for r in rows))


def _number(text: str) -> sp.Rational:
    if len(text) > MAX_LITERAL_DIGITS:
        raise ParseError("number literal too long")
    if "." in text:
        if text.endswith("."):
            text = text[:-1]
        return sp.Rational(text)
    return sp.Integer(int(text))


def _scalar(x: Obj) -> sp.Expr:
    if isinstance(x, sp.Basic) and isinstance(x, sp.Expr):
        return x
    raise ParseError("container used as a number")


# --------------------------------------------------------------------------------------------
# public parse
# --------------------------------------------------------------------------------------------
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
    p = _Parser(list(toks), sp.Rational(1, 100))
    obj = p.parse()
    out = [obj]
    if p.saw_percent:
        q = _Parser(list(toks), sp.Integer(1))
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


# --------------------------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------------------------
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


def _proportional(d1: sp.Expr, d2: sp.Expr) -> bool:
    """d1 = c * d2 for a nonzero constant c (the same equation written differently)."""
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
    return ratio is not None


def _rel_value(r: Rel) -> Obj | None:
    """x = 3 -> 3 ; x \\in [1,2] -> [1,2] ; 3 = x -> 3."""
    if r.op in ("=", "in"):
        if isinstance(r.lhs, sp.Symbol) and not (isinstance(r.rhs, sp.Expr) and r.rhs.has(r.lhs)):
            return r.rhs
        if r.op == "=" and isinstance(r.rhs, sp.Symbol) and isinstance(r.lhs, sp.Expr) and not r.lhs.has(r.rhs):
            return r.lhs
    if r.op in ("<", "<=", ">", ">=") and isinstance(r.lhs, sp.Symbol) and isinstance(r.rhs, sp.Expr):
        if r.op in ("<", "<="):
            return Ivl(-sp.oo, r.rhs, True, r.op == "<")
        return Ivl(r.rhs, sp.oo, r.op == ">", True)
    return None


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


def symbolic_equivalent(answer: str, gold: str) -> bool:
    """Parse both (already extracted) answers and compare; False on anything undecidable."""
    try:
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
