"""Shared math as pure functions (shapes in comments; (B, T) = responses x response tokens).

Log-probs and entropy are computed from hidden states by a fused op over tiles of the logits, so the
full (N, V) logits tensor never exists at once; with gradients each tile is recomputed in backward,
so peak memory is about one tile of logits. That op lives in `zoo.fused` (tile passes in
`zoo.fused_tiles`) and is re-exported here with its tuning constants.
"""
from __future__ import annotations

import torch

from zoo.fused import (DIRECT_MAX_ELEMS, FUSED_MIN_VOCAB_TILE, FUSED_ROWS, FUSED_ROWS_ACCEL,  # noqa: F401
                       FUSED_TILE_ELEMS, FUSED_TILE_ELEMS_ACCEL, FUSED_TILE_FRACTION, logprobs_and_entropy)

AGG_MODES = ("token-mean", "weighted-token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


# ----------------------------------------------------------------------------------------------
# Entropy and log-probs (the fused LM-head op: zoo.fused)
# ----------------------------------------------------------------------------------------------
def entropy_from_logits(logits: torch.Tensor, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    """H = -Σ p log p over the full vocabulary, p = softmax(logits / T), in fp32 (nats).

    `temperature` is a float or a tensor broadcastable to logits.shape[:-1]. Returns logits.shape[:-1].
    """
    z = logits.float()
    if isinstance(temperature, torch.Tensor):
        z = z / temperature.float().unsqueeze(-1)
    elif temperature != 1.0:
        z = z / temperature
    logp = torch.log_softmax(z, dim=-1)
    return -(logp.exp() * logp).sum(-1)


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------
def quantile_kth(v: torch.Tensor, q: float) -> torch.Tensor:
    """torch.quantile(v, q) (linear interpolation) via kthvalue: no 2^24-element limit.

    v is 1-D and non-empty. Position p = q·(n-1), computed in v's dtype exactly as torch.quantile
    does, so the result matches it bit for bit; result = lerp(v_(floor p), v_(ceil p), p - floor p).
    """
    n = v.numel()
    if n == 0:
        raise ValueError("quantile of an empty tensor")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], got {q}")
    v = v.float()
    pos = torch.tensor(q, dtype=torch.float32 if n <= 2 ** 24 else torch.float64) * (n - 1)
    lo = int(pos.floor())
    hi = min(int(pos.ceil()), n - 1)
    v_lo = torch.kthvalue(v, lo + 1).values
    if hi == lo:
        return v_lo
    v_hi = torch.kthvalue(v, hi + 1).values
    return torch.lerp(v_lo, v_hi, (pos - lo).to(v.dtype))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over mask (0 where nothing is valid, never NaN)."""
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1)


def group_stats(values: torch.Tensor, group_ids: torch.Tensor):
    """Per-response group mean and unbiased std (G-1 denominator) of a (B,) tensor. Returns (mean, std) (B,)."""
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    G = len(uniq)
    v = values.float()
    cnt = torch.zeros(G, dtype=torch.float32, device=v.device).index_add_(0, inv, torch.ones_like(v))
    s = torch.zeros(G, dtype=torch.float32, device=v.device).index_add_(0, inv, v)
    mean = s / cnt
    dev2 = torch.zeros(G, dtype=torch.float32, device=v.device).index_add_(0, inv, (v - mean[inv]) ** 2)
    std = torch.sqrt(dev2 / (cnt - 1).clamp(min=1))
    return mean[inv], std[inv]


def grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """A_i = (R_i - mean_g R) / (std_g R + eps), std with G-1 denominator. (B,)"""
    mean, std = group_stats(rewards, group_ids)
    return (rewards.float() - mean) / (std + eps)


def dr_grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """A_i = R_i - mean_g R (Dr. GRPO: no std normalisation). (B,)"""
    mean, _ = group_stats(rewards, group_ids)
    return rewards.float() - mean


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------
def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      clip_low: float, clip_high: float) -> torch.Tensor:
    """ℓ = -min(r·A, clip(r, 1-ε_low, 1+ε_high)·A), r = exp(logp - old_logp). (B, T)"""
    ratio = torch.exp(logp - old_logp)                                   # (B, T)
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)        # (B, T)
    return -torch.minimum(ratio * advantages, clipped * advantages)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """KL_k3 = exp(d) - d - 1, d = ref_logp - logp. (B, T)"""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def agg_denominators(mask: torch.Tensor, weights: torch.Tensor | None, max_len: int) -> dict[str, float]:
    """Step-level denominators for every aggregation mode (mask/weights cover the whole step)."""
    m = mask.float()
    w = m if weights is None else weights.float() * m
    return {
        "n_valid": float(m.sum()),
        "n_seqs": float(mask.shape[0]),
        "sum_weights": float(w.sum()),
        "max_len": float(max_len),
    }


def agg_loss(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str, denom: dict[str, float]) -> torch.Tensor:
    """Aggregate a (B, T) per-token loss of one micro-batch with STEP-level denominators.

    Summing this over the micro-batches of an optimizer step gives the step loss:
      token-mean              Σ ℓ / Σ_step valid
      weighted-token-mean     Σ ℓ / Σ_step w        (ℓ already carries the weights)
      seq-mean-token-mean     Σ_i (Σ_t ℓ_i,t / |o_i|) / n_seqs_step
      seq-mean-token-sum-norm Σ ℓ / (n_seqs_step · L_max)
    Zero valid tokens give 0, never NaN.
    """
    m = mask.to(loss_mat.dtype)
    lm = loss_mat * m
    if mode == "token-mean":
        return lm.sum() / max(denom["n_valid"], 1.0)
    if mode == "weighted-token-mean":
        return lm.sum() / max(denom["sum_weights"], 1e-8) if denom["sum_weights"] > 0 else lm.sum() * 0.0
    if mode == "seq-mean-token-mean":
        per_seq = lm.sum(-1) / m.sum(-1).clamp(min=1)                   # (B,)
        return per_seq.sum() / max(denom["n_seqs"], 1.0)
    if mode == "seq-mean-token-sum-norm":
        return lm.sum() / max(denom["n_seqs"] * denom["max_len"], 1.0)
    raise ValueError(f"unknown loss aggregation mode '{mode}'; valid: {', '.join(AGG_MODES)}")


# ----------------------------------------------------------------------------------------------
# Per-group token statistics and EAPO quadrants (also logged for every run: cheap)
# ----------------------------------------------------------------------------------------------
QUADRANTS = ("PHR", "PLR", "NHR", "NLR")


def group_token_stats(x: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor, eps: float = 0.0):
    """Mean and (population) std of x over the valid tokens of each group, broadcast to (B, T).

    x, mask (B, T); group_ids (B,). A group with no valid token gets mean 0, std 0.
    """
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    G = len(uniq)
    m = mask.float()
    xf = x.detach().float() * m
    cnt = torch.zeros(G, device=x.device).index_add_(0, inv, m.sum(-1))             # (G,)
    s = torch.zeros(G, device=x.device).index_add_(0, inv, xf.sum(-1))              # (G,)
    mean = s / cnt.clamp(min=1)                                                      # (G,)
    dev = ((x.detach().float() - mean[inv].unsqueeze(-1)) ** 2) * m                 # (B, T)
    var = torch.zeros(G, device=x.device).index_add_(0, inv, dev.sum(-1)) / cnt.clamp(min=1)
    B, T = x.shape
    return mean[inv].unsqueeze(-1).expand(B, T), var.sqrt()[inv].unsqueeze(-1).expand(B, T)


def quadrant_ids(advantages: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor,
                 group_ids: torch.Tensor) -> torch.Tensor:
    """EAPO quadrant of each token: 0 PHR, 1 PLR, 2 NHR, 3 NLR; -1 invalid or A == 0. (B, T) long.

    Positive/negative = sign of the advantage; high-entropy iff H >= μ_H, the mean H over the
    valid tokens of the token's group (the G responses of one prompt).
    """
    mu, _ = group_token_stats(entropy, mask, group_ids)                  # (B, T)
    high = entropy.detach().float() >= mu                                # (B, T)
    pos, neg = advantages > 0, advantages < 0
    q = torch.full(advantages.shape, -1, dtype=torch.long, device=advantages.device)
    q[pos & high] = 0
    q[pos & ~high] = 1
    q[neg & high] = 2
    q[neg & ~high] = 3
    q[~mask.bool()] = -1
    return q
