"""The strategy hook interface (DESIGN.md "The strategy interface").

A strategy changes how much each token counts. It is a dataclass whose fields are its
parameters (validated, defaults from docs/algorithms.md), registered by name:

    @register_strategy("top_entropy")
    @dataclass
    class TopEntropy(Strategy):
        rho: float = 0.2
        def token_weights(self, ctx): return top_entropy_mask(ctx.entropy, ctx.mask, self.rho).float()

Hooks and where the trainer calls them:
- token_temperature(step_entropy, base_temperature) -> (B,)   rollout, every decoding step
- shape_advantages(ctx) -> (B, T)      once per optimizer step, on the step-level context
- token_weights(ctx) -> (B, T)         once per optimizer step, on the step-level context
- policy_loss(ctx) -> (B, T)           per micro-batch, replaces the clipped surrogate
- extra_loss(ctx) -> scalar            per micro-batch, added to the loss (already normalised
                                       over the step: use ctx.step_n_valid / ctx.step_n_seqs)
- metrics(ctx) -> dict                 once per optimizer step, logged under the strategy name
- on_rollout(batch) -> None            after each rollout batch (e.g. running entropy percentile);
                                       this rank's share: take global statistics through self.reduce

Step-level hooks see the whole optimizer step (all micro-batches), so every statistic a strategy
takes over tokens is a step-scope statistic by construction; `ctx.reduce` makes it global
across ranks as well.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch

from zoo.registry import STRATEGIES


class Reducer:
    """Global (all-rank) statistics over tokens. Single-process: plain torch on the given tensors.

    Every strategy takes its statistics through this object, so multi-process runs only need a
    different Reducer, never a change in a strategy.
    """

    rank, world = 0, 1

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate a 1-D tensor over ranks, in rank order (identity with one process)."""
        return x

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def max(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def offset(self, n: int) -> tuple[int, int]:
        """(items on lower ranks, items on all ranks) for this rank's count n."""
        return 0, int(n)

    def broadcast_object(self, obj):
        return obj

    def gather_objects(self, obj) -> list:
        return [obj]

    def barrier(self) -> None:
        pass

    def masked_values(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The valid entries of x, from all ranks, as one fp32 1-D tensor."""
        return self.gather(x.detach()[mask].float())

    def masked_mean(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = self.sum((x.detach().float() * mask).sum())
        n = self.sum(mask.float().sum())
        return s / n.clamp(min=1)

    def quantile(self, x: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor | None:
        """Linearly interpolated q-quantile of the valid entries (torch.quantile semantics),
        computed with kthvalue so it works past torch.quantile's 2^24-element limit.
        None when there are no valid entries."""
        from zoo.ops import quantile_kth

        v = self.masked_values(x, mask)
        return quantile_kth(v, q) if v.numel() else None

    def topk_threshold(self, x: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor | None:
        """The k-th largest valid value (ties included by `>=`); None when none are valid."""
        v = self.masked_values(x, mask)
        if v.numel() == 0 or k <= 0:
            return None
        k = min(k, v.numel())
        return torch.topk(v, k).values[-1]


@dataclass
class TokenContext:
    """Everything a strategy may read about the tokens of one optimizer step (or micro-batch).

    Shapes: (B, T) over responses x response tokens unless noted. `mask` is bool.
    """

    logp: torch.Tensor            # (B, T) log π_θ at each token's sampling temperature (grad in micro-batch ctx)
    old_logp: torch.Tensor        # (B, T) log π_old (trainer's scoring pass), detached
    entropy: torch.Tensor         # (B, T) H at the base rollout temperature, fp32, detached unless needs_entropy_grad
    mask: torch.Tensor            # (B, T) bool, valid completion tokens (EOS included)
    advantages: torch.Tensor      # (B, T) after the base estimator and any earlier shape_advantages
    group_ids: torch.Tensor       # (B,) int, responses to the same prompt share an id
    rewards: torch.Tensor         # (B,) scalar reward of each response
    temperatures: torch.Tensor    # (B, T) temperature each token was sampled at
    ref_logp: torch.Tensor | None = None   # (B, T) reference model, when KL is on
    micro_batch_ids: torch.Tensor | None = None  # (B,) which micro-batch each response is in (step ctx)
    n_micro_batches: int = 0      # micro-batches of the step, the most any rank holds (0 = unknown: use the ids)
    step: int = 0                 # optimizer step counter (global)
    seed: int = 0
    clip_low: float = 0.2
    clip_high: float = 0.2
    clip_ratio_c: float | None = None   # the algorithm's dual clip c (None = off)
    base_temperature: float = 1.0
    step_n_valid: float = 0.0     # Σ valid tokens over the whole optimizer step (all micro-batches, ranks)
    step_n_seqs: float = 0.0      # number of responses in the optimizer step
    max_new_tokens: int = 0
    reduce: Reducer = field(default_factory=Reducer)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> torch.Tensor:
        return torch.exp(self.logp - self.old_logp)  # (B, T)


class Strategy:
    """Base class: every hook is the identity. Subclasses are dataclasses with typed fields."""

    name: ClassVar[str] = "identity"
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    needs_entropy_grad: ClassVar[bool] = False
    # Strategies that replace the per-token loss set this; two in one algorithm is a config error.
    replaces_policy_loss: ClassVar[bool] = False
    # Strategies that shape advantages or weights per token; GSPO's sequence-level base rejects them
    # unless supports_sequence_level is True.
    token_level: ClassVar[bool] = False
    supports_sequence_level: ClassVar[bool] = False
    # Declared needs (no name checks anywhere): a mechanism that reads the ratio r = π_θ/π_old (a clip,
    # a |log r| or KL-to-π_old penalty) is inert when a rollout batch gives one optimizer step (r = 1);
    # `zoo train` and `zoo compare` warn then, naming `offpolicy_mechanism`.
    needs_offpolicy_ratio: ClassVar[bool] = False
    offpolicy_mechanism: ClassVar[str] = ""
    # The trainer loads the frozen reference model and fills ctx.ref_logp when any strategy needs it,
    # even with algorithm.kl_coef = 0 (which adds no base KL term). A subclass may make it a property.
    needs_reference: ClassVar[bool] = False
    # Set by the trainer: the all-rank Reducer, for hooks without a TokenContext (on_rollout).
    reduce: ClassVar[Reducer] = Reducer()

    def validate(self) -> None:
        """Raise ValueError with a clear message for bad parameter values."""

    def check_compatible(self, algorithm: "Any") -> None:
        """Raise ValueError if this strategy cannot run with the given algorithm config."""

    # -- rollout ---------------------------------------------------------------------------
    def token_temperature(self, step_entropy: torch.Tensor, base_temperature: float) -> torch.Tensor | None:
        return None  # None: keep the current temperatures

    def on_rollout(self, batch: Any) -> None:
        pass

    # -- optimizer step --------------------------------------------------------------------
    def shape_advantages(self, ctx: TokenContext) -> torch.Tensor:
        return ctx.advantages

    def token_weights(self, ctx: TokenContext) -> torch.Tensor | None:
        return None  # None: all ones

    def policy_loss(self, ctx: TokenContext) -> torch.Tensor | None:
        return None  # None: the base clipped surrogate

    def extra_loss(self, ctx: TokenContext) -> torch.Tensor | None:
        return None

    def loss_agg(self) -> str | None:
        """A loss aggregation mode this strategy requires (e.g. 'weighted-token-mean'), or None."""
        return None

    def metrics(self, ctx: TokenContext) -> dict[str, float]:
        return {}

    # -- state (checkpointed) ----------------------------------------------------------------
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # which hooks a subclass overrides (the trainer skips work nobody needs)
    @classmethod
    def overrides(cls, hook: str) -> bool:
        return getattr(cls, hook) is not getattr(Strategy, hook)


def register_strategy(name: str, *, description: str = "", paper: str = "") -> Callable:
    """Class decorator: make `cls` a dataclass (if it is not one) and register it as `name`."""

    def deco(cls):
        if not dataclasses.is_dataclass(cls):
            cls = dataclass(cls)
        cls.name = name
        if description:
            cls.description = description
        if paper:
            cls.paper = paper
        STRATEGIES.add(name, cls)
        return cls

    return deco


@register_strategy("identity", description="No change: the base objective alone.", paper="-")
class Identity(Strategy):
    pass
