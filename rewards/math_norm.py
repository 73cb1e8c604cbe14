"""String stage of the math verifier: answer extraction, normalisation and an exact rational fast path.

Pure Python and bounded (no sympy here): everything in this module runs in the calling process, so
every regex is linear on inputs of bounded length and no number is built past a fixed size.
"""
from __future__ import annotations

import re

from rewards.boxed import last_boxed
from fractions import Fraction

MAX_ANSWER_CHARS = 2000      # an extracted answer longer than this is not scored (False)
MAX_SCAN_CHARS = 100_000     # how much of a completion's end we look at
MAX_DIGITS = 400             # longest number literal we turn into a Fraction
LONG_DECIMAL_DIGITS = 8      # a decimal with at least this many significant digits may round a non-terminating value
MAX_SCI_EXP = 400            # |e| in 1.2e{e} / 1.2\times10^{e} accepted by the fast path

# --------------------------------------------------------------------------------------------
# extraction (the policy lives in rewards.extract)
# --------------------------------------------------------------------------------------------
def last_boxed_linear(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}``: :func:`rewards.boxed.last_boxed`
    (one linear pass, so thousands of unclosed boxes cannot make it quadratic)."""
    return last_boxed(text)


# --------------------------------------------------------------------------------------------
# normalisation
# --------------------------------------------------------------------------------------------
_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u03c0": "\\pi ",
    "\u221e": "\\infty ", "\u221a": "\\sqrt", "\u2264": "\\le ", "\u2265": "\\ge ", "\u00b0": "",
    "\u222a": "\\cup ", "\u2229": "\\cap ", "\u00b1": "\\pm ", "\u2260": "\\ne ", "\u2205": "\\emptyset ",
}
_UNITS = (
    r"cm|mm|km|m|meters?|metres?|centimeters?|kilometers?|inch(?:es)?|in|feet|foot|ft|yards?|yd|miles?|mi|"
    r"units?|square\s+units?|sq\s+units?|cubic\s+units?|degrees?|deg|radians?|rad|cents?|dollars?|"
    r"hours?|hrs?|minutes?|mins?|seconds?|secs?|s|days?|weeks?|months?|years?|mph|kg|g|grams?|pounds?|lbs?|"
    r"ounces?|oz|liters?|litres?|l|ml|gallons?|people|students?|apples?|percent(?:age)?|pct|points?|times|ways"
)
_UNIT_TEXT = re.compile(r"\\text\{\s*(?:" + _UNITS + r")\.?\s*\}(?:\^\{?[23]\}?)?", re.IGNORECASE)
_UNIT_BARE = re.compile(r"(?<=[\d}\s])\s*(?:" + _UNITS + r")\.?(?:\^\{?[23]\}?)?\s*$", re.IGNORECASE)
_TEXT_GROUP = re.compile(r"\\text\{([^{}]*)\}")
DOUBLED_ESCAPE = re.compile(r"(?<!\\)\\\\(?=(?:boxed|fbox|frac|dfrac|tfrac|left|right|le|leq|ge|geq|neq|ne|sqrt|pi|cdot|"
                            r"times|text|mathrm|infty|approx|in|cup|pm|lt|gt)(?![a-zA-Z]))")
_SPACES = re.compile(r"(?<!\\)\\[,;:!> ]|\\quad|\\qquad|\\displaystyle|\\scriptstyle|~")
_SIZES = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|Bigg)(?![A-Za-z])")
_THOUSANDS = re.compile(r"[+-]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")
_THOUSANDS_SPACE = re.compile(r"[+-]?[1-9]\d{0,2}(?: \d{3})+(?:\.\d+)?")
_OVERLINE = re.compile(r"([+-]?)(\d*)\.(\d*)\\(?:overline|bar|dot)\{?(\d{1,20})\}?")
_CHOICE = re.compile(r"\(?([A-Ea-e])\)?")


def normalize(s: str) -> str:
    """Canonical text of an answer: LaTeX spacing, sizes, units, dollars, degrees, thousands stripped.

    Linear-time substitutions; the caller bounds the length first.
    """
    s = s.replace("\x00", "")
    for k, v in _UNICODE.items():
        if k in s:
            s = s.replace(k, v)
    if "\\\\" in s:  # JSON-doubled escapes: \\frac -> \frac (a line break is never followed by a command name)
        s = DOUBLED_ESCAPE.sub(r"\\", s)
    s = _SIZES.sub("", s)
    if "\\overline" in s or "\\bar" in s or "\\dot" in s:
        s = _OVERLINE.sub(_repeating, s)
    s = re.sub(r"\\(?:dfrac|tfrac|cfrac)", r"\\frac", s)
    s = re.sub(r"\\(?:mbox|textbf|textrm|textit|textnormal|mathrm|mathbf|mathit|operatorname|textup|hbox)\s*\{",
               r"\\text{", s)
    s = re.sub(r"\s*\{\s*,\s*\}\s*|,\\!\s*", ",", s)
    s = _SPACES.sub(" ", s)
    s = s.replace("\\$", " ").replace("$", " ")
    s = s.replace("\\%", "%").replace("\\percent", "%")
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree", "", s)
    s = re.sub(r"\\(?:\(|\)|\[|\])", " ", s) if re.search(r"\\[\(\[]", s) and "\\{" not in s else s
    s = s.strip()
    # whole answer is text: \text{Evelyn} -> Evelyn ; \text{(C)} -> (C)
    m = re.fullmatch(r"\\text\{([^{}]*)\}", s)
    if m:
        s = m.group(1).strip()
    # units and connectives written as text
    s = _UNIT_TEXT.sub(" ", s)
    s = re.sub(r"\\text\{\s*(?:and|or)\s*\}", ",", s)
    s = re.sub(r"\s(?:and|or)\s", ",", s) if re.search(r"\d", s) else s
    s = re.sub(r"(?<=[)\]])\s*(?:or|and)\s*(?=[(\[])", ",", s)
    if re.search(r"\d", s):
        s = re.sub(r"\\text\{\s*\}", " ", s)
        s = _UNIT_BARE.sub("", s.strip())
        s = re.sub(r"\s*\bpercent\b", "%", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = s.rstrip(".,;").strip()
    if s.startswith("\\{") is False and s[:1] == "{" and s[-1:] == "}" and _balanced_outer(s):
        s = s[1:-1].strip()
    if _THOUSANDS.fullmatch(s) or _THOUSANDS_SPACE.fullmatch(s):
        s = s.replace(" ", "").replace(",", "")
    m = _CHOICE.fullmatch(s)
    if m:
        s = m.group(1).upper()
    return s


def _repeating(m: "re.Match[str]") -> str:
    """0.1\\overline{6} -> \\frac{1}{6}: a repeating decimal as its exact fraction."""
    sign, i, a, r = m.group(1), m.group(2) or "0", m.group(3), m.group(4)
    v = Fraction(int(i + a + r) - int(i + a), 10 ** len(a) * (10 ** len(r) - 1))
    return f"{sign}\\frac{{{v.numerator}}}{{{v.denominator}}}"


def decimal_comma(s: str) -> str | None:
    """``1000,99`` / ``0,111`` / ``3,5`` -> the same number with a decimal point; None when the comma
    cannot be a decimal comma (several commas, spaces, or a valid thousands grouping like 7,425)."""
    k = s.strip()
    if re.fullmatch(r"[+-]?\d{1,%d},\d{1,%d}" % (MAX_DIGITS, MAX_DIGITS), k) and not _THOUSANDS.fullmatch(k):
        return k.replace(",", ".")
    return None


def _balanced_outer(s: str) -> bool:
    depth = 0
    for i, c in enumerate(s):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0 and i != len(s) - 1:
                return False
    return depth == 0


def string_key(s: str) -> str:
    """Key for exact comparison: normalised text with whitespace and redundant braces removed."""
    k = re.sub(r"\s+", "", s)
    if re.fullmatch(r"[A-Za-z][A-Za-z ]*", s):
        k = k.lower()
    return k


# --------------------------------------------------------------------------------------------
# exact rational fast path
# --------------------------------------------------------------------------------------------
_NUM = r"(?:\d{1,%d}(?:\.\d{0,%d})?|\.\d{1,%d})" % (MAX_DIGITS, MAX_DIGITS, MAX_DIGITS)
_SIGNED = r"[+-]?" + _NUM
_RE_DEC = re.compile(r"([+-]?)(" + _NUM + r")(?:[eE]([+-]?\d{1,3}))?(%?)")
_RE_SCI = re.compile(r"([+-]?)(" + _NUM + r")(?:\\times|\\cdot|\*|x)10\^\{?([+-]?\d{1,3})\}?(%?)")
_RE_FRAC = re.compile(r"([+-]?)\\frac\{(" + _SIGNED + r")\}\{(" + _SIGNED + r")\}(%?)")
_RE_FRAC_SHORT = re.compile(r"([+-]?)\\frac(\d)(\d)(%?)")
_RE_SLASH = re.compile(r"([+-]?)\(?(" + _SIGNED + r")\)?/\(?(" + _SIGNED + r")\)?(%?)")
_RE_MIXED = re.compile(r"([+-]?)(\d{1,20})\\frac\{(\d{1,20})\}\{(\d{1,20})\}")


def _sign(s: str) -> int:
    return -1 if s == "-" else 1


def rational_value(s: str) -> tuple[Fraction, bool] | None:
    """Exact value of a plain number written as an integer, decimal, fraction, a/b, mixed number,
    percent or scientific notation, with a flag saying it carried a percent sign; else None."""
    k = s.replace(" ", "")
    if not k or len(k) > 2 * MAX_DIGITS + 20:
        return None
    try:
        m = _RE_DEC.fullmatch(k)
        if m:
            v = Fraction(m.group(2)) * _sign(m.group(1))
            if m.group(3):
                e = int(m.group(3))
                if abs(e) > MAX_SCI_EXP:
                    return None
                v *= Fraction(10) ** e
            return v, bool(m.group(4))
        m = _RE_SCI.fullmatch(k)
        if m:
            e = int(m.group(3))
            if abs(e) > MAX_SCI_EXP:
                return None
            return Fraction(m.group(2)) * _sign(m.group(1)) * Fraction(10) ** e, bool(m.group(4))
        m = _RE_FRAC.fullmatch(k) or _RE_FRAC_SHORT.fullmatch(k) or _RE_SLASH.fullmatch(k)
        if m:
            den = Fraction(m.group(3))
            if den == 0:
                return None
            return _sign(m.group(1)) * Fraction(m.group(2)) / den, bool(m.group(4))
        m = _RE_MIXED.fullmatch(k)
        if m:
            den = int(m.group(4))
            num = int(m.group(3))
            if den == 0 or num >= den:
                return None
            return _sign(m.group(1)) * (int(m.group(2)) + Fraction(num, den)), False
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def rationals_equal(a: tuple[Fraction, bool], g: tuple[Fraction, bool]) -> bool:
    """Equal as numbers, where a percent on either side may be read as x/100 or as x."""
    va, pa = a
    vg, pg = g
    if pa and pg:
        return va == vg
    cands_a = [va / 100, va] if pa else [va]
    cands_g = [vg / 100, vg] if pg else [vg]
    return any(x == y for x in cands_a for y in cands_g)


_PLAIN_DEC = re.compile(r"[+-]?(\d{0,%d})\.(\d{1,%d})" % (MAX_DIGITS, MAX_DIGITS))


def long_decimal(s: str) -> tuple[Fraction, Fraction] | None:
    """(value, one unit in the last place) of a plain decimal with >= LONG_DECIMAL_DIGITS significant
    digits (0.083333333, 3.1415927), else None. Such a decimal matches a gold whose exact value does not
    terminate (1/12, pi) when it is within one unit in its last place (rounded or truncated); shorter
    decimals (0.33, 6.28, 3.14159) never match a non-terminating value."""
    k = s.replace(" ", "")
    m = _PLAIN_DEC.fullmatch(k)
    if not m:
        return None
    digits = (m.group(1) + m.group(2)).lstrip("0")
    if len(digits) < LONG_DECIMAL_DIGITS:
        return None
    return Fraction(k), Fraction(1, 10 ** len(m.group(2)))


def terminates(v: Fraction) -> bool:
    """True when v has a finite decimal expansion (its denominator is 2^a 5^b)."""
    d = v.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1
