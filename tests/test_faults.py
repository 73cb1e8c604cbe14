"""Fault tolerance and bad input: kills, corrupt checkpoints, non-finite steps, faulty rewards,
bad data / model paths / configs. Every test runs on the tiny random model in seconds."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, small_config
from rewards import SafeReward, get_reward, register_reward
from zoo.checkpoint import NoUsableCheckpoint
from zoo.config import ConfigError
from zoo.strategy import Strategy, register_strategy
from zoo.trainer import Trainer
from zoo.update import NonFiniteError

QUIET = dict(log={"progress": False, "tensorboard": False})


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
@register_reward("_fault_parity", "test only: 1.0 for completions of odd length")
def _fault_parity(completions, golds):
    return [float(len(c) % 2) for c in completions]


@register_reward("_fault_flaky", "test only: raises on any batch holding a completion of length divisible by 3")
def _fault_flaky(completions, golds):
    if any(len(c) % 3 == 0 for c in completions):
        raise RuntimeError("flaky reward: cannot score this one")
    return [float(len(c) % 2) for c in completions]


def _trainer(model_dir, out, log=None, resume=False, **sections):
    sections = {"reward": {"name": "_fault_parity"}, **QUIET, **sections}
    return Trainer(small_config(model_dir, **sections), out, resume=resume, log=log or (lambda *a: None))


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _rows(run_dir):
    """metrics.jsonl rows without the timing keys."""
    out = []
    for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(ln)
        out.append({k: v for k, v in row.items() if not k.startswith("perf/")})
    return out


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------
# SIGKILL mid-step, then --resume: the same metrics as a run that was never interrupted
# ----------------------------------------------------------------------------------------------
PROBE_PLUGIN = '''
"""Test plugin: a reward with signal on a random model, and a probe strategy that changes nothing.

With ZOO_FAULT_PROBE_DIR set, the probe touches opt-step-<n> at each optimizer step (inside the
step, after the rollout and scoring) and holds the process there at step ZOO_FAULT_PROBE_HOLD, so
a test can SIGKILL it mid-step at a known point."""
import os
import time
from pathlib import Path

from rewards import register_reward
from zoo.strategy import Strategy, register_strategy


@register_reward("_fault_plugin_parity", "test only: 1.0 for completions of odd length")
def parity(completions, golds):
    return [float(len(c) % 2) for c in completions]


@register_strategy("_fault_probe", description="test only: marks optimizer steps", paper="-")
class FaultProbe(Strategy):
    def token_weights(self, ctx):
        d = os.environ.get("ZOO_FAULT_PROBE_DIR")
        if d:
            Path(d, f"opt-step-{ctx.step}").touch()
            if ctx.step == int(os.environ.get("ZOO_FAULT_PROBE_HOLD", "-1")):
                time.sleep(300)  # mid-step: the test kills the process here
        return None
'''


def _zoo_train(cfg: Path, out: Path, *extra, env=None) -> subprocess.Popen:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_FAULT_PROBE")}
    e.update({"TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", **(env or {})})
    return subprocess.Popen([sys.executable, "-m", "zoo", "train", "--config", str(cfg), "--out", str(out), *extra],
                            cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _tb_steps(tb_dir: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_sigkill_resume_identical(tiny_model_dir, tmp_path):
    plugin = tmp_path / "fault_probe.py"
    plugin.write_text(PROBE_PLUGIN)
    cfg = tmp_path / "faults.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name_or_path": str(tiny_model_dir)},
        "plugins": [str(plugin)],
        "task": {"name": "countdown", "train_size": 200, "eval_size": 8},
        "reward": {"name": "_fault_plugin_parity"},
        "algorithm": {"preset": "grpo", "strategies": [{"name": "_fault_probe"}]},
        "rollout": {"group_size": 4, "prompts_per_step": 4, "max_new_tokens": 12},
        "train": {"steps": 6, "lr": 1.0e-3, "threads": 1},
        "eval": {"every": 3, "n": 8, "k": 2, "at_start": False},
        "checkpoint": {"every": 2, "keep": 2},
        "log": {"progress": False, "tensorboard": True},
    }))
    full_dir, part_dir, probe = tmp_path / "full", tmp_path / "part", tmp_path / "probe"
    probe.mkdir()
    full = _zoo_train(cfg, full_dir)  # the uninterrupted reference, on the other core
    # hold the run inside step 4 (optimizer step index 3): ckpt-2 is written, step 3 is logged
    part = _zoo_train(cfg, part_dir, env={"ZOO_FAULT_PROBE_DIR": str(probe), "ZOO_FAULT_PROBE_HOLD": "3"})
    try:
        deadline = time.monotonic() + 45
        while not (probe / "opt-step-3").exists():
            if part.poll() is not None:
                pytest.fail(f"the run ended before it was killed (rc {part.returncode}):\n{part.stderr.read()}")
            assert time.monotonic() < deadline, "the run never reached step 4"
            time.sleep(0.02)
        assert (part_dir / "ckpt-0000002" / "COMPLETE").exists()
        assert not (part_dir / "ckpt-0000004").exists()
        logged = [r["step"] for r in _rows(part_dir)]
        assert logged == [1, 2, 3], logged  # step 3 was logged after ckpt-2: it must not survive
        part.send_signal(signal.SIGKILL)
        assert part.wait(timeout=10) == -signal.SIGKILL
    finally:
        if part.poll() is None:
            part.kill()
            part.wait()
    part.stdout.close()
    part.stderr.close()
    # a write cut by the kill: a torn last line without its newline
    with open(part_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "reward/me')

    res = _zoo_train(cfg, part_dir, "--resume")
    out, err = res.communicate(timeout=60)
    assert res.returncode == 0, err
    assert "resumed" in err + out and "ckpt-0000002" in err + out
    out_full, err_full = full.communicate(timeout=60)
    assert full.returncode == 0, err_full

    a, b = _rows(full_dir), _rows(part_dir)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6, 6]  # no stale or duplicated lines (6: final eval)
    assert "eval/accuracy" in b[2] and "eval/accuracy" in b[-1]
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys(), (ra.keys() ^ rb.keys())
        for k in ra:
            va, vb = ra[k], rb[k]
            if isinstance(va, float) and isinstance(vb, float):
                assert vb == pytest.approx(va, rel=1e-6, abs=1e-6), (ra["step"], k)
            else:
                assert va == vb, (ra["step"], k)
    assert all(r["train/grad_norm"] > 0 for r in b[:6]), "the run had a learning signal"
    # the final weights agree too (and training moved them)
    from safetensors.torch import load_file

    wa, wb = load_file(full_dir / "final" / "model.safetensors"), load_file(part_dir / "final" / "model.safetensors")
    w0 = load_file(tiny_model_dir / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6, rtol=0) for k in wa)
    assert any(not torch.equal(w0[k], wb[k]) for k in w0)
    # TensorBoard: the killed run's events past the checkpoint are purged, no step twice
    assert _tb_steps(part_dir / "tb", "reward/mean") == [1, 2, 3, 4, 5, 6]


# ----------------------------------------------------------------------------------------------
# Corrupt or truncated checkpoints
# ----------------------------------------------------------------------------------------------
CKPT = dict(checkpoint={"every": 1, "keep": 3}, train={"steps": 2, "lr": 1.0e-3, "threads": 1},
            eval={"at_start": False, "every": 0, "n": 4, "k": 1})


@pytest.fixture(scope="module")
def two_checkpoints(tiny_model_dir, tmp_path_factory):
    """A finished 2-step run with ckpt-1 and ckpt-2 (copied per test, never modified)."""
    d = tmp_path_factory.mktemp("ckpt") / "run"
    _trainer(tiny_model_dir, d, **CKPT).train()
    assert (d / "ckpt-0000001" / "COMPLETE").exists() and (d / "ckpt-0000002" / "COMPLETE").exists()
    return d


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip(f: Path) -> None:
    data = bytearray(f.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    f.write_bytes(bytes(data))


def _bad_marker(f: Path) -> None:
    (f.parent / "COMPLETE").write_text('{"step": 2, "sha2')


@pytest.mark.parametrize("corrupt,bad_file,words", [
    (_truncate, "state.pt", "checksum"),
    (_flip, "state.pt", "checksum"),
    (_bad_marker, "COMPLETE", "unreadable"),
], ids=["truncated", "flipped-bytes", "torn-marker"])
def test_corrupt_checkpoint_falls_back_with_a_warning(tiny_model_dir, two_checkpoints, tmp_path, corrupt, bad_file,
                                                     words):
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    corrupt(run / "ckpt-0000002" / "state.pt")
    (run / ".ckpt-0000003.dead").mkdir()  # a save that was killed before its rename
    msgs = []
    t = _trainer(tiny_model_dir, run, log=msgs.append, resume=True, **CKPT)
    assert t.step_idx == 1
    warn = [m for m in msgs if "skipping checkpoint" in m]
    assert len(warn) == 1 and str(run / "ckpt-0000002" / bad_file) in warn[0] and words in warn[0], msgs
    assert any("resumed" in m and "ckpt-0000001" in m for m in msgs)
    t.train()  # re-does step 2 and writes a good ckpt-2 over the bad one
    assert _rows(run) == _rows(two_checkpoints)
    assert not (run / ".ckpt-0000003.dead").exists()
    assert _trainer(tiny_model_dir, run, resume=True, **CKPT).step_idx == 2


def test_all_checkpoints_corrupt_is_a_clear_error_and_nothing_changes(tiny_model_dir, two_checkpoints, tmp_path,
                                                                      capsys):
    from zoo.cli import main

    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    _truncate(run / "ckpt-0000002" / "state.pt")
    _flip(run / "ckpt-0000001" / "state.pt")
    before = _snapshot(run)
    with pytest.raises(NoUsableCheckpoint) as e:
        _trainer(tiny_model_dir, run, resume=True, **CKPT)
    msg = str(e.value)
    assert "no usable checkpoint" in msg
    assert str(run / "ckpt-0000001" / "state.pt") in msg and str(run / "ckpt-0000002" / "state.pt") in msg
    # the command line reports it as an error (exit 2), without a traceback
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(small_config(tiny_model_dir, reward={"name": "_fault_parity"}, **QUIET,
                                               **CKPT).to_dict()))
    assert main(["train", "--config", str(cfg), "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "zoo train: error: no usable checkpoint" in err and "Traceback" not in err
    assert _snapshot(run) == before


# ----------------------------------------------------------------------------------------------
# Checkpoints cannot run code: state.pt is loaded with torch.load(weights_only=True)
# ----------------------------------------------------------------------------------------------
class _Evil:
    """Unpickling this calls open(path, "w"): it creates a file, the proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _rewrite_state(ckpt: Path, state) -> None:
    """Replace ckpt/state.pt and give it a matching COMPLETE marker (what an attacker can do too)."""
    import hashlib

    torch.save(state, ckpt / "state.pt")
    marker = json.loads((ckpt / "COMPLETE").read_text())
    marker["sha256"] = hashlib.sha256((ckpt / "state.pt").read_bytes()).hexdigest()
    (ckpt / "COMPLETE").write_text(json.dumps(marker))


def test_malicious_state_pt_is_refused_without_running_its_code(tiny_model_dir, two_checkpoints, tmp_path, capsys):
    from zoo.cli import main

    pwned = tmp_path / "pwned"
    # the payload works: an unsafe load of it creates the file
    probe = tmp_path / "probe.pt"
    torch.save({"step": 2, "x": _Evil(pwned)}, probe)
    torch.load(probe, weights_only=False)
    assert pwned.exists()
    pwned.unlink()

    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    shutil.rmtree(run / "ckpt-0000001")
    _rewrite_state(run / "ckpt-0000002", {"step": 2, "format": 2, "model": _Evil(pwned)})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(small_config(tiny_model_dir, reward={"name": "_fault_parity"}, **QUIET,
                                               **CKPT).to_dict()))
    assert main(["train", "--config", str(cfg), "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert not pwned.exists(), "unpickling the checkpoint ran its code"
    assert "no usable checkpoint" in err and "was refused" in err and "build Python objects" in err, err
    assert "Traceback" not in err


def test_tampered_newest_checkpoint_falls_back_to_the_previous_one(tiny_model_dir, two_checkpoints, tmp_path):
    pwned = tmp_path / "pwned"
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    _rewrite_state(run / "ckpt-0000002", {"step": 2, "format": 2, "model": _Evil(pwned)})
    msgs = []
    t = _trainer(tiny_model_dir, run, log=msgs.append, resume=True, **CKPT)
    assert t.step_idx == 1 and not pwned.exists()
    assert any("skipping checkpoint ckpt-0000002" in m and "was refused" in m for m in msgs), msgs


def _as_format_1(state: dict) -> dict:
    """What entropy-zoo wrote before format 2: numpy RNG state pickled as numpy objects, strategy
    states as a list, no format key."""
    from zoo.checkpoint import _numpy_state_tuple

    old = {k: v for k, v in state.items() if k != "format"}
    old["rng"] = dict(state["rng"], numpy=_numpy_state_tuple(state["rng"]["numpy"]))
    old["ranks"] = [dict(r, rng=dict(r["rng"], numpy=_numpy_state_tuple(r["rng"]["numpy"]))) for r in state["ranks"]]
    old["strategies"] = json.loads(state["strategies"])
    return old


def test_old_format_checkpoint_is_refused_then_upgraded_on_request(tiny_model_dir, two_checkpoints, tmp_path,
                                                                   capsys):
    from zoo.checkpoint import load_state
    from zoo.checkpoint import main as ckpt_main

    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    shutil.rmtree(run / "ckpt-0000002")
    ck = run / "ckpt-0000001"
    _rewrite_state(ck, _as_format_1(load_state(ck)))
    with pytest.raises(NoUsableCheckpoint, match=r"python -m zoo.checkpoint upgrade .*ckpt-0000001 --trust"):
        _trainer(tiny_model_dir, run, resume=True, **CKPT)
    assert ckpt_main(["upgrade", str(ck)]) == 2                  # not without --trust
    assert "refusing" in capsys.readouterr().err
    assert ckpt_main(["upgrade", str(ck), "--trust"]) == 0
    t = _trainer(tiny_model_dir, run, resume=True, **CKPT)
    assert t.step_idx == 1
    t.train()                                                    # continues exactly as the uninterrupted run
    assert _rows(run) == _rows(two_checkpoints)


def test_strategy_state_must_be_plain_data():
    from zoo.checkpoint import dump_plain

    assert json.loads(dump_plain([{"coef": 0.1, "h": None}], "s")) == [{"coef": 0.1, "h": None}]
    with pytest.raises(TypeError, match="plain data"):
        dump_plain([{"coef": torch.tensor(1.0)}], "strategy state_dict()")


# ----------------------------------------------------------------------------------------------
# Non-finite loss / gradients
# ----------------------------------------------------------------------------------------------
@register_strategy("_fault_nan_loss", description="test only: NaN extra loss on chosen calls", paper="-")
class NanLoss(Strategy):
    bad_calls: str = "2"          # comma-separated call numbers (1-based) that return NaN; "all" = every call

    def extra_loss(self, ctx):
        self.calls = getattr(self, "calls", 0) + 1
        if self.bad_calls == "all" or str(self.calls) in self.bad_calls.split(","):
            return ctx.logp.sum() * float("nan")
        return None


@register_strategy("_fault_nan_grad", description="test only: finite loss, NaN gradient on the 1st call", paper="-")
class NanGrad(Strategy):
    def extra_loss(self, ctx):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 1:
            return torch.sqrt((ctx.logp * 0.0).sum())  # value 0, d sqrt(u)/du at 0 is inf -> NaN grads
        return None


def _step(t):
    t.step_idx += 1
    return t.step()


def test_nonfinite_loss_skips_the_step_and_training_goes_on(tiny_model_dir, tmp_path):
    msgs = []
    t = _trainer(tiny_model_dir, tmp_path / "run", log=msgs.append,
                 algorithm={"preset": "grpo", "strategies": [{"name": "_fault_nan_loss", "bad_calls": "2"}]},
                 train={"steps": 3, "lr": 1.0e-3, "threads": 1, "max_bad_steps": 2})
    p0 = _params(t.model)
    m1 = _step(t)
    p1 = _params(t.model)
    assert "train/skipped_nonfinite" not in m1 and not torch.equal(p0, p1)
    m2 = _step(t)                                      # NaN loss: no update, no optimizer state change
    assert m2["train/skipped_nonfinite"] == 1 and "loss/total" not in m2
    assert torch.equal(p1, _params(t.model)) and t.bad_steps == 1 and t.opt_steps == 1
    assert any("non-finite loss or gradient at step 2" in m and "(1/2 in a row)" in m for m in msgs)
    m3 = _step(t)                                      # the run goes on; the bad-step streak resets
    assert "train/skipped_nonfinite" not in m3 and math.isfinite(m3["loss/total"])
    assert not torch.equal(p1, _params(t.model)) and t.bad_steps == 0 and t.opt_steps == 2
    assert torch.isfinite(_params(t.model)).all()


def test_nonfinite_gradient_with_a_finite_loss_is_skipped(tiny_model_dir, tmp_path):
    t = _trainer(tiny_model_dir, tmp_path / "run",
                 algorithm={"preset": "grpo", "strategies": [{"name": "_fault_nan_grad"}]})
    p0 = _params(t.model)
    m = _step(t)
    assert m["train/skipped_nonfinite"] == 1 and torch.equal(p0, _params(t.model))
    assert "train/skipped_nonfinite" not in _step(t) and torch.isfinite(_params(t.model)).all()


def test_nonfinite_every_step_stops_the_run_after_max_bad_steps(tiny_model_dir, tmp_path):
    msgs = []
    run = tmp_path / "run"
    t = _trainer(tiny_model_dir, run, log=msgs.append,
                 algorithm={"preset": "grpo", "strategies": [{"name": "_fault_nan_loss", "bad_calls": "all"}]},
                 train={"steps": 10, "lr": 1.0e-3, "threads": 1, "max_bad_steps": 3},
                 eval={"at_start": False, "every": 0, "n": 4, "k": 1}, checkpoint={"every": 1, "keep": 5})
    p0 = _params(t.model)
    with pytest.raises(NonFiniteError, match="3 consecutive non-finite steps; stopping"):
        t.train()
    assert t.step_idx == 3 and torch.equal(p0, _params(t.model))
    rows = _rows(run)
    assert [r["step"] for r in rows] == [1, 2] and all(r["train/skipped_nonfinite"] == 1 for r in rows)
    assert sum("non-finite loss or gradient" in m for m in msgs) == 3
    assert not (run / "final").exists()


# ----------------------------------------------------------------------------------------------
# Faulty rewards: an exception, a bad value, a timed-out or killed math worker -> 0 and counted
# ----------------------------------------------------------------------------------------------
def test_a_raising_reward_scores_that_sample_zero_and_counts_it():
    msgs = []
    fn = SafeReward(get_reward("_fault_flaky").fn, "_fault_flaky", warn=msgs.append)
    out = fn(["a", "abc", "ab", "abcdef", "abcde"], ["1"] * 5)
    assert out == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert fn.last_stats == {"errors": 2, "timeouts": 0}
    assert any("batch of 5 raised RuntimeError" in m for m in msgs)
    assert any("sample 1 raised RuntimeError: flaky reward" in m for m in msgs)
    assert fn(["a"], ["1"]) == [1.0] and fn.last_stats == {"errors": 0, "timeouts": 0}
    assert fn.pop_stats() == {"errors": 2, "timeouts": 0} and fn.pop_stats() == {"errors": 0, "timeouts": 0}


def test_non_numeric_and_non_finite_reward_values_become_zero():
    vals = [float("nan"), "1.0", None, float("inf"), 0.5, True, torch.tensor(1.0), [1, 2]]
    msgs = []
    fn = SafeReward(lambda c, g: list(vals), "odd_values", warn=msgs.append)
    assert fn(["x"] * 8, ["1"] * 8) == [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 0.0]
    assert fn.last_stats["errors"] == 5 and len(msgs) == 5
    assert fn(["x"] * 8, ["1"] * 8) and len(msgs) == 5  # later faults are counted, not printed
    wrong_len = SafeReward(lambda c, g: [1.0], "wrong_length", warn=msgs.append)
    assert wrong_len(["x", "y"], ["1", "1"]) == [1.0, 1.0] and wrong_len.last_stats["errors"] == 0
    with pytest.raises(ValueError, match="2 completions but 1 golds"):  # a caller's bug is not masked
        wrong_len(["x", "y"], ["1"])


def test_every_registered_reward_is_guarded():
    from rewards import reward_names

    for name in reward_names():
        fn = get_reward(name)
        assert isinstance(fn, SafeReward) and fn.pop_stats() == {"errors": 0, "timeouts": 0}
    for name in ("arith", "countdown", "math"):
        fn = get_reward(name)
        out = fn([None, 3, "\\boxed{1}"], ["1", None, "1"])  # type: ignore[list-item]
        assert out[:2] == [0.0, 0.0] and all(type(x) is float for x in out)


@pytest.fixture
def fresh_math_pool():
    from rewards import math as vm

    vm.shutdown()
    vm.clear_cache()
    yield vm
    vm.shutdown()
    vm.clear_cache()


# pairs that need the symbolic stage (the worker processes)
SYMBOLIC = (["\\boxed{x^2-1}", "\\boxed{2\\sqrt{2}}"], ["(x-1)(x+1)", "\\sqrt{8}"])


def test_a_math_worker_past_its_budget_scores_zero_is_counted_and_replaced(fresh_math_pool, monkeypatch):
    vm = fresh_math_pool
    monkeypatch.setenv("REWARDS_MATH_TEST_DELAY", "30")   # this worker stalls on every case
    vm.warmup(1)
    monkeypatch.delenv("REWARDS_MATH_TEST_DELAY")        # its replacement will not
    fn = get_reward("math")
    t0 = time.monotonic()
    assert fn(SYMBOLIC[0][:1], SYMBOLIC[1][:1]) == [0.0]
    assert time.monotonic() - t0 < 10 and fn.last_stats == {"errors": 0, "timeouts": 1}
    assert fn(SYMBOLIC[0][1:], SYMBOLIC[1][1:]) == [1.0] and fn.last_stats == {"errors": 0, "timeouts": 0}
    assert fn.pop_stats() == {"errors": 0, "timeouts": 1}


def test_a_math_worker_killed_mid_batch_scores_zero_is_counted_and_replaced(fresh_math_pool, monkeypatch):
    vm = fresh_math_pool
    monkeypatch.setenv("REWARDS_MATH_TEST_DELAY", "2.5")  # each case takes 2.5 s: time to kill one
    vm.warmup(2)
    monkeypatch.delenv("REWARDS_MATH_TEST_DELAY")
    pool = vm._get_pool()
    victim = pool.workers[0].proc
    msgs = []
    fn = SafeReward(lambda c, g: [float(x) for x in vm.verify_batch(c, g, timeout=20.0)], "math_20s", warn=msgs.append)
    killer = threading.Timer(0.5, lambda: os.kill(victim.pid, signal.SIGKILL))
    killer.start()
    try:
        out = fn(*SYMBOLIC)
    finally:
        killer.cancel()
    assert sorted(out) == [0.0, 1.0] and fn.last_stats == {"errors": 1, "timeouts": 0}
    assert msgs == ["[rewards] reward 'math_20s': 0 sample(s) timed out and 1 failed inside the reward "
                    "(e.g. a crashed worker) in a batch of 2 -> 0.0"]
    assert victim.poll() is not None and all(w.proc.pid != victim.pid for w in pool.workers)
    assert fn(*SYMBOLIC) == [1.0, 1.0] and fn.last_stats == {"errors": 0, "timeouts": 0}  # not cached as wrong


def test_training_goes_on_through_a_raising_reward(tiny_model_dir, tmp_path):
    t = _trainer(tiny_model_dir, tmp_path / "run", reward={"name": "_fault_flaky"},
                 train={"steps": 2, "lr": 1.0e-3, "threads": 1}, eval={"at_start": False, "every": 0, "n": 4, "k": 1})
    t.reward_fn.warn = lambda m: None
    t.train()
    rows = _rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2, 2] and all(math.isfinite(r["reward/mean"]) for r in rows[:2])


def test_trainer_logs_reward_errors_and_timeouts(tiny_model_dir, tmp_path):
    t = _trainer(tiny_model_dir, tmp_path / "run", reward={"name": "_fault_flaky"},
                 train={"steps": 2, "lr": 1.0e-3, "threads": 1}, eval={"at_start": False, "every": 0, "n": 4, "k": 1})
    t.reward_fn.warn = lambda m: None
    t.train()
    rows = [r for r in _rows(tmp_path / "run") if "reward/mean" in r]
    assert all(r["reward/timeouts"] == 0 for r in rows)
    assert sum(r["reward/errors"] for r in rows) > 0


# ----------------------------------------------------------------------------------------------
# Bad input: clear errors, nothing written or overwritten
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task,good,bad,field", [
    ("jsonl", {"problem": "p", "answer": "1"}, {"problem": "p"}, "answer"),
    ("gsm8k", {"question": "q", "answer": "x #### 1"}, {"answer": "#### 1"}, "question"),
    ("math500", {"problem": "p", "answer": "1", "solution": "s", "unique_id": "u"},
     {"problem": "p", "answer": "1", "unique_id": "u"}, "solution"),
])
def test_dataset_row_missing_a_field_names_file_and_row(tiny_model_dir, tmp_path, task, good, bad, field):
    data = tmp_path / f"{task}.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in (good, good, bad)) + "\n")
    out = tmp_path / "never"
    with pytest.raises(ValueError) as e:
        _trainer(tiny_model_dir, out, task={"name": task, "params": {"path": str(data)}, "train_size": 2,
                                            "eval_size": 2}, reward={"name": "math"})
    assert f"{data}, row 3: missing field '{field}'" in str(e.value)
    assert not out.exists()


def _bert_dir(d: Path, with_weights: bool) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    (BertForMaskedLM(cfg) if with_weights else cfg).save_pretrained(d)
    return d


@pytest.mark.parametrize("kind,match", [
    ("missing", r"model path '.*nope' does not exist"),
    ("empty-dir-with-junk", r"exists but has no config.json: not a Hugging Face model directory"),
    ("bert-config", r"is not a causal LM: it is a bidirectional encoder \(is_decoder: false\) "
                    r"\(model_type: bert, architectures: none listed\)"),
    ("bert-mlm", r"is not a causal LM: none of its architectures is a causal LM "
                 r"\(model_type: bert, architectures: BertForMaskedLM\)"),
    ("garbage-config", r"cannot read config.json"),
    ("garbage-weights", r"\(llama\): cannot load the weights"),
])
def test_bad_model_path_is_a_clear_error_and_no_run_dir_is_made(tiny_model_dir, tmp_path, kind, match):
    m = tmp_path / "model"
    if kind == "missing":
        m = tmp_path / "nope"
    elif kind == "empty-dir-with-junk":
        m.mkdir()
        (m / "weights.bin").write_bytes(b"\x00" * 64)
    elif kind == "bert-config":
        _bert_dir(m, with_weights=False)
    elif kind == "bert-mlm":
        _bert_dir(m, with_weights=True)
    elif kind == "garbage-config":
        m.mkdir()
        (m / "config.json").write_text("{this is not json")
    elif kind == "garbage-weights":
        shutil.copytree(tiny_model_dir, m)
        (m / "model.safetensors").write_bytes(b"\x13garbage" * 64)
    out = tmp_path / "never"
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        _trainer(m, out)
    assert not out.exists()
    if kind != "empty-dir-with-junk":  # that one is caught before the loader (zoo.pretrain)
        from zoo.model import load_policy

        with pytest.raises((ValueError, FileNotFoundError), match=match):
            load_policy(m)


def test_resume_with_an_incompatible_config_names_the_keys_and_changes_nothing(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    _trainer(tiny_model_dir, run, checkpoint={"every": 1, "keep": 2}, train={"steps": 1, "lr": 1.0e-3, "threads": 1},
             eval={"at_start": False, "every": 0, "n": 4, "k": 1}).train()
    before = _snapshot(run)
    assert "config.yaml" in before and "ckpt-0000001/state.pt" in before and "metrics.jsonl" in before
    with pytest.raises(ConfigError) as e:
        _trainer(tiny_model_dir, run, resume=True, checkpoint={"every": 1, "keep": 2},
                 train={"steps": 3, "lr": 5.0e-4, "threads": 1}, rollout={"group_size": 2, "prompts_per_step": 4,
                                                                          "max_new_tokens": 12},
                 eval={"at_start": False, "every": 0, "n": 4, "k": 1})
    msg = str(e.value)
    assert "differing keys" in msg and "train.lr (0.001 -> 0.0005)" in msg and "rollout.group_size (4 -> 2)" in msg
    assert "train.steps" not in msg  # a longer run is a compatible change
    assert _snapshot(run) == before
    with pytest.raises(FileExistsError, match="--resume"):  # no --resume: refused, nothing overwritten
        _trainer(tiny_model_dir, run, train={"steps": 1, "lr": 1.0e-3, "threads": 1})
    assert _snapshot(run) == before


@pytest.mark.parametrize("algorithms,extra,match", [
    (["grpo", "top2O"], {}, r"algorithms\[1\]: .*unknown preset 'top2O'; did you mean 'top20'"),
    (["grpo", {"name": "x", "preset": "grpo", "strategies": [{"name": "top_entropyy"}]}], {},
     r"algorithm 'x'.*unknown strategy 'top_entropyy'; did you mean 'top_entropy'"),
    (["grpo", {"name": "y", "base": "dapoo"}], {}, r"unknown base objective 'dapoo'; did you mean 'dapo'"),
    (["grpo"], {"reward": {"name": "countdwn"}}, r"reward.name: unknown reward 'countdwn'; did you mean 'countdown'"),
    (["grpo"], {"task": {"name": "countdwn"}}, r"task: unknown task 'countdwn'; did you mean 'countdown'"),
    (["grpo"], {"baseline": "grp"}, r"baseline: .*did you mean 'grpo'"),
], ids=["preset", "strategy", "base", "reward", "task", "baseline"])
def test_compare_unknown_names_fail_before_any_run_dir(tiny_model_dir, tmp_path, capsys, algorithms, extra, match):
    from test_compare import compare_raw
    from zoo.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(compare_raw(tiny_model_dir, algorithms, [0], **extra)))
    out = tmp_path / "never"
    assert main(["compare", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert not out.exists()
