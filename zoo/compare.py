"""`zoo compare`: a matrix of algorithms x seeds on one benchmark, with paired statistics and plots.

    zoo compare --config configs/compare/smoke.yaml --out runs/compare/smoke [--set seeds=[0,1]]

Every cell (algorithm, seed) shares the base model, the training data and order (train.seed = the
cell's seed), the eval problems and protocol, and the budget; the cells differ only in the
algorithm. By default (`common_base: true`) every method is put on ONE common base
(ALGORITHMS.md): token-mean loss, clip 0.2/0.28, no KL, one sampling round per step (no dynamic
sampling, no overlong shaping), whatever its preset says; keys written explicitly in an
algorithm's entry win over the common base (so `{name: dapo, preset: dapo, dynamic_sampling: true}`
keeps DAPO's sampling). `common_base: false` keeps each preset's own base; a mapping replaces
the common base's knobs.

Config (YAML): `algorithms:` (preset names or full algorithm blocks with a `name:`), `seeds:`,
`budget:` (`{steps: N}`, or `{tokens: N}` = stop a cell once it generated N training tokens,
with train.steps as the cap), `baseline:` (a method name, default the first), `common_base:`,
and every section of a normal train config (model, task, rollout, train, eval, ...).

Layout of DIR: compare.yaml (as run), cells/<algo>/seed<k>/ (a `zoo train` run dir + cell.json
when finished, per_problem.json, final_entropy.json; failed.json when it failed), results.json,
report.md, plots/*.png. TensorBoard: `tensorboard --logdir DIR/cells` groups runs by algorithm.
Re-running the same command skips finished cells, resumes a killed one from its checkpoint and
retries failed ones.
"""
from __future__ import annotations

import copy
import dataclasses
import gc
import hashlib
import json
import math
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from zoo.config import ConfigError, config_from_dict, resolve_algorithm_block
from zoo.logging import read_metrics

# ALGORITHMS.md: "zoo compare suites put every method on ONE common base (token-mean, clip
# 0.2/0.28, no KL, same sampling settings)"; same sampling = one round per step, reward unshaped.
COMMON_BASE = {"loss_agg": "token-mean", "clip_low": 0.2, "clip_high": 0.28, "kl_coef": 0.0,
               "dynamic_sampling": False, "overlong_buffer": 0}
COMPARE_KEYS = ("algorithms", "seeds", "budget", "baseline", "common_base", "description")
N_BOOT = 4000
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass
class Cell:
    method: str
    seed: int
    cfg: object            # zoo.config.Config
    dir: Path


@dataclass
class Plan:
    out: Path
    raw: dict                                   # the compare config as run (after --set)
    methods: dict[str, dict]                    # display name -> resolved algorithm block
    seeds: list[int]
    baseline: str
    budget_steps: int
    budget_tokens: int                          # 0 = budget by steps
    common_base: dict | None
    cells: list[Cell] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Planning: everything is validated before any cell runs
# ----------------------------------------------------------------------------------------------
def load_compare_raw(path: str | Path, overrides: list[str] | None = None) -> dict:
    from zoo.config import apply_overrides, read_yaml_mapping

    return apply_overrides(read_yaml_mapping(path, "compare config"), overrides)


def _method_entry(i: int, entry, common: dict | None) -> tuple[str, dict]:
    """(display name, algorithm block) of one `algorithms:` entry, with the common base applied."""
    where = f"algorithms[{i}]"
    if isinstance(entry, str):
        name, block = entry, {"preset": entry}
    elif isinstance(entry, dict):
        block = dict(entry)
        name = block.pop("name", None) or block.get("preset")
        if not name:
            raise ConfigError(f"{where}: a full algorithm block needs a 'name:' (its display name)")
    else:
        raise ConfigError(f"{where}: expected a preset name or an algorithm mapping, got {entry!r}")
    name = str(name)
    if not _NAME_RE.match(name):
        raise ConfigError(f"{where}: name '{name}' must use only letters, digits and _ . + - (it names a directory)")
    try:
        resolved = resolve_algorithm_block(block)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    if common:
        for k, v in common.items():
            if k not in block:          # explicit keys of the entry win over the common base
                resolved[k] = v
    return name, resolved


def _budget(raw, train_steps: int) -> tuple[int, int]:
    """(steps cap, token budget) from `budget:`: an int (steps), {steps: N} or {tokens: N[, max_steps: M]}."""
    if raw is None:
        return train_steps, 0
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = {"steps": raw}
    if not isinstance(raw, dict) or not set(raw) <= {"steps", "tokens", "max_steps"} or not raw:
        raise ConfigError(f"budget: expected steps (an int), {{steps: N}} or {{tokens: N, max_steps: M}}, got {raw!r}")
    if "steps" in raw and "tokens" in raw:
        raise ConfigError("budget: give steps or tokens, not both")
    for k, v in raw.items():
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"budget.{k} must be a positive integer, got {v!r}")
    if "steps" in raw:
        return raw["steps"], 0
    return raw.get("max_steps", train_steps), raw["tokens"]


def plan_compare(raw: dict, out: str | Path) -> Plan:
    from zoo.registry import nearest, unknown_name_message

    raw = copy.deepcopy(raw)
    if "algorithm" in raw:
        raise ConfigError("a compare config lists its methods under 'algorithms:' (a list), not 'algorithm:'")
    algos = raw.get("algorithms")
    if not isinstance(algos, list) or not algos:
        raise ConfigError("algorithms: expected a non-empty list of preset names or algorithm blocks")
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ConfigError(f"seeds: expected a non-empty list of distinct integers, got {seeds!r}")
    cb = raw.get("common_base", True)
    if cb is True:
        common = dict(COMMON_BASE)
    elif cb is False or cb is None:
        common = None
    elif isinstance(cb, dict):
        from zoo.config import AlgorithmConfig

        valid = [f.name for f in dataclasses.fields(AlgorithmConfig)]
        for k in cb:
            if k not in valid or k in ("preset", "strategies"):
                near = nearest(str(k), valid)
                raise ConfigError(f"common_base: unknown key '{k}'" + (f"; did you mean '{near}'?" if near else ""))
        common = {**COMMON_BASE, **cb}
    else:
        raise ConfigError(f"common_base: expected true, false or a mapping of algorithm keys, got {cb!r}")
    shared = {k: v for k, v in raw.items() if k not in COMPARE_KEYS}
    methods: dict[str, dict] = {}
    for i, entry in enumerate(algos):
        name, block = _method_entry(i, entry, common)
        if name in methods:
            raise ConfigError(f"algorithms[{i}]: duplicate name '{name}'; give each entry a distinct 'name:'")
        methods[name] = block
    baseline = str(raw.get("baseline") or next(iter(methods)))
    if baseline not in methods:
        raise ConfigError("baseline: " + unknown_name_message("method", baseline, methods))
    try:
        base_cfg = config_from_dict({**shared, "algorithm": next(iter(methods.values()))})
    except ConfigError as e:
        raise ConfigError(f"shared settings: {e}") from None
    _check_task_and_reward(base_cfg)
    steps, tokens = _budget(raw.get("budget"), base_cfg.train.steps)
    out = Path(out)
    plan = Plan(out, raw, methods, list(seeds), baseline, steps, tokens, common)
    for seed in seeds:
        for name, block in methods.items():
            cell_raw = copy.deepcopy(shared)
            cell_raw["algorithm"] = block
            cell_raw.setdefault("train", {})
            cell_raw["train"] = {**cell_raw["train"], "seed": seed, "steps": steps, "max_tokens": tokens}
            try:
                cfg = config_from_dict(cell_raw)
            except ConfigError as e:
                raise ConfigError(f"algorithm '{name}' (seed {seed}): {e}") from None
            plan.cells.append(Cell(name, seed, cfg, out / "cells" / name / f"seed{seed}"))
    _check_existing(plan)
    return plan


def _check_task_and_reward(cfg) -> None:
    """The shared task and reward resolve (names, parameters): a typo fails here, before any cell
    dir is written, instead of failing every cell at run time."""
    from rewards import get_reward
    from zoo.data import get_task

    try:
        task = get_task(cfg.task.name, **cfg.task.params)
    except (KeyError, ValueError, TypeError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        raise ConfigError(f"task: {msg}") from None
    try:
        get_reward(cfg.reward.name or task.reward)
    except (KeyError, ValueError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        raise ConfigError(f"reward.name: {msg}") from None


def _check_existing(plan: Plan) -> None:
    """Refuse to mix a different matrix into an existing dir (nothing is overwritten)."""
    from zoo.config import config_diff

    out = plan.out
    if out.exists() and any(out.iterdir()) and not (out / "compare.yaml").exists():
        raise ConfigError(f"--out {out} exists and is not a zoo compare directory; choose another --out "
                          "(nothing was overwritten)")
    for c in plan.cells:
        old = c.dir / "config.yaml"
        if old.exists():
            diff = config_diff(yaml.safe_load(old.read_text()) or {}, c.cfg.to_dict(), ignore=("log", "checkpoint"))
            if diff:
                raise ConfigError(f"cell {c.method}/seed{c.seed} in {out} was run with a different config "
                                  f"(differing keys: {', '.join(d[0] for d in diff[:8])}); use another --out "
                                  "(nothing was overwritten)")


# ----------------------------------------------------------------------------------------------
# Running one cell
# ----------------------------------------------------------------------------------------------
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


def _write_json(path: Path, obj) -> None:
    from zoo.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1))


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


# ----------------------------------------------------------------------------------------------
# Results, statistics, report
# ----------------------------------------------------------------------------------------------
def _cell_record(c: Cell) -> dict:
    for name in ("cell.json", "failed.json"):
        p = c.dir / name
        if p.exists():
            rec = json.loads(p.read_text())
            rec.pop("traceback", None)
            return rec
    return {"method": c.method, "seed": c.seed, "status": "pending", "dir": str(c.dir)}


def _per_problem(c: Cell) -> tuple[list[float], str] | None:
    p = c.dir / "per_problem.json"
    if not (c.dir / "cell.json").exists() or not p.exists():
        return None
    d = json.loads(p.read_text())
    return d["scores"], d.get("fingerprint", "")


def _mean(xs):
    xs = [x for x in xs if isinstance(x, (int, float)) and x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def collect_results(plan: Plan) -> dict:
    from zoo import stats

    cells = [_cell_record(c) for c in plan.cells]
    scores: dict[str, dict[int, list[float]]] = {m: {} for m in plan.methods}
    prints = set()
    for c in plan.cells:
        pp = _per_problem(c)
        if pp is not None:
            scores[c.method][c.seed] = pp[0]
            prints.add(pp[1])
    if len(prints) > 1:
        raise ValueError("cells were evaluated on different eval problems; a paired comparison is impossible")
    methods = {}
    base_scores = scores[plan.baseline]
    for name, block in plan.methods.items():
        done = [r for r in cells if r["method"] == name and r["status"] == "done"]
        m = {"algorithm": block, "seeds_done": sorted(scores[name]), "cells_failed": sum(
            r["status"] == "failed" for r in cells if r["method"] == name)}
        if scores[name]:
            mat = [scores[name][s] for s in sorted(scores[name])]
            m["accuracy"] = stats.bootstrap_ci(mat, n_boot=N_BOOT).to_dict()
            common = sorted(set(scores[name]) & set(base_scores))
            if name != plan.baseline and common:
                a = [scores[name][s] for s in common]
                b = [base_scores[s] for s in common]
                m["vs_baseline"] = {"baseline": plan.baseline, "seeds": common,
                                    **stats.paired_bootstrap(a, b, n_boot=N_BOOT).to_dict()}
                if stats.is_binary(a) and stats.is_binary(b):
                    m["vs_baseline"]["mcnemar_exact"] = stats.mcnemar_exact(a, b)
        fin = lambda key: _mean([r["final"].get(key) for r in done])  # noqa: E731
        pass_keys = sorted({k for r in done for k in r["final"] if k.startswith(("avg@", "pass@"))})
        m.update({
            "best_accuracy": _mean([r.get("best_accuracy") for r in done]),
            **{k: fin(k) for k in pass_keys},
            "response_length": fin("response_length"),
            "final_entropy": {k: _mean([r["final_entropy"].get(k) for r in done])
                              for k in ("mean", "p50", "p80", "p95", "share_below_0.01")} if done else {},
            "samples": _mean([r["budget"]["samples"] for r in done]),
            "tokens": _mean([r["budget"]["tokens"] for r in done]),
            "wall_seconds": _mean([r["wall_seconds"] for r in done]),
            "tokens_per_s": _mean([r.get("tokens_per_s") for r in done]),
        })
        methods[name] = m
    res = {
        "out": str(plan.out), "baseline": plan.baseline, "seeds": plan.seeds,
        "budget": {"steps": plan.budget_steps, "tokens": plan.budget_tokens or None},
        "common_base": plan.common_base,
        "eval": {"n_problems": len(next(iter(next(iter(scores.values())).values()), [])) if any(scores.values()) else None,
                 **dataclasses.asdict(plan.cells[0].cfg.eval)},
        "statistics": {"interval": f"95% percentile bootstrap over problems (and seeds when several), {N_BOOT} replicates",
                       "paired_test": "paired bootstrap of the per-(seed, problem) differences vs the baseline, "
                                      "two-sided p from the null-centred replicates; McNemar exact also given for 0/1 scores",
                       "mde": "2.80 x bootstrap SE of the paired difference (alpha 0.05 two-sided, power 0.8)"},
        "methods": methods, "cells": cells,
    }
    return res


def _f(x, nd=3, pct=False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.{nd}f}"


def report_table(res: dict) -> str:
    base = res["baseline"]
    ks = sorted({k for m in res["methods"].values() for k in m if k.startswith(("avg@", "pass@"))},
                key=lambda k: (k.split("@")[0], int(k.split("@")[1])))
    pk = [k for k in ks if k.startswith("pass@")]
    show = [k for k in ks if k.startswith("avg@")] + (pk[-1:] if pk else [])
    head = (["method", "seeds", "acc % [95% CI]", f"Δ vs {base} [95% CI]", "p", "MDE", "best %"] + [f"{k} %" for k in show]
            + ["len", "H mean", "H p80", "H<0.01", "samples", "tokens", "wall s", "tok/s"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in res["methods"].items():
        a = m.get("accuracy")
        acc = f"{_f(a['mean'], pct=True)} [{_f(a['lo'], pct=True)}, {_f(a['hi'], pct=True)}]" if a else "-"
        v = m.get("vs_baseline")
        if v:
            delta = f"{100 * v['diff']:+.1f} [{100 * v['lo']:+.1f}, {100 * v['hi']:+.1f}]"
            p, mde = f"{v['p_value']:.3f}", _f(v["mde"], pct=True)
        else:
            delta, p, mde = ("(baseline)" if name == base else "-"), "-", "-"
        e = m.get("final_entropy") or {}
        row = ([name, str(len(m["seeds_done"])) + (f" ({m['cells_failed']} failed)" if m["cells_failed"] else ""),
                acc, delta, p, mde, _f(m.get("best_accuracy"), pct=True)] + [_f(m.get(k), pct=True) for k in show]
               + [_f(m.get("response_length"), 1), _f(e.get("mean")), _f(e.get("p80")), _f(e.get("share_below_0.01"), 2),
                  _f(m.get("samples"), 0), _f(m.get("tokens"), 0), _f(m.get("wall_seconds"), 1), _f(m.get("tokens_per_s"), 0)])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _algo_line(block: dict) -> str:
    strat = ", ".join(f"{s.get('name')}(" + ", ".join(f"{k}={v}" for k, v in s.items() if k != "name") + ")"
                      for s in block.get("strategies") or []) or "none"
    return (f"base {block.get('base')}, loss {block.get('loss_agg') or '(base)'}, clip {block.get('clip_low')}/"
            f"{block.get('clip_high')}, kl {block.get('kl_coef')}, dynamic sampling {block.get('dynamic_sampling')}, "
            f"overlong buffer {block.get('overlong_buffer')}; strategies: {strat}")


def write_report(res: dict, out: Path, plots: list[str]) -> str:
    b = res["budget"]
    ev = res["eval"]
    budget = f"{b['tokens']} generated training tokens per cell (cap {b['steps']} steps)" if b["tokens"] \
        else f"{b['steps']} rollout steps per cell"
    cb = res["common_base"]
    metric = "greedy" if ev.get("metric", "greedy") == "greedy" else "avg@%d (sampled)" % ev["k"]
    lines = [
        f"# zoo compare: {Path(res['out']).name}", "",
        f"- Budget: {budget}; seeds {res['seeds']}; baseline `{res['baseline']}`.",
        f"- Eval: {ev['n_problems']} problems, the same for every cell; accuracy = {metric} correctness of the "
        f"final model; avg@{ev['k']}/pass@k sampled at T={ev['temperature']}, top-p {ev['top_p']}.",
        "- Common base: " + (", ".join(f"{k}={v}" for k, v in cb.items()) if cb else
                             "off (each preset keeps its own base)") + " (keys set in an entry win).",
        f"- Intervals: {res['statistics']['interval']}. Δ: {res['statistics']['paired_test']}. "
        f"MDE: {res['statistics']['mde']}.", "",
        report_table(res), "",
    ]
    notes = []
    for name, m in res["methods"].items():
        v = m.get("vs_baseline")
        if v and abs(v["diff"]) < v["mde"]:
            notes.append(f"`{name}` vs `{res['baseline']}`: |Δ| {100 * abs(v['diff']):.1f} points is below the "
                         f"detectable difference {100 * v['mde']:.1f}: this run cannot separate them.")
    if notes:
        lines += ["## Reading", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Cells", "", "| method | seed | status | steps | final acc % | best acc % | samples | tokens | "
              "wall s | train s | tok/s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in res["cells"]:
        if c["status"] == "done":
            lines.append(f"| {c['method']} | {c['seed']} | done{' (resumed)' if c.get('resumed') else ''} | {c['steps']} | "
                         f"{_f(c['final'].get('accuracy'), pct=True)} | {_f(c.get('best_accuracy'), pct=True)} | "
                         f"{c['budget']['samples']} | {c['budget']['tokens']} | {_f(c['wall_seconds'], 1)} | "
                         f"{_f(c['train_seconds'], 1)} | {_f(c.get('tokens_per_s'), 0)} |")
        else:
            err = str(c.get("error", "")).replace("|", "/").replace("\n", " ")[:160]
            lines.append(f"| {c['method']} | {c['seed']} | **{c['status']}** {err} | - | - | - | - | - | - | - | - |")
    lines += ["", "## Algorithms as run", ""] + [f"- `{n}`: {_algo_line(m['algorithm'])}" for n, m in res["methods"].items()]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}](plots/{Path(p).name})" for p in plots]
    lines += ["", f"TensorBoard (runs grouped by algorithm): `tensorboard --logdir {Path(res['out']) / 'cells'}`", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text


def finish(plan: Plan, res: dict, log=print) -> dict:
    try:
        plots = make_plots(plan, res)
    except ImportError as e:
        log(f"[compare] plots skipped: {e} (pip install 'entropy-zoo[plots]')")
        plots = []
    res["plots"] = [str(p) for p in plots]
    _write_json(plan.out / "results.json", res)
    write_report(res, plan.out, plots)
    return res


# ----------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg): curves with seed bands, final entropy histogram, quadrant shares
# ----------------------------------------------------------------------------------------------
def _series(cell_dir: Path, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in read_metrics(cell_dir) if isinstance(r.get(key), (int, float))}


def _smooth(ys: list[float], w: int) -> list[float]:
    if w <= 1:
        return ys
    out, acc = [], []
    for y in ys:
        acc.append(y)
        acc = acc[-w:]
        out.append(sum(acc) / len(acc))
    return out


def _band_plot(ax, plan: Plan, key: str, smooth: bool = False) -> bool:
    """Mean over seeds per step, with the min-max band across seeds."""
    drawn = False
    for i, name in enumerate(plan.methods):
        per_seed = [_series(c.dir, key) for c in plan.cells if c.method == name]
        per_seed = [s for s in per_seed if s]
        if not per_seed:
            continue
        if smooth:
            w = max(1, max(len(s) for s in per_seed) // 20)
            per_seed = [dict(zip(sorted(s), _smooth([s[k] for k in sorted(s)], w))) for s in per_seed]
        steps = sorted(set().union(*per_seed))
        vals = [[s[t] for s in per_seed if t in s] for t in steps]
        mean = [sum(v) / len(v) for v in vals]
        color = f"C{i % 10}"
        ax.plot(steps, mean, color=color, label=f"{name} (n={len(per_seed)})", marker="o" if len(steps) < 12 else None)
        if len(per_seed) > 1:
            ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], color=color, alpha=0.2, linewidth=0)
        drawn = True
    ax.set_xlabel("rollout step")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    return drawn


def make_plots(plan: Plan, res: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pdir = plan.out / "plots"
    pdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig, name):
        path = pdir / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    band = "mean over seeds, band = min-max across seeds"
    for key, name, title, smooth in (
            ("eval/accuracy", "eval_accuracy.png", "eval accuracy", False),
            ("reward/mean", "reward.png", "training reward (moving average)", True),
            ("entropy/mean", "entropy.png", "mean token entropy of rollouts (nats)", False)):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        if not _band_plot(ax, plan, key, smooth):
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{title}\n({band})", fontsize=10)
        ax.set_ylabel(key)
        save(fig, name)

    # final-rollout entropy histogram, log-x, 80th percentile marked
    fig, ax = plt.subplots(figsize=(7, 4.2))
    floor = 1e-6
    pooled = {}
    for name in plan.methods:
        vals = []
        for c in plan.cells:
            f = c.dir / "final_entropy.json"
            if c.method == name and f.exists() and (c.dir / "cell.json").exists():
                vals += json.loads(f.read_text())["entropy"]
        if vals:
            pooled[name] = np.clip(np.asarray(vals, dtype=np.float64), floor, None)
    if pooled:
        hi = max(float(v.max()) for v in pooled.values())
        lo = max(floor, min(float(v.min()) for v in pooled.values()) / 1.5)
        bins = np.logspace(np.log10(lo), np.log10(max(hi, 10 * lo)) + 1e-9, 40)
        for i, (name, v) in enumerate(pooled.items()):
            color = f"C{list(plan.methods).index(name) % 10}"
            p80 = float(np.quantile(v, 0.8))
            ax.hist(v, bins=bins, histtype="step", color=color, linewidth=1.5,
                    weights=np.full(v.size, 1.0 / v.size), label=f"{name}: p80 {p80:.3f}, <0.01 {np.mean(v < 0.01):.0%}")
            ax.axvline(p80, color=color, linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished cells", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"token entropy (nats, log scale; values below {floor:g} shown at {floor:g})")
    ax.set_ylabel("share of tokens")
    ax.set_title("entropy of final-model rollouts on the eval prompts\n(dashed: 80th percentile)", fontsize=10)
    save(fig, "entropy_hist.png")

    # quadrant shares over training for the entropy-aware methods (those with strategies)
    aware = [n for n, b in plan.methods.items() if any(s.get("name") != "identity" for s in b.get("strategies") or [])]
    shown = aware or list(plan.methods)
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.6), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], shown):
        cells = [c for c in plan.cells if c.method == name]
        for j, q in enumerate(("PHR", "PLR", "NHR", "NLR")):
            per_seed = [s for s in (_series(c.dir, f"quadrant/{q}_share") for c in cells) if s]
            if not per_seed:
                continue
            steps = sorted(set().union(*per_seed))
            mean = [float(np.mean([s[t] for s in per_seed if t in s])) for t in steps]
            w = max(1, len(steps) // 20)
            ax.plot(steps, _smooth(mean, w), color=f"C{j}", label=q)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("rollout step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share of valid tokens")
    if axes[0][-1].get_legend_handles_labels()[0]:
        axes[0][-1].legend(fontsize=8)
    fig.suptitle("EAPO quadrants (sign of A x entropy vs group mean) over training"
                 + ("" if aware else " (no entropy-aware method: all shown)"), fontsize=10)
    save(fig, "quadrants.png")
    return written


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def cmd_compare(args) -> int:
    import algorithms  # noqa: F401  registers the strategies

    raw = load_compare_raw(args.config, args.set)
    out = Path(args.out or f"runs/compare/{Path(args.config).stem}")
    plan = plan_compare(raw, out)
    if args.report_only:
        if not out.exists():
            raise FileNotFoundError(f"--report-only: {out} does not exist")
        res = collect_results(plan)
    else:
        res = run_compare(plan)
    finish(plan, res)
    print(report_table(res))
    failed = [f"{c['method']}/seed{c['seed']}" for c in res["cells"] if c["status"] == "failed"]
    print(f"\n{out / 'report.md'}  {out / 'results.json'}  {out / 'plots'}"
          + (f"\nfailed cells: {', '.join(failed)} (see failed.json in their dirs; re-run to retry)" if failed else ""))
    return 1 if failed else 0


def add_parser(subparsers) -> None:
    sp = subparsers.add_parser("compare", help="algorithms x seeds on one benchmark: results.json, report.md, plots")
    sp.add_argument("--config", required=True, help="compare YAML (algorithms, seeds, budget, shared settings)")
    sp.add_argument("--out", help="output dir (default runs/compare/<config name>); re-run to resume")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a key of the compare config, e.g. seeds=[0,1] or train.lr=5e-5 (repeatable)")
    sp.add_argument("--report-only", action="store_true", help="rebuild results/report/plots from finished cells")
    sp.set_defaults(fn=cmd_compare)
