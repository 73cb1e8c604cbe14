"""2 CPU processes (gloo, launched with torchrun as accelerate launch would) give the single-process
answer: loss, gradient, top-entropy threshold and every logged metric, including a rank that holds
no responses and ranks with different numbers of micro-batches."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "dist_worker.py"


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(n: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}", *args]


def _run(cmd: list[str], cwd: Path, timeout: int = 240) -> None:
    p = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"


@pytest.fixture(scope="module")
def results(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    _run([sys.executable, str(WORKER), str(tiny_model_dir), str(d / "one.pt")], d)
    _run(_torchrun(2, str(WORKER), str(tiny_model_dir), str(d / "two.pt")), d)
    return torch.load(d / "one.pt", weights_only=False), torch.load(d / "two.pt", weights_only=False)


sys.path.insert(0, str(REPO / "tests"))
from dist_worker import CASES  # noqa: E402


@pytest.mark.parametrize("case", [c for c, spec in CASES.items() if spec[-1]])
def test_two_processes_equal_one(results, case):
    one, two = results[0][case], results[1][case]
    assert one["grad"].abs().max() > 0 and torch.isfinite(two["grad"]).all()
    # every optimizer step's gradient (params after Adam's ~lr·sign(g) first step would amplify float noise)
    torch.testing.assert_close(two["grad"], one["grad"], atol=1e-7, rtol=1e-5)
    assert two["opt_steps"] == one["opt_steps"] == CASES[case][3].get("minibatches", 1) * CASES[case][3].get("epochs", 1)
    assert set(two["metrics"]) == set(one["metrics"])
    for k, v in one["metrics"].items():
        assert two["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
    m = one["metrics"]
    assert m["loss/total"] != 0
    if case == "clip_cov_kl":                     # the random draw is global: the same tokens are detached
        assert m["clip_cov/detached_share"] > 0 and "kl/ref" in m
    elif case == "archer":
        assert 0 < m["archer/high_share"] < 1
    elif case == "minibatches_epochs":
        assert "perf/prepass_seconds" not in m and m["kl/old"] > 0   # later steps moved away from π_old
    else:                                         # the global 80th-percentile threshold, not a per-rank one
        assert 0 < m["top_entropy/kept_share"] < 1
        assert two["metrics"]["top_entropy/threshold"] == pytest.approx(m["top_entropy/threshold"], abs=1e-7)


def test_per_micro_batch_threshold_with_uneven_micro_batches_does_not_hang(results):
    two = results[1]["micro_batch_scope_uneven"]
    assert torch.isfinite(two["grad"]).all() and two["grad"].abs().max() > 0
    assert 0 < two["metrics"]["top_entropy/kept_share"] < 1


def test_two_process_train_run_resumes_exactly(tiny_model_dir, tmp_path):
    """`zoo train` under a 2-process launch (DAPO dynamic sampling, top-20% entropy, forking-token
    temperatures): rank 0 logs once and checkpoints every rank's sampler state; a run stopped after
    step 2 and resumed logs the same step 3 as a run that went straight through."""
    cfg = {
        "model": {"name_or_path": str(tiny_model_dir), "device": "cpu"},
        "task": {"name": "countdown", "train_size": 64, "eval_size": 8},
        "reward": {"name": "_dist_parity"},
        "plugins": [str(WORKER)],
        "algorithm": {"base": "dapo", "strategies": [{"name": "top_entropy"}, {"name": "forking_temperature"}]},
        "rollout": {"group_size": 4, "prompts_per_step": 4, "max_new_tokens": 10},
        "train": {"steps": 3, "lr": 1e-3, "threads": 1},
        "eval": {"every": 0, "n": 8, "k": 1, "at_start": False, "batch_size": 8},
        "checkpoint": {"every": 1, "keep": 3},
        "log": {"progress": False, "tensorboard": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))

    def train(out, *extra):
        return ["-m", "zoo", "train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / out), *extra]

    def rows(out):
        return [json.loads(x) for x in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]

    _run(_torchrun(2, *train("straight")), tmp_path)
    _run(_torchrun(2, *train("resumed", "--set", "train.steps=2")), tmp_path)
    _run(_torchrun(2, *train("resumed", "--resume")), tmp_path)
    a, b = rows("straight"), rows("resumed")
    assert [r["step"] for r in a if "rollout/rounds" in r] == [1, 2, 3]
    assert [r["step"] for r in b if "rollout/rounds" in r] == [1, 2, 3]
    assert (tmp_path / "straight" / "final" / "config.json").exists()
    step3 = [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in (a, b)
             for r in [next(x for x in r if x["step"] == 3 and "rollout/rounds" in x)]]
    assert step3[0] == step3[1]
    # a different number of processes cannot resume exactly: a clear error, nothing overwritten
    before = sorted(p.name for p in (tmp_path / "resumed").iterdir())
    p = subprocess.run([sys.executable, *train("resumed", "--resume", "--set", "train.steps=4")], cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "written by 2 process(es), this launch has 1" in p.stderr + p.stdout
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == before
