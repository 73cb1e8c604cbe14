"""Plain data records shared across the base: problems and rollout batches."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Problem:
    """One task instance. `prompt` is the exact text the model is conditioned on; `answer` is the
    gold string handed to the reward function; `solution` is a full reference completion (the
    SFT target, without EOS), when the task has one."""

    prompt: str
    answer: str
    solution: str | None = None
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class RolloutBatch:
    """B = number of responses, P = prompt length (left-padded), T = response length (right-padded)."""

    prompt_ids: torch.Tensor      # (B, P) long, left-padded
    prompt_mask: torch.Tensor     # (B, P) bool
    response_ids: torch.Tensor    # (B, T) long, pad after EOS
    response_mask: torch.Tensor   # (B, T) bool: valid completion tokens, EOS included
    logp: torch.Tensor            # (B, T) sampler log-prob under the distribution actually sampled from
    temperatures: torch.Tensor    # (B, T) temperature each token was sampled at
    entropy: torch.Tensor         # (B, T) untempered (T=1) entropy of the next-token distribution
    truncated: torch.Tensor       # (B,) bool: hit max_new_tokens without EOS
    group_ids: torch.Tensor       # (B,) long
    texts: list[str] = field(default_factory=list)      # decoded completions
    problems: list[Problem] = field(default_factory=list)  # one per response

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(-1)  # (B,)

    def select(self, idx: torch.Tensor | list[int]) -> "RolloutBatch":
        idx_l = idx.tolist() if isinstance(idx, torch.Tensor) else list(idx)
        it = torch.as_tensor(idx_l, dtype=torch.long)
        take = lambda x: x[it]  # noqa: E731
        return RolloutBatch(
            take(self.prompt_ids), take(self.prompt_mask), take(self.response_ids), take(self.response_mask),
            take(self.logp), take(self.temperatures), take(self.entropy), take(self.truncated), take(self.group_ids),
            [self.texts[i] for i in idx_l] if self.texts else [], [self.problems[i] for i in idx_l] if self.problems else [],
        )
