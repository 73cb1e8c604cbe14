"""Answer extraction: completion -> the final answer statement, under an explicit, named policy.

    extract_final("... so \\boxed{3} ... wait, that is wrong ... \\boxed{5}")      # text "5"
    extract_final("x = \\boxed{3} or x = \\boxed{4}").hedge                      # True
    extract_final("Answer: 12", formats=("boxed",))                              # None
    has_answer_in_format("<think>..</think> \\boxed{2}", "think")                # True

Formats (``FORMATS``), each a way a model marks its final answer:

- ``boxed``: the last ``\\boxed{..}`` / ``\\fbox{..}`` (braces nest). Boxes that directly precede it,
  separated only by commas, "and", "or", "either", ``$``, ``\\quad`` or ``x =``, belong to the same
  statement (``\\boxed{1}, \\boxed{2}, \\boxed{3}``: parts 1, 2, 3). Any other words between two
  boxes ("wait", "actually") make the earlier box a superseded statement.
- ``answer_line``: a line that starts (after markdown ``#``, ``*``, ``>``, ``-``) with ``Answer:``,
  ``**Answer:**``, ``Final answer:``, ``**Final Answer**:``, or a ``### Final Answer`` heading whose
  answer is on the next non-empty line.
- ``minerva``: "Final Answer: The final answer is $X$. I hope it is correct." (Minerva / lm-eval).
- ``the_answer_is``: "the (final) answer is X" up to the end of its sentence; X must not be prose
  ("the answer is correct" is no answer).
- ``gsm8k``: ``#### X`` (the rest of the line).
- ``answer_tag``: the last ``<answer> X </answer>`` (R1-Zero's format; a box inside it wins). Named
  only: ``auto`` does not look for it.
- ``think``: a modifier, combined with the others: only the text after the last ``</think>`` is
  considered (no ``</think>`` at all: no answer). Alone it means ``think`` + ``auto``.
- ``bare``: the whole completion is a short answer without prose (``\\frac{1}{2}``).
- ``last_math``: the last ``$..$`` / ``$$..$$`` / ``\\(..\\)`` / ``\\[..\\]`` of the last paragraph, whole (an
  inline ``$..$`` may not span lines).
- ``last_number``: the last number of the text, only when it stands alone: never a number cut out
  of a fraction (2/3), tuple or interval ((7, 6), [2, 5]), decimal, power or sum (2+3).
- ``auto`` (the default): when the text contains ``</think>``, only the text after the last one;
  then the final answer statement among boxed / answer_line / minerva / the_answer_is / gsm8k, i.e.
  the one that comes LAST in the text (a self-correction answers the later statement; a box inside
  an answer line is that line's answer); if none, ``bare``, then ``last_math``, then ``last_number``.

``formats`` is one name, a sequence of names, or names joined by commas or "+" ("think,boxed");
anything else (an unknown name) extracts nothing.

A statement's ``parts`` are its boxes, or the alternatives of an answer line split at top-level
"or"; ``hedge`` is True when the parts are joined by "or" / "either" (alternatives offered, not a
list). Whether a hedge scores is the comparison's business (rewards.math: a hedge never matches a
one-part gold). Pure Python, linear regexes, at most MAX_SCAN_CHARS of a completion's end; every
function returns None / False on anything it cannot read and never raises.
"""
from __future__ import annotations

import re
from typing import Sequence

from rewards.boxed import closing_braces
from rewards.extract_base import (
    MAX_ANSWER_CHARS, MAX_PARTS, MAX_SCAN_CHARS, Extraction, _last_match, _make, _prose, _split_alternatives,
    _strip_wrappers,
)
from rewards.extract_fallback import _bare, _last_math, _last_number, _last_number_at
from rewards.math_norm import DOUBLED_ESCAPE

__all__ = ["FORMATS", "Extraction", "extract_final", "has_answer_in_format", "all_boxed"]

FORMATS: tuple[str, ...] = ("auto", "boxed", "answer_line", "minerva", "the_answer_is", "gsm8k", "think",
                            "bare", "last_math", "last_number", "answer_tag")
MARKED = ("boxed", "answer_line", "minerva", "the_answer_is", "gsm8k")
AUTO_ORDER = MARKED + ("bare", "last_math", "last_number")


# ------------------------------------------------------------------ boxes
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def _boxes(text: str) -> list[tuple[int, int, int]]:
    """(start of '\\boxed', start of content, index of closing brace) of every closed box, in order."""
    starts = [(m.start(), m.end()) for m in _BOX.finditer(text)]
    if not starts:
        return []
    close = closing_braces(text)
    out = []
    for s, b in starts:
        e = close.get(b - 1)
        if e is not None:
            out.append((s, b, e))
    # a box nested in another (\boxed{\boxed{1}}) is part of the outer one
    res: list[tuple[int, int, int]] = []
    for box in out:
        while res and res[-1][0] < box[0] and box[2] < res[-1][2]:
            box = None  # type: ignore[assignment]
            break
        if box is not None:
            res.append(box)
    return res


_GAP_WORD = re.compile(r"\\text\{[^{}]*\}|\\(?:quad|qquad|,|;|!|:|\s|\\|lor|vee|text|mathrm|\(|\)|\[|\])"
                       r"|[a-zA-Z](?:_\{?\w{1,4}\}?)?(?![a-zA-Z])|[a-zA-Z]+|[^a-zA-Z\\]")
_GAP_OK_WORDS = {"and", "or", "either", "also", "respectively", "for", "part", "parts"}


def _gap_joins(gap: str) -> tuple[bool, bool]:
    """(same statement?, hedge?) for the text between two boxes."""
    if len(gap) > 80 or "\n\n" in gap:
        return False, False
    hedge = False
    for m in _GAP_WORD.finditer(gap):
        w = m.group(0)
        if w.startswith("\\text{"):
            words = re.findall(r"[a-z]{2,}", w[6:-1].lower())
            if any(x not in _GAP_OK_WORDS for x in words):
                return False, False
            hedge = hedge or "or" in words or "either" in words
        elif w in ("\\lor", "\\vee"):
            hedge = True
        elif w[0].isalpha():
            lw = w.lower()
            if len(w) > 1 and w[1] != "_" and lw not in _GAP_OK_WORDS:
                return False, False
            hedge = hedge or lw in ("or", "either")
        elif w in ".!?:" or w.isdigit():
            return False, False
    return True, hedge


def _unbox(p: str) -> str:
    """\\boxed{\\boxed{7}} -> 7: a box whose whole content is another box."""
    for _ in range(4):
        inner = _boxes(p)
        if len(inner) == 1 and inner[0][0] == 0 and inner[0][2] == len(p) - 1:
            p = p[inner[0][1]:-1].strip()
        else:
            break
    return p


def _boxed_statement(text: str) -> tuple[int, Extraction] | None:
    boxes = _boxes(text)
    if not boxes:
        return None
    chosen = [boxes[-1]]
    hedge = False
    for prev in reversed(boxes[:-1]):
        same, h = _gap_joins(text[prev[2] + 1:chosen[0][0]])
        if not same or len(chosen) >= MAX_PARTS:
            break
        hedge = hedge or h
        chosen.insert(0, prev)
    if len(chosen) > 1:  # "either \boxed{3} or \boxed{4}"
        hedge = hedge or bool(re.search(r"\beither\s*\$?\s*$", text[max(0, chosen[0][0] - 12):chosen[0][0]]))
    parts = tuple(_unbox(text[b:e].strip()) for _, b, e in chosen)
    if len(parts) == 1:
        sub, h = _split_alternatives(parts[0])
        if h:
            return chosen[0][0], _make(parts[0], "boxed", sub, True)
    return chosen[0][0], _make(", ".join(parts), "boxed", parts, hedge and len(set(parts)) > 1)


def all_boxed(text: str) -> list[str]:
    """Contents of every closed box, in order (a gold that boxes several parts lists them all)."""
    if not isinstance(text, str):
        return []
    t = text[-MAX_SCAN_CHARS:]
    return [t[b:e].strip() for _, b, e in _boxes(t)][:MAX_PARTS]


# ------------------------------------------------------------------ marked lines
_ANSWER_LINE = re.compile(
    r"^[ \t>#*_\-]*(?:\*\*|__)?[ \t]*(?:the[ \t]+)?(?:final[ \t]+)?answer[ \t]*(?:\*\*|__)?[ \t]*(?::|：)"
    r"[ \t]*(?:\*\*|__)?|^[ \t]*#{1,6}[ \t]*(?:\*\*)?[ \t]*final[ \t]+answer[ \t]*(?:\*\*)?[ \t]*:?[ \t]*$",
    re.IGNORECASE | re.MULTILINE)
_MINERVA = re.compile(r"final\s+answer\s+is\s*(.{1,%d}?)\s*\.?\s*I\s+hope\s+it\s+is\s+correct" % MAX_ANSWER_CHARS,
                      re.IGNORECASE | re.DOTALL)
_HOPE = re.compile(r"I\s+hope\s+it\s+is\s+correct", re.IGNORECASE)
_FINAL_IS = re.compile(r"final\s+answer\s+is", re.IGNORECASE)
_ANSWER_IS = re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s*(?:is|=)\s*:?\s*", re.IGNORECASE)
_HASHES = re.compile(r"####[ \t]*")
_NOT_ANSWER = re.compile(
    r"(?:not|correct|incorrect|wrong|right|that|the|a|an|to|in|as|at|of|on|obviously|clearly|given|found|"
    r"below|above|therefore|because|still|also|likely|probably|indeed|consistent|reasonable|valid|"
    r"confirmed|verified|wait|hmm|yes,|no,|unclear|different|same|this|these|those|we|it|there|than|"
    r"asking|what|which|how|why|when)\b", re.IGNORECASE)


def _sentence(s: str) -> str:
    """Text up to the end of the first line / sentence (a '.' followed by a space or the end, outside $..$)."""
    s = s[:MAX_ANSWER_CHARS].split("\n", 1)[0]
    in_math = False
    depth = 0
    for i, c in enumerate(s):
        if c == "$":
            in_math = not in_math
        elif c in "{([":
            depth += 1
        elif c in "})]":
            depth = max(0, depth - 1)
        elif c == "." and not in_math and depth == 0 and (i + 1 == len(s) or s[i + 1] in " \t"):
            if not (i > 0 and s[i - 1].isdigit() and i + 1 < len(s) and s[i + 1].isdigit()):
                return s[:i]
    return s


def _from_line(rest: str, fmt: str) -> Extraction | None:
    """The answer in the text following a marker (a box inside it wins)."""
    line = rest.split("\n", 1)[0]
    if "\\boxed" in line or "\\fbox" in line:
        got = _boxed_statement(line)
        if got is not None:
            e = got[1]
            return _make(e.text, fmt, e.parts, e.hedge)
    s = _strip_wrappers(re.sub(r'^\s*\\?"|\\?"\s*$', "", _sentence(rest).strip().rstrip(".")))
    if not s or len(s) >= MAX_ANSWER_CHARS:
        return None
    if _prose(s) or _NOT_ANSWER.match(s):  # "The largest $n$ is 34" -> after the last " is "
        k = max(s.rfind(" is "), s.rfind(" are "), s.rfind(" equals "))
        tail = _strip_wrappers(s[s.index(" ", k + 1) + 1:]) if k >= 0 else ""
        if tail and not _prose(tail):
            s = tail
        else:
            got = _last_number(s)
            if got is None:
                return None
            return _make(got.text, fmt, got.parts, False)
    parts, hedge = _split_alternatives(s)
    return _make(s, fmt, parts, hedge)


def _answer_line(text: str) -> tuple[int, Extraction] | None:
    last = _last_match(_ANSWER_LINE, text)
    if last is None:
        return None
    rest = text[last.end():last.end() + MAX_ANSWER_CHARS + 4]
    if not rest.split("\n", 1)[0].strip(" \t*_:"):  # heading: the answer is on the next non-empty line
        rest = rest.lstrip(" \t*_:\n")
    m = _MINERVA.match(rest)  # "Final Answer: The final answer is $X$. I hope ..."
    if m or re.match(r"\s*the\s+final\s+answer\s+is", rest, re.IGNORECASE):
        return None  # the minerva / the_answer_is formats read this line
    got = _from_line(rest, "answer_line")
    return (last.start(), got) if got is not None else None


def _minerva(text: str) -> tuple[int, Extraction] | None:
    """The last "... final answer is X. I hope it is correct." (found from its end: linear time)."""
    last = _last_match(_HOPE, text)
    if last is None:
        return None
    lo = max(0, last.start() - MAX_ANSWER_CHARS - 40)
    window = text[lo:last.start()]
    phrase = _last_match(_FINAL_IS, window)
    if phrase is None:
        return None
    inner = window[phrase.end():].strip()
    got = _from_line(inner.replace("\n", " "), "minerva")
    return (lo + phrase.start(), got) if got is not None else None


def _answer_is(text: str) -> tuple[int, Extraction] | None:
    for m in reversed(list(_ANSWER_IS.finditer(text))[-20:]):
        rest = text[m.end():m.end() + MAX_ANSWER_CHARS]
        s = _strip_wrappers(_sentence(rest))
        if not s or ("\\boxed" not in rest.split("\n", 1)[0] and (_NOT_ANSWER.match(s) or _prose(s))):
            continue
        got = _from_line(rest, "the_answer_is")
        if got is not None:
            return m.start(), got
    return None


def _gsm8k(text: str) -> tuple[int, Extraction] | None:
    last = _last_match(_HASHES, text)
    if last is None:
        return None
    s = _strip_wrappers(text[last.end():last.end() + MAX_ANSWER_CHARS].split("\n", 1)[0])
    return (last.start(), _make(s, "gsm8k", (s,), False)) if s else None


def _answer_tag(text: str) -> tuple[int, Extraction] | None:
    k = text.rfind("<answer>")
    e = text.find("</answer>", k) if k >= 0 else -1
    if e < 0:
        return None
    inner = text[k + len("<answer>"):e].strip()
    if "\\boxed" in inner or "\\fbox" in inner:
        got = _boxed_statement(inner)
        if got is not None:
            return k, _make(got[1].text, "answer_tag", got[1].parts, got[1].hedge)
    s = _strip_wrappers(inner.rstrip("."))
    if not s or len(s) >= MAX_ANSWER_CHARS:
        return None
    parts, hedge = _split_alternatives(s)
    return k, _make(s, "answer_tag", parts, hedge)


# ------------------------------------------------------------------ policy
_FINDERS = {"boxed": _boxed_statement, "answer_line": _answer_line, "minerva": _minerva,
            "the_answer_is": _answer_is, "gsm8k": _gsm8k, "answer_tag": _answer_tag}


def _formats(formats: object) -> tuple[tuple[str, ...], bool] | None:
    if isinstance(formats, str):  # "boxed", or several: "think,boxed" / "think+boxed"
        formats = tuple(f for f in re.split(r"[,+\s]+", formats) if f)
    try:
        fs = tuple(formats)  # type: ignore[arg-type]
    except TypeError:
        return None
    if not fs or any(not isinstance(f, str) or f not in FORMATS for f in fs):
        return None
    think = "think" in fs
    rest = tuple(f for f in fs if f != "think")
    if not rest or "auto" in rest:
        rest = tuple(dict.fromkeys([f for f in rest if f != "auto"] + list(AUTO_ORDER)))
    return rest, think


def extract_final(completion: str, formats: str | Sequence[str] = "auto") -> Extraction | None:
    """The final answer statement of a completion under the given formats, or None. Never raises."""
    try:
        return _extract(completion, formats)
    except Exception:  # noqa: BLE001 - extraction never raises on model output
        return None


def _extract(text: str, formats: object) -> Extraction | None:
    spec = _formats(formats)
    if spec is None or not isinstance(text, str):
        return None
    fs, think = spec
    if "\x00" in text:
        text = text.replace("\x00", "")
    truncated = len(text) > MAX_SCAN_CHARS
    if truncated:
        text = text[-MAX_SCAN_CHARS:]
    if "\\\\" in text:  # JSON-doubled escapes: \\boxed -> \boxed
        text = DOUBLED_ESCAPE.sub(r"\\", text)
    k = text.rfind("</think>")
    if k >= 0:
        text = text[k + len("</think>"):]
    elif think:
        return None
    best: tuple[int, Extraction] | None = None
    for f in fs:
        if f in _FINDERS:
            got = _FINDERS[f](text)
            if got is not None and (best is None or got[0] > best[0]):
                best = got
    if best is not None:
        return best[1]
    if "bare" in fs:
        got2 = _bare(text)
        if got2 is not None:
            return got2
    # the later of the last math and the last standalone number (a number inside math comes first)
    lm = _last_math(text) if "last_math" in fs else None
    ln = _last_number_at(text) if "last_number" in fs and not truncated else None
    if lm is not None and (ln is None or ln[0] < lm[0]):
        return lm[1]
    return ln[1] if ln is not None else None


def has_answer_in_format(completion: str, fmt: str) -> bool:
    """True when the completion states an answer in format `fmt` (``think``: after a ``</think>``)."""
    e = extract_final(completion, fmt)
    return e is not None and bool(e.text.strip())
