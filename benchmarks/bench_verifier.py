"""Accuracy and speed of rewards.math against math-verify, on the labelled corpus, in one run.

    python benchmarks/bench_verifier.py                      # peer suites + held-out completions + corpus
    python benchmarks/bench_verifier.py --peers-only         # only the peer suites and the held-out set
    python benchmarks/bench_verifier.py --data DIR           # + MATH-500/GSM8K self-equivalence
    python benchmarks/bench_verifier.py --box-answers  # also math-verify with bare answers boxed

Prints, per category and overall, accuracy and throughput (cases/s) of both verifiers, the ratio of
their throughputs measured in this run, our max per-call latency against the budget, and on the
MATH-500 / GSM8K test files in `--data DIR` (`math500_test.jsonl` in the HuggingFaceH4/MATH-500
format, `gsm8k_test.jsonl` in openai/gsm8k's) the rate at which each gold answer is judged
equivalent to itself written inside \\boxed{}.

math-verify is used as its authors recommend: a bare gold is wrapped in \\boxed{} before parse(),
then verify(parse(gold), parse(answer)). Without it installed (pip install math-verify, the
``bench`` extra), only our verifier runs.

Peer suites (tests/data/peer_suites: math-verify's, MATH's and rllm's own labelled tests): per suite,
accuracy and false accepts of both verifiers on the label-independent cases, the cases listed apart
separately, and for math-verify's suite also math-verify run with each test's own options. The
held-out completions (tests/data/heldout_completions.jsonl, written after the verifier was frozen)
are scored the same way.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from rewards.math import clear_cache, is_equivalent, verify_batch, warmup  # noqa: E402

CORPUS = os.path.join(ROOT, "tests", "data", "math_verifier_cases.jsonl")


# Labels of the original corpus that the extraction policy of issue 14 changes on purpose (the same
# override as tests/test_math_verifier.py): an "Answer:" line is a marked answer and "x = 5" names 5.
POLICY_CHANGES = {("Answer: \\(x = 5\\)", "5"): True}


def load_corpus(path: str = CORPUS) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for r in rows:
        if isinstance(r.get("gold"), str):
            r["expected"] = POLICY_CHANGES.get((r["answer"], r["gold"]), r["expected"])
    return rows


def real_golds(data: str | None) -> dict[str, list[str]]:
    """Gold answers of MATH-500 and GSM8K from the files found in `data` ({} without it)."""
    out: dict[str, list[str]] = {}
    if not data:
        return out
    p = os.path.join(data, "math500_test.jsonl")
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            out["MATH-500"] = [json.loads(line)["answer"] for line in f if line.strip()]
    p = os.path.join(data, "gsm8k_test.jsonl")
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            out["GSM8K"] = [json.loads(line)["answer"].split("#### ")[-1].strip() for line in f if line.strip()]
    return out


def _bare(s: str) -> bool:
    return "\\boxed" not in s and "$" not in s


def math_verify_fn(box_answer: bool = False) -> Callable[[str, str], bool] | None:
    """math-verify as recommended (bare gold wrapped in \\boxed{}); box_answer also wraps a bare answer."""
    try:
        import logging

        from math_verify import parse, verify
        logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    except Exception:
        return None

    def mv(answer: str, gold: str) -> bool:
        try:
            g = "\\boxed{" + gold + "}" if _bare(gold) else gold
            a = "\\boxed{" + answer + "}" if box_answer and _bare(answer) and len(answer) < 300 else answer
            return bool(verify(parse(g), parse(a)))
        except BaseException:  # noqa: BLE001 - count any failure as "not equivalent"
            return False

    return mv


def run_cases(fn: Callable[[str, str], bool], cases: list[dict]) -> tuple[list[bool], list[float]]:
    results, times = [], []
    for c in cases:
        t0 = time.perf_counter()
        results.append(fn(c["answer"], c["gold"]))
        times.append(time.perf_counter() - t0)
    return results, times


def report(cases: list[dict], name_results: dict[str, tuple[list[bool], list[float]]]) -> None:
    cats = sorted({c["category"] for c in cases})
    names = list(name_results)
    head = f"{'category':<14}{'n':>5}" + "".join(f"{n + ' acc':>18}{n + ' c/s':>18}" for n in names)
    print(head)
    print("-" * len(head))
    for cat in cats + ["OVERALL"]:
        idx = [i for i, c in enumerate(cases) if cat == "OVERALL" or c["category"] == cat]
        row = f"{cat:<14}{len(idx):>5}"
        for n in names:
            res, ts = name_results[n]
            acc = sum(res[i] == cases[i]["expected"] for i in idx) / len(idx)
            tput = len(idx) / max(1e-9, sum(ts[i] for i in idx))
            row += f"{acc:>18.3f}{tput:>18.0f}"
        print(row)


PEERS = os.path.join(ROOT, "tests", "data", "peer_suites")
HELDOUT = os.path.join(ROOT, "tests", "data", "heldout_completions.jsonl")


def load_peers() -> list[dict]:
    import glob

    rows: list[dict] = []
    for p in sorted(glob.glob(os.path.join(PEERS, "*.jsonl"))):
        rows += load_corpus(p)
    return rows


def _golds(c: dict) -> list:
    return c["gold"] if isinstance(c["gold"], list) else [c["gold"]]


def ours_case(c: dict, timeout: float) -> bool:
    fm = c.get("options", {}).get("formats", "auto")
    return any(is_equivalent(c["answer"], g, timeout=timeout, formats=fm) for g in _golds(c))


def mv_case(mv: Callable[[str, str], bool], c: dict) -> bool:
    return any(isinstance(g, str) and mv(c["answer"], g) for g in _golds(c))


def mv_own_options(c: dict) -> bool:
    """math-verify exactly as its own test ran the case (its compare_strings helper's options)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    o = c.get("options", {})
    targets = []
    for t in o.get("match_types", ["latex", "expr"]):
        targets.append(LatexExtractionConfig(boxed_match_priority=0) if t == "latex" else ExprExtractionConfig())
    try:
        if "match_types" not in o and "precision" not in o:  # test_yujianll: parse/verify defaults
            return bool(verify(parse(c["gold"]), parse(c["answer"])))
        return bool(verify(parse(c["gold"], targets), parse(c["answer"], targets), float_rounding=o.get("precision", 6),
                           strict=o.get("strict", True), allow_set_relation_comp=o.get("allow_set_relation_comp", False)))
    except BaseException:  # noqa: BLE001
        return False


def timed(fn: Callable[[dict], bool], cases: list[dict]) -> tuple[list[bool], list[float]]:
    res, ts = [], []
    for c in cases:
        t0 = time.perf_counter()
        res.append(fn(c))
        ts.append(time.perf_counter() - t0)
    return res, ts


def peer_report(cases: list[dict], timeout: float, title: str, by: str = "suite") -> dict:
    """Per group: n, accuracy and false accepts of ours and math-verify (and mv with own options)."""
    clear_cache()
    ours, ours_t = timed(lambda c: ours_case(c, timeout), cases)
    mv = math_verify_fn()
    cols = {"ours": ours}
    mv_t: list[float] = []
    if mv is not None:
        cols["math-verify"], mv_t = timed(lambda c: mv_case(mv, c), cases)
        if by == "suite":
            cols["mv own opts"] = [mv_own_options(c) if c["suite"] == "math_verify" else None for c in cases]
    print(f"\n{title}")
    head = f"{'group':<26}{'n':>5}" + "".join(f"{k + ' acc':>18}{'FA':>4}" for k in cols)
    print(head)
    print("-" * len(head))
    groups = sorted({(c[by], c.get("label_independent", True)) for c in cases}, key=lambda x: (not x[1], x[0]))
    summary = {}
    for g, indep in groups + [("ALL label-independent", True)]:
        idx = [i for i, c in enumerate(cases) if c.get("label_independent", True) == indep
               and (g == "ALL label-independent" or c[by] == g)]
        name = g if indep else f"{g} (apart)"
        row = f"{name:<26}{len(idx):>5}"
        for k, res in cols.items():
            sub = [i for i in idx if res[i] is not None]
            if not sub:
                row += f"{'-':>18}{'':>4}"
                continue
            acc = sum(res[i] == cases[i]["expected"] for i in sub) / len(sub)
            fa = sum(bool(res[i]) and not cases[i]["expected"] for i in sub)
            row += f"{acc:>18.3f}{fa:>4}"
            summary[(name, k)] = (acc, fa, len(sub))
        print(row)
    print(f"ours: max latency {max(ours_t) * 1000:.1f} ms (budget {timeout * 1000:.0f} ms), calls past budget: "
          f"{sum(t > timeout for t in ours_t)}; {len(cases) / sum(ours_t):.0f} cases/s"
          + (f"; math-verify {len(cases) / sum(mv_t):.0f} cases/s, ratio {sum(mv_t) / sum(ours_t):.1f}x" if mv_t else ""))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="folder with math500_test.jsonl / gsm8k_test.jsonl for the self-equivalence check")
    ap.add_argument("--box-answers", action="store_true",
                    help="also run math-verify with short bare answers wrapped in \\boxed{} (kinder to it)")
    ap.add_argument("--timeout", type=float, default=1.0, help="our per-call budget in seconds")
    ap.add_argument("--peers-only", action="store_true", help="only the peer suites and the held-out completions")
    args = ap.parse_args()

    t0 = time.perf_counter()
    warmup(2)
    print(f"worker start (one-off, not counted): {time.perf_counter() - t0:.2f} s")
    peer_report(load_peers(), args.timeout, "peer suites (tests/data/peer_suites), FA = false accepts")
    if os.path.exists(HELDOUT):
        peer_report(load_corpus(HELDOUT), args.timeout, "held-out completions (tests/data/heldout_completions.jsonl)",
                    by="kind")
    if args.peers_only:
        return

    cases = load_corpus()
    print(f"corpus: {len(cases)} cases from {os.path.relpath(CORPUS, ROOT)}")
    t0 = time.perf_counter()
    warmup(2)
    print(f"worker start (one-off, not counted): {time.perf_counter() - t0:.2f} s")

    clear_cache()
    ours = run_cases(lambda a, g: is_equivalent(a, g, timeout=args.timeout), cases)
    results = {"ours": ours}
    mv = math_verify_fn()
    if mv is None:
        print("math-verify is not installed (pip install math-verify): running ours alone")
    else:
        results["math-verify"] = run_cases(mv, cases)
        if args.box_answers:
            results["mv-boxed-ans"] = run_cases(math_verify_fn(box_answer=True), cases)
    print()
    report(cases, results)

    ours_t = sum(ours[1])
    print()
    print(f"ours: {len(cases) / ours_t:.0f} cases/s one call at a time (cold cache); "
          f"max latency {max(ours[1]) * 1000:.1f} ms, budget {args.timeout * 1000:.0f} ms, "
          f"calls past budget: {sum(t > args.timeout for t in ours[1])}")
    clear_cache()
    t0 = time.perf_counter()
    verify_batch([c["answer"] for c in cases], [c["gold"] for c in cases], timeout=args.timeout)
    tb = time.perf_counter() - t0
    print(f"ours, verify_batch over the corpus (cold cache): {len(cases) / tb:.0f} cases/s")
    t0 = time.perf_counter()
    verify_batch([c["answer"] for c in cases], [c["gold"] for c in cases], timeout=args.timeout)
    print(f"ours, verify_batch again (warm cache): {len(cases) / (time.perf_counter() - t0):.0f} cases/s")
    if mv is not None:
        mv_t = sum(results["math-verify"][1])
        print(f"math-verify: {len(cases) / mv_t:.0f} cases/s; max latency {max(results['math-verify'][1]) * 1000:.1f} ms")
        print(f"throughput ratio ours / math-verify (same run, one call at a time): {mv_t / ours_t:.1f}x")
        wrong = [(c["category"], c["answer"][:60], c["gold"][:40], c["expected"])
                 for c, r in zip(cases, results["math-verify"][0]) if r != c["expected"]]
        print(f"math-verify disagrees with the labels on {len(wrong)} cases")
        if "mv-boxed-ans" in results:
            t = sum(results["mv-boxed-ans"][1])
            print(f"mv-boxed-ans (bare answers also boxed): {len(cases) / t:.0f} cases/s; ratio ours / it {t / ours_t:.1f}x")

    golds = real_golds(args.data)
    if not golds:
        print("\nno --data folder with math500_test.jsonl / gsm8k_test.jsonl: self-equivalence skipped")
        return
    print("\nself-equivalence: is_equivalent('The answer is \\boxed{' + gold + '}', gold)")
    for name, gs in golds.items():
        rows = [{"category": name, "answer": "The answer is \\boxed{" + g + "}", "gold": g, "expected": True} for g in gs]
        clear_cache()
        res, ts = run_cases(lambda a, g: is_equivalent(a, g, timeout=args.timeout), rows)
        fails = [r["gold"] for r, ok in zip(rows, res) if not ok]
        line = f"{name:<9} n={len(gs)}  ours {sum(res) / len(gs):.4f} ({len(gs) / sum(ts):.0f}/s, max {max(ts) * 1000:.0f} ms)"
        if mv is not None:
            mres, mts = run_cases(mv, rows)
            line += f"  math-verify {sum(mres) / len(gs):.4f} ({len(gs) / sum(mts):.0f}/s)"
        print(line)
        if fails:
            print(f"  ours fails on: {fails[:20]}")


if __name__ == "__main__":
    main()
