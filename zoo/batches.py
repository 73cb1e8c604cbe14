"""The pieces the trainer moves data with: the scored rollout batch, the problem stream, rank
shares and minibatch splits, micro-batch slicing, the training-forward module DDP wraps, and the
per-step metrics every run logs (global over ranks through the Reducer)."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from zoo import ops
from zoo.rollout import response_logp_entropy
from zoo.strategy import Reducer, TokenContext
from zoo.types import RolloutBatch


@dataclass
class Scored:
    """A rollout batch with everything the optimizer steps need, (B, T) unless noted."""
    batch: RolloutBatch
    rewards: torch.Tensor        # (B,) final reward (correctness + shaping)
    correct: torch.Tensor        # (B,) correctness reward
    advantages: torch.Tensor     # (B, T) base advantages broadcast over valid tokens
    old_logp: torch.Tensor
    entropy: torch.Tensor
    ref_logp: torch.Tensor | None


class DataStream:
    """Deterministic, resumable stream of training problems (reshuffled every pass)."""

    def __init__(self, problems, seed: int):
        self.problems, self.seed, self.epoch, self.pos = problems, seed, 0, 0
        self._order = self._perm()

    def _perm(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.problems), generator=g).tolist()

    def take(self, n: int):
        out = []
        while len(out) < n:
            if self.pos >= len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._perm()
            out.append(self.problems[self._order[self.pos]])
            self.pos += 1
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, st: dict) -> None:
        self.epoch, self.pos = st["epoch"], st["pos"]
        self._order = self._perm()


def split_groups(items: list, n: int) -> list[list]:
    """n consecutive near-equal parts (some empty when len(items) < n: ranks keep the same count)."""
    k, r = divmod(len(items), n)
    out, s = [], 0
    for i in range(n):
        e = s + k + (1 if i < r else 0)
        out.append(items[s:e])
        s = e
    return out


def rank_share(n: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of n items held by `rank`: consecutive, near-equal, rank 0 first."""
    k, r = divmod(n, world)
    lo = rank * k + min(rank, r)
    return lo, lo + k + (1 if rank < r else 0)


class PolicyScorer(torch.nn.Module):
    """The training forward as one module (what DDP wraps): response log-probs and entropy."""

    def __init__(self, model, share_prompts: bool = True):
        super().__init__()
        self.model = model
        self.share_prompts = share_prompts   # FSDP: off, so every rank runs the decoder once per call

    def forward(self, prompt_ids, prompt_mask, response_ids, response_mask, temperatures, base_temperature: float,
                chunk_size: int = 0, entropy_grad: bool = False, grad_rows: torch.Tensor | None = None):
        return response_logp_entropy(self.model, prompt_ids, prompt_mask, response_ids, response_mask, temperatures,
                                     base_temperature, chunk_size, self.share_prompts, entropy_grad=entropy_grad,
                                     grad_rows=grad_rows)


def mean_dicts(ds: list[dict]) -> dict:
    keys = {k for d in ds for k in d}
    return {k: sum(d[k] for d in ds if k in d) / sum(1 for d in ds if k in d) for k in keys}


def slice_ctx(ctx: TokenContext, sel: torch.Tensor, logp, ent) -> TokenContext:
    """The micro-batch rows `sel` of a step context, with the micro-batch's own logp/entropy."""
    pick = lambda x: None if x is None else x[sel]  # noqa: E731
    return replace(ctx, logp=logp, old_logp=pick(ctx.old_logp), entropy=ent, mask=pick(ctx.mask),
                   advantages=pick(ctx.advantages), group_ids=pick(ctx.group_ids), rewards=pick(ctx.rewards),
                   temperatures=pick(ctx.temperatures), ref_logp=pick(ctx.ref_logp),
                   micro_batch_ids=pick(ctx.micro_batch_ids))


def cat_batches(bs: list[RolloutBatch], pad: int) -> RolloutBatch:
    if len(bs) == 1:
        return bs[0]
    from zoo.rollout import _pad_cat

    f = lambda name, v, left=False: _pad_cat([getattr(b, name) for b in bs], v, left)  # noqa: E731
    return RolloutBatch(f("prompt_ids", pad, True), f("prompt_mask", False, True), f("response_ids", pad),
                        f("response_mask", False), f("logp", 0.0), f("temperatures", 1.0), f("entropy", 0.0),
                        torch.cat([b.truncated for b in bs]), torch.cat([b.group_ids for b in bs]),
                        sum((b.texts for b in bs), []), sum((b.problems for b in bs), []))


def entropy_metrics(v: torch.Tensor) -> dict:
    """Mean, percentiles and near-zero share of the valid tokens' entropies v (1-D, all ranks)."""
    if v.numel() == 0:
        return {}
    return {"entropy/mean": float(v.mean()), "entropy/p50": float(ops.quantile_kth(v, 0.5)),
            "entropy/p80": float(ops.quantile_kth(v, 0.8)), "entropy/p95": float(ops.quantile_kth(v, 0.95)),
            "entropy/share_below_0.01": float((v < 0.01).float().mean())}


def quadrant_metrics(adv, entropy, mask, group_ids, reduce: Reducer | None = None) -> dict:
    q = ops.quadrant_ids(adv, entropy, mask, group_ids)                    # groups are whole on each rank
    counts = torch.stack([(q == i).sum() for i in range(len(ops.QUADRANTS))] + [mask.sum()]).double()
    *c, n = (reduce or Reducer()).sum(counts).tolist()
    return {f"quadrant/{name}_share": c[i] / max(n, 1.0) for i, name in enumerate(ops.QUADRANTS)}
