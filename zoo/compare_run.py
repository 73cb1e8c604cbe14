"""`zoo compare` running: train (or resume) each cell, record its artefacts, keep going past failures.

A cell dir cells/<algo>/seed<k>/ is a `zoo train` run dir plus per_problem.json (final eval
scores), final_entropy.json (token entropies of final-model rollouts) and cell.json (the summary,
written last: the "finished" marker); failed.json when it failed. Re-running skips finished cells,
resumes a killed one from its checkpoint and retries failed ones.
"""
from __future__ import annotations

import gc
import hashlib
import json
import time
import traceback

import yaml

from zoo.compare_plan import Cell, Plan
from zoo.compare_results import _write_json, collect_results
from zoo.logging import read_metrics


def _problems_fingerprint(problems) -> str:
    h = hashlib.sha1()
    for p in problems:
        h.update(p.prompt.encode() + b"\0" + p.answer.encode() + b"\1")
    return h.hexdigest()[:16]


def final_rollout_entropy(trainer, seed: int) -> list[float]:
    """Token entropies (nats, untempered) of one sample per eval prompt from the trained model,
    sampled like the training rollouts (base temperature + the strategies' temperature hook)."""
    import torch

    from zoo.rollout import HFEngine

    cfg = trainer.cfg
    engine = HFEngine(trainer.model, trainer.tok, batch_size=cfg.eval.batch_size)
    g = torch.Generator().manual_seed(seed * 7 + 104729)
    b = engine.sample(trainer.eval_problems, 1, max_new_tokens=cfg.rollout.max_new_tokens,
                      temperature=cfg.rollout.temperature, temperature_hook=trainer._temperature_hook(), generator=g)
    return [round(float(x), 6) for x in b.entropy[b.response_mask].tolist()]


def entropy_stats(values) -> dict:
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"n_tokens": 0}
    return {"n_tokens": int(v.size), "mean": float(v.mean()), "p50": float(np.quantile(v, 0.5)),
            "p80": float(np.quantile(v, 0.8)), "p95": float(np.quantile(v, 0.95)),
            "share_below_0.01": float((v < 0.01).mean())}


def run_cell(cell: Cell, plan: Plan, log=print) -> dict:
    """Train (or resume) one cell, then store its per-problem scores, final entropies and summary."""
    from zoo.checkpoint import list_checkpoints

    t0 = time.perf_counter()
    d = cell.dir
    d.mkdir(parents=True, exist_ok=True)
    resume = bool(list_checkpoints(d))
    from zoo.trainer import Trainer

    trainer = Trainer(cell.cfg, d, resume=resume, log=log)
    try:
        trainer.train()
        ev = trainer.last_eval
        _write_json(d / "per_problem.json", {
            "metric": "eval/accuracy", "greedy": cell.cfg.eval.greedy, "scores": list(ev.per_problem),
            "problem_ids": [p.id for p in trainer.eval_problems],
            "fingerprint": _problems_fingerprint(trainer.eval_problems)})
        ent = final_rollout_entropy(trainer, cell.seed)
        _write_json(d / "final_entropy.json", {"entropy": ent, "stats": entropy_stats(ent)})
        wall = time.perf_counter() - t0
        summary = summarize_cell(cell, trainer.step_idx, wall, resumed=resume)
    finally:
        del trainer
        gc.collect()
    _write_json(d / "cell.json", summary)      # the "finished" marker
    (d / "failed.json").unlink(missing_ok=True)
    return summary


def summarize_cell(cell: Cell, steps: int, wall: float, resumed: bool) -> dict:
    rows = read_metrics(cell.dir)
    evals = [r for r in rows if r.get("eval/accuracy") is not None]
    train_rows = [r for r in rows if "perf/step_seconds" in r]
    final = evals[-1] if evals else {}
    best = max(evals, key=lambda r: r["eval/accuracy"]) if evals else {}
    budget_row = next((r for r in reversed(rows) if "budget/tokens" in r), {})
    train_s = sum(r["perf/step_seconds"] for r in train_rows)
    tokens = int(budget_row.get("budget/tokens", 0))
    ent_file = cell.dir / "final_entropy.json"
    last_train = train_rows[-1] if train_rows else {}
    return {
        "method": cell.method, "seed": cell.seed, "status": "done", "dir": str(cell.dir),
        "steps": steps, "resumed": resumed,
        "final": {k.split("/", 1)[1]: v for k, v in final.items() if k.startswith("eval/")},
        "best_accuracy": best.get("eval/accuracy"), "best_step": best.get("step"),
        "final_entropy": json.loads(ent_file.read_text())["stats"] if ent_file.exists() else {},
        "train_last": {k: last_train.get(k) for k in ("reward/mean", "entropy/mean", "entropy/p80",
                                                      "rollout/response_length") if k in last_train},
        "budget": {"samples": int(budget_row.get("budget/samples", 0)), "tokens": tokens},
        "wall_seconds": wall, "train_seconds": train_s,
        "tokens_per_s": tokens / train_s if train_s > 0 else None,
    }


def run_compare(plan: Plan, log=print) -> dict:
    from zoo.config import save_config  # noqa: F401  (import check: config machinery loaded)
    from zoo.pretrain import ensure_base_model

    plan.out.mkdir(parents=True, exist_ok=True)
    from zoo.checkpoint import atomic_write_text

    atomic_write_text(plan.out / "compare.yaml", yaml.safe_dump(plan.raw, sort_keys=False))
    ensure_base_model(plan.cells[0].cfg, log=log)     # build the tiny base once, outside any cell's clock
    for name, inert in plan.inert.items():
        if inert:
            log(f"[compare] warning: {name}: with one optimizer step per rollout batch these do nothing: "
                f"{'; '.join(inert)} (set train.minibatches > 1)")
    n = len(plan.cells)
    for i, c in enumerate(plan.cells, 1):
        tag = f"{c.method}/seed{c.seed}"
        if (c.dir / "cell.json").exists():
            log(f"[compare] {i}/{n} {tag}: finished earlier, skipped")
            continue
        log(f"[compare] {i}/{n} {tag}: {'resuming' if any(c.dir.glob('ckpt-*')) else 'running'} -> {c.dir}")
        t0 = time.perf_counter()
        try:
            s = run_cell(c, plan, log=log)
            log(f"[compare] {tag}: accuracy {s['final'].get('accuracy', float('nan')):.3f} in {s['wall_seconds']:.1f}s")
        except Exception as e:  # a failed cell is reported and does not stop the others
            c.dir.mkdir(parents=True, exist_ok=True)
            _write_json(c.dir / "failed.json", {"method": c.method, "seed": c.seed, "status": "failed",
                                                "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                                                "wall_seconds": time.perf_counter() - t0})
            log(f"[compare] {tag}: FAILED ({type(e).__name__}: {e}); continuing with the other cells")
    return collect_results(plan)
