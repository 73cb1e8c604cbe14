"""Tasks by name: importing this module registers every task; `get_task` builds one.

    task = get_task("countdown", n_numbers=3)          # registered in zoo.registry.TASKS
    train = task.problems("train", 20000, seed=0)       # list[Problem], deterministic
    evals = task.problems("eval", 500)                  # disjoint from every train sample

The tasks live in `zoo.tasks_base` (the `Task` interface, split names), `zoo.tasks_synthetic`
(seeded generators with disjoint hash-assigned splits, `arith`, the tokenizer charset),
`zoo.tasks_countdown` (`countdown` and its solver) and `zoo.tasks_files` (`jsonl`, `hf` and the
presets `gsm8k`, `math500`, `aime24`, `aime25`: rows in file order, seed ignored). This module
imports them all and re-exports their public names.
"""
from __future__ import annotations

import inspect
from typing import Any

from zoo.registry import TASKS
from zoo.tasks_base import SPLITS, Task
from zoo.tasks_countdown import CountdownTask, expression_steps
from zoo.tasks_files import Aime24Task, Aime25Task, Gsm8kTask, HFTask, JsonlTask, Math500Task
from zoo.tasks_synthetic import (CHARSET, ENUM_LIMIT, ArithTask, SyntheticTask, arith_steps, expression_text,
                                 tokenizer_charset)

__all__ = [
    "SPLITS", "ENUM_LIMIT", "CHARSET", "tokenizer_charset", "Task", "SyntheticTask", "ArithTask", "CountdownTask",
    "JsonlTask", "HFTask", "Gsm8kTask", "Math500Task", "Aime24Task", "Aime25Task",
    "expression_text", "arith_steps", "expression_steps", "task_names", "get_task",
]


# ------------------------------------------------------------------------------------ lookup
def task_names() -> list[str]:
    return TASKS.names()


def get_task(name: str, **params: Any) -> Task:
    """Build the task registered as `name` with keyword parameters (unknown names/params: clear errors)."""
    cls = TASKS.get(name)  # UnknownNameError lists the valid names and the nearest one
    sig = inspect.signature(cls)
    accepts_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    valid = [p for p in sig.parameters if sig.parameters[p].kind not in (inspect.Parameter.VAR_KEYWORD,
                                                                         inspect.Parameter.VAR_POSITIONAL)]
    unknown = sorted(set(params) - set(valid))
    if unknown and not accepts_kw:
        raise ValueError(f"task {name!r} got unknown parameter(s) {', '.join(unknown)}; "
                         f"valid parameters: {', '.join(valid)}")
    missing = [p for p in valid if sig.parameters[p].default is inspect.Parameter.empty and p not in params]
    if missing:
        raise ValueError(f"task {name!r} needs parameter(s) {', '.join(missing)} "
                         f"(e.g. task: {{name: {name}, {missing[0]}: ...}})")
    return cls(**params)
