"""The `arith` and `countdown` rewards, including malformed and hostile completions."""
from __future__ import annotations

import time
from fractions import Fraction

import pytest

# A hang guard, not a speed claim: generous so a loaded CI machine never flakes, yet far below
# what an unbounded parse (9^9^9^9, a 1 MB string) would take.
HANG_GUARD_S = 6.0

from rewards.arith import arith_reward, parse_number
from rewards.countdown import check_countdown, countdown_reward, parse_expression
from rewards.registry import _REWARDS

GOLD = '{"numbers":[3,5,2],"target":16}'


def test_registered():
    assert _REWARDS["arith"] is arith_reward and _REWARDS["countdown"] is countdown_reward


# ------------------------------------------------------------------------------------ arith
@pytest.mark.parametrize("completion,gold,want", [
    ("4*2=8 3+8=11 11-5=6 \\boxed{6}", "6", 1.0),
    ("\\boxed{6.0}", "6", 1.0),
    ("\\boxed{ 12/2 }", "6", 1.0),
    ("\\boxed{-3}", "-3", 1.0),
    ("\\boxed{+6}", "6", 1.0),
    ("$\\boxed{3/4}$", "0.75", 1.0),
    ("\\boxed{\\frac{3}{4}}", "3/4", 1.0),
    ("\\boxed{-\\frac{1}{2}}", "-0.5", 1.0),
    ("\\boxed{5} then \\boxed{6}", "6", 1.0),      # the last box counts
    ("\\boxed{6} then \\boxed{5}", "6", 0.0),
    ("\\boxed{6.0001}", "6", 0.0),
    ("\\boxed{-6}", "6", 0.0),
    ("6", "6", 0.0),                                # no box
    ("\\boxed{6", "6", 0.0),                        # unclosed
    ("\\boxed{}", "6", 0.0),
    ("\\boxed{3/0}", "6", 0.0),
    ("\\boxed{2*3}", "6", 0.0),                     # expressions are not evaluated
    ("\\boxed{__import__('os').system('x')}", "6", 0.0),
    ("\\boxed{6}", "not a number", 0.0),
    ("", "6", 0.0),
    ("\\boxed{" + "9" * 5000 + "}", "9" * 5000, 0.0),  # over the length bound, no int DoS
    ("\\boxed{1e3}", "1000", 0.0),
    ("\\boxed{nan}", "nan", 0.0),
])
def test_arith_cases(completion, gold, want):
    assert arith_reward([completion], [gold]) == [want]


def test_arith_never_raises_on_non_strings():
    assert arith_reward([None, 6, b"\\boxed{6}"], ["6", "6", "6"]) == [0.0, 0.0, 0.0]  # type: ignore[list-item]
    assert parse_number("  7 ") == Fraction(7) and parse_number("0.5") == Fraction(1, 2)
    with pytest.raises(ValueError, match="2 completions but 1 golds"):
        arith_reward(["a", "b"], ["1"])


def test_arith_hostile_sizes_are_fast():
    t0 = time.perf_counter()
    for c in ("\\boxed{" * 50_000, "\\boxed{{" * 50_000 + "}", "9" * 1_000_000, "{" * 100_000 + "\\boxed{6}"):
        arith_reward([c], ["6"])
    assert arith_reward(["x" * 100_000 + "\\boxed{6}"], ["6"]) == [1.0]
    assert time.perf_counter() - t0 < HANG_GUARD_S


# -------------------------------------------------------------------------------- countdown
@pytest.mark.parametrize("completion,want", [
    ("\\boxed{(3+5)*2}", 1.0),
    ("\\boxed{2*(5+3)}", 1.0),
    ("\\boxed{ ( 3 + 5 ) * 2 }", 1.0),
    ("\\boxed{(3+5)\\times 2}", 1.0),
    ("\\boxed{(3+5)*2 = 16}", 1.0),
    ("\\boxed{(3+5)*2 = 15}", 0.0),
    ("I think\n(3+5)*2\n", 1.0),                    # no box: last non-empty line
    ("(3+5)*2 = 16.", 1.0),
    ("\\boxed{3+5*2}", 0.0),                        # wrong value (13)
    ("\\boxed{(3+3)*2+4}", 0.0),                    # reuses 3, misses 5
    ("\\boxed{(3+5)}", 0.0),                        # misses 2
    ("\\boxed{(3+5)*2*1}", 0.0),                    # extra number
    ("\\boxed{(3+5)*2+0}", 0.0),                    # extra zero
    ("\\boxed{16}", 0.0),
    ("\\boxed{(3+5)*2/(5-5)}", 0.0),               # division by zero
    ("\\boxed{32/(5-3)}", 0.0),                     # not the given numbers
    ("\\boxed{-(-(3+5))*2}", 1.0),                  # unary minus is fine
    ("\\boxed{(3+5)*2**1}", 0.0),
    ("\\boxed{__import__('os').system('echo hi')}", 0.0),
    ("\\boxed{().__class__}", 0.0),
    ("\\boxed{lambda: 16}", 0.0),
    ("\\boxed{16 if True else 0}", 0.0),
    ("\\boxed{}", 0.0),
    ("", 0.0),
    ("\n\n  \n", 0.0),
    ("\\boxed{3.0+5*2}", 0.0),
    ("\\boxed{(3+5)*2", 0.0),                       # unclosed box -> last line is not an expression
])
def test_countdown_cases(completion, want):
    assert countdown_reward([completion], [GOLD]) == [want]


def test_countdown_division_exact_fractions():
    assert check_countdown("6/(1-3/4)", [6, 1, 3, 4], 24)      # 6 / (1/4) = 24, exact
    assert not check_countdown("6/(1-3/4)", [6, 1, 3, 4], 23)
    assert check_countdown("(10-4)/2", [10, 4, 2], 3)
    assert check_countdown("5-5", [5, 5], 0)
    assert not check_countdown("5", [5, 5], 5)


def test_countdown_hostile_sizes_are_fast():
    t0 = time.perf_counter()
    nested = "(" * 10_000 + "3" + ")" * 10_000
    huge = "*".join(["999999999999"] * 2000)
    long_literal = "9" * 100_000
    for c in (f"\\boxed{{{nested}}}", nested, f"\\boxed{{{huge}}}", huge, long_literal, "(" * 500_000,
              "\\boxed{" * 50_000, "-" * 100_000 + "3", "1" + "+1" * 100_000):
        assert countdown_reward([c], [GOLD]) == [0.0]
    assert parse_expression("(" * 40 + "1" + ")" * 40) is None       # depth bound
    assert parse_expression("(" * 20 + "1" + ")" * 20)[0] == 1
    assert time.perf_counter() - t0 < HANG_GUARD_S


@pytest.mark.parametrize("gold", ["", "nope", "{}", '{"numbers":[3,5,2]}', '{"numbers":"352","target":16}',
                                  '{"numbers":[3,5,true],"target":16}', '{"numbers":[3,5,2],"target":"16"}', "[]"])
def test_countdown_malformed_gold_scores_zero(gold):
    assert countdown_reward(["\\boxed{(3+5)*2}"], [gold]) == [0.0]


def test_countdown_never_raises_on_non_strings():
    assert countdown_reward([None, 16, ["x"]], [GOLD, GOLD, GOLD]) == [0.0, 0.0, 0.0]  # type: ignore[list-item]
    assert check_countdown(None, [3], 3) is False  # type: ignore[arg-type]
    assert check_countdown("3", None, 3) is False  # type: ignore[arg-type]
    assert check_countdown("3", [3], "3") is False  # type: ignore[arg-type]
