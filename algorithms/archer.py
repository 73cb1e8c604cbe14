"""ARCHER: dual-token constraints (Wang et al. 2025, "Stabilizing Knowledge, Promoting Reasoning:
Dual-Token Constraints for RLVR", arXiv 2507.15778, Sec. 3.2, Eq. 4-6), as the authors' code runs it
(github.com/wizard-III/ArcherCodeR @ 8a1785b; files cited below).

Per response i, τ_i = the q-quantile (q = 0.8) of H over its valid tokens (torch.nanquantile per row,
linear interpolation); a token is HIGH-entropy when H_{i,t} > τ_i, strictly
(verl/workers/actor/dp_actor.py:403-410: `low_entropy_mask = (masked_entropy > q80)` marks the HIGH tokens;
the names are swapped there, the comments say which is which).
    ℓ_{i,t} = dualclip_c( -min(r·A, clip(r, 1-ε_t, 1+ε_t)·A) )
        ε_t = 0.5 on high-entropy tokens, 0.2 on the rest (scripts/train/run_archer_qwen2.5_1.5b_code.sh:64-67;
        verl/trainer/ppo/core_algos.py:599), then dual clip c = 10 for A < 0 (script:92 clip_ratio_c=10.0;
        core_algos.py:607-612): c is the algorithm's `clip_ratio_c` (the preset sets 10; null = off).
    + β_low · mean_{low tokens} KL_k3(π_θ‖π_ref) + β_high · mean_{high tokens} KL_k3(π_θ‖π_ref)
        the k3 ("low_var_kl") KL to the REFERENCE model, each averaged over its own token subset of the
        optimizer step (dp_actor.py:439-446: agg_loss over each mask, token-mean), β_low = kl_loss_coef = 1e-3,
        β_high = high_entropy_kl_loss_scale_coef = 0.0 (script:15, :63); q = 0.8 (script:62).
The reference is loaded because this strategy declares `needs_reference` (kl_target: ref with a non-zero
β), without adding the base's own KL term (algorithm.kl_coef stays 0, as the script's use_kl_in_reward /
kl_coef = 0). The authors run 64 prompts in minibatches of 32 for 3 PPO epochs (6 updates per rollout
batch: script:30, :32, :114): the clip, the dual clip and the KL
(which is 0 at the run's first optimizer step, π_θ = π_ref) need several optimizer steps.
Options (ours): `kl_target: old` (KL to π_old; inert with one update per rollout batch), `kl_agg: token`
(the KL added per token and aggregated with the base's loss_agg over all tokens, the earlier behaviour).
Differences left: verl clamps low_var_kl to [-10, 10] (core_algos.py:693-699; ours unclamped), and its token-mean is per
micro-batch of one response (`ppo_micro_batch_size_per_gpu=1`); ours is over the optimizer step.
"""
from __future__ import annotations

import torch

from zoo import ops
from zoo.objectives import dual_clip
from zoo.strategy import Strategy, TokenContext, register_strategy


def response_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, q: float = 0.8) -> torch.Tensor:
    """H_{i,t} > the q-quantile of response i's valid H (strict, as the authors' code). (B, T) bool."""
    mask = mask.bool()
    out = torch.zeros_like(mask)                                         # (B, T)
    H = entropy.detach().float()
    for i in range(H.shape[0]):
        v = H[i][mask[i]]
        if v.numel():
            out[i] = (H[i] > ops.quantile_kth(v, q)) & mask[i]
    return out


def archer_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, high: torch.Tensor,
                eps_high_tok: float, eps_low_tok: float, kl_high: float = 0.0, kl_low: float = 0.0,
                target_logp: torch.Tensor | None = None, clip_ratio_c: float | None = None) -> torch.Tensor:
    """Clipped surrogate with per-token ε, dual clip c for A < 0, and (kl_agg: token) a per-token
    k3 KL with coefficient β_t. (B, T)"""
    ratio = torch.exp(logp - old_logp)                                   # (B, T)
    eps = torch.where(high, torch.full_like(ratio, eps_high_tok), torch.full_like(ratio, eps_low_tok))
    clipped = torch.minimum(torch.maximum(ratio, 1 - eps), 1 + eps)      # (B, T)
    loss = dual_clip(-torch.minimum(ratio * advantages, clipped * advantages), advantages, clip_ratio_c)
    if target_logp is not None and (kl_high or kl_low):
        beta = torch.where(high, torch.full_like(ratio, kl_high), torch.full_like(ratio, kl_low))
        loss = loss + beta * ops.k3_kl(logp, target_logp)
    return loss


def subset_kl_loss(logp: torch.Tensor, target_logp: torch.Tensor, high: torch.Tensor, mask: torch.Tensor,
                   kl_high: float, kl_low: float, n_high: float, n_low: float) -> torch.Tensor:
    """β_high·Σ_high KL / n_high + β_low·Σ_low KL / n_low over this micro-batch's tokens, with the
    subset counts n_high, n_low of the whole optimizer step (so the micro-batch shares sum to the step's
    two subset means). Scalar."""
    kl = ops.k3_kl(logp, target_logp)                                    # (B, T)
    m = mask.bool()
    hi, lo = (high & m).to(kl.dtype), (~high & m).to(kl.dtype)
    out = kl.new_zeros(())
    if kl_high and n_high > 0:
        out = out + kl_high * (kl * hi).sum() / n_high
    if kl_low and n_low > 0:
        out = out + kl_low * (kl * lo).sum() / n_low
    return out


@register_strategy("archer", description="Dual-token constraints: looser clip / no KL on high-entropy tokens.",
                   paper="Wang et al. 2025, arXiv 2507.15778")
class Archer(Strategy):
    quantile: float = 0.8           # per-response entropy quantile separating high/low tokens
    eps_high_tok: float = 0.5       # clip ε on high-entropy tokens (authors' script)
    eps_low_tok: float = 0.2        # clip ε on low-entropy tokens
    kl_high: float = 0.0            # k3 KL coefficient on high-entropy tokens (high_entropy_kl_loss_scale_coef)
    kl_low: float = 0.001           # k3 KL coefficient on low-entropy tokens (kl_loss_coef)
    kl_target: str = "ref"          # ref (the reference model; loaded for this strategy) | old (π_old)
    kl_agg: str = "subset"          # subset: each KL a token mean over its own subset (authors) | token

    token_level = True
    replaces_policy_loss = True
    needs_offpolicy_ratio = True
    offpolicy_mechanism = "the per-token clip ε (0.5 high / 0.2 low), the dual clip, a KL to π_old (kl_target: old)"

    def __post_init__(self) -> None:
        self._counts: tuple[float, float] = (0.0, 0.0)                  # (n_high, n_low) of the current step

    @property
    def needs_reference(self) -> bool:
        return self.kl_target == "ref" and (self.kl_high > 0 or self.kl_low > 0)

    def validate(self) -> None:
        if not 0 <= self.quantile <= 1:
            raise ValueError(f"archer: quantile must be in [0, 1], got {self.quantile}")
        if min(self.eps_high_tok, self.eps_low_tok, self.kl_high, self.kl_low) < 0:
            raise ValueError("archer: eps_high_tok, eps_low_tok, kl_high, kl_low must be >= 0")
        if self.kl_target not in ("ref", "old"):
            raise ValueError(f"archer: kl_target must be ref or old, got {self.kl_target!r}")
        if self.kl_agg not in ("subset", "token"):
            raise ValueError(f"archer: kl_agg must be subset or token, got {self.kl_agg!r}")

    def _target(self, ctx: TokenContext) -> torch.Tensor | None:
        if self.kl_target == "ref":
            return ctx.ref_logp
        return ctx.old_logp

    def token_weights(self, ctx: TokenContext) -> None:
        # step-level hook: the two subsets' token counts over the whole optimizer step (all ranks)
        high = response_entropy_mask(ctx.entropy, ctx.mask, self.quantile)
        n, n_high = ctx.reduce.sum(torch.stack([ctx.mask.sum(), high.sum()]).double()).tolist()
        self._counts = (n_high, n - n_high)
        return None

    def policy_loss(self, ctx: TokenContext) -> torch.Tensor:
        high = response_entropy_mask(ctx.entropy, ctx.mask, self.quantile)
        per_token_kl = self.kl_agg == "token"
        return archer_loss(ctx.logp, ctx.old_logp, ctx.advantages, high, self.eps_high_tok, self.eps_low_tok,
                           self.kl_high if per_token_kl else 0.0, self.kl_low if per_token_kl else 0.0,
                           self._target(ctx) if per_token_kl else None, ctx.clip_ratio_c)

    def extra_loss(self, ctx: TokenContext) -> torch.Tensor | None:
        target = self._target(ctx)
        if self.kl_agg != "subset" or target is None or not (self.kl_high or self.kl_low):
            return None
        high = response_entropy_mask(ctx.entropy, ctx.mask, self.quantile)
        n_high, n_low = self._counts
        if n_high + n_low == 0:       # no step-level counts (a direct call): this micro-batch alone
            m = ctx.mask.bool()
            n_high, n_low = float((high & m).sum()), float((~high & m).sum())
        return subset_kl_loss(ctx.logp, target, high, ctx.mask, self.kl_high, self.kl_low, n_high, n_low)

    def metrics(self, ctx: TokenContext) -> dict[str, float]:
        n_high, n_low = self._counts
        out = {"high_share": n_high / max(n_high + n_low, 1.0),
               "kl_target_is_ref": float(ctx.ref_logp is not None and self.kl_target == "ref")}
        return out
