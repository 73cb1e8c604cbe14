"""Cross-check clip_cov / kl_cov against verl's compute_policy_loss_clip_cov / _kl_cov on one
micro-batch (verl selects per micro-batch; ours per optimizer step: equal when the step is one
micro-batch). Clip-Cov's random draw is controlled: verl calls torch.randperm on the global
generator, so it is seeded with the value our (seed, step) generator uses.

Runs only in its own environment (verl pins an older transformers): `bash scripts/crosscheck_verl.sh`.
In the main environment (no verl) the whole module skips with that reason.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.testing import assert_close

from verl_env import import_verl  # noqa: E402  (tests/crosscheck is on sys.path)

(core_algos,) = import_verl("verl.trainer.ppo.core_algos")

import algorithms  # noqa: E402,F401
from algorithms.cov import ClipCov, KLCov  # noqa: E402
from zoo import ops  # noqa: E402
from zoo.strategy import TokenContext  # noqa: E402

SEED, STEP = 3, 7


def batch(seed: int = 0, B: int = 8, T: int = 16):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None] < lengths[:, None]
    old = -torch.rand(B, T, generator=g) * 4
    logp = old + (torch.rand(B, T, generator=g) - 0.5) * 0.6          # some ratios outside 1 ± 0.2
    A = ((torch.rand(B, generator=g) > 0.5).float() * 4 - 2)[:, None].expand(B, T) * mask
    return old, logp, A.contiguous(), mask


def verl_config(**pl):
    return SimpleNamespace(clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.2, global_batch_info={},
                           policy_loss=SimpleNamespace(**pl))


def ours(strategy, old, logp, A, mask):
    lp = logp.clone().requires_grad_(True)
    z = torch.zeros_like(logp)
    ctx = TokenContext(logp=logp, old_logp=old, entropy=z, mask=mask, advantages=A,
                       group_ids=torch.zeros(len(A), dtype=torch.long), rewards=torch.zeros(len(A)),
                       temperatures=torch.ones_like(z), step=STEP, seed=SEED, clip_low=0.2, clip_high=0.2)
    w = strategy.token_weights(ctx)
    w = torch.ones_like(z) if w is None else w
    from dataclasses import replace

    mctx = replace(ctx, logp=lp)
    per_tok = strategy.policy_loss(mctx)
    if per_tok is None:
        per_tok = ops.clipped_surrogate(lp, old, A, 0.2, 0.2)
    loss = ops.agg_loss(per_tok * w, mask, "token-mean", ops.agg_denominators(mask, w, mask.shape[1]))
    loss.backward()
    return loss.detach(), lp.grad


def theirs(fn, cfg, old, logp, A, mask):
    lp = logp.clone().requires_grad_(True)
    torch.manual_seed(SEED * 1_000_003 + STEP)        # = algorithms.cov.draw_generator(SEED, STEP)
    out = fn(old, lp, A, mask.float(), "token-mean", cfg)
    out[0].backward()
    return out[0].detach(), lp.grad


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ratio", [0.05, 0.2])
def test_clip_cov_matches_verl(seed, ratio):
    old, logp, A, mask = batch(seed)
    mine = ours(ClipCov(ratio=ratio, lb=1.0, ub=5.0), old, logp, A, mask)
    ref = theirs(core_algos.compute_policy_loss_clip_cov,
                 verl_config(clip_cov_ratio=ratio, clip_cov_lb=1.0, clip_cov_ub=5.0), old, logp, A, mask)
    assert_close(mine[0], ref[0], atol=1e-6, rtol=1e-5)
    assert_close(mine[1], ref[1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ratio,coef", [(0.02, 1.0), (0.2, 0.1)])
def test_kl_cov_matches_verl(seed, ratio, coef):
    old, logp, A, mask = batch(seed)
    mine = ours(KLCov(ratio=ratio, coef=coef), old, logp, A, mask)
    ref = theirs(core_algos.compute_policy_loss_kl_cov,
                 verl_config(kl_cov_ratio=ratio, ppo_kl_coef=coef), old, logp, A, mask)
    assert_close(mine[0], ref[0], atol=1e-6, rtol=1e-5)
    assert_close(mine[1], ref[1], atol=1e-6, rtol=1e-5)
