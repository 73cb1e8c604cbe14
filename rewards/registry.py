"""Reward registry, independent of `zoo` (DESIGN.md: rewards imports neither zoo nor algorithms).

A reward is a batch function: fn(completions: list[str], golds: list[str]) -> list[float].
It must never raise on model output (hostile text): anything it cannot score is 0.

    @register_reward("countdown")
    def countdown_reward(completions, golds): ...
    get_reward("countdown")(["\\boxed{(3+5)*2}"], ['{"numbers":[3,5,2],"target":16}'])  # [1.0]
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, Sequence

RewardFn = Callable[[Sequence[str], Sequence[str]], list]

_REWARDS: dict[str, RewardFn] = {}
_DESCRIPTIONS: dict[str, str] = {}
_BUILTIN_MODULES = ("rewards.arith", "rewards.countdown", "rewards.math")
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


def get_reward(name: str) -> RewardFn:
    _load_builtins()
    if name not in _REWARDS:
        names = sorted(_REWARDS)
        near = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise UnknownRewardError(f"unknown reward '{name}'{hint} Valid reward names: {', '.join(names)}")
    return _REWARDS[name]


def reward_names() -> list[str]:
    _load_builtins()
    return sorted(_REWARDS)


def reward_description(name: str) -> str:
    _load_builtins()
    return _DESCRIPTIONS.get(name, "")
