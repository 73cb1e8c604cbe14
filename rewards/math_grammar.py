"""Operator grammar of the symbolic math verifier's parser: lists, relations, sums, products, powers.

`Parser` extends rewards.math_atoms.AtomParser with the precedence levels, top to bottom: comma
lists, relations (chains folded into intervals), unions, + - \\pm, products (explicit and implicit,
mixed numbers), unary signs, bounded powers and postfix factorial / percent. Every level builds
sympy objects directly; depth and item counts are bounded and anything refused raises ParseError.
"""
from __future__ import annotations

from typing import Any

import sympy as sp

from rewards.math_atoms import AtomParser
from rewards.math_build import as_scalar, is_int_literal, is_name, safe_pow
from rewards.math_lex import FUNCS, GREEK
from rewards.math_types import MAX_FACTORIAL, MAX_ITEMS, PM, Ivl, Obj, ParseError, Rel, Seq, Uni


class Parser(AtomParser):
    """Recursive-descent parser over a token list; `parse()` returns one Obj."""

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
        """Relations and chains. A chain of equalities states its last value (x = 5+5+1 = 11 is x = 11);
        an approximation after an exact value is dropped (x = 1/3 \\approx 0.33 is x = 1/3) and
        x \\approx 11 reads as x = 11; a:b is the ratio a/b; a < x < b is x in (a, b)."""
        parts: list[Any] = [self.setexpr()]
        ops: list[str] = []
        while self.at("=", "<", ">", "<=", ">=", "!=", "\\in", ":", "\\approx"):
            op = self.next()[1]
            if op == ":":
                right = as_scalar(self.setexpr())
                if right == 0:
                    raise ParseError("ratio with zero")
                parts[-1] = as_scalar(parts[-1]) / right
                continue
            ops.append({"\\in": "in", "\\approx": "~"}.get(op, op))
            parts.append(self.setexpr())
            if len(ops) > MAX_ITEMS:
                raise ParseError("relation chain too long")
        if not ops:
            return parts[0]
        if "~" in ops:
            k = ops.index("~")
            if k > 0:
                ops, parts = ops[:k], parts[:k + 1]
            ops = ["=" if o == "~" else o for o in ops]
        if len(ops) == 1:
            return Rel(ops[0], parts[0], parts[1])
        if len(ops) == 2 and all(o in ("<", "<=") for o in ops) and is_name(parts[1]):
            return Rel("in", parts[1], Ivl(parts[0], parts[2], ops[0] == "<", ops[1] == "<"))
        if len(ops) == 2 and all(o in (">", ">=") for o in ops) and is_name(parts[1]):
            return Rel("in", parts[1], Ivl(parts[2], parts[0], ops[1] == ">", ops[0] == ">"))
        if all(o == "=" for o in ops):
            if is_name(parts[0]):
                return Rel("=", parts[0], parts[-1])
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
            left = as_scalar(left)
            right = as_scalar(right)
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
            return (text in ("\\frac", "\\sqrt", "\\pi", "\\infty", "\\binom", "\\{", "\\sum", "\\prod")
                    or text[1:] in FUNCS or text[1:] in GREEK)
        return False

    def term(self) -> Obj:
        start_tok = self.peek()
        left = self.unary()
        first = True
        while True:
            if self.at("*", "/"):
                op = self.next()[1]
                right = self.unary()
                left, right = as_scalar(left), as_scalar(right)
                if op == "*":
                    left = left * right
                else:
                    if right == 0:
                        raise ParseError("division by zero")
                    left = left / right
            elif self._starts_atom():
                nxt = self.peek()
                right = self.unary()
                if (first and start_tok is not None and start_tok[0] == "num" and is_int_literal(left)
                        and nxt is not None and nxt[1] == "\\frac" and isinstance(right, sp.Rational)
                        and not isinstance(right, sp.Integer) and 0 < right < 1):
                    left = left + right  # mixed number 1\frac{4}{5}
                else:
                    left = as_scalar(left) * as_scalar(right)
            else:
                return left
            first = False

    def unary(self) -> Obj:
        with self.nested():
            if self.at("-"):
                self.next()
                return -as_scalar(self.unary())
            if self.at("+"):
                self.next()
                return self.unary()
            if self.at("\\pm"):
                self.next()
                return PM * as_scalar(self.unary())
            return self.power()

    def power(self) -> Obj:
        base = self.postfix()
        if self.at("^", "**"):
            self.next()
            with self.nested():
                if self.at("-"):
                    self.next()
                    exp = -as_scalar(self.power_operand())
                else:
                    exp = as_scalar(self.power_operand())
            base = safe_pow(as_scalar(base), exp)
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
                x = as_scalar(x)
                if not (isinstance(x, sp.Integer) and 0 <= x <= MAX_FACTORIAL):
                    raise ParseError("factorial out of range")
                x = sp.factorial(x)
            elif op == "%":
                self.saw_percent = True
                x = as_scalar(x) * self.percent_scale
            else:
                raise ParseError("prime")
        return x
