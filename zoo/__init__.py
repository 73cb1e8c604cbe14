"""Entropy-aware policy optimisation zoo: the shared base (config, registry, rollout, trainer)."""
from zoo.registry import BASES, PRESETS, STRATEGIES, TASKS, Registry
from zoo.strategy import Reducer, Strategy, TokenContext, register_strategy

__all__ = ["Strategy", "TokenContext", "Reducer", "register_strategy", "Registry",
           "STRATEGIES", "PRESETS", "BASES", "TASKS"]
