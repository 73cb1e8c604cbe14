"""The task interface shared by every task module: `Task`, the split names and argument checks.

A task is a source of `Problem`s: `task.problems(split, n, seed)` with split "train" or "eval".
The concrete tasks live in `zoo.tasks_synthetic` (arith), `zoo.tasks_countdown` (countdown) and
`zoo.tasks_files` (jsonl, hf and the named benchmarks); `zoo.data` imports them all (which
registers them) and builds them by name (`get_task`).
"""
from __future__ import annotations

from typing import Any, ClassVar

from zoo.types import Problem

SPLITS = ("train", "eval")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def _check_n(n: Any, allow_none: bool = False) -> None:
    if n is None and allow_none:
        return
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")


class Task:
    """A source of Problems. Subclasses set `name` and `reward` (the default reward name)."""

    name: ClassVar[str] = ""
    reward: str = ""

    def problems(self, split: str, n: int, seed: int = 0) -> list[Problem]:
        raise NotImplementedError

    def size(self, split: str) -> int | None:
        """How many distinct problems `split` can supply (None when unknown without loading)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
