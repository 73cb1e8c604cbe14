"""Named datasets (zoo.tasks_datasets) from small local fixtures in each dataset's real column layout,
the hub ids they ask `datasets` for, and the train/eval leakage refusal (no network anywhere)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from zoo.config import ConfigError
from zoo.data import DATASETS, check_eval_overlap, eval_overlap, get_task
from zoo.types import Problem

datasets = pytest.importorskip("datasets", reason="optional dependency `datasets` not installed")

DAPO_Q = ("Solve the following math problem step by step. The last line of your response should be of the form "
          "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{q}\n\n"
          'Remember to put your answer on its own line after "Answer:".')


def _dapo(q, gt, idx):
    return {"data_source": "math_dapo", "prompt": [{"content": DAPO_Q.format(q=q), "role": "user"}],
            "ability": "MATH", "reward_model": {"ground_truth": gt, "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": idx}}


def _oly(i, q, ans, ctx=None):
    return {"id": i, "question": q, "solution": ["..."], "final_answer": ans, "context": ctx, "image_1": None,
            "modality": "Text-only", "difficulty": "Competition", "is_multiple_answer": len(ans) > 1,
            "unit": None, "answer_type": "Numerical", "error": None, "question_type": "Open-ended",
            "subfield": "Algebra", "subject": "Math", "language": "English"}


MATH_ROW = {"problem": "What is $1+1$?", "level": "Level 2", "type": "Algebra",
            "solution": "We add: $1+1=\\boxed{2}$."}
# name -> {relative file: rows}, each file placed where the hub repository keeps it
FIXTURES = {
    "math": {**{f"{s}/train-00000-of-00001.parquet": [{**MATH_ROW, "problem": f"{s} train?"}]
                for s in ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                          "number_theory", "prealgebra", "precalculus")},
             **{f"{s}/test-00000-of-00001.parquet": [{**MATH_ROW, "problem": f"{s} test?", "level": "Level 5",
                                                      "solution": "So $\\boxed{\\frac{1}{2}}$."}]
                for s in ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                          "number_theory", "prealgebra", "precalculus")}},
    "gsm8k": {"main/train-00000-of-00001.parquet": [{"question": "Tom has 2 apples...", "answer": "2+3=5\n#### 1,005"}],
              "main/test-00000-of-00001.parquet": [{"question": "Janet's ducks lay 16 eggs...",
                                                    "answer": "16-3-4=9\n9*2=18\n#### 18"}]},
    "dapo_math": {"data/dapo-math-17k.parquet": [_dapo("Find $x$ if $x+1=3$.", "2", "a1"), _dapo("Again?", "7", "b2"),
                                                 _dapo("Find $x$ if $x+1=3$.", "2", "a1")]},
    "deepscaler": {"deepscaler.json": [{"problem": "Compute $2^3$.", "answer": "8", "solution": "8"},
                                       {"problem": "No gold here.", "answer": "", "solution": ""}]},
    "math500": {"test.jsonl": [{"problem": "Convert $(0,3)$ to polar.", "solution": "... \\boxed{(3,\\frac{\\pi}{2})}",
                                "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus",
                                "level": 2, "unique_id": "test/precalculus/807.json"},
                               {"problem": "Hard one.", "solution": "...", "answer": "5", "subject": "Algebra",
                                "level": 5, "unique_id": "test/algebra/1.json"}]},
    "aime24": {"data/train-00000-of-00001.parquet": [{"id": 60, "problem": "Every morning Aya...", "solution": "...",
                                                      "answer": "204", "url": "https://aops", "year": "2024"}]},
    "aime25": {"aime2025-I.jsonl": [{"question": "Find the sum of all integer bases $b>9$...", "answer": "70"}],
               "aime2025-II.jsonl": [{"question": "Six points lie on a line...", "answer": "468"}],
               "README.md": "---\nconfigs:\n- config_name: AIME2025-I\n  data_files:\n  - split: test\n    path: "
                            "aime2025-I.jsonl\n- config_name: AIME2025-II\n  data_files:\n  - split: test\n    path: "
                            "aime2025-II.jsonl\n---\n# AIME 2025\n"},
    "amc23": {"test-00000-of-00001.parquet": [{"id": 0, "question": "How many miles from City A...", "answer": 27.0,
                                               "url": "https://aops/2023_AMC_12A_Problems/Problem_1"}]},
    "minerva_math": {"test.jsonl": [{"question": "Each of the two Magellan telescopes...", "answer": "1.6"}]},
    "olympiadbench": {"OE_TO_maths_en_COMP/train-00000-of-00001.parquet": [
        _oly(1606, "Find the smallest $C$.", ["$\\frac{1}{2}$"]),
        _oly(1607, "Find all pairs.", ["$(1,2)$", "$(2,1)$"], ctx="Let $n$ be given.")]},
}
# name -> (split, expected (prompt start, answer, id) of the first eval problem, eval count)
EXPECT = {
    "math": ("eval", ("algebra test?", "\\frac{1}{2}", "math:algebra/1"), 7),
    "gsm8k": ("eval", ("Janet's ducks", "18", "gsm8k:1"), 1),
    "dapo_math": ("eval", ("Solve the following", "2", "dapo_math:a1"), 2),
    "deepscaler": ("eval", ("Compute $2^3$.", "8", "deepscaler:1"), 1),
    "math500": ("eval", ("Convert", "\\left( 3, \\frac{\\pi}{2} \\right)", "math500:test/precalculus/807.json"), 2),
    "aime24": ("eval", ("Every morning", "204", "aime24:60"), 1),
    "aime25": ("eval", ("Find the sum", "70", "aime25:AIME2025-I/1"), 2),
    "amc23": ("eval", ("How many miles", "27", "amc23:0"), 1),
    "minerva_math": ("eval", ("Each of the two", "1.6", "minerva_math:1"), 1),
    "olympiadbench": ("eval", ("Find the smallest", "\\frac{1}{2}", "olympiadbench:1606"), 2),
}


def _write_repo(root: Path, name: str) -> Path:
    d = root / name
    for rel, rows in FIXTURES[name].items():
        f = d / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(rows, str):
            f.write_text(rows)
        elif f.suffix == ".parquet":
            datasets.Dataset.from_list(rows).to_parquet(str(f))
        elif f.suffix == ".json":
            f.write_text(json.dumps(rows))
        else:
            f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    return {name: _write_repo(root, name) for name in FIXTURES}


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "hf-cache")


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_named_dataset_from_a_local_copy_of_its_hub_repository(repos, cache, name):
    split, (start, answer, pid), n = EXPECT[name]
    t = get_task(name, path=str(repos[name]), cache_dir=cache)
    ps = t.problems(split, 0)
    assert len(ps) == n and t.size(split) == n
    assert ps[0].prompt.startswith(start) and ps[0].prompt.endswith("\n")
    assert (ps[0].answer, ps[0].id) == (answer, pid)
    assert t.reward == "math" and DATASETS[name].hub in (t.__doc__ or "")


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_hub_ids_configs_and_splits(repos, cache, monkeypatch, name):
    """Without `path` the task asks `datasets` for the hub id, each config and the split (redirected here)."""
    calls, real = [], datasets.load_dataset

    def fake(path, name_=None, split=None, **kw):
        calls.append((path, name_, split))
        d = repos[name]
        cfg = name_ if name_ and not (d / name_).is_dir() else None
        return real(str(d), cfg, split=split, data_dir=name_ if name_ and (d / name_).is_dir() else None,
                    cache_dir=cache)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    src = DATASETS[name]
    t = get_task(name)
    assert len(t.problems("eval", 0)) == EXPECT[name][2]
    assert calls == [(src.hub, c, src.eval_split) for c in src.configs]
    if src.train_split and src.train_split != src.eval_split:
        calls.clear()
        t.problems("train", 0)
        assert calls == [(src.hub, c, src.train_split) for c in src.configs]


def test_hub_table():
    assert {n: (s.hub, s.configs, s.eval_split, s.train_split) for n, s in DATASETS.items()} == {
        "math": ("EleutherAI/hendrycks_math", ("algebra", "counting_and_probability", "geometry",
                                               "intermediate_algebra", "number_theory", "prealgebra", "precalculus"),
                 "test", "train"),
        "gsm8k": ("openai/gsm8k", ("main",), "test", "train"),
        "dapo_math": ("BytedTsinghua-SIA/DAPO-Math-17k", (None,), "train", "train"),
        "deepscaler": ("agentica-org/DeepScaleR-Preview-Dataset", (None,), "train", "train"),
        "math500": ("HuggingFaceH4/MATH-500", (None,), "test", None),
        "aime24": ("HuggingFaceH4/aime_2024", (None,), "train", None),
        "aime25": ("opencompass/AIME2025", ("AIME2025-I", "AIME2025-II"), "test", None),
        "amc23": ("math-ai/amc23", (None,), "test", None),
        "minerva_math": ("math-ai/minervamath", (None,), "test", None),
        "olympiadbench": ("Hothan/OlympiadBench", ("OE_TO_maths_en_COMP",), "train", None)}


def test_math_train_split_and_level_filter(repos, cache):
    t = get_task("math", path=str(repos["math"]), cache_dir=cache)
    tr = t.problems("train", 0)
    assert len(tr) == 7 and tr[0].answer == "2" and tr[0].prompt == "algebra train?\n"
    assert tr[0].solution.endswith("\\boxed{2}$.")
    assert not eval_overlap(tr, t.problems("eval", 0))
    hard = get_task("math", path=str(repos["math"]), levels=[4, "Level 5"], cache_dir=cache)
    assert len(hard.problems("train", 0)) == 0 and len(hard.problems("eval", 0)) == 7
    one = get_task("math", path=str(repos["math"]), configs=["geometry"], cache_dir=cache)
    assert [p.prompt for p in one.problems("eval", 0)] == ["geometry test?\n"]
    m5 = get_task("math500", path=str(repos["math500"] / "test.jsonl"), levels=[5])
    assert [p.answer for p in m5.problems("eval", 0)] == ["5"]


def test_dapo_dedup_instruction_and_answer_format(repos, cache):
    t = get_task("dapo_math", path=str(repos["dapo_math"]), cache_dir=cache)
    ps = t.problems("train", 0)
    assert [p.answer for p in ps] == ["2", "7"] and t.answer_format == "answer_line"
    assert "Answer: $Answer" in ps[0].prompt
    bare = get_task("dapo_math", path=str(repos["dapo_math"]), strip_instruction=True, dedup=False,
                    prompt_template="{prompt} Put the answer in \\boxed{}.\n", answer_format="boxed", cache_dir=cache)
    ps2 = bare.problems("train", 0)
    assert len(ps2) == 3 and ps2[0].prompt == "Find $x$ if $x+1=3$. Put the answer in \\boxed{}.\n"
    assert bare.answer_format == "boxed"


def test_olympiad_parts_context_and_deepscaler_skips_empty_gold(repos, cache):
    ps = get_task("olympiadbench", path=str(repos["olympiadbench"]), cache_dir=cache).problems("eval", 0)
    assert ps[1].answer == "(1,2), (2,1)" and ps[1].prompt.startswith("Let $n$ be given.\nFind all pairs.")
    t = get_task("deepscaler", path=str(repos["deepscaler"] / "deepscaler.json"), cache_dir=cache)
    assert [p.answer for p in t.problems("eval", 0)] == ["8"] and sum(t.skipped.values()) == 1


def test_benchmark_trained_on_another_dataset(repos, cache):
    t = get_task("aime24", path=str(repos["aime24"]), cache_dir=cache,
                 train={"name": "dapo_math", "params": {"path": str(repos["dapo_math"]), "cache_dir": cache}})
    tr, ev = t.problems("train", 0), t.problems("eval", 0)
    assert [p.answer for p in tr] == ["2", "7"] and [p.answer for p in ev] == ["204"]
    assert not eval_overlap(tr, ev)
    with pytest.raises(ValueError, match="train must be"):
        get_task("aime24", train="dapo_math")


def test_missing_column_names_the_row_and_field(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_text(json.dumps({"problem": "p", "answer": "1", "unique_id": "u"}) + "\n")
    with pytest.raises(ValueError, match=r"m.jsonl, row 1: missing field 'solution'"):
        get_task("math500", path=str(f)).problems("eval", 0)
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        get_task("math500", path=str(tmp_path / "nope")).problems("eval", 0)


# ------------------------------------------------------------------------------ leakage
def _p(text, i):
    return Problem(prompt=text, answer="1", id=f"t:{i}")


def test_overlap_is_found_by_normalised_text():
    train = [_p("What is  1+1?\n", 0), _p("Other", 1)]
    ev = [_p("what is 1+1?", 0), _p("New one", 1)]
    assert [p.id for p in eval_overlap(train, ev)] == ["t:0"]

    class Cfg:
        name, allow_eval_overlap = "jsonl", False
    with pytest.raises(ConfigError, match=r"1 of the 2 eval problems \(50%\).*allow_eval_overlap: true"):
        check_eval_overlap(train, ev, Cfg)
    Cfg.allow_eval_overlap = True
    logs = []
    assert check_eval_overlap(train, ev, Cfg, log=logs.append) == 1 and "running anyway" in logs[0]
    assert check_eval_overlap(train[1:], ev, Cfg) == 0
