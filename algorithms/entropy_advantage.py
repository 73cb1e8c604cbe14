"""Entropy-based advantage shaping (Cheng et al. 2025, "Reasoning with Exploration: An Entropy
Perspective", arXiv 2506.14758).

    A'_{i,t} = A_{i,t} + ψ(H_{i,t}),   ψ(H) = min(α · H.detach(), |A_{i,t}| / κ)

ψ >= 0 and ψ <= |A|/κ <= |A| for κ >= 1, so the bonus never flips the sign of A, and a token
with A = 0 (a group whose rewards are all equal) stays at 0. Defaults κ = 2, α = 0.4 (the
paper's GRPO setting; it uses 0.1 with PPO). H is the current policy's entropy at the base
rollout temperature, detached: the bonus moves credit, it is not an entropy regulariser.
"""
from __future__ import annotations

import torch

from zoo.strategy import Strategy, TokenContext, register_strategy


def entropy_psi(advantages: torch.Tensor, entropy: torch.Tensor, alpha: float, kappa: float) -> torch.Tensor:
    """ψ = min(α·H, |A|/κ), with H clamped at 0 so float noise can't make ψ negative. (B, T)"""
    h = entropy.detach().to(advantages.dtype).clamp(min=0.0)            # (B, T)
    # ψ = min(α·H, |A| / κ)
    return torch.minimum(alpha * h, advantages.abs() / kappa)            # (B, T)


def entropy_shaped_advantages(advantages: torch.Tensor, entropy: torch.Tensor, alpha: float,
                              kappa: float) -> torch.Tensor:
    """A' = A + min(α·H.detach(), |A|/κ) on every entry given. (B, T)"""
    return advantages + entropy_psi(advantages, entropy, alpha, kappa)  # (B, T)


@register_strategy("entropy_advantage", description="Adds a clipped entropy bonus min(αH, |A|/κ) to every token's advantage.",
                   paper="Cheng et al. 2025, arXiv 2506.14758")
class EntropyAdvantage(Strategy):
    alpha: float = 0.4              # paper: 0.4 with GRPO, 0.1 with PPO
    kappa: float = 2.0

    token_level = True

    def validate(self) -> None:
        if not (isinstance(self.alpha, (int, float)) and self.alpha >= 0):
            raise ValueError(f"entropy_advantage: alpha must be a number >= 0, got {self.alpha!r}")
        if not (isinstance(self.kappa, (int, float)) and self.kappa >= 1):
            raise ValueError(f"entropy_advantage: kappa must be >= 1 (so ψ <= |A|/κ can't flip the sign of A), "
                             f"got {self.kappa!r}")

    def shape_advantages(self, ctx: TokenContext) -> torch.Tensor:
        shaped = entropy_shaped_advantages(ctx.advantages, ctx.entropy, self.alpha, self.kappa)  # (B, T)
        return torch.where(ctx.mask.bool(), shaped, ctx.advantages)                               # padding unchanged

    def metrics(self, ctx: TokenContext) -> dict[str, float]:
        mask = ctx.mask.bool()
        A = ctx.advantages
        h = ctx.entropy.detach().float().clamp(min=0.0)
        psi = entropy_psi(A, ctx.entropy, self.alpha, self.kappa)                                 # (B, T)
        nonzero = mask & (A != 0)
        # the cap binds where |A|/κ < α·H (counted over tokens with A != 0: at A = 0 it binds trivially)
        binds = nonzero & (A.abs() / self.kappa < self.alpha * h)
        r = ctx.reduce
        n_nz = float(r.sum(nonzero.sum()).item())
        return {
            "psi_mean": float(r.masked_mean(psi, mask)),
            "cap_share": float(r.sum(binds.sum()).item()) / n_nz if n_nz else 0.0,
        }
