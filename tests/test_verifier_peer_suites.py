"""Other projects' labelled verifier cases (tests/data/peer_suites): accuracy >= 0.97, no false accept.

Only cases whose label does not depend on a grader-specific option are scored; the others carry
``label_independent: false`` and the reason (tests/data/peer_suites/README.md lists them).
"""
from __future__ import annotations

import glob
import json
import os
import time

import pytest

from rewards import math as vm
from rewards.math import is_equivalent

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "peer_suites")
SUITES = ("math_verify", "hendrycks_math", "rllm")
HANG_GUARD_S = 6.0


def load() -> list[dict]:
    rows = []
    for p in sorted(glob.glob(os.path.join(HERE, "*.jsonl"))):
        with open(p, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def score(c: dict) -> bool:
    golds = c["gold"] if isinstance(c["gold"], list) else [c["gold"]]
    fm = c.get("options", {}).get("formats", "auto")
    return any(is_equivalent(c["answer"], g, formats=fm) for g in golds)


@pytest.fixture(scope="module")
def results():
    vm.warmup(1)
    out = []
    for c in load():
        t0 = time.monotonic()
        got = score(c)
        out.append((c, got, time.monotonic() - t0))
    return out


def test_files_and_attribution():
    rows = load()
    assert {r["suite"] for r in rows} == set(SUITES)
    readme = open(os.path.join(HERE, "README.md"), encoding="utf-8").read()
    for r in rows:
        assert isinstance(r["expected"], bool) and r["source"]
        assert r["label_independent"] or r.get("reason"), r["source"]
    for repo in ("huggingface/Math-Verify", "hendrycks/math", "rllm"):
        assert repo in readme
    assert "licen" in readme.lower()


@pytest.mark.parametrize("suite", SUITES)
def test_suite_accuracy_and_no_false_accept(results, suite):
    mine = [(c, got) for c, got, _ in results if c["suite"] == suite and c["label_independent"]]
    assert len(mine) >= 10
    wrong = [(c["source"], c["expected"]) for c, got in mine if got != c["expected"]]
    false_accepts = [c["source"] for c, got in mine if got and not c["expected"]]
    assert not false_accepts, false_accepts
    assert 1 - len(wrong) / len(mine) >= 0.97, wrong


def test_overall_and_time(results):
    core = [(c, got) for c, got, _ in results if c["label_independent"]]
    acc = sum(got == c["expected"] for c, got in core) / len(core)
    assert acc >= 0.97
    assert max(dt for _, _, dt in results) < HANG_GUARD_S
