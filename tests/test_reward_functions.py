"""Several weighted reward functions (rewards.combine), the `format` reward, their config errors, and
what a run logs with them; plus the train / compare refusal of a task whose training rows are its eval rows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import small_config
from rewards.combine import RewardFunctions, parse_specs
from rewards.format import format_ok, format_reward, parse_formats, think_well_formed
from rewards.registry import get_reward, register_reward, reward_params
from zoo.config import ConfigError


@register_reward("_rf_parity", "test only: 1.0 for completions of odd length")
def _rf_parity(completions, golds):
    return [float(len(c) % 2) for c in completions]


@register_reward("_rf_one", "test only: always 1.0")
def _rf_one(completions, golds):
    return [1.0 for _ in completions]


@register_reward("_rf_broken", "test only: always raises")
def _rf_broken(completions, golds, scale: float = 1.0):
    raise RuntimeError("broken")


# ------------------------------------------------------------------------------ format reward
@pytest.mark.parametrize("completion,formats,want", [
    ("so x = 4, \\boxed{4}", None, 1.0),
    ("Answer: 4", None, 1.0),
    ("I have no idea what to do", None, 0.0),
    ("", None, 0.0),
    ("\\boxed{3} or \\boxed{4}", None, 0.0),                 # a hedge is not one final answer
    ("Answer: 4", "boxed", 0.0),
    ("we get \\boxed{4}", "boxed", 1.0),
    ("steps...\nAnswer: 12", "answer_line", 1.0),
    ("the answer is 12", "answer_line", 0.0),
    ("<think>2+2</think> \\boxed{4}", "think", 1.0),
    ("2+2</think>\n\\boxed{4}", "think", 1.0),               # <think> opened by the chat template
    ("<think></think> \\boxed{4}", "think", 0.0),            # empty reasoning
    ("<think>a</think> b </think> \\boxed{4}", "think", 0.0),
    ("<think>a <think> b</think> \\boxed{4}", "think", 0.0),
    ("x <think>a</think> \\boxed{4}", "think", 0.0),         # the block must open the completion
    ("<think>a</think> I am not sure about this.", "think", 0.0),   # no answer after </think>
    ("<think>a \\boxed{4}</think>", "think", 0.0),           # the answer inside the reasoning only
    ("<think>a</think> \\boxed{4}", "think,boxed", 1.0),
    ("<think>a</think> Answer: 4", ["think", "boxed"], 0.0),
    ("<think>a</think> Answer: 4", ["think", "boxed", "answer_line"], 1.0),
])
def test_format_reward(completion, formats, want):
    assert format_reward([completion], ["ignored"], formats=formats) == [want]


def test_format_helpers_and_registry():
    assert parse_formats("think, boxed") == ("think", "boxed") and parse_formats("auto") == () == parse_formats(None)
    with pytest.raises(ValueError, match="unknown answer format 'boxd'; did you mean 'boxed'"):
        parse_formats("boxd")
    assert not format_ok(None) and not think_well_formed("no tags")  # type: ignore[arg-type]
    assert reward_params("format") == ["formats"] and reward_params("arith") == []
    f = get_reward("format", formats="answer_line")
    assert f(["Answer: 3", "\\boxed{3}"], ["3", "3"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="reward 'format' has no parameter 'format'; did you mean 'formats'"):
        get_reward("format", format="boxed")
    with pytest.raises(ValueError, match="reward 'format': unknown answer format 'answerline'"):
        get_reward("format", formats="answerline")


# ------------------------------------------------------------------------------ combination
def test_specs_rule_and_errors():
    specs = parse_specs([{"name": "math"}, {"name": "format", "weight": 0.1, "params": {"formats": "boxed"}}])
    assert [(s.name, s.weight, s.correctness) for s in specs] == [("math", 1.0, True), ("format", 0.1, False)]
    specs = parse_specs([{"name": "format", "weight": 0.5}, {"name": "", "correctness": True}], default_name="arith")
    assert [(s.name, s.correctness) for s in specs] == [("format", False), ("arith", True)]
    assert [(s.name, s.correctness) for s in parse_specs([], default_name="countdown")] == [("countdown", True)]
    for bad, match in [([{"name": "math", "wieght": 1}], r"functions\[0\]: unknown key 'wieght'; did you mean 'weight'"),
                       ([{"name": "math", "weight": "x"}], r"functions\[0\].weight: expected a finite number"),
                       ([{"name": "math"}, {"name": "math"}], "listed twice"),
                       ([{"name": "a", "correctness": True}, {"name": "b", "correctness": True}], "mark exactly one"),
                       ("math", "expected a list")]:
        with pytest.raises(ValueError, match=match):
            parse_specs(bad)


def test_weighted_total_correctness_and_fault_counts():
    fns = RewardFunctions.build([{"name": "_rf_one", "weight": 0.5},
                                 {"name": "_rf_parity", "weight": 2.0, "correctness": True},
                                 {"name": "_rf_broken", "weight": 3.0, "params": {"scale": 2.0}}])
    for f in fns.fns:
        f.warn = lambda m: None
    s = fns(["a", "ab"], ["", ""])
    assert s.correct == [1.0, 0.0] and s.total == [2.5, 0.5]
    assert s.values == {"_rf_one": [1.0, 1.0], "_rf_parity": [1.0, 0.0], "_rf_broken": [0.0, 0.0]}
    assert fns.correctness is fns.fns[1] and fns.last_stats == {"errors": 2, "timeouts": 0}
    assert fns.pop_stats() == {"errors": 2, "timeouts": 0}
    with pytest.raises(ValueError, match=r"functions\[0\]: unknown reward 'fromat'; did you mean 'format'"):
        RewardFunctions.build([{"name": "fromat"}])


def test_task_answer_format_reaches_the_functions_that_take_formats():
    fns = RewardFunctions.build([{"name": "_rf_parity"}, {"name": "format"}], answer_format="answer_line")
    assert fns(["Answer: 3", "\\boxed{3}"], ["3", "3"]).values["format"] == [1.0, 0.0]
    own = RewardFunctions.build([{"name": "_rf_parity"}, {"name": "format", "params": {"formats": "boxed"}}],
                                answer_format="answer_line")
    assert own(["Answer: 3", "\\boxed{3}"], ["3", "3"]).values["format"] == [0.0, 1.0]


@pytest.mark.parametrize("reward,match", [
    ({"name": "math", "functions": [{"name": "format"}]}, "not both"),
    ({"functions": [{"name": "fromat"}]}, r"reward.functions\[0\]: unknown reward 'fromat'; did you mean 'format'"),
    ({"functions": [{"name": "format", "params": {"formts": "boxed"}}]}, r"did you mean 'formats'"),
    ({"functions": [{"name": "math", "weigth": 1.0}]}, r"unknown key 'weigth'; did you mean 'weight'"),
])
def test_config_errors(tiny_model_dir, reward, match):
    with pytest.raises(ConfigError, match=match):
        small_config(tiny_model_dir, reward=reward)


# ------------------------------------------------------------------------------ runs
QUIET = {"log": {"progress": False, "tensorboard": False}}


def _rows(out):
    return [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_run_logs_each_function_and_accuracy_is_the_math_functions(tiny_model_dir, tmp_path):
    from zoo.trainer import Trainer

    ev = _jsonl(tmp_path / "ev.jsonl", [{"problem": f"Compute {i}+1.", "answer": str(i + 1)} for i in range(4)])
    tr = _jsonl(tmp_path / "tr.jsonl", [{"problem": f"Compute {i}+2.", "answer": str(i + 2)} for i in range(8)])
    cfg = small_config(tiny_model_dir, task={"name": "jsonl", "params": {"path": str(ev), "train_path": str(tr)},
                                             "train_size": 8, "eval_size": 4},
                       reward={"functions": [{"name": "math"}, {"name": "format", "weight": 0.1}]},
                       eval={"n": 4, "k": 1, "at_start": False}, **QUIET)
    t = Trainer(cfg, tmp_path / "run", log=lambda *a: None)
    assert t.reward_fn is t.rewards.correctness and t.rewards.names == ["math", "format"]
    t.train()
    rows = [r for r in _rows(tmp_path / "run") if "reward/accuracy" in r]
    assert rows and all("reward/math" in r and "reward/format" in r for r in rows)
    assert all(r["reward/accuracy"] == r["reward/math"] for r in rows)


def test_accuracy_eval_and_dynamic_sampling_use_the_correctness_function(tiny_model_dir, tmp_path):
    from zoo.trainer import Trainer

    # correctness = always 1 (every group all-equal); shaping = parity (varies): dynamic sampling must
    # drop every group (it tests correctness, not the shaped total), and eval accuracy is 1.0
    cfg = small_config(tiny_model_dir, reward={"functions": [{"name": "_rf_parity", "weight": 1.0},
                                                              {"name": "_rf_one", "correctness": True}]},
                       algorithm={"preset": "grpo", "dynamic_sampling": True, "max_resample_rounds": 0},
                       eval={"n": 4, "k": 1, "at_start": False}, **QUIET)
    t = Trainer(cfg, tmp_path / "run", log=lambda *a: None)
    res = t.train()
    rows = _rows(tmp_path / "run")
    steps = [r for r in rows if "reward/accuracy" in r]
    assert all(r["reward/accuracy"] == 1.0 == r["reward/_rf_one"] and 0.0 <= r["reward/_rf_parity"] <= 1.0
               for r in steps)
    assert all(r.get("train/skipped_no_signal") == 1 and r["rollout/dropped_groups"] == 4 for r in steps)
    assert res["eval/accuracy"] == 1.0


def test_train_refuses_eval_rows_as_training_rows_unless_allowed(tiny_model_dir, tmp_path):
    from zoo.trainer import Trainer

    ev = _jsonl(tmp_path / "ev.jsonl", [{"problem": f"Compute {i}+1.", "answer": str(i + 1)} for i in range(4)])
    task = {"name": "jsonl", "params": {"path": str(ev)}, "train_size": 4, "eval_size": 4}
    evc = {"n": 4, "k": 1, "at_start": False}
    cfg = small_config(tiny_model_dir, task=task, reward={"name": "_rf_parity"}, eval=evc, **QUIET)
    with pytest.raises(ConfigError, match=r"4 of the 4 eval problems \(100%\).*task.allow_eval_overlap: true"):
        Trainer(cfg, tmp_path / "never", log=lambda *a: None)
    assert not (tmp_path / "never").exists()
    logs = []
    ok = small_config(tiny_model_dir, task={**task, "allow_eval_overlap": True}, reward={"name": "_rf_parity"},
                      eval=evc, **QUIET)
    Trainer(ok, tmp_path / "run", log=logs.append)
    assert any("running anyway" in str(x) for x in logs)


def test_compare_refuses_the_overlap_before_any_cell(tiny_model_dir, tmp_path, capsys):
    from test_compare import compare_raw
    from zoo.cli import main

    ev = _jsonl(tmp_path / "ev.jsonl", [{"problem": f"Compute {i}+1.", "answer": str(i + 1)} for i in range(4)])
    raw = compare_raw(tiny_model_dir, ["grpo"], [0], task={"name": "jsonl", "params": {"path": str(ev)},
                                                           "train_size": 4, "eval_size": 4},
                      reward={"name": "_rf_parity"}, eval={"every": 0, "n": 4, "k": 1, "at_start": False})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "never"
    assert main(["compare", "--config", str(cfg), "--out", str(out)]) == 2
    assert "allow_eval_overlap" in capsys.readouterr().err and not out.exists()
