"""Rebuild the peer-suite case files from local mirrors of the source repositories.

    python tests/data/peer_suites/build_cases.py --math-verify DIR --hendrycks DIR

Reads the test files at the pinned commits (``git show COMMIT:PATH``), takes only their labelled
(gold, prediction, expected[, options]) tuples as data via ``ast.literal_eval`` (no peer code is run or
copied) and writes ``raw_math_verify.jsonl`` / ``raw_hendrycks_math.jsonl``. The classification into
label-independent cases and cases listed apart (``classify.json``) is ours and is applied by
``apply_classification`` in the same script. The rllm cases are few and were transcribed by hand into
``rllm.jsonl``.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
MV_COMMIT = "5d148cfaaf99214c2e4ffb4bc497ab042c592a7a"
MATH_COMMIT = "985bdc1696e88e8643f081a0ff4719da39f2ae2a"
MV_FILES = ["tests/test_all.py", "tests/test_boxed.py", "tests/test_numina_cases.py",
            "tests/test_open_thoughts.py", "tests/test_strict.py", "tests/test_yujianll.py"]


def _show(repo: str, commit: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", repo, "show", f"{commit}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def _call_kwargs(fn: ast.FunctionDef) -> dict:
    """Literal keyword options of the grader call inside a test (match_types, precision, strict...)."""
    out: dict = {}
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("compare_strings", "verify"):
            for kw in node.keywords:
                try:
                    out[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    out[kw.arg] = ast.unparse(kw.value)
    return out


def math_verify_cases(repo: str) -> list[dict]:
    rows = []
    for path in MV_FILES:
        tree = ast.parse(_show(repo, MV_COMMIT, path))
        for fn in [n for n in tree.body if isinstance(n, ast.FunctionDef)]:
            for dec in fn.decorator_list:
                if not (isinstance(dec, ast.Call) and ast.unparse(dec.func).endswith("parametrize")):
                    continue
                names = [s.strip() for s in ast.literal_eval(dec.args[0]).split(",")]
                opts = _call_kwargs(fn)
                for k, el in enumerate(dec.args[1].elts):
                    try:
                        vals = ast.literal_eval(el)
                    except ValueError:  # f-strings computed at run time: skipped (listed in README)
                        continue
                    d = dict(zip(names, vals))
                    exp = d.get("expected", d.get("result"))
                    case_opts = dict(opts)
                    for key in ("precision", "strict", "allow_set_relation_comp"):
                        if key in d:
                            case_opts[key] = d[key]
                    rows.append({"suite": "math_verify", "source": f"{path}::{fn.name}[{k}]",
                                 "gold": d["gold"], "answer": d["pred"], "expected": bool(exp),
                                 "options": case_opts})
    return rows


def hendrycks_cases(repo: str) -> list[dict]:
    path = "modeling/math_equivalence_test.py"
    tree = ast.parse(_show(repo, MATH_COMMIT, path))
    rows = []
    for fn in ast.walk(tree):
        if not (isinstance(fn, ast.FunctionDef) and fn.name.startswith("test")):
            continue
        env, expected = {}, None
        for st in fn.body:
            if isinstance(st, ast.Assign):
                env[st.targets[0].id] = ast.literal_eval(st.value)
            elif isinstance(st, ast.Expr) and isinstance(st.value, ast.Call):
                expected = st.value.func.attr == "assertTrue"
        rows.append({"suite": "hendrycks_math", "source": f"{path}::{fn.name}",
                     "gold": env["test_in"], "answer": env["test_out"], "expected": expected, "options": {}})
    return rows


def apply_classification(rows: list[dict]) -> list[dict]:
    """Mark cases listed apart (label depends on a grader option / disagrees with our policy)."""
    with open(os.path.join(HERE, "classify.json"), encoding="utf-8") as f:
        apart = json.load(f)
    for r in rows:
        reason = apart.get(r["source"])
        r["label_independent"] = reason is None
        if reason is not None:
            r["reason"] = reason
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--math-verify", required=True, help="git dir of huggingface/Math-Verify")
    ap.add_argument("--hendrycks", required=True, help="git dir of hendrycks/math")
    a = ap.parse_args()
    for name, rows in (("math_verify", math_verify_cases(a.math_verify)),
                       ("hendrycks_math", hendrycks_cases(a.hendrycks))):
        rows = apply_classification(rows)
        with open(os.path.join(HERE, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(name, len(rows), "cases,", sum(not r["label_independent"] for r in rows), "apart")


if __name__ == "__main__":
    main()
