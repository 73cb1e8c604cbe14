"""File tasks: JSONL and `datasets` loaders with field mappings (the named datasets, `gsm8k`,
`math500`, ..., are in `zoo.tasks_datasets`, built on `_RowTask`).

Tasks `jsonl` and `hf` return rows in file order; `n` = 0 or None means all rows; the seed is
ignored (every run evaluates the same rows). "train" reads `train_path` (`train_split` for `hf`)
when given, otherwise the same rows as "eval" (which `zoo train` / `zoo compare` refuse unless
`task.allow_eval_overlap: true`). `answer_format` declares the answer formats the prompts ask for
(names of `rewards.extract.FORMATS`); the reward functions that accept `formats` get it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from zoo.registry import TASKS
from zoo.tasks_base import Task, _check_n, _check_split
from zoo.types import Problem


class _RowTask(Task):
    """Rows (dicts) -> Problems with a field mapping; shared by the JSONL and `datasets` loaders."""

    def __init__(self, prompt_field: str = "problem", answer_field: str = "answer",
                 answer_pattern: str | None = None, prompt_template: str = "{prompt}\n", reward: str = "math",
                 solution_field: str | None = None, id_field: str | None = None, strip_commas: bool = False,
                 answer_format: Any = None):
        if "{prompt}" not in prompt_template:
            raise ValueError(f"prompt_template must contain '{{prompt}}', got {prompt_template!r}")
        self.prompt_field, self.answer_field = prompt_field, answer_field
        self.answer_pattern = answer_pattern
        self._answer_re = re.compile(answer_pattern) if answer_pattern else None
        if self._answer_re is not None and self._answer_re.groups < 1:
            raise ValueError(f"answer_pattern needs a capture group (group 1 = gold): {answer_pattern!r}")
        self.prompt_template, self.reward = prompt_template, reward
        self.solution_field, self.id_field, self.strip_commas = solution_field, id_field, strip_commas
        self.answer_format = answer_format

    def _fields(self, row: dict) -> tuple[str, str, str | None, str | None]:
        """(prompt, answer, solution, id) field names for this row (subclasses pick among candidates)."""
        return self.prompt_field, self.answer_field, self.solution_field, self.id_field

    def _row_problem(self, row: Any, source: str, rowno: int) -> Problem:
        where = f"{source}, row {rowno}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
        fields = ", ".join(sorted(map(str, row))) or "(none)"
        prompt_field, answer_field, solution_field, id_field = self._fields(row)

        def get(field: str, numeric_ok: bool = False) -> str:
            if field not in row:
                raise ValueError(f"{where}: missing field {field!r}; available fields: {fields}")
            val = row[field]
            if numeric_ok and isinstance(val, int) and not isinstance(val, bool):
                return str(val)
            if not isinstance(val, str):
                raise ValueError(f"{where}: field {field!r} must be a string, got {type(val).__name__}; "
                                 f"available fields: {fields}")
            return val

        prompt = get(prompt_field)
        answer = get(answer_field, numeric_ok=True)
        if self._answer_re is not None:
            m = self._answer_re.search(answer)
            if m is None or m.group(1) is None:
                raise ValueError(f"{where}: field {answer_field!r} does not match answer_pattern "
                                 f"{self.answer_pattern!r}: {answer[-80:]!r}")
            answer = m.group(1)
        answer = answer.strip()
        if self.strip_commas:
            answer = re.sub(r"(?<=\d),(?=\d{3}\b)", "", answer)
        solution = get(solution_field) if solution_field else None
        pid = str(row[id_field]) if id_field and id_field in row else f"{rowno}"
        return Problem(prompt=self.prompt_template.replace("{prompt}", prompt), answer=answer, solution=solution,
                       id=f"{self.name}:{pid}", meta={"source": source, "row": rowno})

    @staticmethod
    def _take(rows: list[Problem], n: int | None, what: str) -> list[Problem]:
        _check_n(n, allow_none=True)
        if not n:
            return list(rows)
        if n > len(rows):
            raise ValueError(f"{what} holds only {len(rows)} problems; asked for {n}")
        return rows[:n]


def read_jsonl(path: str | Path, task: str = "jsonl") -> list[tuple[int, Any]]:
    """(line number, parsed value) of every non-blank line; clear errors for a missing file / bad JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task {task!r}: no such file {str(path)!r}")
    out = []
    with open(path, encoding="utf-8") as f:
        for rowno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append((rowno, json.loads(line)))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, row {rowno}: invalid JSON ({e.msg} at column {e.colno})") from None
    return out


@TASKS.register("jsonl")
class JsonlTask(_RowTask):
    """Problems from a JSONL file (one object per line; blank lines skipped; row = line number).

    `answer_pattern`: a regex searched in the answer field whose group 1 is the gold (GSM8K:
    `"####\\s*(.+)$"`). `prompt_template`: "{prompt}" is replaced by the prompt field (plain
    replacement, so other braces are literal). `train_path`: the file for split "train"
    (default: the same rows as "eval"). Answers may be strings or ints; prompts must be strings.
    """

    name = "jsonl"

    def __init__(self, path: str | Path, prompt_field: str = "problem", answer_field: str = "answer",
                 answer_pattern: str | None = None, prompt_template: str = "{prompt}\n", reward: str = "math",
                 train_path: str | Path | None = None, solution_field: str | None = None,
                 id_field: str | None = None, strip_commas: bool = False, answer_format: Any = None):
        super().__init__(prompt_field, answer_field, answer_pattern, prompt_template, reward, solution_field,
                         id_field, strip_commas, answer_format)
        self.path = Path(path)
        self.train_path = Path(train_path) if train_path is not None else None
        self._cache: dict[Path, list[Problem]] = {}

    def load(self, path: str | Path) -> list[Problem]:
        """Every row of `path` as a Problem; ValueError naming file, row and field on a bad row."""
        path = Path(path)
        if path in self._cache:
            return self._cache[path]
        out = [self._row_problem(row, str(path), rowno) for rowno, row in read_jsonl(path, self.name)]
        self._cache[path] = out
        return out

    def _file(self, split: str) -> Path:
        _check_split(split)
        return self.train_path if split == "train" and self.train_path is not None else self.path

    def problems(self, split: str, n: int | None = 0, seed: int = 0) -> list[Problem]:
        """The first n rows (all when n is 0/None) of the split's file, in file order; seed unused."""
        path = self._file(split)
        return self._take(self.load(path), n, f"{path} ({split})")

    def size(self, split: str) -> int | None:
        return len(self.load(self._file(split)))


@TASKS.register("hf")
class HFTask(_RowTask):
    """Problems from `datasets.load_dataset(name_or_path, config, split=split)` (optional dependency).

    `data_files` is passed through (e.g. `name_or_path="json", data_files="x.jsonl"`); split
    "train" uses `train_split` when given, otherwise the same rows as "eval". Same field mapping and
    row checks as `jsonl`; rows in dataset order, n = 0/None means all; seed unused.
    """

    name = "hf"

    def __init__(self, name_or_path: str, split: str = "test", config: str | None = None,
                 prompt_field: str = "problem", answer_field: str = "answer", answer_pattern: str | None = None,
                 prompt_template: str = "{prompt}\n", reward: str = "math", train_split: str | None = None,
                 solution_field: str | None = None, id_field: str | None = None, strip_commas: bool = False,
                 data_files: Any = None, cache_dir: str | None = None, answer_format: Any = None):
        super().__init__(prompt_field, answer_field, answer_pattern, prompt_template, reward, solution_field,
                         id_field, strip_commas, answer_format)
        self.name_or_path, self.split, self.config = name_or_path, split, config
        self.train_split, self.data_files, self.cache_dir = train_split, data_files, cache_dir
        self._cache: dict[str, list[Problem]] = {}

    def load(self, ds_split: str) -> list[Problem]:
        if ds_split in self._cache:
            return self._cache[ds_split]
        try:
            import datasets  # optional: absent on the GPU image
        except ImportError as e:
            raise ImportError("task 'hf' needs the optional package `datasets` (pip install 'entropy-zoo[data]' "
                              "or pip install datasets); or convert the data to JSONL and use task 'jsonl'") from e
        kw: dict[str, Any] = {"split": ds_split}
        if self.data_files is not None:
            kw["data_files"] = self.data_files
        if self.cache_dir is not None:
            kw["cache_dir"] = self.cache_dir
        ds = datasets.load_dataset(self.name_or_path, self.config, **kw)
        source = f"{self.name_or_path}[{ds_split}]"
        out = [self._row_problem(dict(row), source, i) for i, row in enumerate(ds, 1)]
        self._cache[ds_split] = out
        return out

    def problems(self, split: str, n: int | None = 0, seed: int = 0) -> list[Problem]:
        """The first n rows (all when n is 0/None) of the mapped dataset split; seed unused."""
        _check_split(split)
        ds_split = self.train_split if split == "train" and self.train_split else self.split
        return self._take(self.load(ds_split), n, f"{self.name_or_path}[{ds_split}]")
