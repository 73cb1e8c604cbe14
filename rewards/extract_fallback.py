"""Fallbacks of the answer extraction (rewards.extract) for completions without a marked answer.

``bare`` (the whole completion is a short answer), ``last_math`` (the last math of the last paragraph)
and ``last_number`` (the last number, only when it stands alone: never cut out of a fraction, tuple,
interval, decimal, power or sum). Each returns its position too, so the later of the two last ones wins.
"""
from __future__ import annotations

import re

from rewards.extract_base import (
    MAX_ANSWER_CHARS, Extraction, _last_match, _make, _prose, _split_alternatives, _strip_wrappers,
)
from rewards.extract_base import _LATEX_WORDS, _PROSE, _WORD

def _bare(text: str) -> Extraction | None:
    s = text.strip()
    if not s or len(s) > 300 or "\n" in s:
        return None
    stripped = _LATEX_WORDS.sub(" ", s)
    if len(_PROSE.findall(stripped)) > 1 or len(_WORD.findall(stripped)) > 1:
        return None
    s = _strip_wrappers(s)
    if re.search(r"(?<!\\)\$|\\\[|\\\(", s):  # prose around math: last_math reads it
        return None
    return _make(s, "bare", (s,), False) if s else None


_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:,\d{1,2}(?!\d))?(?:/\d+(?:\.\d+)?)?")
_MATH_ENV = re.compile(r"\$\$(.{1,%d}?)\$\$|\\\[(.{1,%d}?)\\\]|\\\((.{1,%d}?)\\\)|(?<![\\$])\$((?:[^$\n]|\\\$){1,%d}?)(?<!\\)\$"
                       % ((MAX_ANSWER_CHARS,) * 4), re.DOTALL)


def _last_math(text: str) -> tuple[int, Extraction] | None:
    """The last display or inline math of the last paragraph ($..$ stays on one line)."""
    tail = text[-4000:].rstrip()  # bounds the lazy spans below to ~4000 x 2000 steps
    k = tail.rfind("\n\n")
    para = tail[k + 2:] if k >= 0 and tail[k + 2:].strip() else tail
    last = _last_match(_MATH_ENV, para)
    if last is None:
        return None
    s = next(g for g in last.groups() if g is not None).strip().rstrip(".,;").strip()
    if not s or _prose(s):
        return None
    parts, hedge = _split_alternatives(s)
    return len(text) - len(tail) + len(tail) - len(para) + last.end(), _make(s, "last_math", parts, hedge)


def _last_number(text: str) -> Extraction | None:
    got = _last_number_at(text)
    return got[1] if got is not None else None


def _last_number_at(text: str) -> tuple[int, Extraction] | None:
    tail = text[-5000:]
    last = _last_match(_NUMBER, tail)
    if last is None:
        return None
    s, a, b = last.group(0), last.start(), last.end()
    left = tail[:a].rstrip(" \t$")
    right = tail[b:].lstrip(" \t$")
    lc = left[-1:] if left else ""
    rc = right[:1]
    if tail[a - 1:a] == ":" or lc and (lc in "/\\^_({[,+*×·|" or lc.isalnum() and tail[a - 1:a] not in (" ", "\t", "$")):
        return None
    if s.startswith("-") and lc and (lc.isalnum() or lc in ")}]"):
        return None  # binary minus: 5-3
    if rc and (rc in "/^_)}],+-*×·|'!" or rc == "." and right[1:2].isdigit()):
        return None
    if rc == "%" or right.startswith("\\%"):
        s += "%"
    return len(text) - len(tail) + a, _make(s, "last_number", (s,), False)
