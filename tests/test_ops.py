"""Shared math against hand-computed values."""
import math

import pytest
import torch
from torch.testing import assert_close

from zoo import ops


def test_entropy_from_logits_hand_values():
    # uniform over 4 -> ln 4; one-hot-ish logits [0, -inf..] -> 0
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, -1e9, -1e9, -1e9]])
    assert_close(ops.entropy_from_logits(logits), torch.tensor([math.log(4), 0.0]))
    # p = softmax([ln 1, ln 3]) = [1/4, 3/4]: H = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.562335
    l2 = torch.tensor([[0.0, math.log(3)]])
    assert_close(ops.entropy_from_logits(l2), torch.tensor([0.5623351]))
    # at T = 2 the logits halve: p ∝ [1, sqrt 3] = [0.366025, 0.633975]
    p = torch.tensor([1.0, math.sqrt(3)]) / (1 + math.sqrt(3))
    assert_close(ops.entropy_from_logits(l2, 2.0), -(p * p.log()).sum().view(1))
    assert ops.entropy_from_logits(l2.half()).dtype == torch.float32


@pytest.mark.parametrize("chunk", [None, 3])
def test_logprobs_and_entropy_match_dense_with_grad(chunk):
    g = torch.Generator().manual_seed(0)
    N, D, V = 7, 5, 11
    h = torch.randn(N, D, generator=g, requires_grad=True)
    w = torch.randn(V, D, generator=g, requires_grad=True)
    y = torch.randint(0, V, (N,), generator=g)
    temps = torch.tensor([1.0, 0.7, 1.2, 1.0, 1.5, 0.8, 1.0])
    lp, ent = ops.logprobs_and_entropy(h, w, y, temps, chunk_size=chunk, entropy_temperature=1.0, entropy_grad=True)
    logits = h @ w.T
    ref_lp = torch.log_softmax(logits / temps[:, None], -1).gather(-1, y[:, None]).squeeze(-1)
    ref_ent = ops.entropy_from_logits(logits)
    assert_close(lp, ref_lp)
    assert_close(ent, ref_ent)
    (lp.sum() + ent.sum()).backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    (ref_lp.sum() + ref_ent.sum()).backward()
    assert_close(gh, h.grad)
    assert_close(gw, w.grad)


def test_logprobs_and_entropy_empty():
    lp, ent = ops.logprobs_and_entropy(torch.zeros(0, 4), torch.zeros(3, 4), torch.zeros(0, dtype=torch.long))
    assert lp.shape == ent.shape == (0,)


def test_quantile_kth_equals_torch_quantile():
    for seed in range(20):
        v = torch.rand(int(torch.randint(1, 500, (1,))), generator=torch.Generator().manual_seed(seed))
        for q in (0.0, 0.2, 0.5, 0.8, 0.999, 1.0):
            assert ops.quantile_kth(v, q).item() == torch.quantile(v, q).item()
    # hand: [1,2,3,4,5], q=0.8 -> pos 3.2 -> 4 + 0.2*(5-4) = 4.2
    assert_close(ops.quantile_kth(torch.tensor([5.0, 1, 3, 2, 4]), 0.8), torch.tensor(4.2))
    with pytest.raises(ValueError):
        ops.quantile_kth(torch.tensor([]), 0.5)


def test_quantile_kth_past_torch_quantile_limit():
    n = 2 ** 24 + 10
    v = torch.zeros(n)
    v[:n // 2] = 1.0   # half ones, half zeros (+ two marked extremes)
    v[0], v[-1] = 5.0, -3.0
    with pytest.raises(RuntimeError):
        torch.quantile(v, 0.5)
    assert ops.quantile_kth(v, 0.0).item() == -3.0 and ops.quantile_kth(v, 1.0).item() == 5.0
    assert ops.quantile_kth(v, 0.25).item() == 0.0 and ops.quantile_kth(v, 0.75).item() == 1.0


def test_grpo_advantages_hand():
    # group 0 rewards [1, 0, 0, 1]: mean 0.5, std (G-1) = sqrt(4*0.25/3) = 0.57735
    r = torch.tensor([1.0, 0, 0, 1, 1, 1, 1, 1])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    a = ops.grpo_advantages(r, g, eps=1e-4)
    s = math.sqrt(1 / 3) + 1e-4
    assert_close(a, torch.tensor([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0, 0, 0, 0]))
    assert_close(ops.dr_grpo_advantages(r, g), torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))


def test_clipped_surrogate_hand():
    # r = [1.5, 0.5, 1.1, 0.7]; A = [1, 1, -1, -1]; ε = 0.2 / 0.28
    r = torch.tensor([[1.5, 0.5, 1.1, 0.7]])
    A = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss = ops.clipped_surrogate(r.log(), torch.zeros_like(r), A, 0.2, 0.28)
    # A>0: -min(1.5, 1.28) = -1.28 ; -min(0.5, 0.8) = -0.5 ; A<0: -min(-1.1, -1.1) = 1.1 ; -min(-0.7, -0.8) = 0.8
    assert_close(loss, torch.tensor([[-1.28, -0.5, 1.1, 0.8]]))


def test_k3_kl_hand():
    logp = torch.tensor([0.0, -1.0])
    ref = torch.tensor([0.0, -0.5])  # d = 0, 0.5 -> 0, e^0.5 - 1.5 = 0.148721
    assert_close(ops.k3_kl(logp, ref), torch.tensor([0.0, math.exp(0.5) - 1.5]))


LOSS = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0]])
MASK = torch.tensor([[True, True, True, False], [True, False, False, False]])


@pytest.mark.parametrize("mode,expected", [
    ("token-mean", (1 + 2 + 3 + 4) / 4),                    # Σ ℓ / Σ valid
    ("seq-mean-token-mean", ((1 + 2 + 3) / 3 + 4 / 1) / 2),  # mean of per-response means = 3.0
    ("seq-mean-token-sum-norm", (1 + 2 + 3 + 4) / (2 * 5)),  # Σ ℓ / (n_seqs · L_max=5)
])
def test_agg_loss_hand(mode, expected):
    denom = ops.agg_denominators(MASK, None, max_len=5)
    assert_close(ops.agg_loss(LOSS, MASK, mode, denom), torch.tensor(expected))


def test_weighted_token_mean_and_microbatch_split():
    w = torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    denom = ops.agg_denominators(MASK, w, max_len=5)
    assert denom["sum_weights"] == 3.0
    # Σ w ℓ / Σ w = (1 + 3 + 4) / 3
    assert_close(ops.agg_loss(LOSS * w, MASK, "weighted-token-mean", denom), torch.tensor(8 / 3))
    # summing micro-batch terms with step denominators equals the whole-step value, in every mode
    for mode in ops.AGG_MODES:
        whole = ops.agg_loss(LOSS * w, MASK, mode, denom)
        parts = sum(ops.agg_loss((LOSS * w)[i:i + 1], MASK[i:i + 1], mode, denom) for i in range(2))
        assert_close(whole, parts)


def test_agg_loss_no_valid_tokens_is_zero_not_nan():
    mask = torch.zeros(2, 3, dtype=torch.bool)
    loss = torch.full((2, 3), float("inf"))
    denom = ops.agg_denominators(mask, torch.zeros(2, 3), 3)
    for mode in ops.AGG_MODES:
        out = ops.agg_loss(torch.where(mask, loss, 0.0), mask, mode, denom)
        assert out.item() == 0.0
    with pytest.raises(ValueError, match="valid"):
        ops.agg_loss(loss, mask, "sum", denom)


def test_group_token_stats_and_quadrants_hand():
    # group 0 = rows 0,1; valid entropies 1, 3 | 2 (row 1) -> μ = 2; group 1 = row 2: μ = 0.5
    ent = torch.tensor([[1.0, 3.0, 7.0], [2.0, 9.0, 9.0], [0.0, 1.0, 5.0]])
    mask = torch.tensor([[True, True, False], [True, False, False], [True, True, False]])
    adv = torch.tensor([[1.0] * 3, [-1.0] * 3, [0.0] * 3])
    gid = torch.tensor([0, 0, 1])
    mu, sd = ops.group_token_stats(ent, mask, gid)
    assert_close(mu[:, 0], torch.tensor([2.0, 2.0, 0.5]))
    assert_close(sd[:, 0], torch.tensor([math.sqrt(2 / 3), math.sqrt(2 / 3), 0.5]))
    q = ops.quadrant_ids(adv, ent, mask, gid)
    # row 0: H=1 < 2 -> PLR(1), H=3 >= 2 -> PHR(0); row 1: H=2 >= 2 -> NHR(2); row 2: A = 0 -> -1
    assert q.tolist() == [[1, 0, -1], [2, -1, -1], [-1, -1, -1]]


def test_overlong_penalty_hand():
    from zoo.objectives import overlong_penalty

    # L_max 10, L_c 4: start 6 -> |y| 6: 0, 8: (6-8)/4 = -0.5, 10: -1
    lengths = torch.tensor([3, 6, 8, 10])
    assert_close(overlong_penalty(lengths, 10, 4, 1.0), torch.tensor([0.0, 0.0, -0.5, -1.0]))
    assert_close(overlong_penalty(lengths, 10, 4, 0.5), torch.tensor([0.0, 0.0, -0.25, -0.5]))
    assert_close(overlong_penalty(lengths, 10, 0, 1.0), torch.zeros(4))
