"""EMPG: entropy-modulated policy gradients (Wang et al. 2025, "Harnessing Uncertainty:
Entropy-Modulated Policy Gradients for Long-Horizon LLM Agents", arXiv 2509.09265, Sec. 4, Eq. 10-12).
Applied per token here (the paper modulates per agent step, the mean token entropy of each assistant
turn: our adaptation).

    H_norm = (H - min H) / (max H - min H + 1e-8)        over the valid tokens of the optimizer step (Eq. 12)
    g(H)   = exp(-k·H_norm) / (mean_step exp(-k·H_norm) + 1e-8)   self-calibrating, mean ≈ 1        (Eq. 10)
    f(H)   = exp(-k_f·H_norm)                             future-clarity bonus                       (Eq. 11)
    A'_{i,t} = g(H_{i,t}) · A_{i,t} + ζ · f(H_{i,t+1})   (f = 0 after the last valid token)
Confident steps get larger updates, uncertain ones smaller; the bonus favours tokens followed by a
confident next step. Constants from the authors' reference pseudocode on the project page
(empgseed-seed.github.io, `compute_empg_advantage(tokenizer, batch, k=1.0, k_f=1.0, zeta=0.1)`, with
the 1e-8 epsilons above): k = k_f (`k_next`) = 1, ζ = 0.1. The batch over which min/max/mean are taken
is, for us, the optimizer step (all ranks). The bonus is added to every valid token (default
`bonus_needs_signal: false`); `true` (our option) adds it only where A != 0, so a group with equal
rewards stays silent. k = 0, ζ = 0 is the identity. How the authors combine the bonus with the step
index and any later advantage normalisation is not in the part of the pseudocode we could read.
"""
from __future__ import annotations

import math

import torch

from zoo.strategy import Reducer, Strategy, TokenContext, register_strategy


def empg_advantages(advantages: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor, k: float, k_next: float,
                    zeta: float, bonus_needs_signal: bool = False, reduce: Reducer | None = None) -> torch.Tensor:
    reduce = reduce or Reducer()
    mask = mask.bool()
    v = reduce.masked_values(entropy, mask)
    if v.numel() == 0:
        return advantages * mask
    lo, hi = v.min(), v.max()
    Hn = ((entropy.detach().float() - lo) / (hi - lo + 1e-8)).clamp(0, 1) * mask     # (B, T)
    e = torch.exp(-k * Hn)                                               # (B, T)
    g = e / (reduce.masked_mean(e, mask) + 1e-8)                         # (B, T), mean ≈ 1 over valid (Eq. 10)
    f_next = torch.zeros_like(Hn)                                        # (B, T)
    f_next[:, :-1] = torch.exp(-k_next * Hn[:, 1:]) * mask[:, 1:]        # f(H_{t+1}), 0 past the end
    bonus = zeta * f_next
    if bonus_needs_signal:
        bonus = bonus * (advantages != 0)
    return (g * advantages + bonus) * mask


@register_strategy("empg", description="EMPG: scale A by a self-calibrated exp(-k·H_norm), plus a future-clarity bonus.",
                   paper="Wang et al. 2025, arXiv 2509.09265")
class EMPG(Strategy):
    k: float = 1.0                  # k (authors' pseudocode)
    k_next: float = 1.0
    zeta: float = 0.1               # ζ (authors' pseudocode; 0.05 before, our earlier reading)
    bonus_needs_signal: bool = False

    token_level = True

    def validate(self) -> None:
        if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in (self.k, self.k_next, self.zeta)):
            raise ValueError("empg: k, k_next, zeta must be finite numbers")
        if self.k < 0 or self.k_next < 0 or self.zeta < 0:
            raise ValueError("empg: k, k_next, zeta must be >= 0")

    def shape_advantages(self, ctx: TokenContext) -> torch.Tensor:
        return empg_advantages(ctx.advantages, ctx.entropy, ctx.mask, self.k, self.k_next, self.zeta,
                               self.bonus_needs_signal, ctx.reduce)

    def metrics(self, ctx: TokenContext) -> dict[str, float]:
        return {"adv_mean_abs": float(ctx.reduce.masked_mean(ctx.advantages.abs(), ctx.mask.bool()))}
