"""GTPO and GRPO-S: entropy-weighted token / sequence rewards (Tan et al. 2025, "GTPO and GRPO-S:
Token and Sequence-Level Reward Shaping with Policy Entropy", arXiv 2508.04349, Sec. 2.1-2.2, Eq. 3-7).
Correct = R_i above its group mean (O+), wrong = below (O-).

GTPO (token level), per group, at each position t, with d_t / h_t = #responses of O+ / O- valid at t:
    r̃+_{i,t} = α1·R_i + α2 · d_t · H_{i,t} / Σ_{k∈O+} H_{k,t}                   i ∈ O+   (Eq. 3)
    r̃-_{j,t} = α1·(-1) - α2 · h_t · H⁻¹_{j,t} / Σ_{k∈O-} H⁻¹_{k,t}              j ∈ O-   (Eq. 5)
(H⁻¹ = 1 / max(H, 1e-6): confident wrong tokens are penalised most). The wrong responses' base reward
is -1 in Eq. 5 (`neg_reward: -1.0`, default; `null` = α1·R_i, our earlier reading, 0 for our 0/1
rewards); with α1 + α2 = 1 each position's rewards then sum to d_t and -h_t (Prop. 2.2).
Advantage: z-normalised over the valid tokens of the group, A = (r̃ - mean) / (std + 1e-4) (our
reading of Eq. 6). GRPO-S (sequence level), Ĥ_i = mean_t H_{i,t}:
    r̂_i = α1·R_i + α2 · |O+| · Ĥ_i / Σ_{k∈O+} Ĥ_k  (i ∈ O+),  α1·(-1) - α2·|O-|·Ĥ_i⁻¹ / Σ_{k∈O-} Ĥ_k⁻¹  (i ∈ O-)
    A_i = z-normalised r̂ over the group's responses (std with G-1), broadcast over tokens.
Defaults α1 = 1, α2 = 0.1 (the paper's experiments). A group whose rewards are all equal keeps A = 0.
These replace the base advantages. α2 = 0 reproduces the GRPO advantages for 0/1 rewards (GRPO-S exactly;
GTPO up to the std being taken over tokens rather than responses).
What was checked: the paper's text was not reachable from here; Eq. 3 and 5 (the -1 base reward of O-,
the position counts d_t, h_t and the inverse-entropy share) and Prop. 2.2 are as transcribed in a
third-party port that quotes them (textpolicy, `compute_gtpo_shaped_rewards`), whose hand values
tests/test_fidelity.py reproduces. That port reads Eq. 6 as normalising O+ and O- SEPARATELY, which
would cancel the α1 outcome term within each set (no signal that a correct response beats a wrong
one); we keep the joint per-group normalisation and flag this as unverified.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from zoo import ops
from zoo.strategy import Strategy, TokenContext, register_strategy

INV_EPS = 1e-6
STD_EPS = 1e-4


def _polarity(rewards: torch.Tensor, group_ids: torch.Tensor):
    mean, _ = ops.group_stats(rewards, group_ids)                        # (B,)
    return rewards.float() > mean, rewards.float() < mean               # O+, O- (B,) bool


def _base_rewards(rewards: torch.Tensor, neg: torch.Tensor, neg_reward: float | None) -> torch.Tensor:
    """R_i, with the wrong responses' reward replaced by neg_reward (Eq. 5: -1) unless None. (B,)"""
    r = rewards.float().clone()
    if neg_reward is not None:
        r[neg] = float(neg_reward)
    return r


def gtpo_advantages(rewards: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor,
                    alpha1: float = 1.0, alpha2: float = 0.1, neg_reward: float | None = -1.0) -> torch.Tensor:
    """Token-level entropy-shaped advantages (Eq. 3, 5, then per-group z-normalisation). (B, T)"""
    mask = mask.bool()
    m = mask.float()                                                     # (B, T)
    H = entropy.detach().float() * m                                     # (B, T)
    pos, neg = _polarity(rewards, group_ids)
    base = _base_rewards(rewards, neg, neg_reward)                       # (B,)
    out = torch.zeros_like(H)                                            # (B, T)
    for g in torch.unique(group_ids):
        rows = group_ids == g
        P, N = (rows & pos), (rows & neg)
        if not (P.any() or N.any()):
            continue                                                     # all rewards equal: no signal
        r = alpha1 * base[:, None] * m                                   # (B, T)
        if P.any():
            mp = m * P[:, None]                                          # (B, T) valid tokens of O+
            share = H * mp / (H * mp).sum(0, keepdim=True).clamp(min=1e-12)   # H / Σ_{k∈O+} H at t
            r = r + alpha2 * mp.sum(0, keepdim=True) * share
        if N.any():
            mn = m * N[:, None]
            inv = mn / H.clamp(min=INV_EPS)                              # H⁻¹ on O- tokens
            r = r - alpha2 * mn.sum(0, keepdim=True) * inv / inv.sum(0, keepdim=True).clamp(min=1e-12)
        gm = mask & rows[:, None]                                        # the group's valid tokens
        v = r[gm]
        mu = v.mean()
        sd = v.std(unbiased=False) if v.numel() > 1 else v.new_zeros(())
        out[gm] = (v - mu) / (sd + STD_EPS)
    return out * m


def grpo_s_advantages(rewards: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor,
                      alpha1: float = 1.0, alpha2: float = 0.1, neg_reward: float | None = -1.0) -> torch.Tensor:
    """Sequence-level entropy-shaped advantages (Eq. 6-8), broadcast over valid tokens. (B, T)"""
    mask = mask.bool()
    m = mask.float()
    Hs = ops.masked_mean(entropy.detach().float(), mask, dim=-1)         # (B,) mean H per response
    pos, neg = _polarity(rewards, group_ids)
    r = alpha1 * _base_rewards(rewards, neg, neg_reward)                 # (B,)
    for g in torch.unique(group_ids):
        rows = group_ids == g
        P, N = rows & pos, rows & neg
        if P.any():
            r[P] = r[P] + alpha2 * P.sum() * Hs[P] / Hs[P].sum().clamp(min=1e-12)
        if N.any():
            inv = 1.0 / Hs[N].clamp(min=INV_EPS)
            r[N] = r[N] - alpha2 * N.sum() * inv / inv.sum()
    mean, std = ops.group_stats(r, group_ids)
    _, r_std = ops.group_stats(rewards, group_ids)
    flat = r_std <= 0                                                    # a group with no signal: A = 0
    adv = torch.where(flat, torch.zeros_like(r), (r - mean) / (std + STD_EPS))
    return adv[:, None] * m


@dataclass
class _Shaped(Strategy):
    alpha1: float = 1.0
    alpha2: float = 0.1
    neg_reward: float | None = -1.0     # base reward of wrong responses (Eq. 5: -1); None = their own R_i

    def validate(self) -> None:
        if self.alpha1 <= 0 or self.alpha2 < 0:
            raise ValueError(f"{self.name}: need alpha1 > 0 and alpha2 >= 0 (got {self.alpha1}, {self.alpha2})")

    def metrics(self, ctx: TokenContext) -> dict[str, float]:
        m = ctx.mask.bool()
        return {"adv_mean_abs": float(ctx.reduce.masked_mean(ctx.advantages.abs(), m))}


@register_strategy("gtpo", description="GTPO: entropy-weighted token rewards (correct: H share, wrong: 1/H share).",
                   paper="Tan et al. 2025, arXiv 2508.04349")
class GTPO(_Shaped):
    token_level = True

    def shape_advantages(self, ctx: TokenContext) -> torch.Tensor:
        return gtpo_advantages(ctx.rewards, ctx.entropy, ctx.mask, ctx.group_ids, self.alpha1, self.alpha2,
                               self.neg_reward)


@register_strategy("grpo_s", description="GRPO-S: sequence rewards weighted by each response's mean entropy.",
                   paper="Tan et al. 2025, arXiv 2508.04349")
class GRPOS(_Shaped):
    token_level = False             # one value per response: fine on a sequence-level base (GSPO)

    def shape_advantages(self, ctx: TokenContext) -> torch.Tensor:
        return grpo_s_advantages(ctx.rewards, ctx.entropy, ctx.mask, ctx.group_ids, self.alpha1, self.alpha2,
                                 self.neg_reward)
