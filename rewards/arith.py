"""Reward `arith`: the last \\boxed{} must equal the gold number exactly (never eval).

Accepted number forms (answer and gold): integers ("6", "-3", "+4"), decimals ("6.0", "-0.5"),
simple fractions ("3/4", "-12/8") and \\frac{a}{b}, optionally wrapped in $...$ or with spaces.
Only the last TAIL_CHARS characters of a completion are searched (answers come last).
They are compared as exact Fractions, so "6" == "6.0" == "12/2". Anything else scores 0.0.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Sequence

from rewards.boxed import last_boxed
from rewards.registry import register_reward

MAX_NUMBER_CHARS = 64  # longer answers are malformed (keeps int parsing cheap)
TAIL_CHARS = 1024      # only the end of a completion is searched for the box (bounds hostile input)

_INT_OR_DEC = re.compile(r"[+-]?\d+(?:\.\d+)?")
_FRAC = re.compile(r"([+-]?\d+)/([+-]?\d+)")
_TEX_FRAC = re.compile(r"([+-]?)\\[dt]?frac\{([+-]?\d+)\}\{([+-]?\d+)\}")


def parse_number(text: str) -> Fraction | None:
    """Exact value of a simple number string, or None when it is not one. Never raises."""
    if not isinstance(text, str):
        return None
    s = text.strip().strip("$").replace(" ", "")
    if not s or len(s) > MAX_NUMBER_CHARS:
        return None
    try:
        if _INT_OR_DEC.fullmatch(s):
            return Fraction(s)
        m = _FRAC.fullmatch(s)
        if m:
            den = int(m.group(2))
            return None if den == 0 else Fraction(int(m.group(1)), den)
        m = _TEX_FRAC.fullmatch(s)
        if m:
            den = int(m.group(3))
            if den == 0:
                return None
            val = Fraction(int(m.group(2)), den)
            return -val if m.group(1) == "-" else val
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def arith_score(completion: str, gold: str) -> float:
    """1.0 when the last \\boxed{} of `completion` equals `gold` as an exact number, else 0.0."""
    try:
        want = parse_number(gold)
        got = parse_number(last_boxed(completion[-TAIL_CHARS:]) or "") if isinstance(completion, str) else None
        return 1.0 if want is not None and got is not None and got == want else 0.0
    except Exception:  # noqa: BLE001 - a reward never raises on model output
        return 0.0


@register_reward("arith", "last \\boxed{} equals the gold number exactly (ints, decimals, a/b)")
def arith_reward(completions: Sequence[str], golds: Sequence[str]) -> list[float]:
    """Exact numeric match of the last \\boxed{} against the gold: 1.0 / 0.0."""
    if len(completions) != len(golds):
        raise ValueError(f"arith reward: {len(completions)} completions but {len(golds)} golds")
    return [arith_score(c, g) for c, g in zip(completions, golds)]
