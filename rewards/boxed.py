"""Answer extraction shared by the rewards: the last \\boxed{...} / \\fbox{...}, nested braces."""
from __future__ import annotations

import re

MAX_SCAN = 100_000  # characters of a completion we look at (its end: answers come last)
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{...} or \\fbox{...} in text, or None.

    Braces nest (\\boxed{\\frac{1}{2}} -> \\frac{1}{2}); an unclosed box is ignored. Linear time.
    """
    if not isinstance(text, str):
        return None
    if len(text) > MAX_SCAN:
        text = text[-MAX_SCAN:]
    for m in reversed(list(_BOX.finditer(text))):
        depth, i = 1, m.end()
        while i < len(text):
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[m.end():i].strip()
            i += 1
    return None
