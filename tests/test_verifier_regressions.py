"""One regression test per failure class of issue 14 ("Why"): formats, cut-out numbers, hedges, golds."""
from __future__ import annotations

import time

import pytest

from rewards import math as vm
from rewards.math import is_equivalent, math_reward

HANG_GUARD_S = 6.0


@pytest.fixture(scope="module", autouse=True)
def _workers():
    vm.warmup(1)
    yield


def check(answer: str, gold: str, expected: bool, **kw) -> None:
    t0 = time.monotonic()
    assert is_equivalent(answer, gold, **kw) is expected, (answer, gold)
    assert time.monotonic() - t0 < HANG_GUARD_S


# 1. answer formats real models write
@pytest.mark.parametrize("answer", [
    "Let me compute.\nAnswer: 42", "Reasoning.\n**Answer:** 42", "Reasoning.\nFinal answer: 42",
    "Final Answer: The final answer is $42$. I hope it is correct.",
    "The answer is 42. Let me double check that: 6*7 = 42, yes.",
    "### Final Answer\n\\[\n\\boxed{42}\n\\]",
])
def test_answer_formats(answer):
    check(answer, "42", True)
    check(answer, "41", False)


def test_minerva_is_fast():
    vm.clear_cache()
    t0 = time.monotonic()
    check("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "0.75", True)
    assert time.monotonic() - t0 < 1.0


# 2. no fallback cuts a number out of a larger answer (these were rewarded before)
@pytest.mark.parametrize("answer,gold", [
    ("We get 2/3.\nAnswer: 2/3", "3"), ("the probability is 2/3.", "3"), ("the ordered pair is (7, 6).", "6"),
    ("[2, 5]", "5"), ("so the interval is (1, 4]", "4"), ("the value is 3.75", "75"), ("x = 2^{10}", "10"),
    ("it equals 5-3", "3"), ("the sum is 2+3", "3"),
])
def test_no_number_cut_out(answer, gold):
    check(answer, gold, False)


def test_whole_expressions_still_match():
    check("We get 2/3.\nAnswer: 2/3", "\\frac{2}{3}", True)
    check("the probability is 2/3.", "\\frac23", True)
    check("the ordered pair is $(7, 6)$.", "(7,6)", True)


# 3. hedges score 0; several boxes listing a multi-part gold are one answer; self-corrections
def test_hedges_and_lists():
    check("\\boxed{3} or \\boxed{4}", "4", False)
    check("x = \\boxed{3} or x = \\boxed{4}", "3", False)
    check("It is either $\\boxed{4}$ or $\\boxed{5}$.", "4", False)
    check("\\boxed{3 \\text{ or } 4}", "4", False)
    check("Answer: 3 or 4", "4", False)
    check("\\boxed{1}, \\boxed{2}, \\boxed{3}", "\\{1, 2, 3\\}", True)
    check("\\boxed{1}, \\boxed{2}, \\boxed{3}", "1, 2, 3", True)
    check("\\boxed{1}, \\boxed{2}, \\boxed{3}", "3", False)
    check("x = \\boxed{3} or x = \\boxed{4}", "3, 4", True)        # the solutions of a quadratic
    check("x = \\boxed{3} or x = \\boxed{4}", "(3, 4)", False)     # alternatives are not an ordered pair
    check("first I get \\boxed{3} ... wait, that is wrong ... \\boxed{5}", "5", True)
    check("first I get \\boxed{3} ... wait, that is wrong ... \\boxed{5}", "3", False)


def test_lists_are_sets_unless_the_gold_is_a_tuple():
    check("\\boxed{3, 1, 2}", "1, 2, 3", True)
    check("\\boxed{\\{3, 1, 2\\}}", "\\{1,2,3\\}", True)
    check("\\boxed{(2, 1)}", "(1, 2)", False)
    check("\\boxed{(1, 2)}", "(1, 2)", True)


# 4. named and multi-part golds, relations, chains, decimal commas, percent, sums, thousands vs lists
@pytest.mark.parametrize("answer,gold,expected", [
    ("\\boxed{(3, 2)}", "(p,q)=(3,2)", True), ("\\boxed{(2, 3)}", "(p,q)=(3,2)", False),
    ("\\boxed{1}", "f(x)=1", True), ("\\boxed{2}", "f(x)=1", False),
    ("\\boxed{(0,1)}", "0<f(x)<1", True), ("\\boxed{[0,1]}", "0<f(x)<1", False),
    ("\\boxed{4, 5}", "AB=4,CD=5", True), ("\\boxed{7:32}", "S_{MBCN}:S=7:32", True),
    ("$5 \\geq x$", "x \\leq 5", True), ("$5 \\leq x$", "x \\leq 5", False), ("$-x > -1$", "x < 1", True),
    ("$x = 5+5+1 = 11$", "11", True), ("$x = 5+5+1 = 11$", "x = 11", True), ("$x \\approx 11$", "11", True),
    ("$x = 5+5+1 = 11$", "12", False), ("$2x + z = 1$", "1", False),
    ("\\boxed{3,5}", "3.5", True), ("\\boxed{1000,99}", "1000.99", True), ("\\boxed{0,111}", "0.111", True),
    ("\\boxed{7,425,000}", "7425000", True),
    ("\\boxed{28 \\text{ percent}}", "28\\%", True), ("\\boxed{28 pct}", "28\\%", True),
    ("\\boxed{\\sum_{i=1}^{10} i}", "55", True), ("\\boxed{\\sum_{i=1}^{10} i}", "56", False),
    ("$F_n = \\sum_{k=0}^{n-1} F_{n-k-1} F_k$", "F_n = \\sum_{k=0}^{n-1} F_k F_{n-k-1}", True),
    ("\\boxed{32, 349}", "32349", False), ("\\boxed{32, 349}", "32, 349", True), ("\\boxed{32,349}", "32349", True),
    ("\\boxed{1 000}", "1000", True),
])
def test_golds_and_relations(answer, gold, expected):
    check(answer, gold, expected)


# 5. exact decimals equal fractions; short roundings of non-terminating values are wrong
@pytest.mark.parametrize("answer,gold,expected", [
    ("\\boxed{0.5}", "\\frac12", True), ("\\boxed{0.1\\overline{6}}", "\\frac16", True),
    ("\\boxed{0.\\overline{3}}", "\\frac13", True), ("\\boxed{0.33}", "\\frac13", False),
    ("\\boxed{0.333}", "\\frac13", False), ("\\boxed{6.28}", "2\\pi", False), ("\\boxed{3.14159}", "\\pi", False),
    ("\\boxed{0.33333333}", "\\frac13", True), ("\\boxed{6.2831853}", "2\\pi", True),
    ("\\boxed{3.1415926}", "\\pi", True),     # truncated (rounded: 3.1415927)
    ("\\boxed{6.2831850}", "2\\pi", False),  # off by more than one unit in the last place
    ("\\boxed{0.0833333333333333}", "\\frac{1}{12}", True), ("\\boxed{0.12500000}", "\\frac18", True),
    ("\\boxed{0.12500001}", "\\frac18", False),
])
def test_decimals(answer, gold, expected):
    check(answer, gold, expected)


# the reward takes the formats of the task
def test_math_reward_formats():
    comps = ["Answer: 4", "\\boxed{4}", "<think>\\boxed{3}</think> \\boxed{4}", "<think>\\boxed{4}</think>"]
    assert math_reward(comps, ["4"] * 4) == [1.0, 1.0, 1.0, 0.0]
    assert math_reward(comps, ["4"] * 4, formats="boxed") == [0.0, 1.0, 1.0, 0.0]
    assert math_reward(comps, ["4"] * 4, formats=("think", "boxed")) == [0.0, 0.0, 1.0, 0.0]
    assert math_reward(comps, ["4"] * 4, formats="think,boxed") == [0.0, 0.0, 1.0, 0.0]
    from rewards.registry import get_reward
    assert get_reward("math")(comps, ["4"] * 4) == [1.0, 1.0, 1.0, 0.0]
