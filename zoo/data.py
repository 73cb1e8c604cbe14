"""Tasks by name: importing this module registers every task; `get_task` builds one.

    task = get_task("countdown", n_numbers=3)          # registered in zoo.registry.TASKS
    train = task.problems("train", 20000, seed=0)       # list[Problem], deterministic
    evals = task.problems("eval", 500)                  # disjoint from every train sample

The tasks live in `zoo.tasks_base` (the `Task` interface, split names), `zoo.tasks_synthetic`
(seeded generators with disjoint hash-assigned splits, `arith`, the tokenizer charset),
`zoo.tasks_countdown` (`countdown` and its solver), `zoo.tasks_files` (`jsonl`, `hf`: rows in file
order, seed ignored) and `zoo.tasks_datasets` (the standard math datasets by name: `math`, `gsm8k`,
`dapo_math`, `deepscaler`, `math500`, `aime24`, `aime25`, `amc23`, `minerva_math`, `olympiadbench`;
from the hub or a local file/directory). This module imports them all and re-exports their public names.
"""
from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Any

from zoo.prompts import PromptFormat, load_template, render
from zoo.registry import TASKS
from zoo.schema import PROMPT_KEY
from zoo.tasks_base import SPLITS, Task, check_eval_overlap, eval_overlap, problem_key
from zoo.tasks_countdown import CountdownTask, expression_steps
from zoo.tasks_datasets import (DATASETS, Aime24Task, Aime25Task, Amc23Task, DapoMathTask, DatasetTask, DeepScaleRTask,
                                Gsm8kTask, Math500Task, MathTask, MinervaMathTask, OlympiadBenchTask)
from zoo.tasks_files import HFTask, JsonlTask
from zoo.types import Problem
from zoo.tasks_synthetic import (CHARSET, ENUM_LIMIT, ArithTask, SyntheticTask, arith_steps, expression_text,
                                 tokenizer_charset)

__all__ = [
    "SPLITS", "ENUM_LIMIT", "CHARSET", "tokenizer_charset", "Task", "SyntheticTask", "ArithTask", "CountdownTask",
    "JsonlTask", "HFTask", "Gsm8kTask", "Math500Task", "Aime24Task", "Aime25Task", "DatasetTask", "DATASETS",
    "MathTask", "DapoMathTask", "DeepScaleRTask", "Amc23Task", "MinervaMathTask", "OlympiadBenchTask",
    "problem_key", "eval_overlap", "check_eval_overlap",
    "expression_text", "arith_steps", "expression_steps", "task_names", "get_task", "PromptedTask",
]


# ------------------------------------------------------------------------------------ lookup
def task_names() -> list[str]:
    return TASKS.names()


def get_task(name: str, **params: Any) -> Task:
    """Build the task registered as `name` with keyword parameters (unknown names/params: clear errors).

    `params[PROMPT_KEY]` (written by TaskConfig from task.template / system / template_kwargs) wraps
    the task in a PromptedTask that renders every problem in that prompt format."""
    spec = params.pop(PROMPT_KEY, None)
    task = _build_task(name, params)
    if spec:
        fmt = load_template(spec.get("template") or "raw", spec.get("system") or "", spec.get("template_kwargs"))
        if not fmt.is_raw:
            task = PromptedTask(task, fmt, keep_answer_format="answer_format" in params)
    return task


def _build_task(name: str, params: dict) -> Task:
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


class PromptedTask(Task):
    """A task whose problems are rendered in a prompt format (`zoo.prompts`): same rows, ids, golds and
    splits; `prompt` is the rendered text (or a ChatPrompt), `meta["stop"]` the format's stop strings.
    The reward then expects the format's answer format, unless task.params.answer_format was given."""

    def __init__(self, task: Task, fmt: PromptFormat, keep_answer_format: bool = False):
        self.task, self.format = task, fmt
        self.name, self.reward = task.name, task.reward
        self.answer_format = task.answer_format if keep_answer_format or not fmt.answer_format else fmt.answer_format

    def _render(self, p: Problem) -> Problem:
        meta = {**p.meta, "template": self.format.name}
        if self.format.stop:
            meta["stop"] = tuple(self.format.stop)
        return replace(p, prompt=render(self.format, p.prompt), meta=meta)

    def problems(self, split: str, n: int | None = 0, seed: int = 0) -> list[Problem]:
        return [self._render(p) for p in self.task.problems(split, n, seed)]

    def size(self, split: str) -> int | None:
        return self.task.size(split)

    def __getattr__(self, key: str):        # everything else (skipped, path, ...) is the wrapped task's
        if key in ("task", "format") or key.startswith("__"):
            raise AttributeError(key)
        return getattr(self.task, key)

    def __repr__(self) -> str:
        return f"PromptedTask({self.task!r}, template={self.format.name!r})"
