"""Shared pieces of the answer extraction (rewards.extract): the Extraction record, limits and text helpers."""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_SCAN_CHARS = 100_000     # how much of a completion's end we look at
MAX_ANSWER_CHARS = 2000      # longest answer text returned
MAX_PARTS = 16               # boxes gathered into one statement


@dataclass(frozen=True)
class Extraction:
    text: str                # the answer (parts joined by ", ")
    format: str              # which format found it
    parts: tuple[str, ...]   # the boxed / listed parts of the final statement
    hedge: bool              # parts offered as alternatives ("or", "either")


def _last_match(pattern: re.Pattern, text: str) -> re.Match | None:
    """The last non-overlapping match of `pattern` in `text` (one linear scan), or None."""
    last = None
    for m in pattern.finditer(text):
        last = m
    return last


def _make(text: str, fmt: str, parts: tuple[str, ...], hedge: bool) -> Extraction:
    return Extraction(text[:MAX_ANSWER_CHARS], fmt, tuple(p[:MAX_ANSWER_CHARS] for p in parts), hedge)


_OR = re.compile(r"\s*(?:\\text\{\s*or\s*\}|\\mathrm\{\s*or\s*\}|\\lor|\\vee|(?<![A-Za-z\\])or(?![A-Za-z]))\s*")


def _split_alternatives(s: str) -> tuple[tuple[str, ...], bool]:
    """Split an answer at top-level "or": ("3 or 4") -> (("3", "4"), True)."""
    if "or" not in s and "\\vee" not in s:
        return (s,), False
    parts, depth, last = [], 0, 0
    i = 0
    while i < len(s):
        c = s[i]
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth = max(0, depth - 1)
        elif depth == 0:
            m = _OR.match(s, i) if c in " \\o" else None
            if m and m.end() > i and ("or" in m.group(0) or "vee" in m.group(0)):
                parts.append(s[last:i])
                last = i = m.end()
                continue
        i += 1
    parts.append(s[last:])
    parts = [p.strip().strip("$").strip().rstrip(".,").strip() for p in parts]
    parts = [re.sub(r"^(?:either\s+)", "", p) for p in parts if p]
    if len(parts) < 2 or len(parts) > MAX_PARTS:
        return (s,), False
    return tuple(parts), True


def _strip_wrappers(s: str) -> str:
    s = s.strip()
    for _ in range(4):
        s0 = s
        s = s.strip().strip("*_").strip()
        if s.startswith("$$") and s.endswith("$$") and len(s) > 4:
            s = s[2:-2]
        elif s.startswith("$") and s.endswith("$") and len(s) > 2:
            s = s[1:-1]
        elif s.startswith("\\(") and s.endswith("\\)") or s.startswith("\\[") and s.endswith("\\]"):
            s = s[2:-2]
        s = s.strip().rstrip(".").strip()
        if s == s0:
            break
    return s



_PROSE = re.compile(r"[A-Za-z]{4,}")
_WORD = re.compile(r"[A-Za-z]{2,}")
_LATEX_WORDS = re.compile(r"\\(?:begin|end)\{[^{}]*\}|\\(?:text|mathrm|mbox)\{[^{}]*\}|\\[A-Za-z]+")


def _prose(s: str) -> bool:
    stripped = _LATEX_WORDS.sub(" ", s)
    return len(_PROSE.findall(stripped)) > 2 or len(_WORD.findall(stripped)) > 3
