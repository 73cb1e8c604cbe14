"""The task interface shared by every task module: `Task`, the split names and argument checks.

A task is a source of `Problem`s: `task.problems(split, n, seed)` with split "train" or "eval".
The concrete tasks live in `zoo.tasks_synthetic` (arith), `zoo.tasks_countdown` (countdown) and
`zoo.tasks_files` (jsonl, hf and the named benchmarks); `zoo.data` imports them all (which
registers them) and builds them by name (`get_task`).
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any, Callable, ClassVar

from zoo.schema import ConfigError
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
    """A source of Problems. Subclasses set `name` and `reward` (the default reward name).

    `answer_format`: the answer formats the task's prompts ask for (names of
    `rewards.extract.FORMATS`, e.g. "boxed" or "think,answer_line"; None = no required format). The
    trainer passes it as `formats` to the reward functions that accept one (`math`, `format`)."""

    name: ClassVar[str] = ""
    reward: str = ""
    answer_format: Any = None

    def problems(self, split: str, n: int, seed: int = 0) -> list[Problem]:
        raise NotImplementedError

    def size(self, split: str) -> int | None:
        """How many distinct problems `split` can supply (None when unknown without loading)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# ------------------------------------------------------------------------------ eval leakage
_WS = re.compile(r"\s+")


def problem_key(p: Problem) -> str:
    """Hash of a problem's normalised text (NFKC, case-folded, whitespace runs collapsed): two
    problems with the same key ask the same question, whatever the file or row they came from."""
    text = _WS.sub(" ", unicodedata.normalize("NFKC", p.prompt).casefold()).strip()
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def eval_overlap(train: list[Problem], evals: list[Problem]) -> list[Problem]:
    """The eval problems whose normalised text is also a training problem's."""
    seen = {problem_key(p) for p in train}
    return [p for p in evals if problem_key(p) in seen]


def check_eval_overlap(train: list[Problem], evals: list[Problem], task_cfg: Any,
                       log: Callable[[str], Any] | None = None) -> int:
    """Refuse (ConfigError) a run whose training rows include eval rows, unless
    `task.allow_eval_overlap` is true (then the overlap is reported through `log`). Returns the
    number of eval problems found among the training rows."""
    hits = eval_overlap(train, evals)
    if not hits:
        return 0
    n, m = len(hits), len(evals)
    what = (f"task '{task_cfg.name}': {n} of the {m} eval problems ({100.0 * n / max(m, 1):.0f}%) are also "
            f"among the {len(train)} training problems (same normalised problem text, e.g. "
            f"{hits[0].id!r})")
    if getattr(task_cfg, "allow_eval_overlap", False):
        if log is not None:
            log(f"[data] warning: {what}; running anyway (task.allow_eval_overlap: true)")
        return n
    raise ConfigError(f"{what}: training on the eval problems makes eval accuracy meaningless. Give the task "
                      "its own training data (task.params.train_path for file tasks, train_split for `hf` and "
                      "the named datasets) or set task.allow_eval_overlap: true to run anyway")
