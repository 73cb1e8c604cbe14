"""Tests of rewards.math: the labelled corpus, extraction, budget, safety, batch API, reward."""
from __future__ import annotations

import json
import os
import re
import time

import pytest

# A hang guard, not a speed claim: generous so a loaded CI machine never flakes, yet far below
# what an unbounded parse (9^9^9^9, a 1 MB string) would take.
HANG_GUARD_S = 6.0

from rewards import math as vm
from rewards.math import extract_answer, is_equivalent, verify_batch
from rewards.math_norm import last_boxed_linear

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "data", "math_verifier_cases.jsonl")
DATA = os.path.join(ROOT, "..", "shared", "data")
CATEGORIES = {
    "integers", "fractions", "percent", "radicals_pi", "algebraic", "equations", "intervals", "sets",
    "tuples", "multi_answer", "text_units", "scientific", "matrices", "extraction", "adversarial",
}


def _load() -> list[dict]:
    with open(CORPUS, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


CASES = _load()
# Labels of the original corpus that the explicit extraction policy (rewards.extract, issue 14) changes on
# purpose: an "Answer:" line is a marked answer and "x = 5" names the value 5.
POLICY_CHANGES = {("Answer: \\(x = 5\\)", "5"): True}
for _c in CASES:
    _c["expected"] = POLICY_CHANGES.get((_c["answer"], _c["gold"]), _c["expected"])


@pytest.fixture(scope="module", autouse=True)
def _workers():
    vm.warmup(1)
    yield


def test_corpus_shape():
    assert len(CASES) >= 300
    for c in CASES:
        assert set(c) == {"category", "answer", "gold", "expected"}
        assert isinstance(c["expected"], bool)
    cats = {c["category"] for c in CASES}
    assert CATEGORIES <= cats
    for cat in cats - {"adversarial"}:
        labels = {c["expected"] for c in CASES if c["category"] == cat}
        assert labels == {True, False}, f"{cat} needs true and false cases"


@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{c['category']}" for i, c in enumerate(CASES)])
def test_corpus_case(case):
    t0 = time.monotonic()
    got = is_equivalent(case["answer"], case["gold"])
    assert time.monotonic() - t0 < HANG_GUARD_S
    assert got is case["expected"], (case["answer"][:200], case["gold"][:200])


def test_batch_matches_single_calls():
    sub = CASES[::3]
    got = verify_batch([c["answer"] for c in sub], [c["gold"] for c in sub])
    assert got == [c["expected"] for c in sub]


# ------------------------------------------------------------------ extraction
@pytest.mark.parametrize("text,expected", [
    ("so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("\\boxed{1} then \\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"),
    ("\\fbox{7}", "7"),
    ("\\boxed{3} and an unclosed \\boxed{4", "3"),
    ("The final answer is $x = 5$.", "x = 5"),
    ("Therefore the answer is: 12 apples", "12 apples"),
    ("She pays 3 + 4 = 7.\n#### 7", "7"),
    ("We got 12 then 15 and finally 18 dollars", "18"),
    ("\\frac{3}{4}", "\\frac{3}{4}"),
    ("I do not know.", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_is_linear_on_many_unclosed_boxes():
    text = "\\boxed{" * 20000 + "1"
    t0 = time.monotonic()
    assert last_boxed_linear(text) is None
    assert time.monotonic() - t0 < HANG_GUARD_S


# ------------------------------------------------------------------ budget and safety
HOSTILE = [
    "9^{9^{9^9}}", "10^{10^{10}}", "(10^9)!", "\\boxed{(10^9)!}", "{" * 5000 + "1" + "}" * 5000,
    "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}", "1" * 1_000_000, "\\boxed{" + "x+" * 200_000 + "1}",
    "__import__('os').system('rm -rf /')", "\\boxed{__import__('os').system('rm -rf /')}",
    "\x00\\boxed{1}", "\\boxed{1\x00}", "\\frac{1}{", "\\sqrt{", "\\begin{pmatrix} 1 & 2", "}}}{{{",
    "\\boxed{" + "\\sqrt{" * 3000 + "2" + "}" * 3000 + "}", "\\boxed{" + "(" * 3000 + "1" + ")" * 3000 + "}",
    "\\boxed{2^{2^{2^{2^{2^{2}}}}}}", "\\boxed{x^{10^{9}}}", "\\boxed{\\binom{10^{9}}{5000}}",
    "a" * 1_000_000 + "\\boxed{", "\\boxed{" * 100_000,
]


@pytest.mark.parametrize("text", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_hostile_inputs_false_within_budget(text):
    for answer, gold in ((text, "1"), ("\\boxed{1}", text)):
        t0 = time.monotonic()
        assert is_equivalent(answer, gold, timeout=1.0) is False
        assert time.monotonic() - t0 < HANG_GUARD_S


def test_long_completion_with_answer_at_the_end():
    assert is_equivalent("x" * 1_000_000 + " so \\boxed{1}", "1") is True


@pytest.mark.parametrize("answer,gold", [
    (None, "1"), ("1", None), (1, 1), (b"1", "1"), ([], "1"), ("1", ["1"]), (float("nan"), "1"),
])
def test_never_raises_on_junk_types(answer, gold):
    assert is_equivalent(answer, gold) is False  # type: ignore[arg-type]


def test_batch_tolerates_junk_and_length_mismatch():
    assert verify_batch(["\\boxed{1}", None, "2"], ["1", "1"]) == [True, False]  # type: ignore[list-item]
    assert verify_batch([], []) == []
    assert verify_batch(None, None) == []  # type: ignore[arg-type]


def test_a_stalled_case_is_killed_and_the_pool_recovers(monkeypatch):
    """A worker that stalls (simulated: it sleeps 30 s per case) is killed at the budget."""
    monkeypatch.setenv("REWARDS_MATH_TEST_DELAY", "30")
    pool = vm._Pool(2)
    try:
        pool.ensure(2)
        monkeypatch.delenv("REWARDS_MATH_TEST_DELAY")
        jobs = [("\\cot x", "\\frac{\\cos x}{\\sin x}"), ("x^2-1", "(x-1)(x+1)")]
        t0 = time.monotonic()
        assert pool.run(jobs, [0.3, 0.3]) == [False, False]
        assert time.monotonic() - t0 < HANG_GUARD_S
        assert pool.run(jobs, [5.0, 5.0]) == [True, True]  # replacements are healthy
    finally:
        pool.close()


def test_batch_one_slow_case_does_not_block_the_others():
    vm.clear_cache()
    answers = ["\\boxed{2\\sqrt{2}}", "\\boxed{x^2-1}", "\\boxed{(1,2]}"] * 3
    golds = ["\\sqrt{8}", "(x-1)(x+1)", "(1,2]"] * 3
    t0 = time.monotonic()
    assert verify_batch(answers, golds) == [True] * 9
    assert time.monotonic() - t0 < HANG_GUARD_S


def test_cache_makes_repeats_cheap():
    vm.clear_cache()
    a, g = "\\boxed{\\frac{\\sqrt{3}}{3}}", "\\frac{1}{\\sqrt{3}}"
    assert is_equivalent(a, g) is True
    t0 = time.monotonic()
    for _ in range(200):
        assert is_equivalent(a, g) is True
    assert time.monotonic() - t0 < HANG_GUARD_S


# ------------------------------------------------------------------ registry
def test_math_reward_registered():
    from rewards import registry

    fn = registry._REWARDS.get("math")
    assert fn is vm.math_reward
    assert "math" in registry._DESCRIPTIONS and registry._DESCRIPTIONS["math"]
    try:
        wrapped = registry.get_reward("math")
        assert isinstance(wrapped, registry.SafeReward) and wrapped.__wrapped__ is vm.math_reward
    except ModuleNotFoundError as e:  # a sibling builtin reward module is not written yet
        assert "rewards." in str(e)
    out = fn(["so \\boxed{42}", "\\boxed{41}", "no answer"], ["42", "42", "42"])
    assert out == [1.0, 0.0, 0.0]
    assert all(isinstance(x, float) for x in out)


# ------------------------------------------------------------------ no code execution in rewards/
def test_no_dynamic_code_in_rewards():
    pattern = re.compile(r"\b(eval|exec|sympify|parse_expr|parse_latex)\(")
    rdir = os.path.join(ROOT, "rewards")
    for name in os.listdir(rdir):
        if name.startswith("math") and name.endswith(".py"):
            with open(os.path.join(rdir, name), encoding="utf-8") as f:
                assert not pattern.search(f.read()), name


# ------------------------------------------------------------------ real benchmark files
def _real_golds() -> dict[str, list[str]]:
    out = {}
    p = os.path.join(DATA, "math500_test.jsonl")
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            out["math500"] = [json.loads(line)["answer"] for line in f if line.strip()]
    p = os.path.join(DATA, "gsm8k_test.jsonl")
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            out["gsm8k"] = [json.loads(line)["answer"].split("#### ")[-1].strip() for line in f if line.strip()]
    return out


@pytest.mark.parametrize("name", ["math500", "gsm8k"])
def test_real_gold_answers_equal_themselves_boxed(name):
    golds = _real_golds().get(name)
    if golds is None:
        pytest.skip(f"{name}: ../shared/data is absent (benchmark files are not part of the repository)")
    got = verify_batch(["The answer is \\boxed{" + g + "}" for g in golds], golds)
    fails = [g for g, ok in zip(golds, got) if not ok]
    assert not fails, fails[:20]
