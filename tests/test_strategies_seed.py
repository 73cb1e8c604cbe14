"""The four seed strategies (ALGORITHMS.md "Seed strategies"): pure functions against hand-computed
examples, property tests, strategy classes, and a cross-check against TRL's high-entropy mask."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch.testing import assert_close

import algorithms  # noqa: F401  (registers every strategy)
from algorithms.eapo import EAPO, QuadrantIsolation, eapo_advantages, quadrant_ids
from algorithms.entropy_advantage import EntropyAdvantage, entropy_shaped_advantages
from algorithms.forking_temperature import ForkingTemperature, fork_temperatures
from algorithms.top_entropy import TopEntropy, top_entropy_mask
from zoo import STRATEGIES, ops
from zoo.strategy import TokenContext
from zoo.types import RolloutBatch

T_, F_ = True, False


def make_ctx(entropy, mask, advantages=None, group_ids=None, micro_batch_ids=None) -> TokenContext:
    B, T = entropy.shape
    z = torch.zeros(B, T)
    return TokenContext(
        logp=z, old_logp=z, entropy=entropy.float(), mask=mask.bool(),
        advantages=z if advantages is None else advantages.float(),
        group_ids=torch.zeros(B, dtype=torch.long) if group_ids is None else group_ids,
        rewards=torch.zeros(B), temperatures=torch.ones(B, T), micro_batch_ids=micro_batch_ids,
    )


def random_batch(seed: int, B: int = 6, T: int = 9):
    g = torch.Generator().manual_seed(seed)
    H = torch.rand(B, T, generator=g) * 3                                   # distinct w.p. 1
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[0] = T                                                          # at least one full row
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)              # right padding
    return H, mask


# ------------------------------------------------------------------------------------------------
# top_entropy_mask: hand-computed examples
# ------------------------------------------------------------------------------------------------
# Valid entries: 0.1 0.5 0.9 | 0.3 0.7 0.2 0.4  (N = 7; the padded 99 must never count)
# sorted: 0.1 0.2 0.3 0.4 0.5 0.7 0.9
H1 = torch.tensor([[0.1, 0.5, 0.9, 99.0], [0.3, 0.7, 0.2, 0.4]])
M1 = torch.tensor([[T_, T_, T_, F_], [T_, T_, T_, T_]])


@pytest.mark.parametrize("rho,select,expected", [
    # ρ=0.5 quantile: q=0.5, pos=0.5·6=3 -> 0.4 exactly; keep H >= 0.4 (tie at τ kept): 0.5 0.9 0.7 0.4
    (0.5, "quantile", [[F_, T_, T_, F_], [F_, T_, F_, T_]]),
    # ρ=0.5 topk: k=ceil(3.5)=4 -> 4th largest 0.4: same 4 tokens
    (0.5, "topk", [[F_, T_, T_, F_], [F_, T_, F_, T_]]),
    # ρ=0.2 quantile: pos=0.8·6=4.8 -> 0.5 + 0.8·(0.7-0.5) = 0.66; keep 0.9 0.7
    (0.2, "quantile", [[F_, F_, T_, F_], [F_, T_, F_, F_]]),
    # ρ=0.2 topk: k=ceil(1.4)=2 -> 0.7; keep 0.9 0.7
    (0.2, "topk", [[F_, F_, T_, F_], [F_, T_, F_, F_]]),
    # ρ=0.3: quantile pos=0.7·6=4.2 -> 0.5 + 0.2·0.2 = 0.54, keeps 2 tokens;
    #        topk k=ceil(2.1)=3 -> 0.5, keeps 3 tokens (the boundary difference ALGORITHMS.md names)
    (0.3, "quantile", [[F_, F_, T_, F_], [F_, T_, F_, F_]]),
    (0.3, "topk", [[F_, T_, T_, F_], [F_, T_, F_, F_]]),
    # ρ=1: q=0 -> the minimum 0.1; every valid token kept
    (1.0, "quantile", M1.tolist()),
    (1.0, "topk", M1.tolist()),
])
def test_top_entropy_mask_hand(rho, select, expected):
    out = top_entropy_mask(H1, M1, rho, select=select)
    assert out.dtype == torch.bool
    assert out.tolist() == expected


def test_top_entropy_mask_ties_kept():
    # H = 0 1 1 1, ρ=0.25: quantile pos=0.75·3=2.25 over 0 1 1 1 -> 1; topk k=1 -> 1; all three 1s kept
    H = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    M = torch.ones(1, 4, dtype=torch.bool)
    for select in ("quantile", "topk"):
        assert top_entropy_mask(H, M, 0.25, select=select).tolist() == [[F_, T_, T_, T_]]


def test_topk_count_float_safe():
    # 0.7·10 = 7.000000000000001 in floats; k must be 7, not 8
    H = torch.arange(10.0).unsqueeze(0)
    assert int(top_entropy_mask(H, torch.ones(1, 10, dtype=torch.bool), 0.7, select="topk").sum()) == 7


@pytest.mark.parametrize("select", ["quantile", "topk"])
def test_all_padding_all_false_no_nan(select):
    H = torch.rand(3, 5)
    M = torch.zeros(3, 5, dtype=torch.bool)
    out = top_entropy_mask(H, M, 0.2, select=select)
    assert not out.any()
    ctx = make_ctx(H, M)
    for scope in ("step", "sequence"):
        s = TopEntropy(select=select, scope=scope)
        w = s.token_weights(ctx)
        assert w.sum() == 0
        assert all(math.isfinite(v) for v in s.metrics(ctx).values())
    # and the loss over an all-padding step is exactly 0, not NaN
    for mode in ("token-mean", "weighted-token-mean"):
        logp = torch.zeros(3, 5, requires_grad=True)
        loss_mat = ops.clipped_surrogate(logp, torch.zeros(3, 5), torch.ones(3, 5), 0.2, 0.28) * w
        loss = ops.agg_loss(loss_mat, M, mode, ops.agg_denominators(M, w, 5))
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(logp.grad).all()


@pytest.mark.parametrize("select", ["quantile", "topk"])
def test_padding_never_enters_threshold(select):
    for seed in range(5):
        H, M = random_batch(seed)
        ref = top_entropy_mask(H, M, 0.2, select=select)
        for fill in (1e6, -1e6, float("nan"), float("inf")):
            H2 = H.masked_fill(~M, fill)
            assert torch.equal(top_entropy_mask(H2, M, 0.2, select=select), ref)
        assert not (ref & ~M).any()


@pytest.mark.parametrize("rho", [0.1, 0.2, 0.5, 0.9])
def test_kept_share_is_rho_up_to_ties(rho):
    for seed in range(5):
        H, M = random_batch(seed, B=8, T=33)
        N = int(M.sum())
        kept_q = int(top_entropy_mask(H, M, rho).sum())
        assert abs(kept_q - rho * N) < 1.0                       # interpolation boundary: < one token
        kept_k = int(top_entropy_mask(H, M, rho, select="topk").sum())
        assert kept_k == math.ceil(rho * N - 1e-9)                # no ties: exactly ceil(ρN)


def test_quantile_kth_matches_torch_quantile():
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 10, 101, 1000):
        v = torch.randn(n, generator=g)
        for q in (0.0, 0.1, 0.2, 0.5, 0.8, 0.9, 0.999, 1.0):
            # torch.quantile forms the rank q·(n-1) in float32, quantile_kth in float64: at extreme q
            # (0.999·999) the interpolation weight differs by ~1e-4, hence the tolerance
            assert_close(ops.quantile_kth(v, q), torch.quantile(v, q), rtol=1e-4, atol=1e-4)


def test_rho_one_reproduces_dapo_and_dropped_tokens_get_zero_grad():
    H, M = random_batch(3)
    A = torch.randn(H.shape[0], 1).expand_as(H)
    old = torch.randn(H.shape) * 0.1

    def loss_and_grad(w):
        logp = (old + 0.05 * torch.randn(H.shape, generator=torch.Generator().manual_seed(1))).requires_grad_()
        lm = ops.clipped_surrogate(logp, old, A, 0.2, 0.28)
        if w is not None:
            lm = lm * w
        loss = ops.agg_loss(lm, M, "token-mean", ops.agg_denominators(M, w, H.shape[1]))
        loss.backward()
        return loss.detach(), logp.grad

    base_loss, base_grad = loss_and_grad(None)
    w1 = TopEntropy(rho=1.0).token_weights(make_ctx(H, M))
    l1, g1 = loss_and_grad(w1)
    assert torch.equal(l1, base_loss) and torch.equal(g1, base_grad)
    w = TopEntropy(rho=0.2).token_weights(make_ctx(H, M))
    _, g = loss_and_grad(w)
    assert (g[w == 0] == 0).all() and (g[~M] == 0).all()


# ------------------------------------------------------------------------------------------------
# top_entropy strategy: scopes, normalisation, invert, validation
# ------------------------------------------------------------------------------------------------
# rows 0, 1 in micro-batch 0, row 2 in micro-batch 1; ρ=0.25, select topk
H3 = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8], [1.0, 2.0, 3.0, 4.0]])
M3 = torch.ones(3, 4, dtype=torch.bool)
MB3 = torch.tensor([0, 0, 1])


@pytest.mark.parametrize("scope,expected,tau", [
    # step: N=12, k=3 -> 4 3 2, all in row 2
    ("step", [[F_] * 4, [F_] * 4, [F_, T_, T_, T_]], 2.0),
    # micro_batch: mb0 N=8, k=2 -> 0.8 0.7; mb1 N=4, k=1 -> 4; mean τ = (0.7 + 4) / 2
    ("micro_batch", [[F_] * 4, [F_, F_, T_, T_], [F_, F_, F_, T_]], 2.35),
    # sequence: each row N=4, k=1 -> its maximum; mean τ = (0.4 + 0.8 + 4) / 3
    ("sequence", [[F_, F_, F_, T_], [F_, F_, F_, T_], [F_, F_, F_, T_]], 5.2 / 3),
])
def test_scopes(scope, expected, tau):
    s = TopEntropy(rho=0.25, select="topk", scope=scope)
    s.validate()
    ctx = make_ctx(H3, M3, micro_batch_ids=MB3)
    assert s.token_weights(ctx).bool().tolist() == expected
    m = s.metrics(ctx)
    assert m["threshold"] == pytest.approx(tau)
    assert m["kept_share"] == pytest.approx(sum(map(sum, expected)) / 12)


def test_micro_batch_scope_matches_per_micro_batch_masks():
    H, M = random_batch(7, B=6)
    mb = torch.tensor([0, 0, 1, 1, 2, 2])
    w = TopEntropy(scope="micro_batch").token_weights(make_ctx(H, M, micro_batch_ids=mb))
    for m in range(3):
        rows = mb == m
        assert torch.equal(w[rows].bool(), top_entropy_mask(H[rows], M[rows], 0.2))


def test_metrics_normalize_invert():
    ctx = make_ctx(H1, M1)
    s = TopEntropy(rho=0.2)
    m = s.metrics(ctx)
    # kept 0.9 0.7 of 7 valid; dropped 0.1 0.5 0.3 0.2 0.4 (mean 0.3); τ = 0.66
    assert m["kept_share"] == pytest.approx(2 / 7)
    assert m["threshold"] == pytest.approx(0.66)
    assert m["entropy_kept"] == pytest.approx(0.8)
    assert m["entropy_dropped"] == pytest.approx(0.3)
    assert s.loss_agg() is None and TopEntropy(normalize="selected").loss_agg() == "weighted-token-mean"
    inv = TopEntropy(rho=0.2, invert=True)
    assert inv.token_weights(ctx).bool().tolist() == [[T_, T_, F_, F_], [T_, F_, T_, T_]]
    assert inv.metrics(ctx)["kept_share"] == pytest.approx(5 / 7)


@pytest.mark.parametrize("kw,msg", [
    ({"rho": 0.0}, "rho"), ({"rho": 1.5}, "rho"), ({"select": "median"}, "quantile, topk"),
    ({"scope": "global"}, "step, micro_batch, sequence"), ({"normalize": "some"}, "all, selected"),
])
def test_top_entropy_validate(kw, msg):
    with pytest.raises(ValueError, match=msg):
        TopEntropy(**kw).validate()


def test_registered_and_token_level_flags():
    for name in ("top_entropy", "entropy_advantage", "eapo", "quadrant_isolation", "forking_temperature"):
        cls = STRATEGIES.get(name)
        assert cls.paper and cls.description
        cls().validate()                                         # defaults are valid
    # per-token strategies are refused on a sequence-level base (zoo.objectives.check_combination)
    for s in (TopEntropy(), EntropyAdvantage(), EAPO(), QuadrantIsolation()):
        assert s.token_level and not s.supports_sequence_level
    assert not ForkingTemperature().token_level                  # sampling only: fine on any base


# ------------------------------------------------------------------------------------------------
# entropy_advantage
# ------------------------------------------------------------------------------------------------
def test_entropy_shaped_advantages_hand():
    # α=0.4, κ=2: ψ = min(0.4·H, |A|/2)
    # t0: min(0.2, 0.5)=0.2 -> 1.2 | t1: min(1.2, 0.5)=0.5 (cap) -> 1.5
    # t2: min(0.4, 1.0)=0.4 -> -1.6 | t3: A=0: min(0.8, 0)=0 -> 0
    A = torch.tensor([[1.0, 1.0, -2.0, 0.0]])
    H = torch.tensor([[0.5, 3.0, 1.0, 2.0]])
    assert_close(entropy_shaped_advantages(A, H, 0.4, 2.0), torch.tensor([[1.2, 1.5, -1.6, 0.0]]))
    s = EntropyAdvantage()
    m = s.metrics(make_ctx(H, torch.ones(1, 4, dtype=torch.bool), A))
    assert m["psi_mean"] == pytest.approx((0.2 + 0.5 + 0.4 + 0.0) / 4)
    assert m["cap_share"] == pytest.approx(1 / 3)                # t1 of the three A != 0 tokens


def test_entropy_advantage_properties():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(64, 16, generator=g) * torch.randint(0, 2, (64, 1), generator=g)   # whole rows with A=0
    H = torch.rand(64, 16, generator=g) * 5
    H[0, 0] = -1e-7                                              # float noise below 0 must not leak in
    for alpha in (0.1, 0.4, 2.0):
        out = entropy_shaped_advantages(A, H, alpha, 2.0)
        assert torch.equal(torch.sign(out), torch.sign(A))       # never flips, 0 stays 0
        assert (out[A == 0] == 0).all()
        assert ((out - A) >= 0).all() and ((out - A) <= A.abs() / 2 + 1e-7).all()
    H.requires_grad_()
    assert not entropy_shaped_advantages(A, H, 0.4, 2.0).requires_grad   # H detached


def test_entropy_advantage_strategy_masks_padding_and_validates():
    A = torch.tensor([[1.0, 1.0]])
    H = torch.tensor([[1.0, 1.0]])
    out = EntropyAdvantage().shape_advantages(make_ctx(H, torch.tensor([[T_, F_]]), A))
    assert_close(out, torch.tensor([[1.4, 1.0]]))
    with pytest.raises(ValueError, match="kappa"):
        EntropyAdvantage(kappa=0.5).validate()
    with pytest.raises(ValueError, match="alpha"):
        EntropyAdvantage(alpha=-1).validate()


# ------------------------------------------------------------------------------------------------
# eapo / quadrant_isolation
# ------------------------------------------------------------------------------------------------
# Group 0: response 0 (A=+10) H = 0, 2; response 1 (A=-0.5) H = 0.5, 1.5.
#   μ_H = 1; deviations² 1, 1, 0.25, 0.25 -> σ_H = sqrt(0.625); z = ±1/σ' and ±0.5/σ', σ' = σ + 1e-6
#   resp 0: bound |A|/φ = 5 -> A^H = z = ∓1.26491 (unclipped): A' = 10 ∓ 0.2·1.26491
#   resp 1: bound 0.25 -> z = ∓0.63246 clipped to ∓0.25: A' = -0.5 - 0.2·(∓0.25) = -0.45, -0.55
# Group 1: response 2 (A=0) H = 5, (pad 7): quadrant -1, unchanged; its H must not touch group 0's μ.
A_E = torch.tensor([[10.0, 10.0], [-0.5, -0.5], [0.0, 0.0]])
H_E = torch.tensor([[0.0, 2.0], [0.5, 1.5], [5.0, 7.0]])
M_E = torch.tensor([[T_, T_], [T_, T_], [T_, F_]])
G_E = torch.tensor([0, 0, 1])
Z1 = 1.0 / (math.sqrt(0.625) + 1e-6)


def test_quadrant_ids_hand():
    # resp 0: H=0 < μ -> PLR(1), H=2 -> PHR(0); resp 1: 0.5 -> NLR(3), 1.5 -> NHR(2); resp 2: A=0 -> -1
    q = quadrant_ids(A_E, H_E, M_E, G_E)
    assert q.tolist() == [[1, 0], [3, 2], [-1, -1]]
    assert torch.equal(q, ops.quadrant_ids(A_E, H_E, M_E, G_E))


def test_eapo_advantages_hand():
    out = eapo_advantages(A_E, H_E, M_E, G_E, 0.2, 2.0, ["PHR", "PLR", "NHR", "NLR"])
    expected = torch.tensor([[10 - 0.2 * Z1, 10 + 0.2 * Z1], [-0.45, -0.55], [0.0, 0.0]])
    assert_close(out, expected)
    # only NHR: just response 1's high-entropy token moves
    only = eapo_advantages(A_E, H_E, M_E, G_E, 0.2, 2.0, ["NHR"])
    assert_close(only, torch.tensor([[10.0, 10.0], [-0.5, -0.55], [0.0, 0.0]]))
    s = EAPO()
    assert_close(s.shape_advantages(make_ctx(H_E, M_E, A_E, G_E)), expected)


def test_eapo_properties():
    g = torch.Generator().manual_seed(1)
    B, T = 16, 12
    gid = torch.arange(B) // 4
    A = torch.randn(B, 1, generator=g).expand(B, T).clone()
    A[:4] = 0.0                                                  # a no-signal group
    H = torch.rand(B, T, generator=g) * 3
    M = torch.arange(T).unsqueeze(0) < torch.randint(1, T + 1, (B, 1), generator=g)
    for alpha, phi in ((0.2, 2.0), (0.5, 1.0), (0.9, 1.0)):
        out = eapo_advantages(A, H, M, gid, alpha, phi)
        assert torch.equal(torch.sign(out), torch.sign(A))
        a_h = (out - A) / (alpha * torch.sign(A)).masked_fill(A == 0, 1.0)
        assert (a_h.abs() <= A.abs() / phi + 1e-6).all()          # A^H within ±|A|/φ
        assert torch.equal(out[~M], A[~M]) and (out[A == 0] == 0).all()


def test_quadrant_isolation_and_metrics():
    ctx = make_ctx(H_E, M_E, A_E, G_E)
    w = QuadrantIsolation(quadrants=["PHR", "NLR"]).token_weights(ctx)
    assert w.tolist() == [[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]
    assert QuadrantIsolation().loss_agg() is None                # denominator stays all valid tokens
    m = EAPO().metrics(ctx)                                      # 5 valid tokens, one per quadrant + one A=0
    assert m["PHR/share"] == pytest.approx(0.2) and m["NLR/entropy"] == pytest.approx(0.5)
    assert m["NHR/abs_adv"] == pytest.approx(0.5)
    for kw in ({"quadrants": ["PXR"]}, {"quadrants": "PHR"}, {"alpha": 2.0, "phi": 2.0}):
        with pytest.raises(ValueError):
            EAPO(**kw).validate()
    with pytest.raises(ValueError, match="PHR, PLR, NHR, NLR"):
        QuadrantIsolation(quadrants=[]).validate()


# ------------------------------------------------------------------------------------------------
# forking_temperature
# ------------------------------------------------------------------------------------------------
def test_fork_temperatures_hand():
    # strict >: H = h_fork stays cold
    H = torch.tensor([0.1, 0.672, 0.7, 2.0])
    assert_close(fork_temperatures(H, 0.672, 1.0, 1.2), torch.tensor([1.0, 1.0, 1.2, 1.2]))
    s = ForkingTemperature(t_high=1.5)
    assert_close(s.token_temperature(H, base_temperature=0.7), torch.tensor([1.0, 1.0, 1.5, 1.5]))


def _rollout(entropy, mask, temps) -> RolloutBatch:
    B, T = entropy.shape
    z = torch.zeros(B, T, dtype=torch.long)
    return RolloutBatch(prompt_ids=torch.zeros(B, 1, dtype=torch.long), prompt_mask=torch.ones(B, 1, dtype=torch.bool),
                        response_ids=z, response_mask=mask, logp=z.float(), temperatures=temps, entropy=entropy,
                        truncated=torch.zeros(B, dtype=torch.bool), group_ids=torch.zeros(B, dtype=torch.long))


def test_forking_auto_and_state_round_trip():
    s = ForkingTemperature(h_fork="auto")
    s.validate()
    assert s.threshold == pytest.approx(0.672)                   # before the first rollout batch
    # valid entropies 0 1 2 3 4 (the padded 100 is ignored): p80 at pos 0.8·4 = 3.2 -> 3.2
    ent = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 100.0]])
    mask = torch.tensor([[T_, T_, T_], [T_, T_, F_]])
    temps = torch.tensor([[1.0, 1.0, 1.2], [1.2, 1.2, 1.2]])     # 3 of 5 valid tokens sampled hot
    s.on_rollout(_rollout(ent, mask, temps))
    assert s.threshold == pytest.approx(3.2)
    m = s.metrics(make_ctx(ent, mask))
    assert m["hot_share"] == pytest.approx(0.6) and m["h_fork"] == pytest.approx(0.672)
    r = ForkingTemperature(h_fork="auto")
    r.load_state_dict(s.state_dict())
    probe = torch.tensor([3.1, 3.3])
    assert torch.equal(r.token_temperature(probe, 1.0), s.token_temperature(probe, 1.0))
    assert r.metrics(None) == s.metrics(None) and r.state_dict() == s.state_dict()
    fixed = ForkingTemperature()                                 # a fixed h_fork never moves
    fixed.on_rollout(_rollout(ent, mask, temps))
    assert fixed.threshold == pytest.approx(0.672)


@pytest.mark.parametrize("kw", [{"h_fork": "autox"}, {"h_fork": -1.0}, {"t_low": 0.0}, {"t_high": -1.0}])
def test_forking_validate(kw):
    with pytest.raises(ValueError, match="forking_temperature"):
        ForkingTemperature(**kw).validate()


# ------------------------------------------------------------------------------------------------
# TRL cross-check (TRL is a test dependency; skipped when absent)
# ------------------------------------------------------------------------------------------------
def test_matches_trl_high_entropy_mask():
    grpo = pytest.importorskip("trl.trainer.grpo_trainer")
    # one process: TRL's pad/gather across ranks are identities
    acc = SimpleNamespace(pad_across_processes=lambda t, dim=0, pad_index=0: t, gather=lambda t: t)
    fake = SimpleNamespace(accelerator=acc)
    for seed in range(10):
        H, M = random_batch(seed, B=5, T=17)
        H = H * (torch.rand(H.shape, generator=torch.Generator().manual_seed(seed)) > 0.3)  # many exact zeros, like LLMs
        for rho in (0.1, 0.2, 0.5, 0.8, 1.0):
            # TRL keeps the top ρ with threshold = quantile(1 - top_entropy_quantile)
            theirs = grpo.GRPOTrainer.get_high_entropy_mask(fake, H, M.int(), 1 - rho)
            assert torch.equal(top_entropy_mask(H, M, rho, select="quantile"), theirs), (seed, rho)
    empty = torch.zeros(2, 3, dtype=torch.bool)
    assert torch.equal(top_entropy_mask(torch.rand(2, 3), empty, 0.2),
                       grpo.GRPOTrainer.get_high_entropy_mask(fake, torch.rand(2, 3), empty.int(), 0.8))


# ------------------------------------------------------------------------------------------------
# Composition and presets
# ------------------------------------------------------------------------------------------------
def test_composition_shapes_and_weights():
    H, M = random_batch(11, B=8, T=10)
    gid = torch.arange(8) // 4
    A = torch.tensor([1.0, -1.0, 0.5, -0.5, 0.0, 0.0, 2.0, -2.0]).unsqueeze(1).expand(8, 10).clone()
    ctx = make_ctx(H, M, A, gid, micro_batch_ids=torch.arange(8) // 2)
    for s in (EntropyAdvantage(), EAPO()):                       # shape_advantages run in config order
        ctx.advantages = s.shape_advantages(ctx)
        assert ctx.advantages.shape == (8, 10) and torch.isfinite(ctx.advantages).all()
    assert torch.equal(torch.sign(ctx.advantages), torch.sign(A))
    w = TopEntropy(scope="micro_batch").token_weights(ctx) * QuadrantIsolation(quadrants=["PHR", "NHR"]).token_weights(ctx)
    assert w.shape == (8, 10) and not (w.bool() & ~M).any()
    f = ForkingTemperature()                                     # sampling-side hook composes independently
    assert f.token_temperature(H[:, 0], 1.0).shape == (8,)


PRESET_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "zoo" / "presets"
PRESETS = ["top20", "bottom80", "rho10", "rho50", "rho100", "entropy_adv", "eapo", "eapo_wo_phr", "eapo_wo_plr",
           "eapo_wo_nhr", "eapo_wo_nlr", "only_phr", "only_plr", "only_nhr", "only_nlr",
           "fork_t08", "fork_t10", "fork_t12", "fork_t15", "grpo", "dapo"]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_files_valid(name):
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())
    assert set(data) == {"description", "paper", "algorithm"}
    algo = data["algorithm"]
    assert algo["base"] in ("grpo", "dapo")
    for spec in algo["strategies"]:
        spec = dict(spec)
        STRATEGIES.get(spec.pop("name"))(**spec).validate()
