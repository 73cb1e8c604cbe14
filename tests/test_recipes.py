"""configs/recipes/: every recipe loads as it is, and runs one `zoo train` step on CPU with a tiny
test model swapped in (local data files in the dataset's format, small sizes), its prompt format,
answer format, algorithm, precision, LoRA and checkpointing settings unchanged."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rewards.registry import register_reward
from zoo.config import load_config

RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs" / "recipes").glob("*.yaml"))


@register_reward("_recipe_parity", "test only: 1.0 for completions of odd length")
def _recipe_parity(completions, golds):
    return [float(len(c) % 2) for c in completions]


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory) -> Path:
    from zoo.tiny_hf import build_tiny_hf

    return build_tiny_hf("qwen2", tmp_path_factory.mktemp("recipe-model") / "qwen2")


def _rows(dapo: bool, base: int) -> str:
    from zoo.tasks_datasets import DAPO_PREFIX, DAPO_SUFFIX

    out = []
    for i in range(4):
        q, a = f"Compute {base + i}+{i}.", str(base + 2 * i)
        out.append({"prompt": [{"role": "user", "content": DAPO_PREFIX + q + DAPO_SUFFIX}],
                    "reward_model": {"ground_truth": a}, "extra_info": {"index": f"{base}-{i}"}} if dapo
                   else {"problem": q, "answer": a, "solution": f"\\boxed{{{a}}}", "unique_id": f"{base}-{i}",
                         "id": f"{base}-{i}"})
    return "".join(json.dumps(r) + "\n" for r in out)


def test_there_are_recipes_with_memory_notes():
    names = {p.stem for p in RECIPES}
    assert {"qwen25_math_1p5b_math_top20", "qwen25_math_1p5b_math_dapo", "qwen3_1p7b_dapo_math_think",
            "qwen25_math_7b_lora_math"} <= names
    for p in RECIPES:
        text = p.read_text()
        assert "Memory" in text and "80 GB" in text, p.name
        cfg = load_config(p)                                   # the recipe as shipped is a valid config
        assert cfg.task.template != "raw" and cfg.model.dtype == "bfloat16", p.name
        assert cfg.train.gradient_checkpointing and cfg.rollout.max_new_tokens >= 3072, p.name


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_runs_one_step_on_cpu(recipe, tiny_qwen, tmp_path):
    from zoo.cli import main

    raw = yaml.safe_load(recipe.read_text())
    if raw["model"].get("lora", {}).get("r", 0):
        pytest.importorskip("peft", reason="LoRA recipes need peft (pip install -e '.[lora]')")
    dapo = raw["task"]["name"] == "dapo_math"
    (tmp_path / "eval.jsonl").write_text(_rows(dapo, 10))
    (tmp_path / "train.jsonl").write_text(_rows(dapo, 50))
    keep = {k: v for k, v in (raw["task"].get("params") or {}).items() if k == "answer_format"}
    raw["model"]["name_or_path"] = str(tiny_qwen)
    raw["task"].update(params={**keep, "path": str(tmp_path / "eval.jsonl"),
                               "train_path": str(tmp_path / "train.jsonl")}, train_size=4, eval_size=2)
    # the recipe's reward functions still run; a length-parity reward is the correctness signal so that
    # dynamic sampling keeps groups and the update runs on a random model
    raw["reward"] = {"functions": list(raw["reward"]["functions"]) + [{"name": "_recipe_parity", "correctness": True}]}
    raw["rollout"].update(group_size=2, prompts_per_step=2, max_new_tokens=8)
    raw["train"].update(steps=1, micro_batch_size=0, minibatches=min(2, raw["train"]["minibatches"]), threads=1)
    raw["eval"].update(n=2, k=1, every=0, at_start=False, batch_size=8)
    raw["checkpoint"] = {"every": 0}
    raw["log"] = {"progress": False, "tensorboard": False}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run)]) == 0
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    step = [r for r in rows if r.get("step") == 1 and "reward/mean" in r]
    assert step and "train/skipped_no_signal" not in step[0] and "reward/math" in step[0]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["task"]["template"] == raw["task"]["template"]
    assert (run / "final" / "config.json").exists()
