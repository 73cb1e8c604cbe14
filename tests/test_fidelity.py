"""Issue 17: mechanisms that act, the authors' constants, hand-computed, and through the real training step.

Hand values are worked out in the comments; the trainer tests run the real `Trainer.step` on the tiny
random model with several optimizer steps per rollout batch.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.testing import assert_close

import algorithms  # noqa: F401  (registers every strategy)
from algorithms.archer import Archer, archer_loss, response_entropy_mask, subset_kl_loss
from algorithms.cov import kl_cov_mask
from algorithms.empg import EMPG, empg_advantages
from algorithms.gtpo import GRPOS, GTPO, grpo_s_advantages, gtpo_advantages
from conftest import small_config
from zoo import ops
from zoo.config import ConfigError, config_from_dict
from zoo.objectives import dual_clip, inert_mechanisms, inert_warning, needs_reference, resolve_algorithm
from zoo.schema import AlgorithmConfig, RolloutConfig

T_, F_ = True, False


from rewards import register_reward  # noqa: E402


@register_reward("_test_parity_fidelity")
def _parity(completions, golds):
    return [float(len(c) % 2) for c in completions]      # varied 0/1 rewards on the random model: A != 0


# ------------------------------------------------------------------------------------------------
# Dual clip, overlong buffer, group size
# ------------------------------------------------------------------------------------------------
def test_dual_clip_hand_computed_value_and_gradient():
    r = torch.tensor([[20.0, 2.0, 20.0, 0.5]])
    A = torch.tensor([[-1.0, -1.0, 1.0, -2.0]])
    logp = torch.log(r).requires_grad_(True)
    base = ops.clipped_surrogate(logp, torch.zeros_like(r), A, 0.2, 0.28)
    # PPO: A<0, r=20 -> -min(-20, -0.8) = 20; r=2 -> 2; A>0, r=20 -> -min(20, 1.28) = -1.28; A=-2, r=0.5 -> 1.6
    assert_close(base, torch.tensor([[20.0, 2.0, -1.28, 1.6]]))
    out = dual_clip(base, A, 10.0)
    # c = 10 caps A<0 at -c·A = 10 (r=20); the rest unchanged; A>0 never
    assert_close(out, torch.tensor([[10.0, 2.0, -1.28, 1.6]]))
    out.sum().backward()
    # capped token: no gradient; r=2 unclipped for A<0 (PPO keeps r·|A| above 1-ε): d(-rA)/dlogp = -A·r = 2
    assert_close(logp.grad, torch.tensor([[0.0, 2.0, 0.0, 0.0]]))
    assert dual_clip(base, A, None) is base


def test_clip_ratio_c_validated_and_overlong_default_is_one_fifth():
    r = RolloutConfig(max_new_tokens=40)
    assert resolve_algorithm(AlgorithmConfig(base="dapo"), r).overlong_buffer == 8           # 40 // 5
    assert resolve_algorithm(AlgorithmConfig(base="dapo"), RolloutConfig(max_new_tokens=20480)).overlong_buffer == 4096
    assert resolve_algorithm(AlgorithmConfig(base="grpo"), r).overlong_buffer == 0
    with pytest.raises(ConfigError, match="clip_ratio_c"):
        resolve_algorithm(AlgorithmConfig(clip_ratio_c=1.0), r)
    assert resolve_algorithm(AlgorithmConfig(preset="", clip_ratio_c=3.0), r).clip_ratio_c == 3.0


@pytest.mark.parametrize("base", ["grpo", "dapo", "dr_grpo", "gspo"])
def test_group_size_one_refused_for_group_relative_bases(base, tiny_model_dir):
    with pytest.raises(ConfigError, match="group_size is 1.*A = 0"):
        small_config(tiny_model_dir, algorithm={"base": base}, rollout={"group_size": 1})


def test_presets_carry_the_recipes_constants():
    from zoo.config import resolve_algorithm_block

    for name in ("dapo", "top20", "bottom80", "rho10", "rho50", "rho100", "fork_t12", "fork_t20", "fork_t25", "archer"):
        assert resolve_algorithm_block(name)["clip_ratio_c"] == 10.0, name
    for name in ("ce_gppo", "ce_gppo_b075"):
        assert resolve_algorithm_block(name)["overlong_buffer"] == 0, name          # recipes: overlong off
    a = resolve_algorithm_block("archer")["strategies"][0]
    assert (a["kl_target"], a["kl_agg"], a["kl_low"], a["kl_high"], a["eps_high_tok"]) == ("ref", "subset", 0.001, 0.0, 0.5)
    assert [resolve_algorithm_block(f"fork_t{t}")["strategies"][0]["t_high"] for t in (20, 25)] == [2.0, 2.5]
    assert resolve_algorithm_block("empg")["strategies"][0]["zeta"] == 0.1


# ------------------------------------------------------------------------------------------------
# ARCHER
# ------------------------------------------------------------------------------------------------
def test_archer_high_is_strictly_above_the_quantile():
    H = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones(2, 5, dtype=torch.bool)
    # all equal: q80 = 1, nothing is strictly above (>= would have marked all five)
    # 0..4: q80 = 3.2 -> only 4
    assert response_entropy_mask(H, mask, 0.8).tolist() == [[F_] * 5, [F_, F_, F_, F_, T_]]


def test_archer_dual_clip_and_subset_kl_hand_computed():
    r = torch.tensor([[20.0, 1.4]])
    logp = torch.log(r)
    high = torch.tensor([[T_, F_]])
    A = torch.tensor([[-1.0, 1.0]])
    # high token ε 0.5, A = -1, r = 20: -min(-20, -1.5) = 20, capped at c·|A| = 10; low token A = 1, r 1.4 -> -1.2
    assert_close(archer_loss(logp, torch.zeros(1, 2), A, high, 0.5, 0.2, clip_ratio_c=10.0), torch.tensor([[10.0, -1.2]]))
    assert_close(archer_loss(logp, torch.zeros(1, 2), A, high, 0.5, 0.2), torch.tensor([[20.0, -1.2]]))
    # subset means: KL values k3(d) = e^d - d - 1 with d = ref - logp
    lp = torch.tensor([[0.0, 0.5, -0.5, 1.0]], requires_grad=True)
    ref = torch.zeros(1, 4)
    hi = torch.tensor([[T_, F_, F_, T_]])
    mask = torch.tensor([[T_, T_, T_, F_]])                      # the last (high) token is padding
    k3 = lambda d: math.exp(d) - d - 1                            # noqa: E731
    # low tokens 1, 2: mean (k3(-0.5) + k3(0.5)) / 2; high valid token 0: k3(0) = 0; n from the step
    out = subset_kl_loss(lp, ref, hi, mask, kl_high=0.5, kl_low=1e-3, n_high=1.0, n_low=2.0)
    assert out.item() == pytest.approx(1e-3 * (k3(-0.5) + k3(0.5)) / 2)
    # step counts larger than this micro-batch's: each micro-batch adds its share of the step mean
    assert subset_kl_loss(lp, ref, hi, mask, 0.0, 1e-3, 1.0, 4.0).item() == pytest.approx(1e-3 * (k3(-0.5) + k3(0.5)) / 4)


def test_archer_declares_reference_and_offpolicy_need():
    assert Archer().needs_reference and not Archer(kl_target="old").needs_reference
    assert not Archer(kl_low=0.0).needs_reference
    assert needs_reference(AlgorithmConfig(strategies=({"name": "archer"},)))
    assert not needs_reference(AlgorithmConfig(strategies=({"name": "top_entropy"},)))
    assert needs_reference(AlgorithmConfig(kl_coef=0.1))
    with pytest.raises(ConfigError, match="kl_agg"):
        resolve_algorithm(AlgorithmConfig(strategies=({"name": "archer", "kl_agg": "x"},)), RolloutConfig())


# ------------------------------------------------------------------------------------------------
# KL-Cov: exactly k, ties as verl's torch.topk
# ------------------------------------------------------------------------------------------------
def verl_kl_cov_positions(cov, mask, ratio):
    """verl's selection (core_algos.compute_policy_loss_kl_cov): topk over the valid values in row-major order."""
    idx = torch.nonzero(mask.reshape(-1), as_tuple=True)[0]
    vals = cov.reshape(-1)[idx].cpu()
    k = max(1, int(len(vals) * ratio))
    return sorted(idx[torch.topk(vals, k, largest=True).indices].tolist())


def test_kl_cov_exactly_k_ties_broken_as_verl():
    cov = torch.tensor([[3.0, 1.0, 3.0, 3.0], [3.0, 0.0, 2.0, 9.0]])
    mask = torch.tensor([[T_, T_, T_, T_], [T_, T_, T_, F_]])
    # N = 7, k = floor(0.3·7) = 2 of four tokens tied at 3 (the padded 9 never counts)
    top = kl_cov_mask(cov, mask, 0.3)
    assert int(top.sum()) == 2
    assert sorted(top.flatten().nonzero().squeeze(-1).tolist()) == verl_kl_cov_positions(cov, mask, 0.3)
    keep = kl_cov_mask(cov, mask, 0.3, ties="keep")
    assert keep.tolist() == [[T_, F_, T_, T_], [T_, F_, F_, F_]]           # all four ties
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        c = torch.randint(0, 4, (3, 6), generator=g).float()
        m = torch.rand(3, 6, generator=g) > 0.2
        got = sorted(kl_cov_mask(c, m, 0.25).flatten().nonzero().squeeze(-1).tolist())
        assert got == verl_kl_cov_positions(c, m, 0.25)


# ------------------------------------------------------------------------------------------------
# GTPO / GRPO-S (Eq. 3, 5) and EMPG (Eq. 10-12) constants
# ------------------------------------------------------------------------------------------------
def test_gtpo_wrong_responses_base_reward_minus_one_hand_computed():
    R = torch.tensor([1.0, 1.0, 0.0])
    H = torch.tensor([[1.0, 3.0], [3.0, 1.0], [2.0, 2.0]])
    mask = torch.ones(3, 2, dtype=torch.bool)
    g = torch.zeros(3, dtype=torch.long)
    # Eq. 3: O+ t0: 1 + 0.1·2·1/4 = 1.05, 1 + 0.1·2·3/4 = 1.15 (t1 mirrored); Eq. 5: O- = {2}, h_t = 1:
    # -1 - 0.1·1·(1/2)/(1/2) = -1.1. Mean over the 6 tokens 2.2/6; population var 3.9933/6
    r = torch.tensor([[1.05, 1.15], [1.15, 1.05], [-1.1, -1.1]])
    mu = 2.2 / 6
    var = (2 * (1.05 - mu) ** 2 + 2 * (1.15 - mu) ** 2 + 2 * (-1.1 - mu) ** 2) / 6
    assert_close(gtpo_advantages(R, H, mask, g, 1.0, 0.1), (r - mu) / (math.sqrt(var) + 1e-4))
    assert GTPO().neg_reward == -1.0
    # two wrong responses at one position: the inverse-entropy share, confident mistake penalised most
    R2, H2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([[1.0], [4.0], [1.0]])
    r2 = torch.tensor([1.0 + 0.1, -1 - 0.1 * 2 * 0.25 / 1.25, -1 - 0.1 * 2 * 1.0 / 1.25])    # -1.04, -1.16
    a2 = gtpo_advantages(R2, H2, torch.ones(3, 1, dtype=torch.bool), g)
    assert_close(a2[:, 0], (r2 - r2.mean()) / (r2.std(unbiased=False) + 1e-4))


def test_grpo_s_wrong_responses_base_reward_minus_one_hand_computed():
    R = torch.tensor([1.0, 1.0, 0.0])
    H = torch.tensor([[1.0, 3.0], [3.0, 1.0], [1.0, 3.0]])              # mean H = 2, 2, 2
    g = torch.zeros(3, dtype=torch.long)
    # r̂ = 1 + 0.1·2·2/4 = 1.1, 1.1, -1 - 0.1·1·1 = -1.1; mean 1.1/3; std (G-1)
    v = torch.tensor([1.1, 1.1, -1.1])
    seq = (v - v.mean()) / (v.std() + 1e-4)
    assert_close(grpo_s_advantages(R, H, torch.ones(3, 2, dtype=torch.bool), g), seq[:, None].expand(3, 2))
    assert GRPOS().neg_reward == -1.0


def test_empg_authors_constants_hand_computed():
    assert (EMPG().k, EMPG().k_next, EMPG().zeta) == (1.0, 1.0, 0.1)
    H = torch.tensor([[0.0, 1.0, 2.0, 7.0]])
    mask = torch.tensor([[T_, T_, T_, F_]])
    A = torch.tensor([[1.0, -1.0, 1.0, 0.0]])
    # H_norm = 0, .5, 1 (Eq. 12, + 1e-8); e = exp(-H_norm); g = e / (mean e + 1e-8) (Eq. 10); f = exp(-H_norm) (Eq. 11)
    hn = torch.tensor([0.0, 1 / (2 + 1e-8), 2 / (2 + 1e-8)])
    e = torch.exp(-hn)
    gg = e / (e.mean() + 1e-8)
    f_next = torch.tensor([math.exp(-hn[1].item()), math.exp(-hn[2].item()), 0.0])
    out = empg_advantages(A, H, mask, 1.0, 1.0, 0.1)
    assert_close(out[0, :3], gg * A[0, :3] + 0.1 * f_next)
    assert out[0, 3] == 0


# ------------------------------------------------------------------------------------------------
# The inert-mechanism warning
# ------------------------------------------------------------------------------------------------
def _cfg(model_dir, preset, minibatches, **algo):
    return small_config(model_dir, algorithm={"preset": preset, **algo}, train={"minibatches": minibatches})


@pytest.mark.parametrize("preset,expect", [
    ("top20", ["clip-higher", "dual clip"]), ("kl_cov", ["kl_cov"]), ("archer", ["archer"]),
    ("ce_gppo", ["ce_gppo"]), ("gspo", ["base gspo"]), ("clip_cov", [])])
def test_inert_warning_one_minibatch_warns_four_do_not(tiny_model_dir, preset, expect):
    one = inert_mechanisms(_cfg(tiny_model_dir, preset, 1))
    for e in expect:
        assert any(e in x for x in one), (preset, one)
    if not expect:
        assert one == []
    assert inert_mechanisms(_cfg(tiny_model_dir, preset, 4)) == []
    assert (inert_warning(_cfg(tiny_model_dir, preset, 1)) is None) == (not expect)


def test_plain_grpo_does_not_warn_and_epochs_count(tiny_model_dir):
    assert inert_mechanisms(_cfg(tiny_model_dir, "grpo", 1)) == []
    cfg = small_config(tiny_model_dir, algorithm={"preset": "kl_cov"}, train={"epochs": 2})
    assert inert_mechanisms(cfg) == []


def test_zoo_train_prints_the_warning(tiny_model_dir, tmp_path, capsys):
    import yaml

    from zoo.cli import main

    raw = {"model": {"name_or_path": str(tiny_model_dir)}, "task": {"name": "countdown", "train_size": 50, "eval_size": 4},
           "algorithm": {"preset": "kl_cov"}, "rollout": {"group_size": 2, "prompts_per_step": 2, "max_new_tokens": 6},
           "train": {"steps": 1, "threads": 1}, "eval": {"every": 0, "n": 4, "k": 1, "at_start": False},
           "checkpoint": {"every": 0}, "log": {"progress": False, "tensorboard": False}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "kl_cov" in err and "train.minibatches" in err
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r2"),
                 "--set", "train.minibatches=2"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_compare_common_base_sets_minibatches_and_reports_inert(tiny_model_dir, tmp_path):
    from test_compare import compare_raw

    from zoo.compare import collect_results, plan_compare, write_report

    raw = compare_raw(tiny_model_dir, ["grpo", "kl_cov"], [0])
    raw["rollout"] = {**raw["rollout"], "prompts_per_step": 4}
    plan = plan_compare(raw, tmp_path / "a")
    assert {c.cfg.train.minibatches for c in plan.cells} == {4} and plan.common_train == {"minibatches": 4}
    assert all(c.cfg.algorithm.clip_ratio_c == 10.0 for c in plan.cells)
    assert plan.inert == {"grpo": [], "kl_cov": []}
    raw1 = {**raw, "train": {**raw["train"], "minibatches": 1}}                # the config's own value wins
    plan1 = plan_compare(raw1, tmp_path / "b")
    assert plan1.inert["kl_cov"] and plan1.inert["grpo"]                   # grpo here: clip-higher, dual clip
    (tmp_path / "b").mkdir()
    res = collect_results(plan1)
    assert res["methods"]["kl_cov"]["inert_mechanisms"] == plan1.inert["kl_cov"]
    text = write_report(res, tmp_path / "b", [])
    assert "inert mechanisms" in text and "1 minibatch(es) x 1 epoch(s)" in text


# ------------------------------------------------------------------------------------------------
# Through the real training step
# ------------------------------------------------------------------------------------------------
def _trainer(model_dir, out, algorithm, minibatches, **extra):
    from zoo.trainer import Trainer

    raw_train = {"minibatches": minibatches, "lr": 5e-2, "seed": 0}
    cfg = small_config(model_dir, algorithm=algorithm, train=raw_train, reward={"name": "_test_parity_fidelity"},
                       rollout={"group_size": 4, "prompts_per_step": 4, "max_new_tokens": 12}, **extra)
    return Trainer(cfg, out, log=lambda *a, **k: None)


COMMON = {"base": "grpo", "loss_agg": "token-mean", "clip_low": 0.2, "clip_high": 0.28, "kl_coef": 0.0,
          "dynamic_sampling": False, "overlong_buffer": 0, "clip_ratio_c": 10.0}


def _step_params(t):
    t.step_idx = 1
    t.step()
    return torch.cat([p.detach().flatten().clone() for p in t.model.parameters()])


def test_ratio_differs_from_one_on_later_minibatches_under_the_common_base(tiny_model_dir, tmp_path):
    from test_compare import compare_raw

    from zoo.compare import plan_compare
    from zoo.trainer import Trainer

    raw = compare_raw(tiny_model_dir, ["grpo"], [0], reward={"name": "_test_parity_fidelity"})
    raw["rollout"] = {"group_size": 4, "prompts_per_step": 4, "max_new_tokens": 12}
    raw["train"] = {**raw["train"], "lr": 5e-2}
    cell = plan_compare(raw, tmp_path / "c").cells[0]
    assert cell.cfg.train.minibatches == 4
    t = Trainer(cell.cfg, tmp_path / "run", log=lambda *a, **k: None)
    seen = []
    orig = t._micro_batch_loss

    def spy(mctx, w, d):
        seen.append(float(((mctx.logp.detach() - mctx.old_logp).abs() * mctx.mask).max()))
        return orig(mctx, w, d)
    t._micro_batch_loss = spy
    t.step_idx = 1
    m = t.step()
    assert len(seen) == 4 and seen[0] == 0.0                   # the first minibatch: r = 1 exactly
    assert max(seen[1:]) > 1e-3                                # later minibatches: the policy moved, r != 1
    assert m["kl/old"] > 0


@pytest.mark.parametrize("strategy", [{"name": "kl_cov", "ratio": 0.2}, {"name": "archer"}, {"name": "ce_gppo"}])
def test_loss_replacements_act_with_several_minibatches_and_not_with_one(strategy, tiny_model_dir, tmp_path):
    """Same rollout batch (same seed, same initial model): with 4 minibatches the strategy's update differs
    from its base's; with 1 (ratio exactly 1, π_θ = π_ref) it equals it, the inertness the warning names."""
    def run(algo, mb, name):
        return _step_params(_trainer(tiny_model_dir, tmp_path / f"{name}{mb}", algo, mb))

    algo = {**COMMON, "strategies": [strategy]}
    if strategy["name"] == "archer":                           # its KL to π_ref: the reference is loaded
        t = _trainer(tiny_model_dir, tmp_path / "ref", algo, 4)
        assert t.policy.ref is not None and t.cfg.algorithm.kl_coef == 0.0
        sc, _ = t.rollout()
        assert sc.ref_logp is not None
    base4, mine4 = run(COMMON, 4, "base"), run(algo, 4, "mine")
    assert (base4 - mine4).abs().max() > 1e-6
    base1, mine1 = run(COMMON, 1, "base"), run(algo, 1, "mine")
    assert_close(mine1, base1, atol=1e-6, rtol=0)


def test_no_reference_without_a_declared_need(tiny_model_dir, tmp_path):
    t = _trainer(tiny_model_dir, tmp_path / "r", {**COMMON, "strategies": [{"name": "archer", "kl_target": "old"}]}, 2)
    assert t.policy.ref is None
    sc, _ = t.rollout()
    assert sc.ref_logp is None


def test_archer_strategy_through_hooks_matches_subset_means(tiny_model_dir):
    """The step-level counts feed extra_loss: two micro-batches' shares sum to the step's subset means."""
    from test_strategies_field import make_ctx

    g = torch.Generator().manual_seed(0)
    H = torch.rand(4, 5, generator=g)
    mask = torch.ones(4, 5, dtype=torch.bool)
    logp, ref = -torch.rand(4, 5, generator=g), -torch.rand(4, 5, generator=g)
    ctx = make_ctx(H, mask, logp=logp)
    ctx = dataclasses.replace(ctx, ref_logp=ref, micro_batch_ids=torch.tensor([0, 0, 1, 1]))
    s = Archer(kl_low=0.01, kl_high=0.5)
    s.token_weights(ctx)
    high = response_entropy_mask(H, mask, 0.8)
    kl = ops.k3_kl(logp, ref)
    want = 0.5 * kl[high].mean() + 0.01 * kl[~high].mean()
    parts = [s.extra_loss(dataclasses.replace(ctx, logp=logp[r], ref_logp=ref[r], entropy=H[r], mask=mask[r]))
             for r in (slice(0, 2), slice(2, 4))]
    assert_close(parts[0] + parts[1], want)
    assert s.metrics(ctx)["high_share"] == pytest.approx(float(high.sum()) / 20)
    assert config_from_dict({"algorithm": {"preset": "archer"}}).algorithm.strategies[0]["kl_target"] == "ref"


def test_grpo_s_gives_a_mid_group_response_a_nonzero_advantage_when_the_group_has_signal():
    """Three reward levels in one group (e.g. weighted reward functions): the middle response sits at
    the group mean, but its group has signal, so it is z-normalised like the others (it used to be
    forced to 0); a group whose rewards are all equal gets A = 0."""
    from algorithms.gtpo import grpo_s_advantages

    rewards = torch.tensor([1.0, 0.5, 0.0, 0.7, 0.7])
    groups = torch.tensor([0, 0, 0, 1, 1])
    H = torch.full((5, 3), 0.5)
    mask = torch.ones(5, 3, dtype=torch.bool)
    A = grpo_s_advantages(rewards, H, mask, groups, alpha2=0.0, neg_reward=-1.0)[:, 0]
    # alpha2 = 0: shaped rewards r = (1, 0.5, -1) (the wrong one's reward is -1, Eq. 5);
    # mean 1/6, unbiased std sqrt(((5/6)^2 + (1/3)^2 + (7/6)^2) / 2) = 1.0408
    r = torch.tensor([1.0, 0.5, -1.0])
    expected = (r - r.mean()) / (r.std() + 1e-4)
    assert torch.allclose(A[:3], expected, atol=1e-5)
    assert abs(float(A[1]) - 0.3202) < 1e-3          # (0.5 - 1/6) / 1.0408
    assert torch.equal(A[3:], torch.zeros(2))
