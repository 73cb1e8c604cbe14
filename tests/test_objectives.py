"""Base objectives dr_grpo and gspo (ALGORITHMS.md "Base objectives"): hand-computed examples."""
import math

import pytest
import torch
from torch.testing import assert_close

from zoo import ops
from zoo.config import ConfigError, config_from_dict
from zoo.objectives import get_base, gspo_sequence_loss


def test_dr_grpo_base_advantages_and_defaults():
    b = get_base("dr_grpo")
    # group 0: R = 1 0 0 1 -> mean 0.5 -> A = R - 0.5 (no std); group 1: 0 0 -> 0
    A = b.advantage(torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]), torch.tensor([0, 0, 0, 0, 1, 1]), 1e-4)
    assert_close(A, torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0]))
    assert (b.loss_agg, b.clip_low, b.clip_high) == ("seq-mean-token-sum-norm", 0.2, 0.2)
    cfg = config_from_dict({"algorithm": {"preset": "dr_grpo"}, "rollout": {"max_new_tokens": 4}})
    assert cfg.algorithm.loss_agg == "seq-mean-token-sum-norm"
    # Σ ℓ / (n_seqs · L_max): ℓ = 1 on 3 valid tokens of 2 responses, L_max 4 -> 3 / 8
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    d = ops.agg_denominators(mask, None, 4)
    assert ops.agg_loss(torch.ones(2, 4), mask, "seq-mean-token-sum-norm", d).item() == pytest.approx(3 / 8)


def test_gspo_sequence_loss_hand_computed():
    old = torch.zeros(3, 3)
    logp = torch.tensor([[0.1, 0.3, 5.0], [-0.2, 7.0, 7.0], [0.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    A = torch.tensor([[1.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    out = gspo_sequence_loss(logp, old, A, mask, 3e-4, 4e-4)
    # row 0: s = exp(mean(0.1, 0.3)) = exp(0.2) = 1.2214 > 1.0004 -> clipped: ℓ = -1.0004 on both tokens
    # row 1: s = exp(-0.2) = 0.8187, A = -1: min(-0.8187, -0.9997) = -0.9997 -> ℓ = 0.9997
    # row 2: no valid token -> 0
    exp = torch.tensor([[-1.0004, -1.0004, 0.0], [0.9997, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert_close(out, exp, atol=1e-6, rtol=0)
    d = ops.agg_denominators(mask, None, 3)
    total = ops.agg_loss(out, mask, "seq-mean-token-mean", d)          # mean over the 3 responses
    assert total.item() == pytest.approx((-1.0004 + 0.9997) / 3, abs=1e-6)
    total.backward()
    assert logp.grad[mask].abs().sum() == 0                          # both sequences clipped: no gradient
    assert logp.grad[~mask].abs().sum() == 0


def test_gspo_gradient_inside_the_clip_range():
    # s = exp(mean(1e-4, -1e-4)) = 1 -> inside: ℓ = -s·A, ∂ℓ/∂logp_t = -A·s/|o| = -0.5 per token
    logp = torch.tensor([[1e-4, -1e-4]], requires_grad=True)
    out = gspo_sequence_loss(logp, torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool), 3e-4, 4e-4)
    ops.agg_loss(out, torch.ones(1, 2, dtype=torch.bool), "seq-mean-token-mean", {"n_seqs": 1.0}).backward()
    assert_close(logp.grad, torch.full((1, 2), -0.5), atol=1e-6, rtol=0)
    assert math.isclose(out[0, 0].item(), -1.0, abs_tol=1e-6)


def test_gspo_rejects_token_level_strategies_and_loss_replacements():
    with pytest.raises(ConfigError, match="sequence-level"):
        config_from_dict({"algorithm": {"base": "gspo", "strategies": [{"name": "top_entropy"}]}})
    with pytest.raises(ConfigError, match="already replaces"):
        config_from_dict({"algorithm": {"base": "gspo", "strategies": ["kl_cov"]}})
    with pytest.raises(ConfigError, match="at most one"):
        config_from_dict({"algorithm": {"base": "grpo", "strategies": ["kl_cov", "ce_gppo"]}})
    cfg = config_from_dict({"algorithm": {"preset": "gspo"}})
    assert (cfg.algorithm.clip_low, cfg.algorithm.clip_high) == (3e-4, 4e-4)
    config_from_dict({"algorithm": {"base": "gspo", "strategies": ["grpo_s"]}})   # sequence-level shaping is fine
