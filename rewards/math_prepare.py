"""String stage of the math verifier: the final answer and the gold as strings, decided cheaply when possible.

`prepare(completion, gold, formats)` extracts the final answer statement (rewards.extract), reads the
gold (its last boxed statement, a GSM8K ``#### x`` line, or the text without ``$`` delimiters), applies
the hedge rule and either decides the pair here (True / False: equal strings, equal exact rationals,
nothing to compare) or returns the two answer strings for the symbolic stage.

The hedge rule: a statement that offers alternatives ("\\boxed{3} or \\boxed{4}") never matches a
gold with one part; against a gold with several parts (a list, set, tuple or ``\\pm``) its parts are
compared as a set. Several boxes listed without "or" are one answer: their parts joined by commas.
Pure Python, bounded; never raises on model output (the caller catches anyway).
"""
from __future__ import annotations

import re
from typing import Any, Sequence

from rewards.extract import extract_final
from rewards.math_norm import (
    MAX_ANSWER_CHARS, decimal_comma, long_decimal, normalize, terminates, rational_value, rationals_equal, string_key,
)

__all__ = ["prepare", "gold_text", "gold_is_multi"]

_WORDS = re.compile(r"[A-Za-z]{3,}")


def _strip_delims(s: str) -> str:
    s = s.strip()
    for _ in range(3):
        if s.startswith("$$") and s.endswith("$$") and len(s) > 4:
            s = s[2:-2].strip()
        elif s.startswith("$") and s.endswith("$") and len(s) > 2:
            s = s[1:-1].strip()
        elif s[:2] in ("\\(", "\\[") and s[-2:] in ("\\)", "\\]") and len(s) > 4:
            s = s[2:-2].strip()
        else:
            break
    return s


def gold_text(gold: str) -> str:
    """The answer a gold string states: its boxed statement, a ``#### x`` line, or itself."""
    if "\\boxed" in gold or "\\fbox" in gold:
        e = extract_final(gold, "boxed")
        if e is not None:
            return e.text
    if "####" in gold:
        return gold.rsplit("####", 1)[1].strip()
    g = _strip_delims(gold)
    if "\n" in g.strip() or len(_WORDS.findall(re.sub(r"\\[a-zA-Z]+(?:\{[^{}]*\})?", " ", g))) > 6:
        e = extract_final(gold)  # a whole worked solution given as the gold: its final answer
        if e is not None:
            return e.text
    return g


def _top_level_sep(s: str) -> bool:
    depth = 0
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c in ",;" and depth <= 0:
            return True
    return False


def gold_is_multi(ng: str) -> bool:
    """A normalised gold with several parts: a list, a set, a tuple or a ``\\pm``."""
    return ("," in ng or ";" in ng or "\\pm" in ng or "\\mp" in ng) and not rational_value(ng)


def _hedge_answer(parts: Sequence[str], multi: bool) -> str | None:
    keys = {string_key(normalize(p)) for p in parts}
    if len(keys) == 1:
        return parts[0]
    if not multi:
        return None
    return "\\{" + ", ".join(parts) + "\\}"


def prepare(answer: Any, gold: Any, formats: Any = "auto") -> bool | tuple[str, str]:
    """Decide cheaply (True / False), or return the (answer, gold) strings for the symbolic stage."""
    if not isinstance(answer, str) or not isinstance(gold, str):
        return False
    if "\x00" in answer or "\x00" in gold:  # binary junk is never a valid answer
        return False
    ext = extract_final(answer, formats)
    if ext is None or not ext.text.strip() or len(ext.text) > MAX_ANSWER_CHARS:
        return False
    if len(gold) > MAX_ANSWER_CHARS * 50:
        return False
    g = gold_text(gold)
    if not g or len(g) > MAX_ANSWER_CHARS:
        return False
    ng = normalize(g)
    if not ng:
        return False
    text = ext.text
    if ext.hedge:
        t = _hedge_answer(ext.parts, gold_is_multi(ng))
        if t is None:
            return False
        text = t
    na = normalize(text)
    if not na:
        return False
    if string_key(na) == string_key(ng):
        return True
    ra, rg = rational_value(na), rational_value(ng)
    if ra is None and rg is not None and decimal_comma(na):
        ra = rational_value(decimal_comma(na))
    if rg is None and ra is not None and decimal_comma(ng):
        rg = rational_value(decimal_comma(ng))
    if ra is not None and rg is not None:
        if rationals_equal(ra, rg):
            return True
        ld = long_decimal(na)
        return ld is not None and not rg[1] and not terminates(rg[0]) and abs(ld[0] - rg[0]) < ld[1]
    return (text, g)

