"""zoo compare: statistics on known inputs, a tiny matrix end to end, resumption, failures, errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from zoo import stats
from zoo.config import ConfigError
from zoo.strategy import Strategy, register_strategy


# ----------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------
def test_bootstrap_ci_contains_mean_and_is_exact_for_constants():
    rng = np.random.default_rng(0)
    x = (rng.random(200) < 0.3).astype(float)
    ci = stats.bootstrap_ci(x)
    assert ci.lo <= x.mean() <= ci.hi and ci.mean == pytest.approx(x.mean())
    # binomial SE sqrt(p(1-p)/n) ~ 0.032: the bootstrap SE agrees, the 95% width ~ 4 SE
    assert ci.se == pytest.approx(np.sqrt(x.mean() * (1 - x.mean()) / 200), rel=0.15)
    assert 3.0 * ci.se < ci.hi - ci.lo < 5.0 * ci.se
    const = stats.bootstrap_ci(np.ones((3, 50)))
    assert (const.mean, const.lo, const.hi, const.se) == (1.0, 1.0, 1.0, 0.0)
    assert (const.n_seeds, const.n_problems) == (3, 50)


def test_bootstrap_over_seeds_widens_the_interval():
    # seed effects: every problem right for seed 0, wrong for seed 1 -> problems alone show no spread
    a = np.stack([np.ones(100), np.zeros(100)])
    ci = stats.bootstrap_ci(a)
    assert ci.mean == 0.5 and ci.lo == 0.0 and ci.hi == 1.0


def test_paired_bootstrap_identical_and_clearly_different():
    rng = np.random.default_rng(1)
    a = (rng.random((2, 300)) < 0.4).astype(float)
    t = stats.paired_bootstrap(a, a.copy())
    assert t.diff == 0.0 and t.lo == 0.0 and t.hi == 0.0 and t.p_value == pytest.approx(1.0) and t.mde == 0.0
    b = a.copy()
    b[:, :150] = 1.0                       # b is right on everything a got right, and more
    t = stats.paired_bootstrap(b, a)
    assert t.diff > 0.2 and t.lo > 0 and t.p_value < 0.01
    assert t.mde == pytest.approx(2.80 * t.se, rel=1e-3)
    assert "paired bootstrap" in t.method
    with pytest.raises(ValueError):
        stats.paired_bootstrap(a, a[:, :10])


def test_mcnemar_exact_known_values():
    a = np.array([1] * 10 + [0] * 10, dtype=float)
    assert stats.mcnemar_exact(a, a)["p_value"] == 1.0
    # 6 discordant pairs all one way: p = 2 * 0.5^6 = 0.03125
    b = a.copy()
    b[:6] = 0
    r = stats.mcnemar_exact(a, b)
    assert (r["n10"], r["n01"]) == (6, 0) and r["p_value"] == pytest.approx(0.03125)


# ----------------------------------------------------------------------------------------------
# a tiny matrix on the tiny random model
# ----------------------------------------------------------------------------------------------
def compare_raw(model_dir, algorithms, seeds, steps=2, **extra):
    raw = {
        "algorithms": algorithms, "seeds": seeds, "budget": {"steps": steps},
        "model": {"name_or_path": str(model_dir)},
        "task": {"name": "countdown", "train_size": 100, "eval_size": 12},
        "rollout": {"group_size": 2, "prompts_per_step": 2, "max_new_tokens": 8},
        "train": {"lr": 1.0e-3, "threads": 1},
        "eval": {"every": 1, "n": 12, "k": 2, "at_start": False},
        "checkpoint": {"every": 1, "keep": 1},
        "log": {"progress": False, "tensorboard": True},
    }
    raw.update(extra)
    return raw


def run(raw, out):
    from zoo.compare import finish, plan_compare, run_compare

    plan = plan_compare(raw, out)
    logs = []
    res = run_compare(plan, log=logs.append)
    return finish(plan, res, log=logs.append), logs


@pytest.fixture(scope="module")
def matrix(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "m"
    raw = compare_raw(tiny_model_dir, ["grpo", {"name": "top50", "preset": "top20",
                                                "strategies": [{"name": "top_entropy", "rho": 0.5}]}], [0, 1])
    res, logs = run(raw, out)
    return raw, out, res, logs


def test_matrix_outputs(matrix):
    raw, out, res, _ = matrix
    assert (out / "results.json").exists() and (out / "report.md").exists()
    disk = json.loads((out / "results.json").read_text())
    assert set(disk["methods"]) == {"grpo", "top50"} and disk["baseline"] == "grpo"
    assert len(disk["cells"]) == 4 and all(c["status"] == "done" for c in disk["cells"])
    for c in disk["cells"]:
        for k in ("accuracy", "avg@2", "pass@2", "response_length"):
            assert k in c["final"], k
        assert c["best_accuracy"] is not None and c["steps"] == 2
        assert set(c["final_entropy"]) >= {"mean", "p80", "share_below_0.01", "n_tokens"}
        assert c["budget"]["samples"] == 2 * 2 * 2 and c["budget"]["tokens"] > 0
        assert c["wall_seconds"] > 0 and c["tokens_per_s"] > 0
    top = disk["methods"]["top50"]
    assert top["accuracy"]["n_seeds"] == 2 and top["accuracy"]["n_problems"] == 12
    assert top["accuracy"]["lo"] <= top["accuracy"]["mean"] <= top["accuracy"]["hi"]
    v = top["vs_baseline"]
    assert v["baseline"] == "grpo" and v["seeds"] == [0, 1] and 0 <= v["p_value"] <= 1 and v["mde"] >= 0
    # the common base: both methods on token-mean, clip 0.2/0.28, no KL, no dynamic sampling
    for m in disk["methods"].values():
        a = m["algorithm"]
        assert (a["loss_agg"], a["clip_low"], a["clip_high"], a["kl_coef"], a["dynamic_sampling"]) == \
               ("token-mean", 0.2, 0.28, 0.0, False)
    assert disk["methods"]["top50"]["algorithm"]["strategies"] == [{"name": "top_entropy", "rho": 0.5}]
    for name in ("eval_accuracy", "reward", "entropy", "entropy_hist", "quadrants"):
        p = out / "plots" / f"{name}.png"
        assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = (out / "report.md").read_text()
    assert "| method | seeds | acc % [95% CI] | Δ vs grpo [95% CI] | p | MDE |" in report
    assert "paired bootstrap" in report and "| top50 | 2 |" in report
    # per-cell artefacts, TensorBoard runs grouped by algorithm
    cell = out / "cells" / "top50" / "seed1"
    pp = json.loads((cell / "per_problem.json").read_text())
    assert len(pp["scores"]) == 12
    assert list((cell / "tb").glob("events.out.tfevents.*"))
    assert (cell / "final" / "config.json").exists()


def test_rerun_skips_finished_and_resumes_killed(matrix):
    raw, out, res, _ = matrix
    # simulate a kill after the step-2 checkpoint of one cell: no marker, no final model
    cell = out / "cells" / "grpo" / "seed1"
    (cell / "cell.json").unlink()
    shutil.rmtree(cell / "final")
    assert list(cell.glob("ckpt-*"))
    res2, logs = run(raw, out)
    skipped = [ln for ln in logs if "skipped" in ln]
    assert len(skipped) == 3
    assert any("grpo/seed1: resuming" in ln for ln in logs)
    rec = next(c for c in res2["cells"] if c["method"] == "grpo" and c["seed"] == 1)
    assert rec["status"] == "done" and rec["resumed"] is True and rec["steps"] == 2
    assert (cell / "final" / "config.json").exists()


def test_changed_config_for_existing_cells_is_refused(matrix, tmp_path):
    from zoo.compare import plan_compare

    raw, out, _, _ = matrix
    changed = {**raw, "train": {**raw["train"], "lr": 5.0e-4}}
    with pytest.raises(ConfigError, match="different config"):
        plan_compare(changed, out)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a zoo compare directory"):
        plan_compare(raw, tmp_path / "other")


def test_failing_cell_is_reported_and_others_finish(tiny_model_dir, tmp_path):
    @register_strategy("_test_compare_boom", description="test only: raises in token_weights", paper="-")
    class Boom(Strategy):
        def token_weights(self, ctx):
            raise RuntimeError("boom: this strategy always fails")

    boom = {"name": "boom", "preset": "grpo", "strategies": [{"name": "_test_compare_boom"}]}
    raw = compare_raw(tiny_model_dir, [boom, "grpo"], [0], steps=1)
    res, logs = run(raw, tmp_path / "f")
    st = {c["method"]: c for c in res["cells"]}
    assert st["boom"]["status"] == "failed" and "boom: this strategy always fails" in st["boom"]["error"]
    assert st["grpo"]["status"] == "done"
    assert (tmp_path / "f" / "cells" / "boom" / "seed0" / "failed.json").exists()
    assert "**failed**" in (tmp_path / "f" / "report.md").read_text()
    assert "accuracy" not in res["methods"]["boom"] and "accuracy" in res["methods"]["grpo"]


def test_token_budget_stops_the_cell(tiny_model_dir, tmp_path):
    raw = compare_raw(tiny_model_dir, ["grpo"], [0], budget={"tokens": 1, "max_steps": 5},
                      eval={"every": 0, "n": 8, "k": 0, "at_start": False})
    res, _ = run(raw, tmp_path / "t")
    c = res["cells"][0]
    assert c["status"] == "done" and c["steps"] == 1 and res["budget"] == {"steps": 5, "tokens": 1}


def test_unknown_algorithm_names_nearest_before_running(tiny_model_dir, tmp_path, capsys):
    import yaml

    from zoo.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(compare_raw(tiny_model_dir, ["grpo", "top2O"], [0])))
    out = tmp_path / "never"
    assert main(["compare", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "algorithms[1]" in err and "did you mean 'top20'" in err
    assert not out.exists()
    from zoo.compare import plan_compare

    with pytest.raises(ConfigError, match="did you mean 'grpo'"):
        plan_compare(compare_raw(tiny_model_dir, ["grpo"], [0], baseline="grp"), tmp_path / "x")
    with pytest.raises(ConfigError, match="duplicate name"):
        plan_compare(compare_raw(tiny_model_dir, ["grpo", "grpo"], [0]), tmp_path / "x")
    with pytest.raises(ConfigError, match="budget"):
        plan_compare(compare_raw(tiny_model_dir, ["grpo"], [0], budget={"steps": 2, "tokens": 5}), tmp_path / "x")


def test_common_base_false_keeps_preset_base_and_explicit_keys_win(tiny_model_dir, tmp_path):
    from zoo.compare import plan_compare

    plan = plan_compare(compare_raw(tiny_model_dir, ["grpo", {"name": "dapo", "preset": "dapo",
                                                              "dynamic_sampling": True}], [0]), tmp_path / "a")
    assert plan.methods["dapo"]["dynamic_sampling"] is True and plan.methods["dapo"]["overlong_buffer"] == 0
    assert plan.methods["grpo"]["loss_agg"] == "token-mean" and plan.methods["grpo"]["clip_high"] == 0.28
    plan = plan_compare(compare_raw(tiny_model_dir, ["grpo", "dapo"], [0], common_base=False), tmp_path / "b")
    algo = {c.method: c.cfg.algorithm for c in plan.cells}
    assert algo["grpo"].loss_agg == "seq-mean-token-mean" and algo["grpo"].clip_high == 0.2
    assert algo["dapo"].dynamic_sampling is True


@pytest.mark.parametrize("name", ["smoke", "quickstart", "rho_sweep", "field"])
def test_shipped_compare_configs_plan(name, tmp_path):
    from zoo.compare import load_compare_raw, plan_compare

    repo_root = Path(__file__).resolve().parent.parent   # zoo.config no longer exports REPO_ROOT
    raw = load_compare_raw(repo_root / "configs" / "compare" / f"{name}.yaml")
    plan = plan_compare(raw, tmp_path / name)
    assert len(plan.cells) == len(plan.methods) * len(plan.seeds) >= 3
    # several optimizer steps per rollout batch: no method's clip or KL to π_old is inert
    assert all(c.cfg.train.minibatches > 1 for c in plan.cells) and not any(plan.inert.values())
