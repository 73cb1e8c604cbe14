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


def _run(cmd: list[str], cwd: Path, timeout: int = 240, **env) -> None:
    p = subprocess.run(cmd, cwd=cwd, env={**_env(), **env}, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"


@pytest.fixture(scope="module")
def results(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    _run([sys.executable, str(WORKER), str(tiny_model_dir), str(d / "one.pt")], d)
    _run(_torchrun(2, str(WORKER), str(tiny_model_dir), str(d / "two.pt")), d)
    _run(_torchrun(2, str(WORKER), str(tiny_model_dir), str(d / "fsdp.pt")), d, ZOO_SHARDING="fsdp")
    return tuple(torch.load(d / f, weights_only=False) for f in ("one.pt", "two.pt", "fsdp.pt"))


sys.path.insert(0, str(REPO / "tests"))
from dist_worker import CASES  # noqa: E402


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
@pytest.mark.parametrize("case", [c for c, spec in CASES.items() if spec[-1]])
def test_two_processes_equal_one(results, case, sharding):
    """DDP and FSDP (2 gloo ranks, parameters/gradients/optimizer state sharded) against one process
    on the same fixed batch: every optimizer step's full gradient to 1e-7 abs / 1e-5 rel, every
    logged metric to 1e-5 rel, and the parameters after the update's optimizer steps to 1e-6."""
    one, two = results[0][case], results[1 if sharding == "ddp" else 2][case]
    torch.testing.assert_close(two["params"], one["params"], atol=1e-6, rtol=1e-5)
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


@pytest.mark.parametrize("which", [1, 2], ids=["ddp", "fsdp"])
def test_per_micro_batch_threshold_with_uneven_micro_batches_does_not_hang(results, which):
    two = results[which]["micro_batch_scope_uneven"]
    assert torch.isfinite(two["grad"]).all() and two["grad"].abs().max() > 0
    assert 0 < two["metrics"]["top_entropy/kept_share"] < 1


def test_fsdp_holds_half_the_training_state_per_rank(results):
    """Parameters + gradients + AdamW moments held by one rank: about half of the unsharded figure."""
    one, fsdp = results[0]["balanced"]["bytes"], results[2]["balanced"]["bytes"]
    assert 0.45 <= fsdp / one <= 0.55, (fsdp, one)


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


# ----------------------------------------------------------------------------------------------
# Results that do not depend on the number of processes, and FSDP training end to end
# ----------------------------------------------------------------------------------------------
def _smoke(tmp_path, model_dir) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    cfg["model"] = {"name_or_path": str(model_dir), "device": "cpu"}
    cfg["reward"] = {"name": "_dist_parity"}
    cfg["plugins"] = [str(WORKER)]
    cfg["train"].update(threads=1)
    cfg["eval"] = {"every": 2, "n": 8, "k": 1, "batch_size": 8}
    cfg["log"] = {"progress": False, "tensorboard": False}
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "smoke.yaml"


def test_smoke_run_logs_the_same_on_one_process_ddp_and_fsdp(tiny_model_dir, tmp_path):
    """The smoke config (DAPO with dynamic sampling, 2 minibatches, micro-batches of 4) on 1 process,
    2 DDP processes and 2 FSDP processes: every row is sampled from its own random stream keyed by
    (step, global row), so all three log the same per-step reward and entropy."""
    cfg = _smoke(tmp_path, tiny_model_dir)
    train = lambda out, *x: ["-m", "zoo", "train", "--config", str(cfg), "--out", str(tmp_path / out), *x]  # noqa: E731
    _run([sys.executable, *train("one")], tmp_path)
    _run(_torchrun(2, *train("ddp")), tmp_path)
    _run(_torchrun(2, *train("fsdp", "--set", "train.sharding=fsdp")), tmp_path)

    def per_step(out):
        rows = [json.loads(x) for x in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: (r["reward/mean"], r["entropy/mean"]) for r in rows if "reward/mean" in r}

    one, ddp, fsdp = per_step("one"), per_step("ddp"), per_step("fsdp")
    assert sorted(one) == [1, 2, 3, 4]
    for other in (ddp, fsdp):
        assert sorted(other) == sorted(one)
        for k in one:
            assert other[k] == pytest.approx(one[k], rel=1e-3), k


def test_fsdp_train_resumes_exactly_and_saves_a_loadable_final(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = _smoke(tmp_path, tiny_model_dir)
    train = lambda out, *x: ["-m", "zoo", "train", "--config", str(cfg), "--out", str(tmp_path / out),  # noqa: E731
                             "--set", "train.sharding=fsdp", "--set", "checkpoint.every=1", *x]
    _run(_torchrun(2, *train("straight", "--set", "train.steps=3")), tmp_path)
    _run(_torchrun(2, *train("resumed", "--set", "train.steps=2")), tmp_path)
    shards = tmp_path / "resumed" / "ckpt-0000002" / "shards"
    assert (shards / ".metadata").exists() and len(list(shards.glob("*.distcp"))) == 2
    _run(_torchrun(2, *train("resumed", "--set", "train.steps=3", "--resume")), tmp_path)

    def step3(out):
        rows = [json.loads(x) for x in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows if r["step"] == 3]

    assert step3("straight") == step3("resumed") and step3("straight")
    m = AutoModelForCausalLM.from_pretrained(tmp_path / "straight" / "final")
    assert sum(p.numel() for p in m.parameters()) > 0


def test_tampered_dcp_metadata_is_refused(tmp_path):
    """DCP's .metadata is a pickle: it is read with an unpickler that builds only DCP's records."""
    import pickle

    from zoo.sharding import _DCPMetadataUnpickler

    pwned = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(pwned), "w"))

    blob = pickle.dumps({"x": Evil()})
    with pytest.raises(pickle.UnpicklingError, match="open, which a checkpoint never holds: refused"):
        _DCPMetadataUnpickler(__import__("io").BytesIO(blob)).load()
    assert not pwned.exists()
