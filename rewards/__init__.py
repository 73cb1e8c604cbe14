"""Verifiers and reward functions, resolved by name through a small registry of their own."""
from rewards.registry import (
    RewardFn, SafeReward, get_reward, register_reward, report, reward_description, reward_names,
)

__all__ = ["RewardFn", "SafeReward", "get_reward", "register_reward", "report", "reward_names",
           "reward_description"]
