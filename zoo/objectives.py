"""Base objectives (GRPO, DAPO, ...) and the assembly of an algorithm = base + ordered strategies.

A base fixes the advantage estimator and the defaults of the clipped surrogate's knobs
(docs/algorithms.md "Base objectives"); a config may override each knob. Loss variants are entries
in this registry, never branches in the trainer.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

from zoo import ops
from zoo.schema import AlgorithmConfig, ConfigError, RolloutConfig, build_dataclass
from zoo.registry import BASES, STRATEGIES, UnknownNameError
from zoo.strategy import Strategy


@dataclass(frozen=True)
class BaseObjective:
    name: str
    description: str
    paper: str
    loss_agg: str
    clip_low: float
    clip_high: float
    dynamic_sampling: bool
    overlong: bool                           # DAPO overlong reward shaping on by default
    advantage: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]  # (rewards (B,), group_ids (B,), eps) -> (B,)
    sequence_level: bool = False             # GSPO-style: per-token weights/shaping unsupported
    # Optional replacement of the clipped surrogate: fn(ctx: TokenContext, algo: AlgorithmConfig) -> (B, T)
    # per-token loss (a sequence-level loss may broadcast each response's value over its tokens).
    policy_loss: Callable | None = None
    group_relative: bool = True              # A is taken relative to the prompt's group: G < 2 gives A = 0
    # the base's own distinguishing mechanism reads the ratio (GSPO's sequence clip): inert with one update
    needs_offpolicy_ratio: bool = False


BASES.add("grpo", BaseObjective(
    name="grpo", description="GRPO: group-normalised advantages, clip 0.2, per-response token mean.",
    paper="Shao et al. 2024, DeepSeekMath, arXiv 2402.03300",
    loss_agg="seq-mean-token-mean", clip_low=0.2, clip_high=0.2, dynamic_sampling=False, overlong=False,
    advantage=lambda r, g, eps: ops.grpo_advantages(r, g, eps)))

BASES.add("dapo", BaseObjective(
    name="dapo", description="DAPO: clip-higher 0.2/0.28, token-mean, dynamic sampling, overlong shaping.",
    paper="Yu et al. 2025, DAPO, arXiv 2503.14476",
    loss_agg="token-mean", clip_low=0.2, clip_high=0.28, dynamic_sampling=True, overlong=True,
    advantage=lambda r, g, eps: ops.grpo_advantages(r, g, eps)))


BASES.add("dr_grpo", BaseObjective(
    name="dr_grpo", description="Dr. GRPO: A = R - mean_g R (no std), token sums / (G·L_max), clip 0.2.",
    paper="Liu et al. 2025, Understanding R1-Zero-Like Training (Dr. GRPO), arXiv 2503.20783",
    loss_agg="seq-mean-token-sum-norm", clip_low=0.2, clip_high=0.2, dynamic_sampling=False, overlong=False,
    advantage=lambda r, g, eps: ops.dr_grpo_advantages(r, g)))


def gspo_sequence_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                       clip_low: float, clip_high: float) -> torch.Tensor:
    """GSPO (Zheng et al. 2025, arXiv 2507.18071, Eq. 5-7), one value per response broadcast over its tokens.

        s_i = exp( (1/|o_i|) Σ_t (logp_{i,t} - old_logp_{i,t}) )          (valid tokens only)
        ℓ_i = -min(s_i·A_i, clip(s_i, 1-ε_low, 1+ε_high)·A_i)
    A_i is the response's advantage (its first valid token's value). Returns (B, T) = ℓ_i on every
    valid token, 0 elsewhere, so `seq-mean-token-mean` aggregation gives mean_i ℓ_i.
    A response without valid tokens gets s = 1 and loss 0.
    """
    m = mask.to(logp.dtype)                                              # (B, T)
    n = m.sum(-1)                                                        # (B,)
    log_s = ((logp - old_logp) * m).sum(-1) / n.clamp(min=1)             # (B,) mean log-ratio
    s = torch.exp(log_s)                                                 # (B,)
    first = mask.float().argmax(-1, keepdim=True)                        # (B, 1) first valid token
    A = advantages.gather(-1, first).squeeze(-1) * (n > 0)               # (B,)
    seq = -torch.minimum(s * A, torch.clamp(s, 1.0 - clip_low, 1.0 + clip_high) * A)  # (B,)
    return seq.unsqueeze(-1) * m                                         # (B, T)


BASES.add("gspo", BaseObjective(
    name="gspo", description="GSPO: sequence-level ratio (geometric mean of token ratios), clip 3e-4/4e-4.",
    paper="Zheng et al. 2025, Group Sequence Policy Optimization, arXiv 2507.18071",
    loss_agg="seq-mean-token-mean", clip_low=3e-4, clip_high=4e-4, dynamic_sampling=False, overlong=False,
    advantage=lambda r, g, eps: ops.grpo_advantages(r, g, eps), sequence_level=True, needs_offpolicy_ratio=True,
    policy_loss=lambda ctx, algo: gspo_sequence_loss(ctx.logp, ctx.old_logp, ctx.advantages, ctx.mask,
                                                     algo.clip_low, algo.clip_high)))


def dual_clip(loss: torch.Tensor, advantages: torch.Tensor, c: float | None) -> torch.Tensor:
    """Dual-clip PPO (Ye et al. 2020, arXiv 1912.09729) as verl applies it (verl@b178a3c
    verl/trainer/ppo/core_algos.py:1229-1235, `clip_ratio_c`): for A < 0 the per-token loss is
    min(ℓ, -c·A), i.e. a token whose ratio exceeds c stops pushing; A >= 0 unchanged. c None = off. (B, T)"""
    if not c:
        return loss
    return torch.where(advantages < 0, torch.minimum(loss, -c * advantages), loss)


def get_base(name: str) -> BaseObjective:
    try:
        return BASES.get(name)
    except UnknownNameError as e:
        raise ConfigError(f"algorithm.base: {e}") from None


def build_strategies(algo: AlgorithmConfig) -> list[Strategy]:
    """Instantiate and validate the configured strategies, in order."""
    out: list[Strategy] = []
    for i, spec in enumerate(algo.strategies):
        path = f"algorithm.strategies[{i}]"
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec:
            raise ConfigError(f"{path}: expected a mapping with a 'name' key, got {spec!r}")
        params = {k: v for k, v in spec.items() if k != "name"}
        try:
            cls = STRATEGIES.get(str(spec["name"]))
        except UnknownNameError as e:
            raise ConfigError(f"{path}.name: {e}") from None
        strat = build_dataclass(cls, params, path)
        try:
            strat.validate()
        except ValueError as e:
            raise ConfigError(f"{path} ({cls.name}): {e}") from None
        out.append(strat)
    return out


def check_combination(algo: AlgorithmConfig, strategies: list[Strategy]) -> None:
    base = get_base(algo.base)
    replacing = [s.name for s in strategies if s.replaces_policy_loss]
    if len(replacing) > 1:
        raise ConfigError(f"algorithm.strategies: {', '.join(replacing)} each replace the policy loss; "
                          "at most one strategy may do so")
    if replacing and base.policy_loss is not None:
        raise ConfigError(f"algorithm: base '{base.name}' already replaces the per-token clipped surrogate "
                          f"(its own policy loss); {', '.join(replacing)} would silently override it")
    if base.sequence_level:
        bad = [s.name for s in strategies if s.token_level and not s.supports_sequence_level]
        if bad:
            raise ConfigError(f"algorithm: base '{base.name}' is sequence-level; token-level strategies "
                              f"{', '.join(bad)} cannot weight or shape its per-token terms")
    aggs = {s.loss_agg() for s in strategies} - {None}
    if len(aggs) > 1:
        raise ConfigError(f"algorithm.strategies ask for different loss aggregations: {sorted(aggs)}")
    if aggs and algo.loss_agg not in aggs:
        raise ConfigError(f"algorithm.loss_agg is '{algo.loss_agg}' but a strategy requires '{aggs.pop()}' "
                          "(e.g. top_entropy normalize: selected); drop one of the two")
    samplers = [s.name for s in strategies if s.overrides("token_temperature")]
    if len(samplers) > 1:
        raise ConfigError(f"algorithm.strategies: {', '.join(samplers)} each set sampling temperatures; "
                          "at most one strategy may")
    view = dataclasses.replace(algo)
    object.__setattr__(view, "strategies", strategies)
    for s in strategies:
        try:
            s.check_compatible(view)
        except ValueError as e:
            raise ConfigError(f"algorithm.strategies ({s.name}): {e}") from None


def resolve_algorithm(algo: AlgorithmConfig, rollout: RolloutConfig) -> AlgorithmConfig:
    """Fill None/'' knobs from the base's defaults and expand strategies to their full params."""
    base = get_base(algo.base)
    strategies = build_strategies(algo)
    agg = algo.loss_agg or next((s.loss_agg() for s in strategies if s.loss_agg()), None) or base.loss_agg
    if agg not in ops.AGG_MODES:
        raise ConfigError(f"algorithm.loss_agg: unknown '{agg}'; valid: {', '.join(ops.AGG_MODES)}")
    overlong = algo.overlong_buffer
    if overlong is None:
        # DAPO's recipe: L_c = 4096 of L_max = 20480, i.e. L_max / 5 (BytedTsinghua-SIA DAPO and the 80/20
        # authors' recipe/dapo/run_dapo_qwen2.5_32b.sh:18-20)
        overlong = max(1, rollout.max_new_tokens // 5) if base.overlong else 0
    if overlong < 0 or overlong > rollout.max_new_tokens:
        raise ConfigError(f"algorithm.overlong_buffer must be in [0, rollout.max_new_tokens={rollout.max_new_tokens}], got {overlong}")
    resolved = dataclasses.replace(
        algo,
        loss_agg=agg,
        clip_low=base.clip_low if algo.clip_low is None else algo.clip_low,
        clip_high=base.clip_high if algo.clip_high is None else algo.clip_high,
        dynamic_sampling=base.dynamic_sampling if algo.dynamic_sampling is None else algo.dynamic_sampling,
        overlong_buffer=overlong,
        strategies=tuple({"name": s.name, **dataclasses.asdict(s)} for s in strategies),
    )
    if resolved.clip_low < 0 or resolved.clip_high < 0:
        raise ConfigError("algorithm.clip_low / clip_high must be >= 0")
    if resolved.kl_coef < 0:
        raise ConfigError(f"algorithm.kl_coef must be >= 0, got {resolved.kl_coef}")
    if resolved.clip_ratio_c is not None and not resolved.clip_ratio_c > 1:
        raise ConfigError(f"algorithm.clip_ratio_c (dual clip) must be > 1 or null, got {resolved.clip_ratio_c}")
    check_combination(resolved, strategies)
    return resolved


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int, scale: float) -> torch.Tensor:
    """DAPO soft overlong punishment, ADDED to the reward. lengths (B,) -> (B,).

    R_len = 0 if |y| <= L_max - L_c; ((L_max - L_c) - |y|) / L_c if L_max - L_c < |y| <= L_max; times scale.
    """
    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    start = max_len - buffer
    over = (start - lengths.float()) / buffer                  # (B,) negative past the start
    pen = torch.where(lengths.float() > start, over, torch.zeros_like(over))
    return scale * pen.clamp(min=-1.0)


def needs_reference(algo: AlgorithmConfig) -> bool:
    """Whether a run loads the frozen reference model: a base KL term (kl_coef > 0) or a strategy
    that declares `needs_reference` (e.g. ARCHER's KL to π_ref with kl_coef = 0)."""
    return algo.kl_coef > 0 or any(s.needs_reference for s in build_strategies(algo))


def inert_mechanisms(cfg) -> list[str]:
    """The mechanisms of the resolved config that cannot act: with one optimizer step per rollout
    batch (train.minibatches = epochs = 1) the ratio π_θ/π_old is exactly 1 at every update, so every
    clip and every penalty on log π_θ - log π_old does nothing (docs/algorithms.md §6). Declared by the
    strategies (`needs_offpolicy_ratio`) and bases, never by name. [] when several updates run."""
    t, a = cfg.train, cfg.algorithm
    if t.minibatches * t.epochs > 1:
        return []
    base = get_base(a.base)
    out = []
    if base.needs_offpolicy_ratio:
        out.append(f"base {base.name}: its ratio clip ({a.clip_low}/{a.clip_high})")
    for s in build_strategies(a):
        if s.needs_offpolicy_ratio:
            out.append(f"{s.name}: {s.offpolicy_mechanism or 'its use of the ratio'}")
    loss_replaced = base.policy_loss is not None or any(s.replaces_policy_loss for s in build_strategies(a))
    if not loss_replaced and a.clip_high != a.clip_low:
        out.append(f"clip-higher ({a.clip_low}/{a.clip_high})")
    if not loss_replaced and a.clip_ratio_c:
        out.append(f"dual clip c = {a.clip_ratio_c}")
    return out


def inert_warning(cfg) -> str | None:
    """The one-line warning `zoo train` prints (None when nothing is inert)."""
    inert = inert_mechanisms(cfg)
    if not inert:
        return None
    return ("[zoo] warning: train.minibatches = train.epochs = 1 gives one optimizer step per rollout batch, so the "
            "ratio π_θ/π_old is exactly 1 at every update and these mechanisms do nothing: " + "; ".join(inert)
            + ". Set train.minibatches (e.g. 4) or train.epochs > 1 (docs/algorithms.md §6).")
