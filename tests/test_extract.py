"""The extraction policy (rewards.extract): named formats, the final answer statement, hedges, bounds."""
from __future__ import annotations

import dataclasses
import time

import pytest

from rewards.extract import FORMATS, Extraction, extract_final, has_answer_in_format

HANG_GUARD_S = 6.0


def test_contract_names():
    for f in ("boxed", "answer_line", "minerva", "gsm8k", "think", "the_answer_is", "auto"):
        assert f in FORMATS
    e = extract_final("\\boxed{1}")
    assert isinstance(e, Extraction) and dataclasses.is_dataclass(e)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.text = "2"  # type: ignore[misc]


@pytest.mark.parametrize("text,fmt,answer", [
    ("so \\boxed{\\frac{1}{2}}.", "boxed", "\\frac{1}{2}"),
    ("Reasoning...\nAnswer: 42", "answer_line", "42"),
    ("Reasoning...\n**Answer:** $x = 3$", "answer_line", "x = 3"),
    ("Reasoning...\n**Final Answer**: 7 apples", "answer_line", "7 apples"),
    ("Final answer: 12", "answer_line", "12"),
    ("### Final Answer\n\n$\\frac{3}{4}$", "answer_line", "\\frac{3}{4}"),
    ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "minerva", "\\frac{3}{4}"),
    ("Final Answer: The final answer is $2.5$. I hope it is correct.", "minerva", "2.5"),
    ("She pays 3 + 4 = 7.\n#### 7", "gsm8k", "7"),
    ("So the answer is 12. Let me double-check: yes.", "the_answer_is", "12"),
    ("The answer is $x = 2.5$.", "the_answer_is", "x = 2.5"),
])
def test_each_format(text, fmt, answer):
    e = extract_final(text, fmt)
    assert e is not None and e.text == answer and e.format == fmt
    assert extract_final(text).text == answer  # auto finds it too
    assert has_answer_in_format(text, fmt)


def test_a_format_can_be_required():
    assert extract_final("Answer: 12", ("boxed",)) is None
    assert not has_answer_in_format("Answer: 12", "boxed")
    assert extract_final("\\boxed{12}", ("answer_line",)) is None
    assert extract_final("Answer: 12", ("boxed", "answer_line")).text == "12"


def test_think_reads_only_after_the_last_close_tag():
    text = "<think>maybe \\boxed{3}</think> The answer is \\boxed{4}."
    assert extract_final(text, ("think", "boxed")).text == "4"
    assert extract_final(text).text == "4"  # auto also ignores the reasoning
    assert extract_final("<think>so \\boxed{3}</think> I am not sure.", ("think", "boxed")) is None
    assert extract_final("\\boxed{3}", "think") is None  # no </think>: no answer in that format
    assert has_answer_in_format("<think>..</think> \\boxed{2}", "think")
    assert not has_answer_in_format("\\boxed{2}", "think")


def test_final_statement_is_the_last_one():
    assert extract_final("first I get \\boxed{3} ... wait, that is wrong ... \\boxed{5}").text == "5"
    assert extract_final("\\boxed{3}\nHmm, no.\nAnswer: 5").text == "5"
    assert extract_final("Answer: 3\nWait, recheck... so \\boxed{5}").text == "5"
    assert extract_final("\\boxed{5}. Let me verify the answer is correct.").text == "5"


def test_parts_and_hedges():
    e = extract_final("The roots are \\boxed{1}, \\boxed{2}, \\boxed{3}.")
    assert e.parts == ("1", "2", "3") and not e.hedge
    e = extract_final("so x = \\boxed{3} or x = \\boxed{4}")
    assert e.parts == ("3", "4") and e.hedge
    e = extract_final("either $\\boxed{3}$ or $\\boxed{4}$")
    assert e.hedge
    e = extract_final("\\boxed{3 \\text{ or } 4}")
    assert e.parts == ("3", "4") and e.hedge
    e = extract_final("Answer: 3 or 4")
    assert e.hedge
    assert not extract_final("\\boxed{(3, 4)}").hedge


@pytest.mark.parametrize("text", [
    "the probability is 2/3.", "the ordered pair is (7, 6).", "we get 5-3", "so it is 2^5", "the point (1, 2)",
    "I do not know.", "",
])
def test_fallback_never_cuts_a_number_out(text):
    e = extract_final(text)
    assert e is None or e.text not in ("3", "6", "5", "2")


def test_fallbacks():
    assert extract_final("We got 12 then 15 and finally 18 dollars").text == "18"
    assert extract_final("the probability is 2/3.").text == "2/3"
    assert extract_final("Therefore $x \\geq 5$ is the solution.").text == "x \\geq 5"
    assert extract_final("\\frac{3}{4}").text == "\\frac{3}{4}"
    assert extract_final("total is 50%.").text == "50%"


@pytest.mark.parametrize("junk", [None, 1, b"x", ["\\boxed{1}"], "\x00\\boxed{1}"])
def test_never_raises(junk):
    extract_final(junk)  # type: ignore[arg-type]
    assert extract_final("\\boxed{1}", formats="nonsense") is None
    assert extract_final("\\boxed{1}", formats=None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("text", [
    "\\boxed{" * 50_000, "Answer: " * 50_000, "$" * 200_000, "\\boxed{1} or " * 20_000,
    "Final answer is " * 20_000 + "I hope it is correct", "1/" * 100_000, "(" * 100_000 + "1",
    "x" * 1_000_000 + "\\boxed{1}", "$$a" * 30_000, "\\[a" * 30_000, "\\(a" * 30_000, "$a\n" * 30_000,
    "the answer is " * 30_000, "#### " * 30_000, "\n".join(["Answer: 1"] * 30_000), "I hope it is correct. " * 20_000,
])
def test_bounded_time(text):
    t0 = time.monotonic()
    extract_final(text)
    assert time.monotonic() - t0 < HANG_GUARD_S
