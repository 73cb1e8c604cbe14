"""Multi-process runs: `accelerate launch` (or torchrun) sets the environment, accelerate builds
the process group, and this module holds the few collective operations the trainer needs.

Every global statistic goes through one `Reducer` (zoo.strategy): single-process it is plain
torch; here `DistReducer` makes the same calls global across ranks. Ranks hold whole groups, in
rank order, so gathering per-rank tensors in rank order reproduces the single-process tensor.
Every rank makes the same sequence of collective calls whatever its share of the data, even
none: that is what keeps a rank with no valid tokens from hanging the others.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from zoo.strategy import Reducer


def world_size_from_env() -> int:
    """Processes in this launch (accelerate launch / torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def make_accelerator(device: str = "auto"):
    """The accelerate Accelerator of a multi-process launch, None for a plain single process."""
    if world_size_from_env() <= 1:
        return None
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    mp = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if mp not in ("no", ""):
        raise ValueError(f"accelerate mixed_precision '{mp}' is not supported: it would autocast the training "
                         "forward but not the scoring pass, so π_old and π_θ would differ at the first step. Set "
                         "mixed_precision: 'no' in the accelerate config and model.dtype: bfloat16 in the zoo config")
    # rank 0 evaluates (and may pretrain the base) while the others wait in a collective: allow hours
    acc = Accelerator(cpu=device == "cpu" or not torch.cuda.is_available(), mixed_precision="no",
                      kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=4))])
    kind = str(acc.distributed_type).split(".")[-1]
    if kind not in SUPPORTED:
        raise NotImplementedError(
            f"accelerate distributed_type {kind} is not supported: the trainer accumulates micro-batches and "
            f"shards the policy itself; use data parallel ({', '.join(SUPPORTED)}: configs/accelerate/ddp.yaml, "
            "multinode.yaml) or FSDP (configs/accelerate/fsdp.yaml, or train.sharding: fsdp)")
    return acc


SUPPORTED = ("FSDP", "MULTI_GPU", "MULTI_CPU", "MULTI_XPU", "MULTI_NPU", "MULTI_MLU", "MULTI_MUSA", "MULTI_HPU")


class DistReducer(Reducer):
    """Reducer over all ranks of the default process group (gloo on CPU, NCCL on GPU)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = torch.device(device)

    def _on(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach().to(self.device).contiguous()

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate 1-D tensors of any (also zero) length over ranks, in rank order."""
        x = self._on(x.reshape(-1))
        sizes = [torch.zeros(1, dtype=torch.long, device=self.device) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([x.numel()], dtype=torch.long, device=self.device))
        sizes = [int(s) for s in sizes]
        n = max(sizes)
        buf = torch.zeros(n, dtype=x.dtype, device=self.device)
        buf[: x.numel()] = x
        parts = [torch.empty_like(buf) for _ in range(self.world)]
        dist.all_gather(parts, buf)
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        t = self._on(x).clone()
        if not t.dtype.is_floating_point:
            t = t.long()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def max(self, x: torch.Tensor) -> torch.Tensor:
        t = self._on(x).clone()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t

    def offset(self, n: int) -> tuple[int, int]:
        """(items on lower ranks, items on all ranks) for a local count n."""
        counts = self.gather(torch.tensor([int(n)], dtype=torch.long)).tolist()
        return int(sum(counts[: self.rank])), int(sum(counts))

    def broadcast_object(self, obj):
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj) -> list:
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        dist.barrier()
