"""Reward registry, independent of `zoo` (DESIGN.md: rewards imports neither zoo nor algorithms).

A reward is a batch function: fn(completions: list[str], golds: list[str]) -> list[float].
It must never raise on model output (hostile text): anything it cannot score is 0.

    @register_reward("countdown")
    def countdown_reward(completions, golds): ...
    get_reward("countdown")(["\\boxed{(3+5)*2}"], ['{"numbers":[3,5,2],"target":16}'])  # [1.0]

`get_reward` returns the registered function inside a `SafeReward` guard, so one faulty reward
call never stops training: the batch is scored in one call; if that call raises (or returns the
wrong number of values) every sample is scored on its own and a sample whose call raises gets
0.0; non-numeric or non-finite values become 0.0. Every such sample is counted as an error.
Rewards that time-box their own work (the `math` verifier's killable workers) count their
timeouts and crashed workers through `report()`. The counts are read with

    fn = get_reward("math")
    fn(completions, golds)
    fn.last_stats        # {"errors": 0, "timeouts": 1}: the most recent call
    fn.pop_stats()       # the same keys summed over every call since the previous pop (then reset)

The guard applies no time limit of its own (a Python call cannot be stopped safely from outside);
a reward that may run long has to bound itself, as `math` does.
"""
from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import math
import sys
import threading
from typing import Callable, Sequence

RewardFn = Callable[[Sequence[str], Sequence[str]], list]

_REWARDS: dict[str, RewardFn] = {}
_DESCRIPTIONS: dict[str, str] = {}
_BUILTIN_MODULES = ("rewards.arith", "rewards.countdown", "rewards.math", "rewards.format")
_loaded = False


def register_reward(name: str, description: str = "") -> Callable[[RewardFn], RewardFn]:
    def deco(fn: RewardFn) -> RewardFn:
        old = _REWARDS.get(name)
        if old is not None and old is not fn and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"reward '{name}' is already registered to {old.__module__}.{old.__qualname__}")
        _REWARDS[name] = fn
        _DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().split("\n")[0]
        return fn
    return deco


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


class UnknownRewardError(KeyError, ValueError):
    def __str__(self) -> str:
        return str(self.args[0])


def get_reward(name: str, **params) -> "SafeReward":
    """The reward registered as `name`, wrapped in a fresh `SafeReward` (its own counters).

    `params` are keyword arguments bound to the reward (`get_reward("format", formats="boxed")`);
    an unknown parameter or a value the reward's `check_params` hook refuses is a ValueError that
    names the valid parameters (the nearest one first)."""
    _load_builtins()
    if name not in _REWARDS:
        names = sorted(_REWARDS)
        near = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise UnknownRewardError(f"unknown reward '{name}'{hint} Valid reward names: {', '.join(names)}")
    fn = _REWARDS[name]
    if not params:
        return SafeReward(fn, name)
    valid = reward_params(name)
    for key in params:
        if key not in valid:
            near = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise ValueError(f"reward '{name}' has no parameter '{key}'{hint} Valid parameters: "
                             f"{', '.join(valid) or '(none)'}")
    check = getattr(fn, "check_params", None)
    if check is not None:
        try:
            check(**params)
        except (TypeError, ValueError) as e:
            raise ValueError(f"reward '{name}': {e}") from None
    return SafeReward(functools.partial(fn, **params), name)


def reward_params(name: str) -> list[str]:
    """The keyword parameters reward `name` accepts beyond (completions, golds), e.g. ["formats"]."""
    _load_builtins()
    try:
        sig = inspect.signature(_REWARDS[name])
    except (TypeError, ValueError):
        return []
    ps = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return [p.name for p in ps[2:] if p.kind is not p.POSITIONAL_ONLY]


# ----------------------------------------------------------------------------------------------
# The guard
# ----------------------------------------------------------------------------------------------
STAT_KEYS = ("errors", "timeouts")
MAX_WARNINGS = 5          # messages printed per SafeReward; later faults are only counted
_active = threading.local()


def report(kind: str, n: int = 1) -> None:
    """Count `n` faulty samples of kind "errors" or "timeouts" in the SafeReward call now running
    on this thread (a no-op outside one). For rewards that catch their own faults: the `math`
    verifier reports its timed-out and crashed worker jobs here."""
    if kind not in STAT_KEYS:
        raise ValueError(f"report(): kind must be one of {', '.join(STAT_KEYS)}, got {kind!r}")
    stack = getattr(_active, "stack", None)
    if stack and n:
        stack[-1][kind] += int(n)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class SafeReward:
    """A reward function that never raises on model output and counts what went wrong.

    Calling it returns a list of finite floats, one per completion (0.0 for every sample its
    reward could not score). `last_stats` holds the counts of the latest call, `pop_stats()`
    returns the counts summed since the previous pop and resets them. `warn` (default: print to
    stderr) receives the first MAX_WARNINGS fault messages of this wrapper.
    """

    def __init__(self, fn: RewardFn, name: str = "", warn: Callable[[str], None] | None = None):
        while isinstance(fn, SafeReward):
            fn = fn.fn
        functools.update_wrapper(self, fn)      # __name__, __doc__, __wrapped__ = fn
        self.fn, self.name = fn, name or getattr(fn, "__name__", "reward")
        self.warn = warn or _stderr
        self.last_stats = {k: 0 for k in STAT_KEYS}
        self._total = {k: 0 for k in STAT_KEYS}
        self._warned = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SafeReward({self.name!r})"

    def __getstate__(self) -> dict:  # picklable (worker processes): the lock is rebuilt
        st = dict(self.__dict__)
        st.pop("_lock", None)
        return st

    def __setstate__(self, st: dict) -> None:
        self.__dict__.update(st)
        self._lock = threading.Lock()

    def pop_stats(self) -> dict[str, int]:
        """{"errors": n, "timeouts": n} summed over the calls since the previous pop; resets them."""
        with self._lock:
            out, self._total = self._total, {k: 0 for k in STAT_KEYS}
        return out

    def _note(self, msg: str) -> None:
        if self._warned < MAX_WARNINGS:
            self._warned += 1
            tail = " (further reward faults are counted, not printed)" if self._warned == MAX_WARNINGS else ""
            try:
                self.warn(f"[rewards] reward '{self.name}': {msg}{tail}")
            except Exception:  # noqa: BLE001 - a broken logger never breaks scoring
                pass

    def _value(self, x, i: int, stats: dict) -> float:
        bad = None
        if isinstance(x, (str, bytes)) or x is None:
            bad = f"non-numeric value {x!r}"
        else:
            try:
                v = float(x)
            except (TypeError, ValueError, OverflowError, RuntimeError):
                bad = f"non-numeric value of type {type(x).__name__}"
            else:
                if math.isfinite(v):
                    return v
                bad = f"non-finite value {v}"
        stats["errors"] += 1
        self._note(f"sample {i}: {bad} -> 0.0")
        return 0.0

    def _one(self, c, g, i: int, stats: dict):
        try:
            r = list(self.fn([c], [g]))
            if len(r) != 1:
                raise ValueError(f"returned {len(r)} values for 1 completion")
            return r[0]
        except Exception as e:  # noqa: BLE001 - one faulty sample scores 0, the rest go on
            stats["errors"] += 1
            self._note(f"sample {i} raised {type(e).__name__}: {e} -> 0.0")
            return 0.0

    def __call__(self, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
        completions, golds = list(completions), list(golds)
        n = len(completions)
        if len(golds) != n:  # a caller's bug, not a fault of the model's output
            raise ValueError(f"reward '{self.name}': {n} completions but {len(golds)} golds")
        stats = {k: 0 for k in STAT_KEYS}
        stack = getattr(_active, "stack", None)
        if stack is None:
            stack = _active.stack = []
        stack.append(stats)
        try:
            try:
                out = list(self.fn(completions, golds))
                if len(out) != n:
                    raise ValueError(f"returned {len(out)} values for {n} completions")
                if stats["timeouts"] or stats["errors"]:  # faults the reward caught and report()ed itself
                    self._note(f"{stats['timeouts']} sample(s) timed out and {stats['errors']} failed inside the "
                               f"reward (e.g. a crashed worker) in a batch of {n} -> 0.0")
            except Exception as e:  # noqa: BLE001 - retry sample by sample
                for k in STAT_KEYS:   # counts of the discarded batch attempt do not stand
                    stats[k] = 0
                self._note(f"batch of {n} raised {type(e).__name__}: {e}; scoring each sample on its own")
                out = [self._one(c, g, i, stats) for i, (c, g) in enumerate(zip(completions, golds))]
            vals = [self._value(x, i, stats) for i, x in enumerate(out)]
        finally:
            stack.pop()
        self.last_stats = stats
        with self._lock:
            for k in STAT_KEYS:
                self._total[k] += stats[k]
        return vals


def reward_names() -> list[str]:
    _load_builtins()
    return sorted(_REWARDS)


def reward_description(name: str) -> str:
    _load_builtins()
    return _DESCRIPTIONS.get(name, "")
