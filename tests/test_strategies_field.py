"""The field beyond the seeds (ALGORITHMS.md "Beyond the seeds"): pure functions against
hand-computed examples, one test over every registered strategy, the scaffold and the plugin path."""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from torch.testing import assert_close

import algorithms  # noqa: F401  (registers every strategy)
from algorithms.archer import archer_loss, response_entropy_mask
from algorithms.ce_gppo import ce_gppo_loss
from algorithms.cov import clip_cov_mask, draw_generator, kl_cov_loss, kl_cov_mask, select_count, token_covariance
from algorithms.empg import empg_advantages
from algorithms.entropy_reg import EntropyReg, adapt_coef, entropy_bonus
from algorithms.gtpo import grpo_s_advantages, gtpo_advantages
from conftest import REPO, small_config
from zoo import ops
from zoo.registry import STRATEGIES
from zoo.strategy import TokenContext

T_, F_ = True, False


# ------------------------------------------------------------------------------------------------
# Pure functions, hand-computed
# ------------------------------------------------------------------------------------------------
def test_token_covariance():
    logp = torch.tensor([[-1.0, -3.0, -2.0, 9.0]])
    A = torch.tensor([[2.0, 0.0, 1.0, 9.0]])
    mask = torch.tensor([[T_, T_, T_, F_]])
    # means over valid: logp -2, A 1 -> (1)(1), (-1)(-1), (0)(0); padding 0
    assert_close(token_covariance(logp, A, mask), torch.tensor([[1.0, 1.0, 0.0, 0.0]]))


def test_select_count():
    assert select_count(2e-4, 2000) == 1 and select_count(2e-3, 2000) == 4 and select_count(0.02, 2000) == 40
    assert select_count(0.5, 0) == 0


def test_clip_cov_mask_candidates_count_and_seeded_draw():
    cov = torch.tensor([[2.0, 3.0, 0.5, 6.0], [4.0, 1.5, 1.0, 2.5]])
    mask = torch.tensor([[T_, T_, T_, T_], [T_, T_, T_, F_]])
    clipped = torch.tensor([[F_, F_, F_, F_], [T_, F_, F_, F_]])
    # candidates (1 < Cov < 5, valid, not clipped), row-major: (0,0) (0,1) (1,1); (1,0) clipped, (1,3) padding
    all3 = clip_cov_mask(cov, mask, clipped, 1.0, 1.0, 5.0, draw_generator(0, 0))
    assert all3.tolist() == [[T_, T_, F_, F_], [F_, T_, F_, F_]]
    # ratio 2/7 -> max(1, floor(2)) = 2 of the 3, chosen by randperm(3) of the (seed, step) generator
    cand = [(0, 0), (0, 1), (1, 1)]
    for seed, step in [(0, 0), (1, 5), (7, 3)]:
        out = clip_cov_mask(cov, mask, clipped, 2 / 7, 1.0, 5.0, draw_generator(seed, step))
        perm = torch.randperm(3, generator=draw_generator(seed, step))[:2].tolist()
        assert sorted(map(tuple, out.nonzero().tolist())) == sorted(cand[p] for p in perm)
        again = clip_cov_mask(cov, mask, clipped, 2 / 7, 1.0, 5.0, draw_generator(seed, step))
        assert torch.equal(out, again)
    none = clip_cov_mask(cov, mask, clipped, 1.0, 10.0, 20.0, draw_generator(0, 0))
    assert not none.any()


def test_kl_cov_mask_and_loss():
    cov = torch.tensor([[1.0, 5.0, 3.0, 2.0], [9.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[T_, T_, T_, T_], [F_, F_, F_, F_]])
    # N = 4, k = max(1, floor(0.5·4)) = 2 -> the two largest valid: 5, 3 (the padded 9 never counts)
    assert kl_cov_mask(cov, mask, 0.5).tolist() == [[F_, T_, T_, F_], [F_, F_, F_, F_]]
    assert kl_cov_mask(cov, mask, 1e-6).tolist() == [[F_, T_, F_, F_], [F_, F_, F_, F_]]   # at least 1
    logp = torch.tensor([[0.1, 0.1]], requires_grad=True)
    sel = torch.tensor([[T_, F_]])
    out = kl_cov_loss(logp, torch.zeros(1, 2), torch.tensor([[2.0, 2.0]]), sel, 1.0)
    # -exp(0.1)·2 + |0.1| on the selected token, -exp(0.1)·2 on the other (no clipping)
    e = math.exp(0.1)
    assert_close(out, torch.tensor([[-2 * e + 0.1, -2 * e]]))
    out.sum().backward()
    assert_close(logp.grad, torch.tensor([[-2 * e + 1.0, -2 * e]]))


def test_archer_split_and_loss():
    H = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 99.0]])
    mask = torch.tensor([[T_, T_, T_, T_, T_, F_]])
    # per-response 0.8 quantile of 0..4: pos 0.8·4 = 3.2 -> 3.2: only H = 4 is high
    assert response_entropy_mask(H, mask, 0.8).tolist() == [[F_, F_, F_, F_, T_, F_]]
    logp = torch.log(torch.tensor([[1.4, 1.4]]))
    high = torch.tensor([[T_, F_]])
    # A = 1, r = 1.4: high token ε 0.5 -> -1.4 (unclipped); low token ε 0.2 -> -1.2
    out = archer_loss(logp, torch.zeros(1, 2), torch.ones(1, 2), high, 0.5, 0.2, 0.0, 0.0, None)
    assert_close(out, torch.tensor([[-1.4, -1.2]]))
    # KL on the low token only: k3(logp, 0) = exp(-log 1.4) + log 1.4 - 1
    kl = 1 / 1.4 + math.log(1.4) - 1
    out = archer_loss(logp, torch.zeros(1, 2), torch.ones(1, 2), high, 0.5, 0.2, 0.0, 0.001, torch.zeros(1, 2))
    assert_close(out, torch.tensor([[-1.4, -1.2 + 0.001 * kl]]))


def test_ce_gppo_values_and_gradients():
    r = torch.tensor([[0.5, 1.5, 1.1, 20.0, 0.5]])
    A = torch.tensor([[-1.0, 1.0, 1.0, -1.0, 1.0]])
    logp = torch.log(r).requires_grad_(True)
    out = ce_gppo_loss(logp, torch.zeros_like(r), A, 0.2, 0.2, 0.5, 1.0, 10.0)
    # A<0, r<0.8: -0.5·0.8·1·(-1) = 0.4 | A>0, r>1.2: -1·1.2·1 = -1.2 | inside: -1.1
    # A<0, r=20: min(20, 10) = 10 (dual clip, no grad) | A>0, r=0.5 < 0.8: -r·A = -0.5 (PPO does not clip it)
    assert_close(out, torch.tensor([[0.4, -1.2, -1.1, 10.0, -0.5]]))
    out.sum().backward()
    # ∂/∂logp: β1(1-ε)(-A) = 0.4 | -β2(1+ε)A = -1.2 | -r·A = -1.1 | 0 | -0.5
    assert_close(logp.grad, torch.tensor([[0.4, -1.2, -1.1, 0.0, -0.5]]))


def test_entropy_bonus_and_adaptive_coef():
    H = torch.tensor([[1.0, 3.0, 50.0]], requires_grad=True)
    mask = torch.tensor([[T_, T_, F_]])
    b = entropy_bonus(H, mask, 0.01, n_valid_step=4.0)     # this micro-batch holds 2 of the step's 4 tokens
    assert b.item() == pytest.approx(-0.01 * 4 / 4)
    b.backward()
    assert_close(H.grad, torch.tensor([[-0.0025, -0.0025, 0.0]]))
    assert adapt_coef(1e-3, 0.2, 0.5, 1e-3, 1e-2) == pytest.approx(1e-3 + 3e-4)
    assert adapt_coef(1e-3, 5.0, 0.5, 1e-3, 1e-2) == 0.0                  # clipped at 0
    assert adapt_coef(9e-3, 0.0, 5.0, 1e-3, 1e-2) == 1e-2                 # clipped at max
    s = EntropyReg(coef=1e-3, target=0.5)
    ctx = make_ctx(torch.full((1, 2), 0.2), torch.ones(1, 2, dtype=torch.bool))
    s.token_weights(ctx)
    assert s.state_dict()["coef"] == pytest.approx(1.3e-3)
    s2 = EntropyReg(coef=1e-3, target=0.5)
    s2.load_state_dict(s.state_dict())
    assert s2.metrics(ctx)["coef"] == pytest.approx(1.3e-3)


def test_gtpo_token_rewards_hand_computed():
    R = torch.tensor([1.0, 1.0, 0.0])
    H = torch.tensor([[1.0, 3.0], [3.0, 1.0], [2.0, 2.0]])
    mask = torch.ones(3, 2, dtype=torch.bool)
    g = torch.zeros(3, dtype=torch.long)
    # O+ = {0, 1}: t0: 1 + 0.1·2·1/4 = 1.05, 1 + 0.1·2·3/4 = 1.15; t1 mirrored. O- = {2}: 0 - 0.1·1·1 = -0.1
    r = torch.tensor([[1.05, 1.15], [1.15, 1.05], [-0.1, -0.1]])
    exp = (r - 0.7) / (math.sqrt(1.93 / 6) + 1e-4)                        # mean 0.7, population var 1.93/6
    assert_close(gtpo_advantages(R, H, mask, g, 1.0, 0.1, neg_reward=None), exp)   # earlier reading: R_i
    assert not gtpo_advantages(torch.ones(3), H, mask, g).any()           # all rewards equal: A = 0


def test_grpo_s_sequence_rewards_hand_computed():
    R = torch.tensor([1.0, 1.0, 0.0])
    H = torch.tensor([[1.0, 3.0], [3.0, 1.0], [1.0, 3.0]])               # mean H = 2, 2, 2
    mask = torch.ones(3, 2, dtype=torch.bool)
    g = torch.zeros(3, dtype=torch.long)
    # r̂ = 1 + 0.1·2·2/4 = 1.1, 1.1, 0 - 0.1·1·1 = -0.1; mean 0.7; std (G-1) sqrt(0.96/2)
    seq = (torch.tensor([1.1, 1.1, -0.1]) - 0.7) / (math.sqrt(0.48) + 1e-4)
    assert_close(grpo_s_advantages(R, H, mask, g, neg_reward=None), seq[:, None].expand(3, 2))
    assert not grpo_s_advantages(torch.zeros(3), H, mask, g).any()


def test_empg_hand_computed():
    H = torch.tensor([[0.0, 1.0, 2.0, 7.0]])
    mask = torch.tensor([[T_, T_, T_, F_]])
    A = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    k = math.log(2)
    # H_norm = 0, .5, 1 -> e = 1, 2^-.5, .5; g = e / mean(e); f(H_{t+1}) = 2^-.5, .5, 0
    e = torch.tensor([1.0, 2 ** -0.5, 0.5])
    exp = e / e.mean() + 0.1 * torch.tensor([2 ** -0.5, 0.5, 0.0])
    out = empg_advantages(A, H, mask, k, k, 0.1)
    assert_close(out[0, :3], exp)
    assert out[0, 3] == 0
    assert_close(empg_advantages(A, H, mask, 0.0, 0.0, 0.0), A)         # identity setting


# ------------------------------------------------------------------------------------------------
# Every registered strategy through the hooks and the real trainer step
# ------------------------------------------------------------------------------------------------
def make_ctx(entropy, mask, advantages=None, logp=None, rewards=None, group_ids=None, step=0) -> TokenContext:
    B, T = entropy.shape
    z = torch.zeros(B, T)
    return TokenContext(logp=z if logp is None else logp, old_logp=z, entropy=entropy, mask=mask.bool(),
                        advantages=z if advantages is None else advantages,
                        group_ids=torch.zeros(B, dtype=torch.long) if group_ids is None else group_ids,
                        rewards=torch.zeros(B) if rewards is None else rewards, temperatures=torch.ones(B, T),
                        step=step, step_n_valid=float(mask.sum()), step_n_seqs=float(B), max_new_tokens=T)


# parameters that make a strategy act on a 4x5 batch (paper ratios select nothing there)
ACTIVE = {"clip_cov": {"ratio": 0.3, "lb": 0.0, "ub": 100.0}, "kl_cov": {"ratio": 0.3}}
# parameters at which a strategy must reproduce the base clipped surrogate (value and gradient)
IDENTITY = {
    "identity": {}, "clip_cov": {"lb": 1e8, "ub": 1e9}, "kl_cov": {"coef": 0.0},   # kl_cov: at r = 1
    "archer": {"eps_high_tok": 0.2, "eps_low_tok": 0.2, "kl_low": 0.0}, "ce_gppo": {"beta1": 0.0, "beta2": 0.0},
    "entropy_reg": {"coef": 0.0}, "empg": {"k": 0.0, "k_next": 0.0, "zeta": 0.0},
    "entropy_advantage": {"alpha": 0.0}, "eapo": {"alpha": 0.0}, "top_entropy": {"rho": 1.0},
    "grpo_s": {"alpha2": 0.0, "neg_reward": None}, "quadrant_isolation": {"quadrants": ["PHR", "PLR", "NHR", "NLR"]},
}


def batches():
    g = torch.Generator().manual_seed(0)
    B, T = 4, 5
    H = torch.rand(B, T, generator=g) * 2
    lengths = torch.tensor([5, 3, 4, 1])
    mask = torch.arange(T)[None] < lengths[:, None]
    R = torch.tensor([1.0, 0.0, 1.0, 0.0])
    gid = torch.tensor([0, 0, 1, 1])
    logp = -torch.rand(B, T, generator=g) * 3
    one = torch.zeros(B, T, dtype=torch.bool)
    one[0, 0] = True
    return {
        "normal": (H, mask, R, gid, logp),
        "all_rewards_equal": (H, mask, torch.ones(B), gid, logp),
        "one_valid_token": (H, one, R, gid, logp),
        "all_padding": (H, torch.zeros(B, T, dtype=torch.bool), R, gid, logp),
    }


def run_hooks(strats, H, mask, R, gid, logp, clip=(0.2, 0.2)):
    """One optimizer step as the trainer runs it, the micro-batch = the whole step."""
    A = ops.grpo_advantages(R, gid)[:, None] * mask                          # (B, T)
    ent = H.clone().requires_grad_(True)
    lp = logp.clone().requires_grad_(True)
    ctx = make_ctx(H, mask, A, logp, R, gid)
    ctx.old_logp, ctx.clip_low, ctx.clip_high = logp.clone(), *clip
    for s in strats:
        out = s.shape_advantages(ctx)
        assert out.shape == mask.shape
        ctx.advantages = out * mask
    w = torch.ones_like(A)
    for s in strats:
        x = s.token_weights(ctx)
        if x is not None:
            assert x.shape == mask.shape
            w = w * x
    w = w * mask
    for s in strats:
        for k, v in s.metrics(ctx).items():
            assert math.isfinite(float(v)), k
    mctx = dataclasses.replace(ctx, logp=lp, entropy=ent)
    per_tok = None
    for s in strats:
        per_tok = s.policy_loss(mctx) if per_tok is None else per_tok
    if per_tok is None:
        per_tok = ops.clipped_surrogate(lp, mctx.old_logp, mctx.advantages, *clip)
    assert per_tok.shape == mask.shape
    loss = ops.agg_loss(per_tok * w, mask, "token-mean", ops.agg_denominators(mask, w, mask.shape[1]))
    for s in strats:
        e = s.extra_loss(mctx)
        if e is not None:
            loss = loss + e
    loss.backward()
    return loss, lp.grad if lp.grad is not None else torch.zeros_like(lp), ent.grad


def strategy_names():
    return [n for n in STRATEGIES.names() if not n.startswith("_")]


@pytest.mark.parametrize("name", strategy_names())
def test_every_strategy_hooks_shapes_grads_degenerate_identity(name, tiny_model_dir, tmp_path):
    cls = STRATEGIES.get(name)
    for case, (H, mask, R, gid, logp) in batches().items():
        s = cls(**ACTIVE.get(name, {}))
        loss, g_lp, g_ent = run_hooks([s], H, mask, R, gid, logp)
        assert torch.isfinite(loss), f"{name}/{case}: loss {loss}"
        assert torch.isfinite(g_lp).all(), f"{name}/{case}: non-finite grad"
        assert g_lp[~mask].abs().sum() == 0, f"{name}/{case}: gradient on invalid tokens"
        if g_ent is not None:
            assert g_ent[~mask].abs().sum() == 0, f"{name}/{case}: entropy gradient on invalid tokens"
        if case == "all_padding":
            assert loss.item() == 0.0
    if name in IDENTITY:
        H, mask, R, gid, logp = batches()["normal"]
        base = run_hooks([STRATEGIES.get("identity")()], H, mask, R, gid, logp)
        mine = run_hooks([cls(**IDENTITY[name])], H, mask, R, gid, logp)
        assert_close(mine[0], base[0], atol=1e-6, rtol=0)
        assert_close(mine[1], base[1], atol=1e-6, rtol=0)
    # one real trainer step (micro-batches of 4 inside a 16-response step)
    from zoo.trainer import Trainer

    cfg = small_config(tiny_model_dir, algorithm={"base": "grpo", "strategies": [{"name": name, **ACTIVE.get(name, {})}]},
                       reward={"name": "_test_parity_field"},
                       train={"steps": 1, "lr": 1e-3, "threads": 1, "micro_batch_size": 4},
                       rollout={"group_size": 4, "prompts_per_step": 4, "max_new_tokens": 8},
                       eval={"at_start": False, "every": 0, "n": 4, "k": 1})
    t = Trainer(cfg, tmp_path / name, log=lambda *a: None)
    m = t.step()
    assert "loss/total" in m, m
    assert all(not (isinstance(v, float) and v != v) for v in m.values()), m


from rewards import register_reward  # noqa: E402


@register_reward("_test_parity_field")
def _parity(completions, golds):
    return [float(len(c) % 2) for c in completions]


def test_kl_cov_selects_over_the_whole_step_not_per_micro_batch():
    from algorithms.cov import KLCov

    H, mask, R, gid, logp = batches()["normal"]
    A = ops.grpo_advantages(R, gid)[:, None] * mask
    ctx = make_ctx(H, mask, A, logp, R, gid)
    ctx.old_logp = logp - 0.1
    ctx.micro_batch_ids = torch.tensor([0, 0, 1, 1])
    s = KLCov(ratio=0.3)
    s.token_weights(ctx)
    step_sel = kl_cov_mask(token_covariance(logp, A, mask), mask, 0.3)
    for mb in (0, 1):
        rows = ctx.micro_batch_ids == mb
        mctx = dataclasses.replace(ctx, logp=logp[rows], old_logp=ctx.old_logp[rows], mask=mask[rows],
                                   advantages=A[rows], micro_batch_ids=ctx.micro_batch_ids[rows])
        assert_close(s.policy_loss(mctx), kl_cov_loss(logp[rows], ctx.old_logp[rows], A[rows], step_sel[rows], 1.0))


# ------------------------------------------------------------------------------------------------
# zoo new-strategy and the README's plugin example
# ------------------------------------------------------------------------------------------------
def test_new_strategy_scaffold_runs_as_a_plugin(tmp_path, tiny_model_dir, capsys):
    from zoo.cli import main

    assert main(["new-strategy", "scaffolded_w", "--dir", str(tmp_path)]) == 0
    sfile, tfile = tmp_path / "scaffolded_w.py", tmp_path / "test_scaffolded_w.py"
    assert sfile.exists() and tfile.exists()
    assert main(["new-strategy", "scaffolded_w", "--dir", str(tmp_path)]) == 2          # no overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["new-strategy", "not-a-name", "--dir", str(tmp_path)]) == 2
    assert main(["new-strategy", "top_entropy", "--dir", str(tmp_path / "x")]) == 2      # taken name
    spec = importlib.util.spec_from_file_location("generated_test_scaffolded_w", tfile)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.test_weights_hand_computed()
    mod.test_registered_and_validates()
    from zoo.trainer import Trainer

    cfg = small_config(tiny_model_dir, plugins=[str(sfile)], reward={"name": "_test_parity_field"},
                       algorithm={"base": "grpo", "strategies": [{"name": "scaffolded_w", "scale": 0.5}]},
                       train={"steps": 1, "threads": 1}, eval={"at_start": False, "every": 0, "n": 4, "k": 1})
    assert "scaffolded_w/weight_mean" in Trainer(cfg, tmp_path / "run", log=lambda *a: None).step()


def test_new_strategy_writes_into_the_current_directory_never_the_package(tmp_path, monkeypatch):
    import algorithms
    from zoo.cli import main

    pkg = Path(algorithms.__file__).resolve().parent
    monkeypatch.chdir(tmp_path)
    assert main(["new-strategy", "cwd_weights"]) == 0
    assert (tmp_path / "cwd_weights.py").exists() and (tmp_path / "test_cwd_weights.py").exists()
    assert not (pkg / "cwd_weights.py").exists()
    assert str(tmp_path / "cwd_weights.py") in (tmp_path / "test_cwd_weights.py").read_text()  # a plugin path


def test_new_strategy_in_another_checkout_goes_to_its_algorithms_dir(tmp_path, monkeypatch):
    import algorithms
    from zoo.cli import main

    other = tmp_path / "other-checkout"
    for d in ("algorithms", "zoo", "tests"):
        (other / d).mkdir(parents=True)
    (other / "algorithms" / "__init__.py").write_text("")
    (other / "zoo" / "strategy.py").write_text("")
    monkeypatch.chdir(other)
    assert main(["new-strategy", "checkout_w"]) == 0
    assert (other / "algorithms" / "checkout_w.py").exists() and (other / "tests" / "test_checkout_w.py").exists()
    assert not (Path(algorithms.__file__).resolve().parent / "checkout_w.py").exists()
    # not the package Python imports: the generated test loads it as a plugin by path
    assert str(other / "algorithms" / "checkout_w.py") in (other / "tests" / "test_checkout_w.py").read_text()


def test_readme_plugin_example_trains_from_outside_the_repo(tmp_path, tiny_model_dir):
    from zoo.cli import main
    from zoo.logging import read_metrics

    doc = (REPO / "docs" / "add_strategy.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    assert len(code.strip().splitlines()) < 40
    plugin = tmp_path / "elsewhere" / "quadrant_lr.py"
    plugin.parent.mkdir()
    plugin.write_text(code)
    block = yaml.safe_load(re.search(r"```yaml\n(.*?)```", doc, re.S).group(1))
    cfg = {"plugins": [str(plugin)], "algorithm": {**block["algorithm"], "dynamic_sampling": False},
           "model": {"name_or_path": str(tiny_model_dir)}, "task": {"name": "countdown", "train_size": 50, "eval_size": 4},
           "reward": {"name": "_test_parity_field"},
           "rollout": {"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 8},
           "train": {"steps": 1, "threads": 1}, "eval": {"at_start": False, "every": 0, "n": 4, "k": 1},
           "checkpoint": {"every": 0}, "log": {"progress": False, "tensorboard": False}}
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(f), "--out", str(tmp_path / "run")]) == 0
    rows = [r for r in read_metrics(tmp_path / "run") if "reward/mean" in r]
    assert rows and "quadrant_lr/weight_mean" in rows[0]


def test_ce_gppo_gradient_finite_when_ratio_underflows():
    from algorithms.ce_gppo import ce_gppo_loss

    # log r = -119 underflows exp() to 0: r / sg(r) must not become 0/0
    logp = torch.tensor([[-120.0, -1.0]], requires_grad=True)
    loss = ce_gppo_loss(logp, torch.tensor([[-1.0, -1.2]]), torch.tensor([[1.0, -1.0]]), 0.2, 0.2, 0.5, 1.0, 10.0)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logp.grad).all()
