"""The training loop through its real code paths, on a tiny random model."""
import json
import math

import pytest
import torch
from torch.testing import assert_close

from conftest import small_config
from rewards import register_reward
from zoo.config import ConfigError
from zoo.objectives import overlong_penalty
from zoo.trainer import Trainer
from zoo.update import NonFiniteError


@register_reward("_test_parity")
def _parity(completions, golds):
    return [float(len(c) % 2) for c in completions]


@register_reward("_test_always_one")
def _one(completions, golds):
    return [1.0 for _ in completions]


def _trainer(tmp_path, name="run", **sections):
    return Trainer(small_config(sections.pop("model_dir"), **sections), tmp_path / name, log=lambda *a: None)


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _grads(model):
    """The step's gradient (clipped; optimizer.step leaves it in .grad)."""
    return torch.cat([p.grad.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("preset,mode", [("grpo", "seq-mean-token-mean"), ("dapo", "token-mean")])
def test_first_step_loss_equals_hand_value(tiny_model_dir, tmp_path, preset, mode):
    t = _trainer(tmp_path, model_dir=tiny_model_dir, algorithm={"preset": preset, "dynamic_sampling": False},
                 reward={"name": "_test_parity"})
    sc, _ = t.rollout()
    B = len(sc.batch.texts)
    m = t.optimizer_step(sc, list(range(B)), first=True)
    # at the first step r = 1 exactly, so ℓ = -A for every valid token
    mask = sc.batch.response_mask.float()
    A = sc.advantages
    if mode == "token-mean":
        expected = -(A * mask).sum() / mask.sum()
    else:
        expected = -((A * mask).sum(-1) / mask.sum(-1)).mean()
    assert sc.advantages.abs().sum() > 0
    assert math.isclose(m["loss/total"], float(expected), rel_tol=1e-5, abs_tol=1e-6)
    assert m["clip/frac_low"] == 0 and m["clip/frac_high"] == 0 and abs(m["kl/old"]) < 1e-6


def test_micro_batches_give_the_same_update(tiny_model_dir, tmp_path):
    outs = []
    for mbs in (0, 4):
        t = _trainer(tmp_path, f"mb{mbs}", model_dir=tiny_model_dir, reward={"name": "_test_parity"},
                     train={"steps": 1, "lr": 1e-3, "threads": 1, "micro_batch_size": mbs})
        sc, _ = t.rollout()
        t.optimizer_step(sc, list(range(len(sc.batch.texts))), first=True)
        outs.append(_grads(t.model))
    # gradients, not parameters: Adam's first step is ~lr·sign(g), which amplifies float noise in near-zero g
    assert outs[0].abs().max() > 0
    assert_close(outs[0], outs[1], atol=1e-7, rtol=1e-5)


def test_tokens_after_eos_are_never_trained_on(tiny_model_dir, tmp_path):
    results = []
    for scramble in (False, True):
        t = _trainer(tmp_path, f"s{scramble}", model_dir=tiny_model_dir, reward={"name": "_test_parity"},
                     rollout={"group_size": 4, "prompts_per_step": 4, "max_new_tokens": 12})
        sc, _ = t.rollout()
        b = sc.batch
        b.response_mask[:, 6:] = False  # pretend every response ended at token 6
        if scramble:
            junk = torch.randint(0, 50, b.response_ids.shape)
            b.response_ids = torch.where(b.response_mask, b.response_ids, junk)
            b.temperatures = torch.where(b.response_mask, b.temperatures, torch.full_like(b.temperatures, 3.0))
        sc = t.score(b, sc.rewards, sc.correct)
        t.optimizer_step(sc, list(range(len(b.texts))), first=True)
        results.append(_params(t.model))
    assert_close(results[0], results[1], atol=0, rtol=0)


def test_dynamic_sampling_drops_flat_groups_and_caps_rounds(tiny_model_dir, tmp_path):
    t = _trainer(tmp_path, model_dir=tiny_model_dir, reward={"name": "_test_parity"},
                 algorithm={"preset": "dapo", "max_resample_rounds": 2, "overlong_buffer": 0},
                 rollout={"group_size": 2, "prompts_per_step": 4, "max_new_tokens": 6})
    sc, m = t.rollout()
    assert 1 <= m["rollout/rounds"] <= 3
    assert m["budget/samples"] == m["rollout/rounds"] * 4 * 2
    if sc is not None:
        r = sc.rewards.view(-1, 2)
        assert (r[:, 0] != r[:, 1]).all(), "kept groups all carry signal"
        assert len(sc.batch.texts) <= 8
        assert len(set(sc.batch.group_ids.tolist())) == len(sc.batch.texts) // 2


def test_all_flat_groups_skip_the_step_without_nan(tiny_model_dir, tmp_path):
    t = _trainer(tmp_path, model_dir=tiny_model_dir, reward={"name": "_test_always_one"},
                 algorithm={"preset": "dapo", "max_resample_rounds": 1, "overlong_buffer": 0})
    before = _params(t.model)
    m = t.step()
    assert m["train/skipped_no_signal"] == 1 and m["rollout/rounds"] == 2 and m["rollout/dropped_groups"] == 8
    assert torch.equal(before, _params(t.model))


def test_overlong_shaping_is_added_to_the_reward(tiny_model_dir, tmp_path):
    t = _trainer(tmp_path, model_dir=tiny_model_dir, reward={"name": "_test_parity"},
                 algorithm={"preset": "dapo", "dynamic_sampling": False, "overlong_buffer": 4, "overlong_penalty": 0.5},
                 rollout={"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 8})
    sc, _ = t.rollout()
    L = sc.batch.lengths
    assert_close(sc.rewards, sc.correct + overlong_penalty(L, 8, 4, 0.5))
    assert (sc.rewards[sc.batch.truncated] == sc.correct[sc.batch.truncated] - 0.5).all()


def test_reference_kl_is_zero_at_start_and_logged(tiny_model_dir, tmp_path):
    t = _trainer(tmp_path, model_dir=tiny_model_dir, reward={"name": "_test_parity"},
                 algorithm={"preset": "grpo", "kl_coef": 0.1})
    m = t.step()
    assert "kl/ref" in m and abs(m["kl/ref"]) < 1e-6
    m2 = t.step()
    assert m2["kl/ref"] > 0


def test_non_finite_steps_are_skipped_then_stop(tiny_model_dir, tmp_path):
    from zoo.strategy import Strategy, register_strategy

    @register_strategy("_test_nan_weights")
    class NanWeights(Strategy):
        def token_weights(self, ctx):
            return torch.full_like(ctx.advantages, float("nan"))

    t = _trainer(tmp_path, model_dir=tiny_model_dir, reward={"name": "_test_parity"},
                 algorithm={"strategies": [{"name": "_test_nan_weights"}]}, train={"steps": 5, "threads": 1, "max_bad_steps": 2})
    before = _params(t.model)
    assert t.step().get("train/skipped_nonfinite") == 1
    assert torch.equal(before, _params(t.model))
    with pytest.raises(NonFiniteError, match="consecutive"):
        t.step()


def _rows(run_dir):
    out = []
    for ln in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(ln)
        out.append({k: v for k, v in row.items() if not k.startswith("perf/")})
    return out


def test_resume_after_a_kill_matches_an_uninterrupted_run(tiny_model_dir, tmp_path):
    sections = dict(model_dir=tiny_model_dir, reward={"name": "_test_parity"},
                    algorithm={"preset": "dapo"}, train={"steps": 4, "lr": 1e-3, "threads": 1},
                    checkpoint={"every": 2}, eval={"every": 2, "n": 8, "k": 2})
    full = _trainer(tmp_path, "full", **dict(sections))
    full.train()

    class Killed(Exception):
        pass

    part = _trainer(tmp_path, "part", **dict(sections))
    orig, calls = part.step, []

    def dying_step():
        calls.append(1)
        if len(calls) == 3:
            raise Killed()
        return orig()
    part.step = dying_step
    with pytest.raises(Killed):
        part.train()
    assert (tmp_path / "part" / "ckpt-0000002" / "COMPLETE").exists()
    with pytest.raises(FileExistsError, match="--resume"):
        _trainer(tmp_path, "part", **dict(sections))
    resumed = Trainer(small_config(tiny_model_dir, **{k: v for k, v in sections.items() if k != "model_dir"}),
                      tmp_path / "part", resume=True, log=lambda *a: None)
    assert resumed.step_idx == 2
    resumed.train()
    assert _rows(tmp_path / "full") == _rows(tmp_path / "part")
    assert_close(_params(full.model), _params(resumed.model), atol=0, rtol=0)


def test_resume_with_a_different_config_names_the_keys(tiny_model_dir, tmp_path):
    base = dict(model_dir=tiny_model_dir, reward={"name": "_test_parity"}, checkpoint={"every": 1},
                train={"steps": 1, "threads": 1})
    _trainer(tmp_path, **dict(base)).train()
    cfg = small_config(tiny_model_dir, reward={"name": "_test_parity"}, checkpoint={"every": 1},
                       train={"steps": 2, "threads": 1, "lr": 0.5})
    with pytest.raises(ConfigError, match=r"train\.lr"):
        Trainer(cfg, tmp_path / "run", resume=True)


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tiny_model_dir, tmp_path):
    t = _trainer(tmp_path, model_dir=tiny_model_dir, reward={"name": "_test_parity"}, checkpoint={"every": 1, "keep": 3},
                 train={"steps": 2, "threads": 1}, eval={"at_start": False, "every": 0, "n": 4, "k": 1})
    t.train()
    newest = tmp_path / "run" / "ckpt-0000002" / "state.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    msgs = []
    r = Trainer(small_config(tiny_model_dir, reward={"name": "_test_parity"}, checkpoint={"every": 1, "keep": 3},
                             train={"steps": 2, "threads": 1}, eval={"at_start": False, "every": 0, "n": 4, "k": 1}),
                tmp_path / "run", resume=True, log=msgs.append)
    assert r.step_idx == 1
    assert any("ckpt-0000002" in m and "checksum" in m for m in msgs)


def test_rank_shares_are_consecutive_and_cover_everything():
    from zoo.batches import rank_share as _share
    from zoo.batches import split_groups as _split

    for n, world in [(16, 2), (5, 2), (7, 3), (2, 2)]:
        parts = [_share(n, r, world) for r in range(world)]
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(parts[i][1] == parts[i + 1][0] for i in range(world - 1))
        assert max(h - lo for lo, h in parts) - min(h - lo for lo, h in parts) <= 1
    assert _split([0, 1, 2], 2) == [[0, 1], [2]]
    assert _split([0], 2) == [[0], []]            # every rank makes the same number of optimizer steps


def test_old_logp_from_rollout_matches_rescoring(tiny_model_dir, tmp_path):
    """train.old_logp=rollout reuses the sampler's records: the same π_old and entropy as a scoring pass."""
    outs = {}
    for mode in ("rescore", "rollout"):
        t = _trainer(tmp_path, mode, model_dir=tiny_model_dir, reward={"name": "_test_parity"},
                     train={"steps": 1, "threads": 1, "old_logp": mode})
        sc, m = t.rollout()
        outs[mode] = sc
    a, b = outs["rescore"], outs["rollout"]
    assert torch.equal(a.batch.response_ids, b.batch.response_ids)
    assert_close(b.old_logp, a.old_logp, atol=2e-5, rtol=1e-5)
    assert_close(b.entropy, a.entropy, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("strategies,extra,sparse", [
    ([{"name": "top_entropy", "rho": 0.2}], {}, True),                             # 1 token in 5 carries gradient
    ([{"name": "top_entropy", "rho": 0.2}, {"name": "entropy_reg", "coef": 0.01}], {}, False),  # H gradient everywhere
    ([{"name": "top_entropy", "rho": 0.2}], {"kl_coef": 0.05}, False),             # reference KL on every token
    ([{"name": "archer"}], {}, False),                                              # Archer's per-token KL
])
def test_sparse_backward_equals_dense(tiny_model_dir, tmp_path, strategies, extra, sparse):
    """The sparse LM-head backward gives the dense gradient; it steps aside when another term needs
    gradients at zero-weight tokens (here entropy regularisation)."""
    grads, used = [], []
    for on in (True, False):
        t = _trainer(tmp_path, f"sp{on}", model_dir=tiny_model_dir, reward={"name": "_test_parity"},
                     algorithm={"base": "dapo", "dynamic_sampling": False, "strategies": strategies, **extra},
                     train={"steps": 1, "lr": 1e-3, "threads": 1, "micro_batch_size": 8, "sparse_backward": on},
                     model={"name_or_path": str(tiny_model_dir), "chunk_size": 16})   # the fused, tiled op
        sc, _ = t.rollout()
        m = t.optimizer_step(sc, list(range(len(sc.batch.texts))), first=True)
        grads.append(_grads(t.model))
        used.append(m["train/sparse_backward"])
    assert used == [float(sparse), 0.0]
    assert grads[1].abs().max() > 0
    assert_close(grads[0], grads[1], atol=1e-7, rtol=1e-5)
