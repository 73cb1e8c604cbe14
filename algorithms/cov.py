"""Clip-Cov and KL-Cov: covariance-based entropy control (Cui et al. 2025, "The Entropy Mechanism of
Reinforcement Learning for Reasoning Language Models", arXiv 2505.22617, Sec. 5.1, Eq. 9-11).

Per valid token, with means over ALL valid tokens of the optimizer step (detached, current policy):
    Cov_{i,t} = (logp_{i,t} - mean logp) · (A_{i,t} - mean A)                              (Eq. 9)
Clip-Cov (Eq. 10): candidates ω_low < Cov < ω_high (ω = 1, 5) that the PPO clip has not already
    clipped; a random max(1, floor(r·N)) of them (r = 2e-4, N = valid tokens of the step) get weight 0
    (no gradient) but still count in the denominator. The draw: torch.randperm(n_candidates) from a
    torch.Generator seeded by (seed, step), over the candidates in row-major order, so it is the same
    on every rerun. The rest of the loss is the base's clipped surrogate.
KL-Cov (Eq. 11): the top max(1, floor(k·N)) tokens by Cov get ℓ = -r·A + β·|logp - old_logp|, all
    others ℓ = -r·A; no ratio clipping. k = 2e-3 (7B) / 2e-4 (32B), β = 1 (verl's default 0.1; its
    recipes use 1). Exactly k tokens, chosen as verl does (`ties: topk`, default): torch.topk(k) over the
    valid tokens' Cov in row-major order on CPU (verl@b178a3c verl/trainer/ppo/core_algos.py:1604-1619,
    `k_percent_nums = max(1, int(len(cov_lst_all) * kl_cov_ratio))`, `torch.topk(cov_lst_all, ...)`), so
    ties at the k-th value are broken by torch.topk's order; `ties: keep` (ours) keeps every tie.
Differences from verl (compute_policy_loss_clip_cov / _kl_cov): verl selects per micro-batch; we
select over the whole optimizer step (equal on a single micro-batch, cross-checked by
tests/crosscheck), and over all ranks: the Clip-Cov draw is the single-process one on any number of
ranks (each rank keeps the drawn positions inside its offset; tests/test_distributed.py).
"""
from __future__ import annotations

import torch

from zoo.strategy import Reducer, Strategy, TokenContext, register_strategy


def token_covariance(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                     reduce: Reducer | None = None) -> torch.Tensor:
    """Cov = (logp - mean logp)(A - mean A), means over the valid tokens (all ranks); 0 off-mask. (B, T)"""
    reduce = reduce or Reducer()
    mask = mask.bool()
    mu_lp = reduce.masked_mean(logp, mask)                               # scalar
    mu_a = reduce.masked_mean(advantages, mask)                          # scalar
    cov = (logp.detach().float() - mu_lp) * (advantages.detach().float() - mu_a)  # (B, T)
    return cov * mask


def select_count(ratio: float, n_valid: int) -> int:
    """max(1, floor(ratio · N)); 0 when nothing is valid."""
    return max(1, int(ratio * n_valid)) if n_valid > 0 else 0


def draw_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


def clip_cov_mask(cov: torch.Tensor, mask: torch.Tensor, already_clipped: torch.Tensor, ratio: float,
                  lb: float, ub: float, generator: torch.Generator, n_valid: int | None = None,
                  reduce: Reducer | None = None) -> torch.Tensor:
    """Tokens whose gradient Clip-Cov removes. (B, T) bool.

    Candidates: valid, lb < Cov < ub, not already clipped; listed in row-major order over the
    step's responses (rank 0's first: ranks hold consecutive responses); the first
    max(1, floor(ratio·N)) of torch.randperm(n_candidates, generator) are chosen. Every rank draws
    the same permutation and keeps the positions that fall in its own share, so the selection is
    the single-process one on any number of ranks.
    """
    reduce = reduce or Reducer()
    mask = mask.bool()
    n = int(mask.sum()) if n_valid is None else n_valid
    cand = (cov > lb) & (cov < ub) & mask & ~already_clipped.bool()     # (B, T)
    idx = cand.flatten().nonzero().squeeze(-1)                          # row-major candidate order
    out = torch.zeros_like(mask)                                        # (B, T)
    first, total = reduce.offset(idx.numel())                           # this rank's slice of all candidates
    if total == 0:
        return out
    perm = torch.randperm(total, generator=generator)
    chosen = perm[: min(select_count(ratio, n), total)]
    mine = chosen[(chosen >= first) & (chosen < first + idx.numel())] - first
    out.view(-1)[idx[mine]] = True
    return out


def kl_cov_mask(cov: torch.Tensor, mask: torch.Tensor, ratio: float, reduce: Reducer | None = None,
                ties: str = "topk") -> torch.Tensor:
    """The top max(1, floor(ratio·N)) valid tokens by Cov over all ranks. (B, T) bool.

    ties = "topk": exactly that many, the indices torch.topk returns on the valid values listed in
    row-major order (rank 0's rows first), on CPU, as verl; "keep": every token >= the k-th value."""
    reduce = reduce or Reducer()
    mask = mask.bool()
    n = int(reduce.sum(mask.sum()).item())
    if ties == "keep":
        thr = reduce.topk_threshold(cov, mask, select_count(ratio, n))
        if thr is None:
            return torch.zeros_like(mask)
        return (cov >= thr) & mask                                       # (B, T)
    idx = mask.flatten().nonzero().squeeze(-1)                           # this rank's valid positions, row-major
    vals = reduce.gather(cov.detach().flatten()[idx].float().cpu())      # every rank's, in rank order
    out = torch.zeros_like(mask)
    if vals.numel() == 0:
        return out
    first, _ = reduce.offset(idx.numel())
    top = torch.topk(vals, min(select_count(ratio, n), vals.numel()), largest=True).indices
    mine = top[(top >= first) & (top < first + idx.numel())] - first
    out.view(-1)[idx[mine.to(idx.device)]] = True
    return out


def kl_cov_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, selected: torch.Tensor,
                coef: float) -> torch.Tensor:
    """ℓ = -r·A + β·|logp - old_logp|·1[selected], r = exp(logp - old_logp); no clipping. (B, T)"""
    ratio = torch.exp(logp - old_logp)                                   # (B, T)
    return -ratio * advantages + coef * (logp - old_logp).abs() * selected.to(logp.dtype)


def _already_clipped(ctx: TokenContext) -> torch.Tensor:
    """The PPO clip is active (pg2 > pg1 in verl's terms) at the current policy. (B, T) bool"""
    r = torch.exp(ctx.logp.detach() - ctx.old_logp)                      # (B, T)
    A = ctx.advantages.detach()
    pg1 = -A * r
    pg2 = -A * torch.clamp(r, 1 - ctx.clip_low, 1 + ctx.clip_high)
    return (pg2 > pg1) & ctx.mask.bool()


@register_strategy("clip_cov", description="Clip-Cov: detach the gradient of a few random high-covariance tokens.",
                   paper="Cui et al. 2025, arXiv 2505.22617")
class ClipCov(Strategy):
    ratio: float = 2e-4             # r: share of the step's valid tokens to detach
    lb: float = 1.0                 # ω_low
    ub: float = 5.0                 # ω_high

    token_level = True

    def validate(self) -> None:
        if not 0 < self.ratio <= 1:
            raise ValueError(f"clip_cov: ratio must be in (0, 1], got {self.ratio}")
        if self.lb >= self.ub:
            raise ValueError(f"clip_cov: lb must be < ub (got {self.lb}, {self.ub})")

    def _select(self, ctx: TokenContext) -> torch.Tensor:
        cov = token_covariance(ctx.logp, ctx.advantages, ctx.mask, ctx.reduce)
        n = int(ctx.reduce.sum(ctx.mask.sum()).item())
        return clip_cov_mask(cov, ctx.mask, _already_clipped(ctx), self.ratio, self.lb, self.ub,
                             draw_generator(ctx.seed, ctx.step), n, ctx.reduce)

    def token_weights(self, ctx: TokenContext) -> torch.Tensor:
        # w = 0 on the drawn tokens, 1 elsewhere (they stay in the token-mean denominator)
        return (~self._select(ctx)).float()                              # (B, T)

    def metrics(self, ctx: TokenContext) -> dict[str, float]:
        sel = self._select(ctx)
        n = max(float(ctx.reduce.sum(ctx.mask.sum()).item()), 1.0)
        return {"detached_share": float(ctx.reduce.sum(sel.sum()).item()) / n}


@register_strategy("kl_cov", description="KL-Cov: |logp - old_logp| penalty on the top-k covariance tokens, no clip.",
                   paper="Cui et al. 2025, arXiv 2505.22617")
class KLCov(Strategy):
    ratio: float = 2e-3             # k (7B; 2e-4 for 32B)
    coef: float = 1.0               # β
    ties: str = "topk"              # topk: exactly k, torch.topk's order (verl) | keep: every tie at the k-th value

    token_level = True
    replaces_policy_loss = True
    needs_offpolicy_ratio = True
    offpolicy_mechanism = "the |log π_θ - log π_old| penalty on the top-k covariance tokens"

    def __post_init__(self) -> None:
        self._step_sel: torch.Tensor | None = None                       # (B_step, T) selection of this step
        self._step_mb: torch.Tensor | None = None                        # (B_step,) micro-batch ids

    def validate(self) -> None:
        if not 0 < self.ratio <= 1:
            raise ValueError(f"kl_cov: ratio must be in (0, 1], got {self.ratio}")
        if self.coef < 0:
            raise ValueError(f"kl_cov: coef must be >= 0, got {self.coef}")
        if self.ties not in ("topk", "keep"):
            raise ValueError(f"kl_cov: ties must be topk or keep, got {self.ties!r}")

    def _select(self, ctx: TokenContext) -> torch.Tensor:
        cov = token_covariance(ctx.logp, ctx.advantages, ctx.mask, ctx.reduce)
        return kl_cov_mask(cov, ctx.mask, self.ratio, ctx.reduce, self.ties)

    def token_weights(self, ctx: TokenContext) -> None:
        # step-level hook: select over the whole optimizer step, applied per micro-batch in policy_loss
        self._step_sel, self._step_mb = self._select(ctx), ctx.micro_batch_ids
        return None

    def _micro_batch_selection(self, ctx: TokenContext) -> torch.Tensor:
        sel, ids = self._step_sel, self._step_mb
        if sel is not None and ids is not None and ctx.micro_batch_ids is not None and len(ctx.micro_batch_ids):
            rows = (ids == ctx.micro_batch_ids[0]).nonzero().squeeze(-1)
            if len(rows) == ctx.mask.shape[0] and sel.shape[1] == ctx.mask.shape[1]:
                return sel[rows]
        if sel is not None and sel.shape == ctx.mask.shape and ctx.micro_batch_ids is None:
            return sel
        if ctx.reduce.world > 1:  # a collective inside a per-micro-batch hook could leave ranks waiting
            raise RuntimeError("kl_cov: policy_loss called without the step-level selection (token_weights)")
        return self._select(ctx)                                         # no step selection: this batch alone

    def policy_loss(self, ctx: TokenContext) -> torch.Tensor:
        sel = self._micro_batch_selection(ctx)
        return kl_cov_loss(ctx.logp, ctx.old_logp, ctx.advantages, sel, self.coef)

    def metrics(self, ctx: TokenContext) -> dict[str, float]:
        sel = self._step_sel if self._step_sel is not None and self._step_sel.shape == ctx.mask.shape \
            else self._select(ctx)
        n = max(float(ctx.reduce.sum(ctx.mask.sum()).item()), 1.0)
        return {"selected_share": float(ctx.reduce.sum(sel.sum()).item()) / n}
