"""The loss assembly of an algorithm (base + ordered strategies) as pure functions.

`zoo.update.UpdatePhase` (our trainer) and `zoo.integrations.trl` (TRL's GRPOTrainer) both build
their loss with these, so the two compute the same numbers from the same tensors
(docs/algorithms.md §3 and §5):

1. `shape_and_weight` (step-level context): every strategy's `shape_advantages` in config order,
   each on the advantages the previous one returned, then the product of all `token_weights`;
2. `micro_batch_loss` (micro-batch context): the one strategy that replaces the per-token loss,
   else the base's own, else the clipped surrogate with the algorithm's dual clip; times the
   weights (and an optional per-token scale such as vLLM's importance-sampling ratio); plus
   kl_coef · k3 KL to the reference (not weighted; optionally scaled); aggregated with the given step-level
   denominators (`zoo.ops.agg_loss`); plus every strategy's `extra_loss`.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from zoo import ops
from zoo.objectives import dual_clip
from zoo.strategy import Strategy, TokenContext


def shape_and_weight(strategies: Sequence[Strategy], ctx: TokenContext) -> torch.Tensor:
    """Apply the step-level hooks to `ctx` in place (ctx.advantages becomes the shaped advantages,
    zero outside the mask) and return the token weights (B, T), zero outside the mask."""
    mask = ctx.mask
    for s in strategies:
        ctx.advantages = s.shape_advantages(ctx) * mask
    weights = torch.ones_like(ctx.advantages)
    for s in strategies:
        w = s.token_weights(ctx)
        if w is not None:
            weights = weights * w
    return weights * mask


def micro_batch_loss(mctx: TokenContext, weights: torch.Tensor, denom: dict, algo: Any, base: Any,
                     strategies: Sequence[Strategy], token_scale: torch.Tensor | None = None,
                     kl_scale: torch.Tensor | None = None, extra_scale: float = 1.0):
    """The micro-batch's share of the step loss and its (B, T) per-token loss matrix.

    algo: the resolved AlgorithmConfig (clip_low/high, clip_ratio_c, kl_coef, loss_agg); base: its
    BaseObjective; denom: step-level denominators (`zoo.ops.agg_denominators`, summed over ranks);
    token_scale: an extra (B, T) or (B, 1) factor on the policy term only (None = 1); kl_scale: a
    factor on the KL term only (None = 1; TRL's use_bias_correction_kl passes the ratio π_θ/π_old);
    extra_scale: a factor on the strategies' extra losses (verl: the micro-batch's share of the tokens).
    """
    per_tok = None
    for s in strategies:
        per_tok = s.policy_loss(mctx) if per_tok is None else per_tok
    if per_tok is None and base.policy_loss is not None:
        per_tok = base.policy_loss(mctx, algo)
    if per_tok is None:
        per_tok = ops.clipped_surrogate(mctx.logp, mctx.old_logp, mctx.advantages, algo.clip_low, algo.clip_high)
        per_tok = dual_clip(per_tok, mctx.advantages, algo.clip_ratio_c)       # off unless algorithm.clip_ratio_c
    loss_mat = per_tok * weights
    if token_scale is not None:
        loss_mat = loss_mat * token_scale
    if algo.kl_coef > 0:
        kl = ops.k3_kl(mctx.logp, mctx.ref_logp)
        loss_mat = loss_mat + algo.kl_coef * (kl if kl_scale is None else kl * kl_scale)
    loss = ops.agg_loss(loss_mat, mctx.mask, algo.loss_agg, denom)
    for s in strategies:
        extra = s.extra_loss(mctx)
        if extra is not None:
            loss = loss + extra * extra_scale
    return loss, loss_mat
