"""Tokenizer of the symbolic math verifier: LaTeX / plain-math text to (kind, text) tokens.

One anchored regular expression reads numbers, \\begin/\\end environments, \\text{..}, commands,
letter runs and operators; command aliases are folded (\\le -> <=, \\cdot -> *), letter runs are
split into single-letter identifiers with known function names kept whole, and any character not
understood raises ParseError. Also holds the tables of functions (FUNCS) and Greek letters (GREEK)
the parser accepts. Nothing is evaluated here.
"""
from __future__ import annotations

import re

import sympy as sp

from rewards.math_types import ParseError

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<num>\d+(?:\.\d*)?|\.\d+)"
    r"|(?P<begin>\\begin\{[a-zA-Z*]+\}(?:\{[^{}]*\})?)"
    r"|(?P<end>\\end\{[a-zA-Z*]+\})"
    r"|(?P<text>\\text\{[^{}]*\})"
    r"|(?P<cmd>\\[a-zA-Z]+|\\\\|\\\{|\\\}|\\\|)"
    r"|(?P<word>[a-zA-Z]+)"
    r"|(?P<op><=|>=|!=|\*\*|[-+*/^_()\[\]{},;:=<>!|%&'])"
    r")"
)
FUNCS = {
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
GREEK = {
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
                for fname in sorted(FUNCS, key=len, reverse=True):
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
