"""Standard math datasets by name, with their field mappings: from the Hugging Face hub, or a local copy.

    task: {name: math500}                                    # datasets.load_dataset("HuggingFaceH4/MATH-500", split="test")
    task: {name: math500, params: {path: data/math500_test.jsonl}}   # a local JSONL file (no `datasets` needed)
    task: {name: math, params: {levels: [3, 4, 5]}}          # MATH train split for "train", test for "eval"
    task: {name: aime24, params: {train: {name: dapo_math}}} # eval on AIME 2024, train on DAPO-Math-17k

Where the rows come from (`path`):
- not given: the dataset's hub id, config(s) and split(s) below, through `datasets.load_dataset`
  (`pip install 'entropy-zoo[data]'`; `datasets` is imported only here, inside the loader);
- a `.jsonl` file: read line by line with `json` (no `datasets` needed): its rows are the eval split;
- a `.json` / `.parquet` / `.csv` file: `datasets.load_dataset(<format>, data_files=path)`;
- a directory (a clone or download of the hub repository, same layout): `load_dataset(path, config,
  split=...)`, or `load_dataset(path, data_dir=config, ...)` when the config is a sub-directory.

Splits: "eval" is the dataset's eval split (`split` overrides it); "train" is, in order: the rows
of another task (`train: {name: ..., params: {...}}`: its train split), `train_path` (a local
file), the dataset's own train split (`train_split` overrides it), and otherwise the eval rows
themselves, which `zoo train` / `zoo compare` refuse unless `task.allow_eval_overlap: true`.

Rows keep the dataset's order; `n` = 0/None means all; rows whose gold answer is empty are skipped
(counted in `task.skipped`); `levels` keeps only rows whose `level` column is one of them (MATH's
"Level 3" or MATH-500's 3). Field names may be overridden (`prompt_field`, ...); otherwise the first
of each dataset's candidate columns present in a row is used. Column sets were checked against the
dataset cards / loaders cited at each entry of DATASETS.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from rewards.boxed import last_boxed
from zoo.registry import TASKS
from zoo.tasks_base import _check_split
from zoo.tasks_files import _RowTask, read_jsonl
from zoo.types import Problem

DAPO_PREFIX = ("Solve the following math problem step by step. The last line of your response should be of the "
               "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n")
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'
MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus")


@dataclass(frozen=True)
class Source:
    """Where a named dataset lives on the hub and how its columns map to (prompt, answer, ...)."""
    hub: str
    doc: str
    configs: tuple = (None,)               # concatenated in this order
    eval_split: str = "test"
    train_split: str | None = None         # None: the dataset has no separate training split
    prompt: tuple = ("problem",)           # candidate columns, first present wins
    answer: tuple = ("answer",)
    solution: tuple = ()
    id: tuple = ()
    answer_pattern: str | None = None
    strip_commas: bool = False
    prepare: Callable[[dict, dict], dict] | None = None   # (row, task options) -> row with the fields above
    answer_format: Any = None
    dedup_by: str | None = None            # a column whose repeated values are dropped (dedup: true)


def _text(x: Any) -> Any:
    """Numbers as gold strings (27.0 -> "27"); everything else unchanged."""
    if isinstance(x, float) and math.isfinite(x):
        return str(int(x)) if x.is_integer() else repr(x)
    return x


def _prep_math(row: dict, opts: dict) -> dict:
    # MATH keeps the answer inside the worked solution: gold = its last \boxed{} (None: row skipped)
    return {**row, "answer": last_boxed(row["solution"]) if isinstance(row.get("solution"), str) else None}


def _prep_dapo(row: dict, opts: dict) -> dict:
    msgs = row.get("prompt")
    if isinstance(msgs, list):
        user = [m for m in msgs if isinstance(m, dict) and m.get("role") == "user"] or msgs
        text = user[-1].get("content") if isinstance(user[-1], dict) else None
        if isinstance(text, str) and opts.get("strip_instruction"):
            text = text.removeprefix(DAPO_PREFIX).removesuffix(DAPO_SUFFIX)
        msgs = text
    rm, extra = row.get("reward_model") or {}, row.get("extra_info") or {}
    return {**row, "prompt": msgs, "answer": rm.get("ground_truth") if isinstance(rm, dict) else None,
            "index": extra.get("index") if isinstance(extra, dict) else None}


def _prep_olympiad(row: dict, opts: dict) -> dict:
    ans = row.get("final_answer")
    if isinstance(ans, list):   # e.g. ["$\\frac{1}{2}$"]; several parts joined by ", "
        ans = ", ".join(re.sub(r"^\$+|\$+$", "", str(a).strip()).strip() for a in ans) or None
    q, ctx = row.get("question"), row.get("context")
    if isinstance(q, str) and isinstance(ctx, str) and ctx.strip():
        q = ctx.strip() + "\n" + q
    return {**row, "question": q, "final_answer": ans}


DATASETS: dict[str, Source] = {
    # -- training sets -------------------------------------------------------------------------
    # EleutherAI/hendrycks_math card: 7 configs (one per subject), splits train (7,500) / test (5,000),
    # columns problem, level ("Level 1".."Level 5"), type, solution (answer = its last \boxed{}).
    "math": Source("EleutherAI/hendrycks_math", "MATH (Hendrycks et al. 2021): train 7,500 / test 5,000; levels filter",
                   configs=MATH_SUBJECTS, eval_split="test", train_split="train", answer=("answer",),
                   solution=("solution",), prepare=_prep_math),
    # openai/gsm8k card: configs main / socratic, splits train (7,473) / test (1,319), columns question,
    # answer (rationale ending "#### N").
    "gsm8k": Source("openai/gsm8k", "GSM8K: train 7,473 / test 1,319 (config main); gold = the '#### N' number",
                    configs=("main",), eval_split="test", train_split="train", prompt=("question",),
                    answer_pattern=r"####\s*(.+)$", strip_commas=True),
    # BytedTsinghua-SIA/DAPO-Math-17k: one split, train (1.79M rows = 17k prompts repeated); columns
    # data_source, prompt [{content, role}], ability, reward_model {ground_truth, style}, extra_info {index}.
    # The user message asks for an "Answer: X" last line (DAPO paper, arXiv 2503.14476).
    "dapo_math": Source("BytedTsinghua-SIA/DAPO-Math-17k", "DAPO-Math-17k (Yu et al. 2025): integer answers, "
                        "'Answer:' line prompts; duplicates dropped by extra_info.index",
                        eval_split="train", train_split="train", prompt=("prompt",), id=("index",),
                        prepare=_prep_dapo, answer_format="answer_line", dedup_by="index"),
    # agentica-org/DeepScaleR-Preview-Dataset (deepscaler.json): split train, 40,315 rows, columns problem,
    # answer, solution (rllm's prepare script loads it the same way).
    "deepscaler": Source("agentica-org/DeepScaleR-Preview-Dataset", "DeepScaleR-Preview (AIME/AMC/Omni-MATH/STILL), "
                         "40,315 problems", eval_split="train", train_split="train", solution=("solution",)),
    # -- benchmarks ----------------------------------------------------------------------------
    # HuggingFaceH4/MATH-500 card: split test (500), columns problem, solution, answer, subject, level, unique_id.
    "math500": Source("HuggingFaceH4/MATH-500", "MATH-500 (Lightman et al. 2023): 500 MATH test problems",
                      solution=("solution",), id=("unique_id",)),
    # HuggingFaceH4/aime_2024 card: split train (30), columns id, problem, solution, answer, url, year.
    "aime24": Source("HuggingFaceH4/aime_2024", "AIME 2024 I + II: 30 problems, integer answers",
                     eval_split="train", id=("id",)),
    # opencompass/AIME2025 card: configs AIME2025-I / AIME2025-II (15 each), split test, columns question, answer.
    "aime25": Source("opencompass/AIME2025", "AIME 2025 I + II: 30 problems, integer answers",
                     configs=("AIME2025-I", "AIME2025-II"), prompt=("question", "problem"), id=("id",)),
    # math-ai/amc23 (as loaded by rllm / evaluation harnesses): split test (40), columns id, question, answer, url.
    "amc23": Source("math-ai/amc23", "AMC 2023 (AMC 12): 40 problems", prompt=("question", "problem"), id=("id",)),
    # math-ai/minervamath: split test (272; Minerva's OCW courses set, Lewkowycz et al. 2022), columns question, answer.
    "minerva_math": Source("math-ai/minervamath", "Minerva Math (OCW courses): 272 problems",
                           prompt=("question", "problem")),
    # Hothan/OlympiadBench config OE_TO_maths_en_COMP (open-ended, text-only, English maths): split train (674);
    # columns id, question, solution (list), final_answer (list of "$...$"), context, is_multiple_answer, unit,
    # answer_type, subfield, ... (He et al. 2024, arXiv 2402.14008).
    "olympiadbench": Source("Hothan/OlympiadBench", "OlympiadBench OE_TO_maths_en_COMP: 674 problems",
                            configs=("OE_TO_maths_en_COMP",), eval_split="train", prompt=("question",),
                            answer=("final_answer",), id=("id",), prepare=_prep_olympiad),
}


def _level(x: Any) -> int | None:
    m = re.search(r"\d+", str(x)) if x is not None else None
    return int(m.group()) if m else None


class DatasetTask(_RowTask):
    """A named dataset (see DATASETS): hub id or a local file/directory, field mapping, splits."""

    source: Source

    def __init__(self, path: str | Path | None = None, split: str | None = None, train_split: str | None = None,
                 train_path: str | Path | None = None, train: dict | None = None, configs: list | None = None,
                 levels: list | None = None, dedup: bool = True, strip_instruction: bool = False,
                 prompt_template: str = "{prompt}\n", reward: str = "math", answer_format: Any = "",
                 prompt_field: str | None = None, answer_field: str | None = None, solution_field: str | None = None,
                 id_field: str | None = None, answer_pattern: str | None = None, strip_commas: bool | None = None,
                 cache_dir: str | None = None, revision: str | None = None):
        src = self.source
        super().__init__(prompt_field or src.prompt[0], answer_field or src.answer[0],
                         answer_pattern if answer_pattern is not None else src.answer_pattern, prompt_template,
                         reward, solution_field, id_field, src.strip_commas if strip_commas is None else strip_commas,
                         src.answer_format if answer_format == "" else answer_format)
        self._override = (prompt_field, answer_field, solution_field, id_field)
        self.path = Path(path) if path is not None else None
        self.split = split or src.eval_split
        self.train_split = train_split or src.train_split
        self.train_path = Path(train_path) if train_path is not None else None
        if train is not None and (not isinstance(train, dict) or not isinstance(train.get("name"), str)
                                  or set(train) - {"name", "params"}):
            raise ValueError(f"task {self.name!r}: train must be {{name: <task>, params: {{...}}}}, got {train!r}")
        self.train = train
        self.configs = tuple(configs) if configs else src.configs
        self.levels = None if levels is None else {_level(v) for v in levels}
        self.opts = {"dedup": dedup, "strip_instruction": strip_instruction}
        if strip_instruction and answer_format == "" and src.prepare is _prep_dapo:
            self.answer_format = None      # the bare problem: the prompt template decides the format
        self.cache_dir, self.revision = cache_dir, revision
        self.skipped: dict[str, int] = {}
        self._cache: dict[str, list[Problem]] = {}
        self._train_task = None

    def _fields(self, row: dict) -> tuple[str, str, str | None, str | None]:
        src = self.source

        def pick(override: str | None, cands: tuple) -> str | None:
            if override or not cands:
                return override
            return next((c for c in cands if c in row), cands[0])
        p, a, s, i = self._override
        return pick(p, src.prompt), pick(a, src.answer), pick(s, src.solution), pick(i, src.id)

    # ------------------------------------------------------------------------------ loading
    def _raw(self, where: str, split: str) -> list[tuple[str, str, int, dict]]:
        """(source label, config, row number, row) of a local file / dir or the hub, for one split."""
        if where.endswith(".jsonl") and Path(where).is_file():
            return [(where, "", n, r) for n, r in read_jsonl(where, self.name)]
        if where != self.source.hub and not Path(where).exists():
            raise FileNotFoundError(f"task {self.name!r}: no such file or directory {where!r}")
        try:
            import datasets  # optional: absent on the GPU image
        except ImportError as e:
            raise ImportError(f"task {self.name!r} needs the optional package `datasets` to read {where!r} "
                              "(pip install 'entropy-zoo[data]' or pip install datasets); or give a local .jsonl "
                              "file as task.params.path") from e
        kw: dict[str, Any] = {}
        if self.cache_dir is not None:
            kw["cache_dir"] = self.cache_dir
        p = Path(where)
        if p.is_file():
            fmt = {".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(p.suffix)
            if fmt is None:
                raise ValueError(f"task {self.name!r}: cannot read {where!r}: expected .jsonl, .json, .parquet or "
                                 ".csv, or a dataset directory")
            ds = datasets.load_dataset(fmt, data_files=str(p), split="train", **kw)
            return [(f"{where}", "", n, dict(r)) for n, r in enumerate(ds, 1)]
        if self.revision is not None and not p.exists():
            kw["revision"] = self.revision
        out = []
        for cfg in self.configs:
            if p.is_dir() and cfg and (p / cfg).is_dir():
                ds = datasets.load_dataset(str(p), data_dir=cfg, split=split, **kw)
            else:
                ds = datasets.load_dataset(where, cfg, split=split, **kw)
            tag = f"{where}[{cfg + '/' if cfg else ''}{split}]"
            out += [(tag, cfg or "", n, dict(r)) for n, r in enumerate(ds, 1)]
        return out

    def load(self, where: str, split: str) -> list[Problem]:
        key = f"{where}|{split}"
        if key in self._cache:
            return self._cache[key]
        seen: set = set()
        out: list[Problem] = []
        skipped = 0
        for label, cfg, rowno, row in self._raw(where, split):
            if not isinstance(row, dict):
                self._row_problem(row, label, rowno)                 # raises: not an object
            if self.source.prepare is not None:
                row = self.source.prepare(row, self.opts)
            row = {k: _text(v) for k, v in row.items()}
            if self.levels is not None and _level(row.get("level")) not in self.levels:
                continue
            af = self._fields(row)[1]
            if af in row and (row[af] is None or (isinstance(row[af], str) and not row[af].strip())):
                skipped += 1                                          # no gold answer: not a usable problem
                continue
            dk = self.source.dedup_by
            if self.opts["dedup"] and dk and row.get(dk) is not None:
                if row[dk] in seen:
                    continue
                seen.add(row[dk])
            prob = self._row_problem(row, label, rowno)
            fid = self._fields(row)[3]
            if cfg and len(self.configs) > 1 and not (fid and fid in row):   # ids unique across configs
                prob = replace(prob, id=f"{self.name}:{cfg}/{rowno}")
            out.append(prob)
        self.skipped[key] = skipped
        self._cache[key] = out
        return out

    def _rows(self, split: str) -> list[Problem]:
        _check_split(split)
        if split == "eval":
            return self.load(str(self.path) if self.path is not None else self.source.hub, self.split)
        if self.train is not None:
            if self._train_task is None:
                self._train_task = TASKS.get(self.train["name"])(**(self.train.get("params") or {}))
            return self._train_task.problems("train", 0)
        if self.train_path is not None:
            return self.load(str(self.train_path), self.source.train_split or self.split)
        if self.path is not None and (self.path.is_file() or not self.train_split):
            return self.load(str(self.path), self.split)          # a single file: the same rows
        return self.load(str(self.path) if self.path is not None else self.source.hub, self.train_split or self.split)

    def problems(self, split: str, n: int | None = 0, seed: int = 0) -> list[Problem]:
        """The first n rows (all when n is 0/None) of the split, in dataset order; seed unused."""
        rows = self._rows(split)
        return self._take(rows, n, f"{self.name} ({split})")

    def size(self, split: str) -> int | None:
        return len(self._rows(split))


_CLASS_NAMES = {"math": "MathTask", "gsm8k": "Gsm8kTask", "dapo_math": "DapoMathTask", "deepscaler": "DeepScaleRTask",
                "math500": "Math500Task", "aime24": "Aime24Task", "aime25": "Aime25Task", "amc23": "Amc23Task",
                "minerva_math": "MinervaMathTask", "olympiadbench": "OlympiadBenchTask"}


def _register(name: str, src: Source) -> type[DatasetTask]:
    cfgs = "/".join(c for c in src.configs if c)
    doc = (f"{src.doc} [{src.hub}" + (f" {cfgs}" if cfgs else "") + f", eval split {src.eval_split}"
           + (f", train split {src.train_split}" if src.train_split else "") + "]")
    cls = type(_CLASS_NAMES[name], (DatasetTask,),
               {"name": name, "source": src, "__doc__": doc, "__module__": __name__})
    TASKS.add(name, cls)
    return cls


DATASET_TASKS = {name: _register(name, src) for name, src in DATASETS.items()}
MathTask, Gsm8kTask, DapoMathTask = DATASET_TASKS["math"], DATASET_TASKS["gsm8k"], DATASET_TASKS["dapo_math"]
DeepScaleRTask, Math500Task, Aime24Task = (DATASET_TASKS["deepscaler"], DATASET_TASKS["math500"],
                                           DATASET_TASKS["aime24"])
Aime25Task, Amc23Task = DATASET_TASKS["aime25"], DATASET_TASKS["amc23"]
MinervaMathTask, OlympiadBenchTask = DATASET_TASKS["minerva_math"], DATASET_TASKS["olympiadbench"]
