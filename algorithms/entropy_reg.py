"""Entropy regularisation: the classic bonus (Williams & Peng 1991; Mnih et al. 2016, A3C, Sec. 4),
with an optional adaptive coefficient towards a target entropy (as SAC's temperature, Haarnoja et
al. 2018, arXiv 1812.05905, Sec. 5).

    L = L_base - c · mean_step(H),   mean over all valid tokens of the optimizer step,
the gradient flowing through H (needs_entropy_grad). c around 1e-3; large c explodes.
`target: h*` makes c adaptive, updated once per optimizer step from the step's mean H:
    c ← clip(c + lr_coef · (h* - mean H), 0, max_coef)
so c grows while the entropy sits below the target and shrinks above it. c is checkpointed.
"""
from __future__ import annotations

import torch

from zoo.strategy import Strategy, TokenContext, register_strategy


def entropy_bonus(entropy: torch.Tensor, mask: torch.Tensor, coef: float, n_valid_step: float) -> torch.Tensor:
    """-c · Σ(H·mask) / N_step: this micro-batch's share of -c·mean_step(H). Scalar, differentiable in H."""
    return -coef * (entropy * mask.to(entropy.dtype)).sum() / max(n_valid_step, 1.0)


def adapt_coef(coef: float, mean_h: float, target: float, lr: float, max_coef: float) -> float:
    """c + lr·(target - mean H), clipped to [0, max_coef]."""
    return min(max(coef + lr * (target - mean_h), 0.0), max_coef)


@register_strategy("entropy_reg", description="Entropy bonus -c·mean(H) (gradient through H); optional target entropy.",
                   paper="Mnih et al. 2016, arXiv 1602.01783")
class EntropyReg(Strategy):
    coef: float = 1e-3              # c (initial c when target is set)
    target: float | None = None     # target mean entropy (nats); None = fixed c
    lr_coef: float = 1e-3           # step size of the adaptive c
    max_coef: float = 1e-2          # cap on the adaptive c

    needs_entropy_grad = True

    def __post_init__(self) -> None:
        self._coef = float(self.coef)

    def validate(self) -> None:
        if self.coef < 0 or self.lr_coef < 0 or self.max_coef < 0:
            raise ValueError("entropy_reg: coef, lr_coef, max_coef must be >= 0")
        if self.target is not None and self.target < 0:
            raise ValueError(f"entropy_reg: target must be >= 0 nats, got {self.target}")

    def token_weights(self, ctx: TokenContext) -> None:
        # step-level hook, once per optimizer step: update the adaptive coefficient (weights unchanged)
        if self.target is not None:
            mean_h = float(ctx.reduce.masked_mean(ctx.entropy, ctx.mask.bool()))
            self._coef = adapt_coef(self._coef, mean_h, self.target, self.lr_coef, self.max_coef)
        return None

    def extra_loss(self, ctx: TokenContext) -> torch.Tensor | None:
        if self._coef == 0:
            return None
        return entropy_bonus(ctx.entropy, ctx.mask, self._coef, ctx.step_n_valid)

    def metrics(self, ctx: TokenContext) -> dict[str, float]:
        return {"coef": self._coef, "entropy_mean": float(ctx.reduce.masked_mean(ctx.entropy, ctx.mask.bool()))}

    def state_dict(self) -> dict:
        return {"coef": self._coef}

    def load_state_dict(self, state: dict) -> None:
        self._coef = float(state.get("coef", self._coef))
