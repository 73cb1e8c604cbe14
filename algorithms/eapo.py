"""Four-quadrant entropy-aware advantage modulation, EAPO (He et al. 2026, arXiv 2604.11056 v1;
renamed HAPO in v2), and its companion `quadrant_isolation`.

Quadrants: polarity = sign of the response's advantage; a token is high-entropy iff
H_{i,t} >= μ_H, μ_H the mean H over the valid tokens of its group (the G responses of one prompt).
    0 PHR, 1 PLR, 2 NHR, 3 NLR  (positive/negative × high/low);  -1 invalid token or A = 0.
Entropy advantage, per group (μ_H, σ_H over the group's valid tokens, population std):
    A^H_{i,t}    = clip((H_{i,t} - μ_H) / (σ_H + 1e-6), -|A_{i,t}|/φ, +|A_{i,t}|/φ)
    A^EAPO_{i,t} = A_{i,t} + α · sign(A_{i,t}) · stopgrad(A^H_{i,t})     (only in the chosen quadrants)
|α·A^H| <= α|A|/φ < |A| (defaults α = 0.2, φ = 2), so the sign of A is kept. Positive responses:
high-entropy tokens gain credit, low-entropy ones lose it; negative responses: high-entropy tokens
are pushed down harder, low-entropy ones softer.
`quadrant_isolation` trains only on the chosen quadrants (weight 1 there, 0 elsewhere), keeping
the base's normalisation over ALL valid tokens.
"""
from __future__ import annotations

from dataclasses import field
from typing import Sequence

import torch

from zoo import ops
from zoo.strategy import Strategy, TokenContext, register_strategy

QUADRANTS = ops.QUADRANTS                                               # ("PHR", "PLR", "NHR", "NLR")
SIGMA_EPS = 1e-6


def _quadrant_index(quadrants: Sequence[str], who: str) -> list[int]:
    if isinstance(quadrants, str) or not all(isinstance(q, str) for q in quadrants):
        raise ValueError(f"{who}: quadrants must be a list of names from {', '.join(QUADRANTS)}; got {quadrants!r}")
    bad = [q for q in quadrants if q not in QUADRANTS]
    if bad:
        raise ValueError(f"{who}: unknown quadrant(s) {', '.join(bad)}; valid: {', '.join(QUADRANTS)}")
    return [QUADRANTS.index(q) for q in quadrants]


def quadrant_ids(advantages: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor,
                 group_ids: torch.Tensor) -> torch.Tensor:
    """0 PHR, 1 PLR, 2 NHR, 3 NLR; -1 for invalid tokens or A == 0. (B, T) long (zoo.ops.quadrant_ids)."""
    return ops.quadrant_ids(advantages, entropy, mask.bool(), group_ids)


def eapo_advantages(advantages: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor,
                    alpha: float, phi: float, quadrants: Sequence[str] = QUADRANTS) -> torch.Tensor:
    """A + α·sign(A)·stopgrad(A^H) on the valid tokens of the chosen quadrants; others unchanged. (B, T)"""
    idx = _quadrant_index(quadrants, "eapo")
    mask = mask.bool()
    H = entropy.detach().float()                                        # (B, T)
    mu, sd = ops.group_token_stats(H, mask, group_ids)                  # (B, T) each, per group
    # z = (H - μ_H) / (σ_H + ε)
    z = (H - mu) / (sd + SIGMA_EPS)                                     # (B, T)
    # A^H = clip(z, -|A|/φ, +|A|/φ)
    bound = advantages.detach().float().abs() / phi                     # (B, T)
    a_h = torch.maximum(torch.minimum(z, bound), -bound)                # (B, T)
    # A^EAPO = A + α · sign(A) · sg(A^H)
    shaped = advantages + (alpha * torch.sign(advantages.detach()) * a_h).to(advantages.dtype)  # (B, T)
    q = quadrant_ids(advantages, H, mask, group_ids)                    # (B, T)
    chosen = torch.isin(q, torch.tensor(idx, dtype=q.dtype, device=q.device))  # (B, T); -1 never chosen
    return torch.where(chosen, shaped, advantages)


def quadrant_metrics(ctx: TokenContext) -> dict[str, float]:
    """Per quadrant: share of valid tokens, mean H, mean |A|."""
    mask = ctx.mask.bool()
    q = quadrant_ids(ctx.advantages, ctx.entropy, mask, ctx.group_ids)  # (B, T)
    r = ctx.reduce
    n_valid = float(r.sum(mask.sum()).item())
    out: dict[str, float] = {}
    for i, name in enumerate(QUADRANTS):
        m = q == i
        n = float(r.sum(m.sum()).item())
        out[f"{name}/share"] = n / n_valid if n_valid else 0.0
        if n:
            out[f"{name}/entropy"] = float(r.masked_mean(ctx.entropy, m))
            out[f"{name}/abs_adv"] = float(r.masked_mean(ctx.advantages.abs(), m))
    return out


@register_strategy("eapo", description="Four-quadrant entropy-aware advantage modulation (sign-aware, group-normalised H).",
                   paper="He et al. 2026, arXiv 2604.11056")
class EAPO(Strategy):
    alpha: float = 0.2
    phi: float = 2.0
    quadrants: list[str] = field(default_factory=lambda: list(QUADRANTS))   # where the entropy term applies

    token_level = True

    def validate(self) -> None:
        if not (isinstance(self.alpha, (int, float)) and self.alpha >= 0):
            raise ValueError(f"eapo: alpha must be a number >= 0, got {self.alpha!r}")
        if not (isinstance(self.phi, (int, float)) and self.phi > 0):
            raise ValueError(f"eapo: phi must be > 0, got {self.phi!r}")
        if self.alpha / self.phi >= 1:
            raise ValueError(f"eapo: alpha/phi must be < 1 so the entropy term can't flip the sign of A "
                             f"(got alpha={self.alpha}, phi={self.phi})")
        _quadrant_index(self.quadrants, "eapo")

    def shape_advantages(self, ctx: TokenContext) -> torch.Tensor:
        return eapo_advantages(ctx.advantages, ctx.entropy, ctx.mask, ctx.group_ids,
                               self.alpha, self.phi, list(self.quadrants))

    def metrics(self, ctx: TokenContext) -> dict[str, float]:
        return quadrant_metrics(ctx)


@register_strategy("quadrant_isolation", description="Policy gradient only on tokens of the chosen EAPO quadrants.",
                   paper="He et al. 2026, arXiv 2604.11056")
class QuadrantIsolation(Strategy):
    quadrants: list[str] = field(default_factory=lambda: ["PHR"])

    token_level = True

    def validate(self) -> None:
        if not _quadrant_index(self.quadrants, "quadrant_isolation"):
            raise ValueError("quadrant_isolation: quadrants must name at least one of " + ", ".join(QUADRANTS))

    def token_weights(self, ctx: TokenContext) -> torch.Tensor:
        idx = _quadrant_index(self.quadrants, "quadrant_isolation")
        q = quadrant_ids(ctx.advantages, ctx.entropy, ctx.mask, ctx.group_ids)       # (B, T)
        # w = 1[quadrant ∈ chosen]; the denominator still counts all valid tokens (loss_agg unchanged)
        return torch.isin(q, torch.tensor(idx, dtype=q.dtype, device=q.device)).float()  # (B, T)

    def metrics(self, ctx: TokenContext) -> dict[str, float]:
        return quadrant_metrics(ctx)
