"""Answer extraction shared by the rewards: the last \\boxed{...} / \\fbox{...}, nested braces."""
from __future__ import annotations

import re

MAX_SCAN = 100_000  # characters of a completion we look at (its end: answers come last)
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{...} or \\fbox{...} in text, or None.

    Braces nest (\\boxed{\\frac{1}{2}} -> \\frac{1}{2}); an unclosed box is ignored. One linear pass
    matches every brace, so hostile input (50k unclosed boxes) stays linear.
    """
    if not isinstance(text, str):
        return None
    if len(text) > MAX_SCAN:
        text = text[-MAX_SCAN:]
    starts = [m.end() for m in _BOX.finditer(text)]  # index just after each box's "{"
    if not starts:
        return None
    close = closing_braces(text)
    for s in reversed(starts):
        e = close.get(s - 1)
        if e is not None:
            return text[s:e].strip()
    return None


def closing_braces(text: str) -> dict[int, int]:
    """Index of each matched "{" -> index of its closing "}" (unmatched braces are left out)."""
    close: dict[int, int] = {}
    stack: list[int] = []
    for i, c in enumerate(text):
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            close[stack.pop()] = i
    return close
