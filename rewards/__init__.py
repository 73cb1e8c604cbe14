"""Verifiers and reward functions, resolved by name through a small registry of their own."""
from rewards.registry import RewardFn, get_reward, register_reward, reward_description, reward_names

__all__ = ["RewardFn", "get_reward", "register_reward", "reward_names", "reward_description"]
