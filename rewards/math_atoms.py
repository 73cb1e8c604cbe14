"""LaTeX atoms of the symbolic math verifier's parser: the token cursor and the leaf grammar.

`AtomParser` walks a token list (peek / next / expect, with nesting bounded by MAX_DEPTH) and reads
the atoms of the grammar: numbers, identifiers and subscripts, \\text{..}, \\frac, \\sqrt, \\binom,
functions, Greek letters, absolute values, brackets (tuples and intervals), set braces and matrix
environments, building sympy objects directly through rewards.math_build. The operator levels it
calls back into (expr, unary, comma_list) are supplied by rewards.math_grammar.Parser.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator

import sympy as sp

from rewards.math_build import as_scalar, number_literal, safe_pow
from rewards.math_lex import FUNCS, GREEK
from rewards.math_types import MAX_DEPTH, MAX_ITEMS, Ivl, Mat, Obj, ParseError, Seq

MAX_TERMS = 1000          # terms of a \\sum / \\prod with integer bounds that are evaluated


class AtomParser:
    """Token cursor plus the atom-level grammar; subclassed by the operator grammar."""

    def __init__(self, toks: list[tuple[str, str]], percent_scale: sp.Expr):
        self.t = toks
        self.i = 0
        self.depth = 0
        self.percent_scale = percent_scale
        self.saw_percent = False
        self.bound: frozenset[str] = frozenset()  # summation indices in scope (i is then not sqrt(-1))

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

    # -- operator levels, supplied by the subclass (rewards.math_grammar.Parser) --
    def comma_list(self, closers: tuple[str, ...]) -> list[Obj]:
        raise NotImplementedError

    def expr(self) -> Obj:
        raise NotImplementedError

    def unary(self) -> Obj:
        raise NotImplementedError

    # -- atoms --
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
            return number_literal(tok[1])
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
            return number_literal(text)
        if kind == "id":
            if self.at("_"):
                if self.peek(1) == ("op", "{") and not self._simple_subscript():
                    self.next()
                    return sp.Function(text)(as_scalar(self.group_arg()))  # F_{n-k-1}: an indexed name
                return sp.Symbol(text + "_" + self.subscript())
            if text in self.bound:
                return sp.Symbol(text)
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
            return self.function(FUNCS[text])
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
                    inner = as_scalar(self.expr())
                self.expect("|")
                return sp.Abs(inner)
            raise ParseError(f"unexpected {text}")
        if kind == "cmd":
            name = text[1:]
            if text == "\\frac":
                num = as_scalar(self.group_arg())
                den = as_scalar(self.group_arg())
                if den == 0:
                    raise ParseError("division by zero")
                return num / den
            if text == "\\sqrt":
                index = None
                if self.at("["):
                    self.next()
                    index = as_scalar(self.expr())
                    self.expect("]")
                arg = as_scalar(self.group_arg())
                if index is None:
                    return sp.sqrt(arg)
                if not (isinstance(index, sp.Integer) and 2 <= index <= 100):
                    raise ParseError("bad root index")
                return sp.root(arg, index)
            if text == "\\binom":
                n = as_scalar(self.group_arg())
                k = as_scalar(self.group_arg())
                if not (isinstance(n, sp.Integer) and isinstance(k, sp.Integer) and 0 <= n <= 2000):
                    raise ParseError("binomial out of range")
                return sp.binomial(n, k)
            if text in ("\\sum", "\\prod"):
                return self.big_operator(text == "\\sum")
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
            if name in FUNCS:
                return self.function(FUNCS[name])
            if name in GREEK:
                return sp.Symbol(name)
        raise ParseError(f"unexpected {text}")

    def _simple_subscript(self) -> bool:
        """After '_' and '{': only numbers and letters up to the closing brace (x_{12}, a_{ij})."""
        j = self.i + 2
        while j < len(self.t) and self.t[j][0] in ("num", "id"):
            j += 1
        return j < len(self.t) and self.t[j] == ("op", "}")

    def big_operator(self, is_sum: bool) -> sp.Expr:
        """\\sum_{k=a}^{b} body / \\prod: evaluated for integer bounds at most MAX_TERMS apart, else kept
        as an unevaluated Sum / Product (compared structurally)."""
        self.expect("_")
        self.expect("{")
        var = self.next()
        if var[0] != "id":
            raise ParseError("bad index")
        k = sp.Symbol(var[1])
        self.expect("=")
        lo = as_scalar(self.expr())
        self.expect("}")
        self.expect("^")
        hi = as_scalar(self.group_arg())
        self.bound = self.bound | {var[1]}
        try:
            with self.nested():
                body = as_scalar(self.term())
        finally:
            self.bound = self.bound - {var[1]}
        if isinstance(lo, sp.Integer) and isinstance(hi, sp.Integer) and -1 <= hi - lo <= MAX_TERMS:
            terms = [body.xreplace({k: sp.Integer(i)}) for i in range(int(lo), int(hi) + 1)]
            if is_sum:
                return sp.Add(*terms)
            out = sp.Integer(1)
            for t in terms:
                out = safe_pow(out * t, sp.Integer(1))
            return out
        return (sp.Sum if is_sum else sp.Product)(body, (k, lo, hi))

    def function(self, fn: Any) -> sp.Expr:
        power = None
        if self.at("^"):  # \sin^2 x
            self.next()
            power = as_scalar(self.group_arg())
        if self.at("("):
            self.next()
            with self.nested():
                arg = as_scalar(self.expr())
            self.expect(")")
        else:
            arg = as_scalar(self.group_arg()) if self.at("{") else as_scalar(self.unary())
        out = fn(arg)
        if power is not None:
            out = safe_pow(out, power)
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
            rows[-1].append(as_scalar(self.expr()))
            if sum(len(r) for r in rows) > MAX_ITEMS:
                raise ParseError("matrix too large")
        rows = [r for r in rows if r]
        if not rows or len({len(r) for r in rows}) != 1:
            raise ParseError("ragged matrix")
        return Mat(tuple(tuple(r) for r in rows))
