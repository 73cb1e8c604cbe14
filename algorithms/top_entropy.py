"""Train only on the top-ρ fraction of tokens by entropy (Wang et al. 2025, arXiv 2506.01939).

    w_{i,t} = 1[H_{i,t} >= τ_ρ],   τ_ρ = (1-ρ) quantile of H over the valid tokens of the update
    Loss    = Σ w·ℓ / Σ_i |o_i|    (`normalize: all`, the paper's formula: token-mean over ALL valid)
            = Σ w·ℓ / Σ w          (`normalize: selected`, the authors' verl code)

`select: quantile` (default, TRL's choice) takes the linearly interpolated quantile of
torch.quantile, computed with kthvalue (no 2^24-element limit); `select: topk` keeps
k = ceil(ρ·N) like the authors' code, but keeps every tie at the k-th value. `scope` says which
tokens share one threshold: the whole optimizer step on all ranks (`step`, default), each
micro-batch (`micro_batch`, TRL / the authors' code), or each response (`sequence`).
`invert: true` trains on the valid tokens the top-ρ mask drops (`bottom80`, the negative control).
"""
from __future__ import annotations

import math

import torch

from zoo.strategy import Reducer, Strategy, TokenContext, register_strategy

SELECTS = ("quantile", "topk")
SCOPES = ("step", "micro_batch", "sequence")
NORMALIZES = ("all", "selected")


def _check(rho: float, select: str) -> None:
    if not (isinstance(rho, (int, float)) and not isinstance(rho, bool) and 0.0 < rho <= 1.0):
        raise ValueError(f"top_entropy: rho must be in (0, 1], got {rho!r}")
    if select not in SELECTS:
        raise ValueError(f"top_entropy: unknown select '{select}'; valid: {', '.join(SELECTS)}")


def top_k_count(rho: float, n: int) -> int:
    """k = ceil(ρ·N), robust to float error in ρ·N (0.7·10 = 7.000000000000001 -> 7, not 8)."""
    return min(n, math.ceil(round(rho * n, 9)))


def entropy_threshold(entropy: torch.Tensor, mask: torch.Tensor, rho: float, select: str = "quantile",
                      *, reduce: Reducer | None = None) -> torch.Tensor | None:
    """τ_ρ over the valid entries (all ranks through `reduce`); None when nothing is valid."""
    _check(rho, select)
    reduce = reduce or Reducer()
    mask = mask.bool()
    if select == "quantile":
        # τ = quantile_{1-ρ}(H[mask]), linear interpolation between the floor/ceil order statistics
        return reduce.quantile(entropy, mask, 1.0 - rho)
    n = int(reduce.sum(mask.sum()).item())                              # N valid tokens, all ranks
    # τ = k-th largest valid H, k = ceil(ρ·N)
    return reduce.topk_threshold(entropy, mask, top_k_count(rho, n))


def top_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, rho: float, select: str = "quantile",
                     *, reduce: Reducer | None = None) -> torch.Tensor:
    """1[H >= τ_ρ] on valid tokens, one threshold over all valid entries given; ties kept. (B, T) bool.

    Padding never enters τ, and is never selected. No valid entry -> all False (never NaN).
    """
    mask = mask.bool()
    tau = entropy_threshold(entropy, mask, rho, select, reduce=reduce)
    if tau is None:
        return torch.zeros_like(mask)                                   # (B, T) all False
    return (entropy.detach().float() >= tau) & mask                     # (B, T)


@register_strategy("top_entropy", description="Policy gradient only on the top-ρ highest-entropy (forking) tokens.",
                   paper="Wang et al. 2025, arXiv 2506.01939")
class TopEntropy(Strategy):
    rho: float = 0.2
    select: str = "quantile"        # quantile | topk
    scope: str = "step"             # step | micro_batch | sequence
    normalize: str = "all"          # all (paper: token-mean over all valid) | selected (authors' code)
    invert: bool = False            # True: train only on the tokens the top-ρ mask drops (bottom80)

    token_level = True

    def validate(self) -> None:
        _check(self.rho, self.select)
        if self.scope not in SCOPES:
            raise ValueError(f"top_entropy: unknown scope '{self.scope}'; valid: {', '.join(SCOPES)}")
        if self.normalize not in NORMALIZES:
            raise ValueError(f"top_entropy: unknown normalize '{self.normalize}'; valid: {', '.join(NORMALIZES)}")
        if not isinstance(self.invert, bool):
            raise ValueError(f"top_entropy: invert must be true or false, got {self.invert!r}")

    def _top(self, ctx: TokenContext) -> tuple[torch.Tensor, list[float]]:
        """The top-ρ mask (B, T) under this scope, and the threshold(s) used."""
        H, mask = ctx.entropy, ctx.mask.bool()
        if self.scope == "sequence":                             # one τ per response (local: a row lives on one rank)
            taus = [entropy_threshold(H[i:i + 1], mask[i:i + 1], self.rho, self.select) for i in range(H.shape[0])]
            tau = torch.tensor([float("inf") if t is None else float(t) for t in taus], device=H.device)  # (B,)
            mine = [float(t) for t in taus if t is not None]
            s, n = ctx.reduce.sum(torch.tensor([sum(mine), len(mine)], dtype=torch.float64)).tolist()
            return (H.detach().float() >= tau.unsqueeze(-1)) & mask, [s / n] if n else []   # logged: mean τ, all ranks
        if self.scope == "micro_batch" and ctx.micro_batch_ids is not None:
            # micro-batch k of every rank together (TRL gathers per micro-batch); a rank with fewer
            # micro-batches still takes part in every gather, so no rank waits forever
            ids = ctx.micro_batch_ids
            n_mb = ctx.n_micro_batches or (int(ids.max()) + 1 if len(ids) else 0)
            groups = [mask & (ids == m).unsqueeze(-1) for m in range(n_mb)]
        else:
            groups = [mask]                                      # one τ over the whole step, all ranks
            # (a context without micro_batch_ids is one micro-batch, so micro_batch scope = step there)
        keep = torch.zeros_like(mask)                            # (B, T)
        taus = []
        for g in groups:
            tau = entropy_threshold(H, g, self.rho, self.select, reduce=ctx.reduce)
            if tau is not None:
                keep |= (H.detach().float() >= tau) & g
                taus.append(float(tau))
        return keep, taus

    def token_weights(self, ctx: TokenContext) -> torch.Tensor:
        top, _ = self._top(ctx)
        mask = ctx.mask.bool()
        # w = 1[H >= τ] (or its complement among valid tokens for invert)
        keep = (mask & ~top) if self.invert else top
        return keep.float()                                      # (B, T)

    def loss_agg(self) -> str | None:
        return "weighted-token-mean" if self.normalize == "selected" else None

    def metrics(self, ctx: TokenContext) -> dict[str, float]:
        top, taus = self._top(ctx)
        mask = ctx.mask.bool()
        keep = (mask & ~top) if self.invert else top
        drop = mask & ~keep
        r = ctx.reduce
        n_valid = float(r.sum(mask.sum()).item())
        n_keep = float(r.sum(keep.sum()).item())
        out: dict[str, float] = {"kept_share": n_keep / n_valid if n_valid else 0.0}
        if taus:
            out["threshold"] = sum(taus) / len(taus)             # mean τ over micro-batches / responses
        if n_keep:
            out["entropy_kept"] = float(r.masked_mean(ctx.entropy, keep))
        if n_valid - n_keep:
            out["entropy_dropped"] = float(r.masked_mean(ctx.entropy, drop))
        return out
