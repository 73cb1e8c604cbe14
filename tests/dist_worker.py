"""One optimizer step on a fixed global batch, as 1 process or as N (torchrun / accelerate launch).

    python tests/dist_worker.py MODEL_DIR OUT.pt                          # the single-process reference
    python -m torch.distributed.run --nproc_per_node 2 tests/dist_worker.py MODEL_DIR OUT.pt
    ZOO_SHARDING=fsdp python -m torch.distributed.run --nproc_per_node 2 tests/dist_worker.py MODEL_DIR OUT.pt

Every rank samples the same global batch (same weights, same seeded generator), keeps its share of
whole groups, and runs `Trainer.update` on it. Rank 0 saves, per case, the logged metrics and the
gradient of the step, which tests/test_distributed.py compares with the single-process run.
"""
from __future__ import annotations

import os
import sys
import tempfile

import torch

torch.set_num_threads(1)

from rewards import register_reward  # noqa: E402
from zoo.config import config_from_dict  # noqa: E402
from zoo.trainer import Trainer  # noqa: E402

ALGORITHMS = {
    "top20": {"base": "dapo", "dynamic_sampling": False,
              "strategies": [{"name": "eapo"}, {"name": "top_entropy", "rho": 0.2}]},
    "clip_cov_kl": {"base": "grpo", "kl_coef": 0.05,
                    "strategies": [{"name": "clip_cov", "ratio": 0.05, "lb": -10.0, "ub": 10.0}]},
    "archer": {"base": "grpo", "strategies": [{"name": "archer"}]},
    "ce_gppo": {"base": "dapo", "dynamic_sampling": False, "strategies": [{"name": "ce_gppo"}]},
    "top20_micro_batch": {"base": "dapo", "dynamic_sampling": False,
                          "strategies": [{"name": "top_entropy", "rho": 0.2, "scope": "micro_batch"}]},
}
# (algorithm, groups held by each rank of a 2-process run, micro-batch size in responses,
#  extra train keys, compared with the single-process run)
CASES = {
    "balanced": ("top20", (2, 2), 0, {}, True),
    "empty_rank": ("top20", (4, 0), 0, {}, True),
    "accumulation": ("top20", (2, 2), 4, {}, True),        # 2 micro-batches per rank vs 1 single-process
    "uneven_accumulation": ("top20", (3, 1), 4, {}, True),  # 3 micro-batches on rank 0, 1 on rank 1
    "clip_cov_kl": ("clip_cov_kl", (1, 3), 4, {}, True),
    "archer": ("archer", (2, 2), 0, {}, True),
    # 2 minibatches x 2 epochs: global group split, the same shuffle on every rank, no-grad pre-pass
    "minibatches_epochs": ("ce_gppo", (3, 1), 4, {"minibatches": 2, "epochs": 2}, True),
    # per-micro-batch τ (TRL's scope) with 3 vs 1 micro-batches: must not hang (no single-process twin)
    "micro_batch_scope_uneven": ("top20_micro_batch", (3, 1), 4, {}, False),
}
GROUP, PROMPTS = 4, 4


@register_reward("_dist_parity")
def _parity(completions, golds):
    return [float(len(c) % 2) for c in completions]


def run_case(model_dir: str, name: str, world: int, rank: int) -> dict:
    algo, split, mbs, train, _ = CASES[name]
    raw = {
        "model": {"name_or_path": model_dir, "device": "cpu"},
        "task": {"name": "countdown", "train_size": 64, "eval_size": 8},
        "reward": {"name": "_dist_parity"},
        "algorithm": ALGORITHMS[algo],
        "rollout": {"group_size": GROUP, "prompts_per_step": PROMPTS, "max_new_tokens": 12},
        "train": {"steps": 1, "lr": 1e-3, "threads": 1, "micro_batch_size": mbs if world > 1 else 0, **train,
                  "sharding": os.environ.get("ZOO_SHARDING", "none") if world > 1 else "none"},
        "eval": {"every": 0, "at_start": False},
        "checkpoint": {"every": 0},
        "log": {"progress": False, "tensorboard": False},
    }
    out = tempfile.mkdtemp(prefix=f"dist-{name}-")
    t = Trainer(config_from_dict(raw), out, log=lambda *a: None)
    problems = t.data.take(PROMPTS)
    with t.gathered():                              # FSDP: the full weights for sampling
        b = t.engine.sample(problems, GROUP, max_new_tokens=12, temperature=1.0,
                            generator=torch.Generator().manual_seed(123))       # the same batch on every rank
    rewards = torch.tensor(t.reward_fn(b.texts, [p.answer for p in b.problems]))
    counts = split if world > 1 else (PROMPTS,)
    lo = sum(counts[:rank]) * GROUP
    rows = list(range(lo, lo + counts[rank] * GROUP))
    sc = t.score(b.select(rows), rewards[rows], rewards[rows])
    full = lambda x: (x.full_tensor() if hasattr(x, "full_tensor") else x).detach().flatten()  # noqa: E731
    grads = []                                      # the gradient of every optimizer step of the update
    t.opt.register_step_pre_hook(lambda *_: grads.append(torch.cat([full(p.grad) for p in t.model.parameters()])))
    metrics = t.update(sc)
    grad = torch.stack(grads)
    from zoo.sharding import local_bytes

    return {"metrics": {k: v for k, v in metrics.items() if not k.startswith("perf/")}, "grad": grad,
            "params": torch.cat([full(p) for p in t.model.parameters()]), "opt_steps": t.opt_steps,
            "bytes": local_bytes(t.model, t.opt)}


def main() -> None:
    model_dir, out = sys.argv[1], sys.argv[2]
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    results = {name: run_case(model_dir, name, world, rank) for name in CASES}
    if rank == 0:
        torch.save(results, out)


if __name__ == "__main__":
    main()
