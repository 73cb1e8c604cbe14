"""Tasks: determinism, disjoint splits, correct solutions, charset, JSONL/HF loaders, errors."""
from __future__ import annotations

import json
import string
import sys
from pathlib import Path

import pytest

from rewards.arith import arith_reward
from rewards.countdown import countdown_reward, parse_expression
from zoo.data import CHARSET, JsonlTask, get_task, tokenizer_charset
from zoo.registry import TASKS, UnknownNameError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def arith():
    return get_task("arith")


@pytest.fixture(scope="module")
def countdown():
    return get_task("countdown")


# ------------------------------------------------------------------------------- synthetic
def test_registered_and_defaults(arith, countdown):
    for name in ("arith", "countdown", "jsonl", "hf", "gsm8k", "math500", "aime24", "aime25", "math", "dapo_math",
                 "deepscaler", "amc23", "minerva_math", "olympiadbench"):
        assert name in TASKS
    assert arith.reward == "arith" and countdown.reward == "countdown"


@pytest.mark.parametrize("name", ["arith", "countdown"])
def test_deterministic_and_prefix(name):
    a = get_task(name).problems("train", 300, seed=1)
    b = get_task(name).problems("train", 300, seed=1)  # fresh instance: no shared state needed
    assert a == b and len({p.id for p in a}) == 300
    assert get_task(name).problems("train", 50, seed=1) == a[:50]
    assert get_task(name).problems("train", 300, seed=2) != a
    assert get_task(name).problems("eval", 0) == []


def test_pinned_first_problems(arith, countdown):
    # Pins the sha256 split and the str-seeded shuffle: same output in every process.
    p = countdown.problems("train", 1)[0]
    assert (p.prompt, p.solution, p.answer) == ("Use 4 10 9 to make 3.\n", "\\boxed{4+9-10}",
                                                '{"numbers":[4,10,9],"target":3}')
    q = arith.problems("train", 1)[0]
    assert (q.prompt, q.solution, q.answer) == ("Compute 9*9-5-3.\n", "9*9=81 81-5=76 76-3=73 \\boxed{73}", "73")


def test_arith_splits_disjoint(arith):
    train = arith.problems("train", 4000)
    ev = arith.problems("eval", 2000)
    assert not {p.id for p in train} & {p.id for p in ev}
    assert all(arith.split_of(arith_key(p)) == "eval" for p in ev[:200])
    assert arith.size("train") + arith.size("eval") == 9 ** 3 * 9 + 9 ** 4 * 27


def arith_key(p):
    expr = p.meta["expression"]
    nums, ops, cur = [], [], ""
    for c in expr:
        if c.isdigit():
            cur += c
        else:
            nums.append(int(cur)), ops.append(c)
            cur = ""
    return tuple(nums + [int(cur)]), tuple(ops)


def test_countdown_splits_disjoint_by_multiset(countdown):
    train = countdown.problems("train", countdown.size("train"))
    ev = countdown.problems("eval", countdown.size("eval"))
    key = lambda p: (tuple(sorted(p.meta["numbers"])), p.meta["target"])  # noqa: E731
    assert not {key(p) for p in train} & {key(p) for p in ev}
    assert len(train) > 10_000 and len(ev) > 1_000


def test_too_many_is_clear_error(countdown):
    with pytest.raises(ValueError, match=r"eval split holds only \d+ problems"):
        countdown.problems("eval", countdown.size("eval") + 1)
    with pytest.raises(ValueError, match="unknown split"):
        countdown.problems("test", 1)
    with pytest.raises(ValueError, match="non-negative int"):
        countdown.problems("train", -1)


def test_arith_solutions_correct(arith):
    ps = arith.problems("train", 3000) + arith.problems("eval", 500)
    assert arith_reward([p.solution for p in ps], [p.answer for p in ps]) == [1.0] * len(ps)
    for p in ps:  # the value is right (checked with an independent parser) and every step is true
        value, _ = parse_expression(p.meta["expression"])
        assert value == int(p.answer)
        for step in p.solution.split()[:-1]:
            lhs, rhs = step.split("=")
            assert parse_expression(lhs)[0] == int(rhs)
        assert p.prompt == f"Compute {p.meta['expression']}.\n"


def test_arith_params_and_sampling_path():
    t = get_task("arith", min_ops=1, max_ops=1, min_operand=0, max_operand=3, ops="+")
    assert t.size("train") + t.size("eval") == 16
    big = get_task("arith", max_operand=99)  # ~2.6e9 expressions: rejection-sampled
    ps = big.problems("eval", 200, seed=3)
    assert ps == big.problems("eval", 200, seed=3)
    assert all(big.split_of(arith_key(p)) == "eval" for p in ps)
    assert arith_reward([p.solution for p in ps], [p.answer for p in ps]) == [1.0] * 200
    with pytest.raises(ValueError, match="ops"):
        get_task("arith", ops="+/")


def test_countdown_solutions_correct(countdown):
    ps = countdown.problems("train", 3000) + countdown.problems("eval", 500)
    assert countdown_reward([p.solution for p in ps], [p.answer for p in ps]) == [1.0] * len(ps)
    for p in ps:
        gold = json.loads(p.answer)
        assert gold == {"numbers": p.meta["numbers"], "target": p.meta["target"]}
        assert p.prompt == f"Use {' '.join(map(str, gold['numbers']))} to make {gold['target']}.\n"
        assert len(gold["numbers"]) == 3 and all(1 <= x <= 10 for x in gold["numbers"])
        assert 1 <= gold["target"] <= 100


@pytest.mark.parametrize("kw", [{"n_numbers": 4, "ops": "+-*/"}, {"n_numbers": 4, "max_number": 50, "ops": "+-*/"}])
def test_countdown_variants(kw):
    t = get_task("countdown", **kw)
    ps = t.problems("eval", 60) + t.problems("train", 60)
    assert countdown_reward([p.solution for p in ps], [p.answer for p in ps]) == [1.0] * len(ps)
    assert all(len(p.meta["numbers"]) == 4 for p in ps)


def test_charset_covers_everything(arith, countdown):
    assert tokenizer_charset() == CHARSET
    assert set(CHARSET) <= set(string.printable) and "\n" in CHARSET and "\t" not in CHARSET
    texts = []
    for t in (arith, countdown, get_task("countdown", n_numbers=4, ops="+-*/")):
        for p in t.problems("train", 300) + t.problems("eval", 100):
            texts += [p.prompt, p.solution]
    assert set("".join(texts)) <= set(CHARSET)
    for p in arith.problems("train", 2000) + countdown.problems("train", 2000):
        assert len(p.solution) <= 40


# ------------------------------------------------------------------------------------ files
def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_field_mapping(tmp_path):
    f = _write(tmp_path / "x.jsonl", [{"q": "1+1?", "a": "it is\n#### 1,234"}, "", {"q": "2+2?", "a": "#### -4"}])
    t = get_task("jsonl", path=str(f), prompt_field="q", answer_field="a", answer_pattern=r"####\s*(.+)$",
                 prompt_template="Q: {prompt}\nPut it in \\boxed{}.\n", strip_commas=True)
    ps = t.problems("eval", 0)
    assert [p.answer for p in ps] == ["1234", "-4"]
    assert ps[0].prompt == "Q: 1+1?\nPut it in \\boxed{}.\n"
    assert ps[1].meta["row"] == 3 and t.reward == "math"
    assert t.problems("eval", 1) == ps[:1] and t.problems("train", None) == ps and t.size("eval") == 2
    with pytest.raises(ValueError, match="holds only 2"):
        t.problems("eval", 3)
    g = _write(tmp_path / "train.jsonl", [{"problem": "p", "answer": 7}])
    t2 = JsonlTask(f, prompt_field="q", answer_field="a", train_path=g)
    with pytest.raises(ValueError, match="missing field 'q'.*answer, problem"):
        t2.problems("train", 0)
    t3 = JsonlTask(f, train_path=g)
    assert t3.problems("train", 0)[0].answer == "7"  # int answers are accepted


@pytest.mark.parametrize("row,match", [
    ('{"problem": "x", "answer": ', r"row 2: invalid JSON"),
    ({"problem": "x"}, r"row 2: missing field 'answer'; available fields: problem"),
    ({"problem": 3, "answer": "1"}, r"row 2: field 'problem' must be a string, got int; available fields: answer, problem"),
    ({"problem": "x", "answer": None}, r"row 2: field 'answer' must be a string"),
    ([1, 2], r"row 2: expected a JSON object"),
])
def test_jsonl_malformed_rows(tmp_path, row, match):
    f = _write(tmp_path / "bad.jsonl", [{"problem": "ok", "answer": "1"}, row])
    with pytest.raises(ValueError, match=match) as e:
        get_task("jsonl", path=f).problems("eval", 0)
    assert "bad.jsonl" in str(e.value)


def test_jsonl_pattern_mismatch_and_missing_file(tmp_path):
    f = _write(tmp_path / "g.jsonl", [{"question": "q", "answer": "no marker"}])
    with pytest.raises(ValueError, match=r"g.jsonl, row 1: field 'answer' does not match"):
        get_task("gsm8k", path=f).problems("eval", 0)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        get_task("jsonl", path=tmp_path / "nope.jsonl").problems("eval", 0)


@pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data not present at {DATA}")
def test_real_benchmark_files():
    gsm = get_task("gsm8k", path=DATA / "gsm8k_test.jsonl").problems("eval", 0)
    assert len(gsm) == 1319 and gsm[0].answer == "18" and gsm[0].prompt.startswith("Janet")
    assert all(p.answer.lstrip("-").isdigit() for p in gsm)  # commas stripped, "####" removed
    m5 = get_task("math500", path=DATA / "math500_test.jsonl").problems("eval", 0)
    assert len(m5) == 500 and m5[0].solution and m5[0].id.startswith("math500:test/")
    for name, n in (("aime24", 30), ("aime25", 30)):
        ps = get_task(name, path=DATA / f"{name}.jsonl").problems("eval", 10)
        assert len(ps) == 10 and all(p.answer and p.prompt.endswith("\n") for p in ps)
        assert get_task(name, path=DATA / f"{name}.jsonl").size("eval") == n


def test_hf_loader_local(tmp_path):
    pytest.importorskip("datasets", reason="optional dependency `datasets` not installed")
    f = _write(tmp_path / "d.jsonl", [{"question": "a?", "answer": "x\n#### 5"}, {"question": "b?", "answer": "#### 6"}])
    t = get_task("hf", name_or_path="json", data_files=str(f), split="train", prompt_field="question",
                 answer_pattern=r"####\s*(.+)$", cache_dir=str(tmp_path / "cache"))
    ps = t.problems("eval", 0)
    assert [(p.prompt, p.answer) for p in ps] == [("a?\n", "5"), ("b?\n", "6")]


def test_hf_without_datasets_is_clear(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match="optional package `datasets`"):
        get_task("hf", name_or_path="x").problems("eval", 0)


# ----------------------------------------------------------------------------------- errors
def test_unknown_task_and_params():
    with pytest.raises(UnknownNameError, match=r"did you mean 'countdown'.*arith.*countdown.*gsm8k"):
        get_task("countdwn")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) n_num; valid parameters: n_numbers"):
        get_task("countdown", n_num=3)
    with pytest.raises(ValueError, match="needs parameter"):
        get_task("jsonl")            # (gsm8k without a path now loads openai/gsm8k from the hub)
    with pytest.raises(ValueError, match="n_numbers"):
        get_task("countdown", n_numbers=9)


def test_countdown_worked_solutions_show_correct_steps():
    from rewards import get_reward
    from zoo.data import expression_steps

    assert expression_steps("(10-5)*9") == ["10-5=5", "5*9=45"]
    assert expression_steps("5+2*6") == ["2*6=12", "5+12=17"]
    task = get_task("countdown", worked=True)
    probs = task.problems("train", 300, 0)
    assert get_reward("countdown")([p.solution for p in probs], [p.answer for p in probs]) == [1.0] * 300
    for p in probs:
        steps = p.solution.split(" \\boxed")[0].split(" ")
        assert steps[-1].endswith(f"={p.meta['target']}")  # the last step reaches the target
    # same problems (and split) as the unworked task, only the solution text differs
    plain = get_task("countdown").problems("train", 300, 0)
    assert [p.prompt for p in plain] == [p.prompt for p in probs]
