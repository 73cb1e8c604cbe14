"""Several weighted reward functions, one of them the correctness function.

    fns = RewardFunctions.build([{"name": "math", "weight": 1.0},
                                 {"name": "format", "weight": 0.1, "params": {"formats": "boxed"}}])
    s = fns(completions, golds)
    s.total        # per completion: sum of weight x value (what the advantages are computed from)
    s.correct      # per completion: the correctness function's value (accuracy, dynamic sampling)
    s.values       # {"math": [...], "format": [...]}: each function's unweighted values
    fns.last_stats # {"errors": n, "timeouts": n} summed over the functions of the latest call

Each function is its own guarded `SafeReward` (errors and timeouts counted per call, never raised).

Spec of one function (a mapping): `name` (a registered reward; "" = the default reward, e.g. the
task's), `weight` (finite float, default 1.0), `params` (keyword arguments of the reward, default
{}), `correctness` (bool, default false). The correctness function is the one marked
`correctness: true` (at most one), otherwise the FIRST function listed; its unweighted value is
the accuracy. Names must be distinct.

`answer_format` (the task's declared answer formats) is passed as the `formats` parameter to every
function that accepts one (`format`, `math`) unless its `params` set `formats` themselves.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from rewards.registry import STAT_KEYS, SafeReward, get_reward, reward_params

SPEC_KEYS = ("name", "weight", "params", "correctness")


@dataclass(frozen=True)
class RewardSpec:
    name: str
    weight: float = 1.0
    params: dict = field(default_factory=dict)
    correctness: bool = False


@dataclass
class RewardScores:
    total: list[float]
    correct: list[float]
    values: dict[str, list[float]]


def parse_specs(functions: Any, default_name: str = "") -> list[RewardSpec]:
    """Check the shape of a `functions` list and fill defaults; ValueError naming `functions[i].key`.
    An empty list means one function, `default_name`. Names "" resolve to `default_name`."""
    if functions is None or (isinstance(functions, (list, tuple)) and not functions):
        return [RewardSpec(default_name, correctness=True)]
    if not isinstance(functions, (list, tuple)):
        raise ValueError(f"functions: expected a list of {{name, weight, params, correctness}} mappings, "
                         f"got {functions!r}")
    specs: list[RewardSpec] = []
    for i, f in enumerate(functions):
        where = f"functions[{i}]"
        if isinstance(f, str):
            f = {"name": f}
        if not isinstance(f, dict):
            raise ValueError(f"{where}: expected a mapping like {{name: math, weight: 1.0}}, got {f!r}")
        for k in f:
            if k not in SPEC_KEYS:
                near = difflib.get_close_matches(str(k), SPEC_KEYS, n=1, cutoff=0.5)
                hint = f"; did you mean '{near[0]}'?" if near else ""
                raise ValueError(f"{where}: unknown key '{k}'{hint} Valid keys: {', '.join(SPEC_KEYS)}")
        name = f.get("name", "")
        if not isinstance(name, str):
            raise ValueError(f"{where}.name: expected a reward name, got {name!r}")
        w = f.get("weight", 1.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ValueError(f"{where}.weight: expected a finite number, got {w!r}")
        params = f.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError(f"{where}.params: expected a mapping of the reward's parameters, got {params!r}")
        corr = f.get("correctness", False)
        if not isinstance(corr, bool):
            raise ValueError(f"{where}.correctness: expected true or false, got {corr!r}")
        specs.append(RewardSpec(name or default_name, float(w), dict(params), corr))
    marked = [i for i, s in enumerate(specs) if s.correctness]
    if len(marked) > 1:
        raise ValueError(f"functions: {len(marked)} functions are marked correctness: true "
                         f"(functions[{marked[0]}], functions[{marked[1]}]); mark exactly one")
    names = [s.name for s in specs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ValueError(f"functions: reward '{dup}' is listed twice; each function is logged as reward/<name>")
    c = marked[0] if marked else 0
    return [RewardSpec(s.name, s.weight, s.params, i == c) for i, s in enumerate(specs)]


def _bound_params(spec: RewardSpec, answer_format: Any) -> dict:
    params = dict(spec.params)
    if answer_format and "formats" not in params and "formats" in reward_params(spec.name):
        params["formats"] = answer_format
    return params


def check_specs(specs: Sequence[RewardSpec], answer_format: Any = None) -> None:
    """Resolve every function (name and params) without keeping it: ValueError/KeyError naming
    `functions[i]` and the nearest valid name."""
    for i, s in enumerate(specs):
        if not s.name:
            continue                       # the default (task) reward: resolved once the task is known
        try:
            get_reward(s.name, **_bound_params(s, answer_format))
        except (KeyError, ValueError) as e:
            msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            raise ValueError(f"functions[{i}]: {msg}") from None


class RewardFunctions:
    """Weighted, guarded reward functions; `correctness` is the correctness function's SafeReward."""

    def __init__(self, specs: Sequence[RewardSpec], answer_format: Any = None):
        if not specs:
            raise ValueError("RewardFunctions needs at least one function")
        self.specs = list(specs)
        self.fns: list[SafeReward] = []
        for i, s in enumerate(self.specs):
            try:
                self.fns.append(get_reward(s.name, **_bound_params(s, answer_format)))
            except (KeyError, ValueError) as e:
                msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
                raise ValueError(f"functions[{i}]: {msg}") from None
        self.index = next(i for i, s in enumerate(self.specs) if s.correctness)
        self.correctness = self.fns[self.index]
        self.names = [s.name for s in self.specs]
        self.last_stats = {k: 0 for k in STAT_KEYS}

    @classmethod
    def build(cls, functions: Any = None, default_name: str = "", answer_format: Any = None) -> "RewardFunctions":
        return cls(parse_specs(functions, default_name), answer_format)

    def __repr__(self) -> str:
        return "RewardFunctions(" + ", ".join(f"{s.name}x{s.weight:g}" + ("*" if s.correctness else "")
                                              for s in self.specs) + ")"

    def __call__(self, completions: Sequence[str], golds: Sequence[str]) -> RewardScores:
        completions, golds = list(completions), list(golds)
        values: dict[str, list[float]] = {}
        total = [0.0] * len(completions)
        stats = {k: 0 for k in STAT_KEYS}
        for s, fn in zip(self.specs, self.fns):
            v = fn(completions, golds)
            values[s.name] = v
            for k in STAT_KEYS:
                stats[k] += fn.last_stats.get(k, 0)
            if s.weight:
                total = [t + s.weight * x for t, x in zip(total, v)]
        self.last_stats = stats
        return RewardScores(total, values[self.names[self.index]], values)

    def pop_stats(self) -> dict[str, int]:
        out = {k: 0 for k in STAT_KEYS}
        for fn in self.fns:
            for k, v in fn.pop_stats().items():
                out[k] += v
        return out
