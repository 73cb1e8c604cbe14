"""ARCHER: dual-token constraints (Wang et al. 2025, "Stabilizing Knowledge, Promoting Reasoning:
Dual-Token Constraints for RLVR", arXiv 2507.15778, Sec. 3.2, Eq. 4-6).

Per response i, τ_i = the q-quantile (q = 0.8) of H over its valid tokens; high_{i,t} = H_{i,t} >= τ_i.
    ℓ_{i,t} = -min(r·A, clip(r, 1-ε_t, 1+ε_t)·A) + β_t · KL_k3(π_θ || π_target)_{i,t}
    ε_t = ε_high_tok (0.5) on high-entropy ("reasoning") tokens, ε_low_tok (0.2) on the rest;
    β_t = kl_high (0.0) on high-entropy tokens, kl_low (0.001) on the rest.
The KL target is the reference model when the algorithm has one (`kl_target: ref`, needs
algorithm.kl_coef > 0 for the trainer to load it), else π_old (`kl_target: old`, also the fallback
when no reference log-probs exist). The authors' code was not reachable from here: these constants
are the paper's text (abstract: "weaker KL and looser clip for reasoning tokens"); check them before
quoting paper numbers.
"""
from __future__ import annotations

import torch

from zoo import ops
from zoo.strategy import Strategy, TokenContext, register_strategy


def response_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, q: float = 0.8) -> torch.Tensor:
    """H_{i,t} >= the q-quantile of response i's valid H (torch.quantile semantics). (B, T) bool."""
    mask = mask.bool()
    out = torch.zeros_like(mask)                                         # (B, T)
    H = entropy.detach().float()
    for i in range(H.shape[0]):
        v = H[i][mask[i]]
        if v.numel():
            out[i] = (H[i] >= ops.quantile_kth(v, q)) & mask[i]
    return out


def archer_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, high: torch.Tensor,
                eps_high_tok: float, eps_low_tok: float, kl_high: float, kl_low: float,
                target_logp: torch.Tensor | None) -> torch.Tensor:
    """Clipped surrogate with per-token ε and per-token k3 KL coefficient. (B, T)"""
    ratio = torch.exp(logp - old_logp)                                   # (B, T)
    eps = torch.where(high, torch.full_like(ratio, eps_high_tok), torch.full_like(ratio, eps_low_tok))
    clipped = torch.minimum(torch.maximum(ratio, 1 - eps), 1 + eps)      # (B, T)
    loss = -torch.minimum(ratio * advantages, clipped * advantages)
    if target_logp is not None and (kl_high or kl_low):
        beta = torch.where(high, torch.full_like(ratio, kl_high), torch.full_like(ratio, kl_low))
        loss = loss + beta * ops.k3_kl(logp, target_logp)
    return loss


@register_strategy("archer", description="Dual-token constraints: looser clip / weaker KL on high-entropy tokens.",
                   paper="Wang et al. 2025, arXiv 2507.15778")
class Archer(Strategy):
    quantile: float = 0.8           # per-response entropy quantile separating high/low tokens
    eps_high_tok: float = 0.5       # clip ε on high-entropy tokens
    eps_low_tok: float = 0.2        # clip ε on low-entropy tokens
    kl_high: float = 0.0            # k3 KL coefficient on high-entropy tokens
    kl_low: float = 0.001           # k3 KL coefficient on low-entropy tokens
    kl_target: str = "ref"          # ref (reference model, when loaded) | old (π_old)

    token_level = True
    replaces_policy_loss = True

    def validate(self) -> None:
        if not 0 <= self.quantile <= 1:
            raise ValueError(f"archer: quantile must be in [0, 1], got {self.quantile}")
        if min(self.eps_high_tok, self.eps_low_tok, self.kl_high, self.kl_low) < 0:
            raise ValueError("archer: eps_high_tok, eps_low_tok, kl_high, kl_low must be >= 0")
        if self.kl_target not in ("ref", "old"):
            raise ValueError(f"archer: kl_target must be ref or old, got {self.kl_target!r}")

    def policy_loss(self, ctx: TokenContext) -> torch.Tensor:
        high = response_entropy_mask(ctx.entropy, ctx.mask, self.quantile)
        target = ctx.ref_logp if (self.kl_target == "ref" and ctx.ref_logp is not None) else ctx.old_logp
        return archer_loss(ctx.logp, ctx.old_logp, ctx.advantages, high, self.eps_high_tok, self.eps_low_tok,
                           self.kl_high, self.kl_low, target)

    def metrics(self, ctx: TokenContext) -> dict[str, float]:
        high = response_entropy_mask(ctx.entropy, ctx.mask, self.quantile)
        n, n_high = ctx.reduce.sum(torch.stack([ctx.mask.sum(), high.sum()]).double()).tolist()
        return {"high_share": n_high / max(n, 1.0), "kl_target_is_ref": float(ctx.ref_logp is not None
                                                                                and self.kl_target == "ref")}
