"""Training-level checks (minutes): `pytest -m slow`. They test learning, not plumbing."""
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_quickstart_grpo_raises_reward_and_eval(tmp_path, monkeypatch):
    """The README's quickstart config: SFT base (built on demand), then 300 GRPO steps on arith.

    The issue's bar: eval accuracy (sampled avg@4 on 500 held-out problems) rises >= 10 points.
    """
    from zoo.config import load_config
    from zoo.logging import read_metrics
    from zoo.trainer import Trainer

    monkeypatch.chdir(REPO)  # reuse runs/base/tiny-arith when it exists
    cfg = load_config(REPO / "configs/quickstart.yaml", ["log.progress=false", "checkpoint.every=0"])
    Trainer(cfg, tmp_path / "qs", log=print).train()
    rows = read_metrics(tmp_path / "qs")
    train = [r["reward/accuracy"] for r in rows if "reward/accuracy" in r]
    first, last = sum(train[:50]) / 50, sum(train[-50:]) / 50
    assert last > first + 0.02, (first, last)
    evals = [r for r in rows if "eval/accuracy" in r]
    assert evals[-1]["eval/accuracy"] >= evals[0]["eval/accuracy"] + 0.10, (evals[0], evals[-1])
