"""Raise the sampling temperature only at forking tokens (Wang et al. 2025, arXiv 2506.01939,
the decoding-temperature experiment of "Beyond the 80/20 Rule").

At every decoding step, with H_t the UNTEMPERED entropy of each sequence's next-token distribution:
    T_t = T_high  if H_t > h_fork  else  T_low
T_low and T_high are absolute temperatures (the config's base rollout temperature is not
multiplied in). Defaults h_fork = 0.672 (the paper's 80th percentile of Qwen3-8B CoT entropies),
T_low = 1.0, T_high = 1.2 (our moderate rise: the paper finds a moderate rise helps, a fall hurts).
`h_fork: auto` uses the 80th percentile of the valid-token entropies of the PREVIOUS rollout
batch; before the first rollout batch it uses the 0.672 default.
The trainer records each token's temperature in the rollout batch and uses it for π_old and the
ratio's log-probs; the entropy that other strategies see stays at the base temperature.
"""
from __future__ import annotations

import torch

from zoo.ops import quantile_kth
from zoo.strategy import Strategy, TokenContext, register_strategy

H_FORK_DEFAULT = 0.672              # 80/20 paper: 80th percentile of token entropy (nats)
AUTO_QUANTILE = 0.8


def fork_temperatures(entropy: torch.Tensor, h_fork: float, t_low: float, t_high: float) -> torch.Tensor:
    """One decoding step: T_high where H > h_fork, else T_low. entropy (B,) -> temperatures (B,) fp32."""
    hot = entropy.detach().float() > h_fork                              # (B,)
    return torch.where(hot, torch.tensor(float(t_high), device=entropy.device),
                       torch.tensor(float(t_low), device=entropy.device))  # (B,)


@register_strategy("forking_temperature", description="Sample at T_high only where the next-token entropy exceeds h_fork.",
                   paper="Wang et al. 2025, arXiv 2506.01939")
class ForkingTemperature(Strategy):
    h_fork: float | str = H_FORK_DEFAULT   # nats, or "auto" (p80 of the previous rollout batch)
    t_low: float = 1.0
    t_high: float = 1.2

    def __post_init__(self) -> None:
        self._h_auto = H_FORK_DEFAULT       # threshold used by `auto` until the first rollout batch
        self._hot_share: float | None = None  # share of valid tokens sampled hot in the last rollout batch
        self._h_used: float | None = None     # h_fork that last rollout batch was sampled with
        self._n_rollouts = 0

    def validate(self) -> None:
        if isinstance(self.h_fork, str):
            if self.h_fork != "auto":
                raise ValueError(f"forking_temperature: h_fork must be a number >= 0 or 'auto', got '{self.h_fork}'")
        elif isinstance(self.h_fork, bool) or not isinstance(self.h_fork, (int, float)) or self.h_fork < 0:
            raise ValueError(f"forking_temperature: h_fork must be a number >= 0 or 'auto', got {self.h_fork!r}")
        for k in ("t_low", "t_high"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"forking_temperature: {k} must be a temperature > 0, got {v!r}")

    @property
    def threshold(self) -> float:
        """The h_fork in force now (the running value for `auto`)."""
        return self._h_auto if self.h_fork == "auto" else float(self.h_fork)

    def token_temperature(self, step_entropy: torch.Tensor, base_temperature: float) -> torch.Tensor:
        # absolute temperatures: base_temperature is not used
        return fork_temperatures(step_entropy, self.threshold, self.t_low, self.t_high)  # (B,)

    def on_rollout(self, batch) -> None:
        mask = batch.response_mask.bool()
        r = self.reduce                     # all ranks: the step's rollouts, not this rank's share
        n = int(r.sum(mask.sum()).item())
        self._h_used = self.threshold
        if self.t_high != self.t_low:       # share sampled hot, from the recorded temperatures
            hot = (batch.temperatures.float() - self.t_high).abs() < 1e-6
        else:                               # both temperatures equal: the fork decision itself
            hot = batch.entropy.float() > self.threshold
        n_hot = int(r.sum((hot & mask).sum()).item())
        ents = r.masked_values(batch.entropy, mask) if self.h_fork == "auto" else None
        if n:
            self._hot_share = n_hot / n
            if ents is not None:            # h_fork for the next rollout batch = p80 of this one's entropies
                self._h_auto = float(quantile_kth(ents, AUTO_QUANTILE))
        self._n_rollouts += 1

    def metrics(self, ctx: TokenContext) -> dict[str, float]:
        out = {"h_fork": self.threshold if self._h_used is None else self._h_used}
        if self._hot_share is not None:
            out["hot_share"] = self._hot_share
        return out

    def state_dict(self) -> dict:
        return {"h_auto": self._h_auto, "hot_share": self._hot_share, "h_used": self._h_used,
                "n_rollouts": self._n_rollouts}

    def load_state_dict(self, state: dict) -> None:
        self._h_auto = float(state.get("h_auto", H_FORK_DEFAULT))
        self._hot_share = state.get("hot_share")
        self._h_used = state.get("h_used")
        self._n_rollouts = int(state.get("n_rollouts", 0))
