"""`zoo train` from the command line, and every preset through the real training step."""
import json

import pytest
import yaml

from conftest import REPO, small_config
from zoo.cli import main
from zoo.config import preset_files
from zoo.logging import read_metrics
from zoo.trainer import Trainer


def test_cli_train_run_dir_contents(tiny_model_dir, tmp_path, capsys):
    cfg = {
        "model": {"name_or_path": str(tiny_model_dir)},
        "task": {"name": "arith", "train_size": 100, "eval_size": 8},
        # dynamic sampling off: it filters on correctness (all 0 for a random model: every step skipped)
        "algorithm": {"preset": "top20", "dynamic_sampling": False},
        "rollout": {"group_size": 4, "prompts_per_step": 4, "max_new_tokens": 10},
        "train": {"steps": 3, "threads": 1},
        "eval": {"every": 2, "n": 8, "k": 2},
        "checkpoint": {"every": 2},
        "log": {"progress": True, "tensorboard": True},
    }
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["train", "--config", str(f), "--out", str(out), "--set", "train.lr=2e-4"]) == 0
    rows = read_metrics(out)
    steps = [r for r in rows if "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for r in steps:
        assert "entropy/mean" in r and "budget/tokens" in r and "quadrant/PHR_share" in r
    assert any("eval/accuracy" in r and r["step"] == 0 for r in rows)
    assert any("eval/accuracy" in r and r["step"] == 3 for r in rows)
    assert any("top_entropy/kept_share" in r for r in steps)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["lr"] == 2e-4 and saved["algorithm"]["base"] == "dapo"
    assert list((out / "tb").glob("events.out.tfevents*"))
    assert (out / "ckpt-0000002" / "COMPLETE").exists() and (out / "ckpt-0000003" / "COMPLETE").exists()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out / "final")
    tok = AutoTokenizer.from_pretrained(out / "final")
    assert tok.decode(tok("a b")["input_ids"], skip_special_tokens=True) == "a b"
    printed = json.loads(capsys.readouterr().out)
    assert "eval/accuracy" in printed


def test_cli_errors_are_clear(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("train: {stepz: 3}\n")
    assert main(["train", "--config", str(f), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "train.stepz" in err and "train.steps" in err
    f.write_text("model: {name_or_path: /nonexistent/model}\n")
    assert main(["train", "--config", str(f), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_zoo_list_shows_every_strategy_and_preset(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    import algorithms  # noqa: F401
    from zoo.registry import STRATEGIES

    for name in STRATEGIES.names() + list(preset_files()) + ["grpo", "dapo", "countdown", "math"]:
        assert name in out
    assert "2506.01939" in out


def test_zoo_eval_command(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "e.json"
    assert main(["eval", "--model", str(tiny_model_dir), "--task", "countdown", "--n", "6", "--k", "4",
                 "--top-p", "0.7", "--sampler", "fork_t12", "--out", str(out), "--set", "train.threads=1"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert {"eval/accuracy", "eval/avg@4", "eval/pass@1", "eval/pass@4"} <= set(m)
    assert len(json.loads(out.read_text())["per_problem"]) == 6


@pytest.mark.parametrize("preset", sorted(preset_files()))
def test_every_preset_trains_through_the_real_step(tiny_model_dir, tmp_path, preset):
    cfg = small_config(tiny_model_dir, algorithm={"preset": preset}, reward={"name": "_test_parity_e2e"},
                       train={"steps": 2, "lr": 1e-3, "threads": 1, "micro_batch_size": 4},
                       eval={"at_start": False, "every": 0, "n": 4, "k": 1})
    t = Trainer(cfg, tmp_path / preset, log=lambda *a: None)
    t.train()
    rows = [r for r in read_metrics(tmp_path / preset) if "reward/mean" in r or "train/skipped_no_signal" in r]
    assert len(rows) == 2
    for r in rows:
        for k, v in r.items():
            assert v is None or not (isinstance(v, float) and v != v), f"{preset}: {k} is NaN"
    names = {s["name"] for s in cfg.algorithm.strategies}
    trained = [r for r in rows if "loss/total" in r]
    for n in names - {"identity"}:
        assert any(k.startswith(n + "/") for r in trained for k in r), f"{preset}: no {n}/ diagnostics"


from rewards import register_reward  # noqa: E402


@register_reward("_test_parity_e2e")
def _parity(completions, golds):
    return [float(len(c) % 2) for c in completions]


def test_composed_top_entropy_sees_base_temperature_entropy(tiny_model_dir, tmp_path):
    """top_entropy + forking_temperature: π_old uses each token's sampling temperature, while the
    entropy the selection sees is taken at the base rollout temperature."""
    import torch
    from torch.testing import assert_close

    from zoo.rollout import response_logp_entropy
    from zoo.strategy import Strategy, register_strategy

    seen = {}

    @register_strategy("_test_spy")
    class Spy(Strategy):
        def token_weights(self, ctx):
            seen["entropy"], seen["temps"] = ctx.entropy.clone(), ctx.temperatures.clone()
            return None

    from zoo.data import get_task
    from zoo.model import load_policy
    from zoo.rollout import HFEngine

    probe = HFEngine(*load_policy(tiny_model_dir)).sample(get_task("countdown").problems("train", 4, 0), 4,
                                                          max_new_tokens=12, temperature=1.0)
    h_fork = float(probe.entropy[probe.response_mask].median())  # about half the tokens run hot
    cfg = small_config(tiny_model_dir, reward={"name": "_test_parity_e2e"},
                       algorithm={"base": "dapo", "dynamic_sampling": False, "strategies": [
                           {"name": "top_entropy", "rho": 0.2}, {"name": "forking_temperature", "h_fork": h_fork,
                                                                 "t_low": 0.8, "t_high": 1.5}, {"name": "_test_spy"}]},
                       rollout={"group_size": 4, "prompts_per_step": 4, "max_new_tokens": 12, "temperature": 1.0})
    t = Trainer(cfg, tmp_path / "run", log=lambda *a: None)
    sc, _ = t.rollout()
    b = sc.batch
    temps = b.temperatures[b.response_mask]
    assert (temps == 1.5).any() and (temps == 0.8).any()
    m = t.optimizer_step(sc, list(range(len(b.texts))), first=True)
    with torch.no_grad():
        lp, ent_base = response_logp_entropy(t.model, b.prompt_ids, b.prompt_mask, b.response_ids,
                                             b.response_mask, b.temperatures, 1.0)
        _, ent_hot = response_logp_entropy(t.model, b.prompt_ids, b.prompt_mask, b.response_ids,
                                           b.response_mask, b.temperatures, 1.5)
    # (the model was updated after the hooks ran, so compare against the sampler's records)
    assert_close(seen["entropy"][b.response_mask], b.entropy[b.response_mask], atol=1e-5, rtol=0)
    assert_close(sc.old_logp[b.response_mask], b.logp[b.response_mask], atol=1e-5, rtol=0)
    assert not torch.allclose(ent_hot[b.response_mask], ent_base[b.response_mask])
    assert torch.equal(seen["temps"], b.temperatures)
    assert "top_entropy/kept_share" in m and "forking_temperature/hot_share" in m


def test_pretrain_builds_a_loadable_base_model(tmp_path, capsys):
    """`zoo pretrain` on a shrunken schedule: SFT runs, stops, saves a save_pretrained dir + meta."""
    out = tmp_path / "base"
    args = ["pretrain", "--out", str(out), "--set", "pretrain.steps=6", "--set", "pretrain.batch_size=16",
            "--set", "pretrain.eval_every=3", "--set", "pretrain.eval_n=8", "--set", "pretrain.min_steps=3",
            "--set", "pretrain.layers=1", "--set", "pretrain.hidden=32", "--set", "pretrain.heads=2",
            "--set", "pretrain.intermediate=64", "--set", "pretrain.train_size=200", "--set", "train.threads=1",
            "--set", "rollout.max_new_tokens=12"]
    assert main(args) == 0
    meta = json.loads((out / "zoo_meta.json").read_text())
    assert meta["task"]["name"] == "countdown" and 3 <= meta["steps"] <= 6
    assert 0.0 <= meta["sampled_accuracy"] <= 1.0
    hist = json.loads((out / "pretrain_log.json").read_text())
    assert hist[0]["step"] == 3
    from zoo.model import load_policy

    model, tok = load_policy(out)
    assert model.config.num_hidden_layers == 1
    assert main(args) == 0 and "already exists" in capsys.readouterr().out   # reused, not rebuilt


def test_train_builds_a_missing_base_under_runs(tmp_path, monkeypatch):
    """A missing model path under runs/ is pretrained on demand (the quickstart's first run)."""
    from zoo.config import config_from_dict
    from zoo.pretrain import ensure_base_model

    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict({"model": {"name_or_path": "runs/base/t"},
                            "pretrain": {"steps": 2, "batch_size": 8, "eval_every": 2, "eval_n": 4, "min_steps": 1,
                                         "layers": 1, "hidden": 32, "heads": 2, "intermediate": 64,
                                         "train_size": 50},
                            "rollout": {"max_new_tokens": 8}, "train": {"threads": 1}})
    p = ensure_base_model(cfg, log=lambda *a: None)
    assert (tmp_path / p / "config.json").exists()
    bad = config_from_dict({"model": {"name_or_path": str(tmp_path / "elsewhere")}})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ensure_base_model(bad)
