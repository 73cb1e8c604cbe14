"""`zoo compare` planning: the compare config validated and expanded into a matrix of cells.

Every cell (algorithm, seed) shares the base model, the training data and order (train.seed = the
cell's seed), the eval problems and protocol, and the budget; the cells differ only in the
algorithm. By default (`common_base: true`) every method is put on ONE common base
(docs/algorithms.md): token-mean loss, clip 0.2/0.28, no KL, one sampling round per step (no dynamic
sampling, no overlong shaping), whatever its preset says; keys written explicitly in an
algorithm's entry win over the common base (so `{name: dapo, preset: dapo, dynamic_sampling: true}`
keeps DAPO's sampling). `common_base: false` keeps each preset's own base; a mapping replaces
the common base's knobs.

Config (YAML): `algorithms:` (preset names or full algorithm blocks with a `name:`), `seeds:`,
`budget:` (`{steps: N}`, or `{tokens: N}` = stop a cell once it generated N training tokens,
with train.steps as the cap), `baseline:` (a method name, default the first), `common_base:`,
and every section of a normal train config (model, task, rollout, train, eval, ...).

Everything (names, budget, task, reward, each cell's config, an existing --out) is validated
before any cell runs.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from zoo.config import ConfigError, config_from_dict, resolve_algorithm_block

# docs/algorithms.md: "zoo compare suites put every method on ONE common base (token-mean, clip
# 0.2/0.28, no KL, same sampling settings)"; same sampling = one round per step, reward unshaped;
# dual clip c = 10 as the DAPO / 80-20 / ARCHER / CE-GPPO recipes.
COMMON_BASE = {"loss_agg": "token-mean", "clip_low": 0.2, "clip_high": 0.28, "kl_coef": 0.0,
               "dynamic_sampling": False, "overlong_buffer": 0, "clip_ratio_c": 10.0}
# ... and several optimizer steps per rollout batch, as every paper runs (80/20: 16, CE-GPPO: 8, ARCHER: 6),
# so that clips and penalties on log π_θ - log π_old act: train.minibatches = the largest divisor of
# rollout.prompts_per_step not above this (4 at the tiny scale's 16 prompts), unless the config sets it.
COMMON_MINIBATCHES = 4
COMPARE_KEYS = ("algorithms", "seeds", "budget", "baseline", "common_base", "description")
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
    common_train: dict = field(default_factory=dict)           # train keys the common base set (minibatches)
    inert: dict[str, list[str]] = field(default_factory=dict)   # method -> mechanisms that cannot act


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
    common_train = _common_train(shared) if common else {}
    if common_train:
        shared["train"] = {**(shared.get("train") or {}), **common_train}
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
    plan = Plan(out, raw, methods, list(seeds), baseline, steps, tokens, common, common_train=common_train)
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
            if seed == seeds[0]:
                from zoo.objectives import inert_mechanisms

                plan.inert[name] = inert_mechanisms(cfg)
    _check_existing(plan)
    return plan


def _common_train(shared: dict) -> dict:
    """{"minibatches": n} for the common base (n = the largest divisor of prompts_per_step <= 4), or {}
    when the compare config sets train.minibatches itself."""
    train = shared.get("train") or {}
    if not isinstance(train, dict) or "minibatches" in train:
        return {}
    from zoo.schema import RolloutConfig

    rollout = shared.get("rollout") or {}
    p = rollout.get("prompts_per_step", RolloutConfig.prompts_per_step) if isinstance(rollout, dict) else 0
    if not isinstance(p, int) or p <= 0:
        return {}
    return {"minibatches": max(d for d in range(1, COMMON_MINIBATCHES + 1) if p % d == 0)}


def _check_task_and_reward(cfg) -> None:
    """The shared task and reward functions resolve (names, parameters) and the task's training rows
    are not its eval rows (unless task.allow_eval_overlap): a typo or a leak fails here, before any
    cell dir is written, instead of failing every cell at run time."""
    from zoo.data import check_eval_overlap, get_task
    from zoo.evaluate import build_rewards

    try:
        task = get_task(cfg.task.name, **cfg.task.params)
    except (KeyError, ValueError, TypeError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        raise ConfigError(f"task: {msg}") from None
    build_rewards(cfg.reward, task)
    avail = task.size("train")
    train = task.problems("train", min(cfg.task.train_size, avail or cfg.task.train_size), cfg.task.seed)
    check_eval_overlap(train, task.problems("eval", cfg.eval.n or cfg.task.eval_size, cfg.task.seed), cfg.task,
                       log=print)


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
