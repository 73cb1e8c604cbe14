"""CE-GPPO: gradient-preserving clipping (Su et al. 2025, "CE-GPPO: Controlling Entropy via
Gradient-Preserving Clipping Policy Optimization", arXiv 2509.20712, Sec. 3, Eq. 6-7).

With r = exp(logp - old_logp) and sg the stop-gradient, the clipped tokens keep a bounded gradient:
    A < 0 and r < 1-ε_low :  ℓ = -β1 · (1-ε_low) · (r / sg(r)) · A
    A > 0 and r > 1+ε_high:  ℓ = -β2 · (1+ε_high) · (r / sg(r)) · A
    otherwise             :  ℓ = -r · A
and, as in the paper, dual clip for A < 0: ℓ = min(ℓ, -c·A), c = 10.
Defaults β1 = 0.5, β2 = 1 (the paper's 7B runs use β1 = 0.75); ε are the algorithm's clip_low /
clip_high (0.2 in the paper). β1 = β2 = 0 gives the plain clipped surrogate's gradient.
Checked against the authors' code (github.com/Kwai-Klear/CE-GPPO @ 10558fe): the loss is
verl/trainer/ppo/core_algos.py:531-620 (`compute_gppo_loss_general_beta`: the three cases with
(1∓ε)/sg(r)·r, then dual clip `clip_ratio_c` for A < 0); the recipes
recipe/dapo/1_5B_perf_run_gppo_v1_beta1_05_beta2_1_ours_math.sh and 7B_..._beta1_075_... set
clip 0.2/0.2 (:25-27), overlong shaping OFF (:32 enable_overlong_buffer=False), dynamic sampling on
accuracy (:38-39), token-mean (:36), c = 10 (:106), β1 0.5 / 0.75 and β2 1 (:131-132), and 128 prompts
in minibatches of 16 (:41, :46): 8 optimizer steps per rollout batch. The clipped branches and the
dual clip act only from the second optimizer step on a rollout batch (`needs_offpolicy_ratio`).
"""
from __future__ import annotations

import torch

from zoo.strategy import Strategy, TokenContext, register_strategy


def ce_gppo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip_low: float,
                 clip_high: float, beta1: float, beta2: float, dual_clip: float) -> torch.Tensor:
    log_r = logp - old_logp                                              # (B, T)
    ratio = torch.exp(log_r)                                             # (B, T)
    # r / sg(r) = exp(log r - sg(log r)): value 1, gradient ∇r / r, and no 0/0 when r under/overflows
    unit = torch.exp(log_r - log_r.detach())                             # (B, T)
    A = advantages
    low = (A < 0) & (ratio.detach() < 1 - clip_low)
    high = (A > 0) & (ratio.detach() > 1 + clip_high)
    loss = -ratio * A
    loss = torch.where(low, -beta1 * (1 - clip_low) * unit * A, loss)
    loss = torch.where(high, -beta2 * (1 + clip_high) * unit * A, loss)
    return torch.where(A < 0, torch.minimum(loss, -dual_clip * A), loss)  # (B, T)


@register_strategy("ce_gppo", description="Gradient-preserving clipping: bounded gradients on clipped tokens.",
                   paper="Su et al. 2025, arXiv 2509.20712")
class CEGPPO(Strategy):
    beta1: float = 0.5              # A < 0, r < 1-ε (paper 7B: 0.75)
    beta2: float = 1.0              # A > 0, r > 1+ε
    dual_clip: float = 10.0         # c (its recipes' clip_ratio_c; algorithm.clip_ratio_c is not used here)

    token_level = True
    replaces_policy_loss = True
    needs_offpolicy_ratio = True
    offpolicy_mechanism = "the gradient-preserving clipped branches (β1, β2) and the dual clip"

    def validate(self) -> None:
        if self.beta1 < 0 or self.beta2 < 0:
            raise ValueError(f"ce_gppo: beta1, beta2 must be >= 0 (got {self.beta1}, {self.beta2})")
        if self.dual_clip <= 1:
            raise ValueError(f"ce_gppo: dual_clip must be > 1, got {self.dual_clip}")

    def policy_loss(self, ctx: TokenContext) -> torch.Tensor:
        return ce_gppo_loss(ctx.logp, ctx.old_logp, ctx.advantages, ctx.clip_low, ctx.clip_high,
                            self.beta1, self.beta2, self.dual_clip)

    def metrics(self, ctx: TokenContext) -> dict[str, float]:
        r, A, m = torch.exp(ctx.logp - ctx.old_logp), ctx.advantages, ctx.mask.bool()
        n, low, high = ctx.reduce.sum(torch.stack([m.sum(), ((A < 0) & (r < 1 - ctx.clip_low) & m).sum(),
                                                   ((A > 0) & (r > 1 + ctx.clip_high) & m).sum()]).double()).tolist()
        return {"low_share": low / max(n, 1.0), "high_share": high / max(n, 1.0)}
