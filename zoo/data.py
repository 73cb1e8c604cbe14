"""Tasks: seeded synthetic generators (arith, countdown) and loaders for real benchmarks.

    task = get_task("countdown", n_numbers=3)          # registered in zoo.registry.TASKS
    train = task.problems("train", 20000, seed=0)       # list[Problem], deterministic
    evals = task.problems("eval", 500)                  # disjoint from every train sample

Synthetic splits are disjoint by construction: each canonical problem goes to "eval" iff a stable
sha256 hash of its canonical key (salted with the task name) falls below `eval_fraction`; each
split samples only from its own side. Within a split, problems are a seeded shuffle of that side
(without replacement), so (split, n, seed) always gives the same list and a smaller n gives a
prefix of a larger one. Asking for more problems than the side holds is a ValueError.

File tasks (`jsonl`, `hf`, presets `gsm8k`, `math500`, `aime24`, `aime25`) return rows in file
order; `n` = 0 or None means all rows; the seed is ignored (every run evaluates the same rows).
"train" reads `train_path` (`train_split` for `hf`) when given, otherwise the same rows as "eval".
"""
from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import random
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Hashable, Iterator, Sequence

from zoo.registry import TASKS
from zoo.types import Problem

SPLITS = ("train", "eval")
ENUM_LIMIT = 1_000_000   # problem spaces up to this size are enumerated; larger ones are sampled

# Every character a synthetic prompt or solution can contain (the character tokenizer is built
# from this; tests check that generated text stays inside it).
CHARSET = "".join(sorted(set("0123456789+-*/()=. \n") | set("\\boxed{}") | set("Compute") | set("Use to make")))


def tokenizer_charset() -> str:
    """All characters the synthetic tasks can produce, sorted (printable ASCII and newline)."""
    return CHARSET


_SIDES_CACHE: dict[tuple[str, str], dict[str, list[Hashable]]] = {}  # (task, params) -> split sides


def _stable_unit(key: str) -> float:
    """A uniform number in [0, 1) from sha256(key): the same in every process and platform."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64


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


# --------------------------------------------------------------------------------- synthetic
class SyntheticTask(Task):
    """Seeded generator over a finite problem space with a hash-assigned eval side.

    Subclasses implement `_space_size`, `_item(i)` (the i-th item, 0 <= i < size), `_canonical(item)`
    (the key that decides the split: items with the same key always share a split) and
    `_problem(item)`.
    """

    def __init__(self, eval_fraction: float = 0.1):
        if not (0.0 < float(eval_fraction) < 1.0):
            raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction!r}")
        self.eval_fraction = float(eval_fraction)
        self._sides: dict[str, list[Hashable]] | None = None

    # -- to implement
    def _space_size(self) -> int:
        raise NotImplementedError

    def _item(self, i: int) -> Hashable | None:
        raise NotImplementedError

    def _canonical(self, item: Hashable) -> str:
        raise NotImplementedError

    def _problem(self, item: Hashable) -> Problem:
        raise NotImplementedError

    # -- shared
    def _items(self) -> Iterator[Hashable]:
        for i in range(self._space_size()):
            it = self._item(i)
            if it is not None:
                yield it

    def split_of(self, item: Hashable) -> str:
        return "eval" if _stable_unit(f"{self.name}|{self._canonical(item)}") < self.eval_fraction else "train"

    def _split_items(self, split: str) -> list[Hashable]:
        if self._sides is None:
            self._sides = _SIDES_CACHE.get((type(self).__qualname__, self._params()))
        if self._sides is None:
            sides: dict[str, list[Hashable]] = {"train": [], "eval": []}
            memo: dict[str, str] = {}
            for it in self._items():
                key = self._canonical(it)
                side = memo.get(key)
                if side is None:
                    side = memo[key] = self.split_of(it)
                sides[side].append(it)
            self._sides = sides
            if len(_SIDES_CACHE) >= 8:
                _SIDES_CACHE.pop(next(iter(_SIDES_CACHE)))
            _SIDES_CACHE[(type(self).__qualname__, self._params())] = sides
        return self._sides[split]

    def _enumerable(self) -> bool:
        return self._space_size() <= ENUM_LIMIT

    def size(self, split: str) -> int | None:
        _check_split(split)
        if self._enumerable():
            return len(self._split_items(split))
        return None

    def problems(self, split: str, n: int, seed: int = 0) -> list[Problem]:
        """`n` distinct problems from `split`, a deterministic function of (params, split, n, seed)."""
        _check_split(split)
        _check_n(n)
        rng = random.Random(f"{self.name}|{split}|{seed}")  # str seeds hash with sha512: stable
        if self._enumerable():
            items = self._split_items(split)
            if n > len(items):
                raise ValueError(f"task {self.name!r}: the {split} split holds only {len(items)} problems "
                                 f"with these parameters ({self._params()}); asked for {n}. Widen the "
                                 f"parameters or ask for fewer.")
            order = list(range(len(items)))
            rng.shuffle(order)
            return [self._problem(items[i]) for i in order[:n]]
        return self._rejection_sample(split, n, rng)

    def _rejection_sample(self, split: str, n: int, rng: random.Random) -> list[Problem]:
        total = self._space_size()
        side = self.eval_fraction if split == "eval" else 1.0 - self.eval_fraction
        if n > 0.05 * total * side:
            raise ValueError(f"task {self.name!r}: asked for {n} {split} problems from a space of ~{total} "
                             f"items ({self._params()}); sampling is limited to 5% of the split's side")
        seen: set[Hashable] = set()
        out: list[Problem] = []
        tries = 0
        while len(out) < n:
            tries += 1
            if tries > 1000 * n + 100_000:
                raise ValueError(f"task {self.name!r}: found only {len(out)} of {n} {split} problems "
                                 f"({self._params()}); the solvable part of the space is too small")
            it = self._item(rng.randrange(total))
            if it is None or it in seen or self.split_of(it) != split:
                continue
            seen.add(it)
            out.append(self._problem(it))
        return out

    def _params(self) -> str:
        sig = inspect.signature(type(self).__init__)
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in sig.parameters if k != "self" and hasattr(self, k))


@TASKS.register("arith")
class ArithTask(SyntheticTask):
    """Integer arithmetic with standard precedence (* before + and -, then left to right).

    Prompt `"Compute 3+4*2-5.\\n"`; solution: one step per operation, products first (left to
    right), then sums/differences left to right, then the box: `"4*2=8 3+8=11 11-5=6 \\boxed{6}"`.
    The space is every expression with min_ops..max_ops operators from `ops` over operands in
    [min_operand, max_operand]; it is sampled uniformly over distinct expressions (so longer ones
    dominate). Problem.answer is the integer value as a string.
    """

    name = "arith"

    def __init__(self, min_ops: int = 2, max_ops: int = 3, min_operand: int = 1, max_operand: int = 9,
                 ops: str = "+-*", eval_fraction: float = 0.1):
        super().__init__(eval_fraction)
        if not (isinstance(min_ops, int) and isinstance(max_ops, int) and 1 <= min_ops <= max_ops <= 8):
            raise ValueError(f"need 1 <= min_ops <= max_ops <= 8, got min_ops={min_ops!r}, max_ops={max_ops!r}")
        if not (isinstance(min_operand, int) and isinstance(max_operand, int) and 0 <= min_operand <= max_operand):
            raise ValueError(f"need 0 <= min_operand <= max_operand, got {min_operand!r}, {max_operand!r}")
        if not ops or set(ops) - set("+-*") or len(set(ops)) != len(ops):
            raise ValueError(f"arith ops must be distinct characters from '+-*', got {ops!r}")
        self.min_ops, self.max_ops = min_ops, max_ops
        self.min_operand, self.max_operand = min_operand, max_operand
        self.ops = ops
        self.reward = "arith"
        r, o = max_operand - min_operand + 1, len(ops)
        self._counts = [r ** (k + 1) * o ** k for k in range(min_ops, max_ops + 1)]

    def _space_size(self) -> int:
        return sum(self._counts)

    def _item(self, i: int) -> tuple:
        k = self.min_ops
        for c in self._counts:
            if i < c:
                break
            i -= c
            k += 1
        r = self.max_operand - self.min_operand + 1
        nums, ops = [], []
        for _ in range(k + 1):
            i, d = divmod(i, r)
            nums.append(self.min_operand + d)
        for _ in range(k):
            i, d = divmod(i, len(self.ops))
            ops.append(self.ops[d])
        return tuple(nums), tuple(ops)

    def _canonical(self, item: tuple) -> str:
        return expression_text(*item)

    def _problem(self, item: tuple) -> Problem:
        nums, ops = item
        expr = expression_text(nums, ops)
        steps, value = arith_steps(nums, ops)
        return Problem(prompt=f"Compute {expr}.\n", answer=str(value),
                       solution=" ".join(steps + [f"\\boxed{{{value}}}"]), id=f"arith:{expr}",
                       meta={"n_ops": len(ops), "expression": expr})


def expression_text(nums: Sequence[int], ops: Sequence[str]) -> str:
    """'3+4*2-5' from (3, 4, 2, 5) and ('+', '*', '-')."""
    return "".join(str(x) + op for x, op in zip(nums, ops)) + str(nums[-1])


def arith_steps(nums: Sequence[int], ops: Sequence[str]) -> tuple[list[str], int]:
    """Worked steps ('4*2=8', ...) and the value: products left to right, then + and - left to right."""
    vals, rest_ops, steps = [nums[0]], [], []
    for op, x in zip(ops, nums[1:]):
        if op == "*":
            prod = vals[-1] * x
            steps.append(f"{vals[-1]}*{x}={prod}")
            vals[-1] = prod
        else:
            vals.append(x)
            rest_ops.append(op)
    acc = vals[0]
    for op, x in zip(rest_ops, vals[1:]):
        new = acc + x if op == "+" else acc - x
        steps.append(f"{acc}{op}{x}={new}")
        acc = new
    return steps, acc


@TASKS.register("countdown")
class CountdownTask(SyntheticTask):
    """Reach `target` from the given numbers, each used exactly once, with `ops` and parentheses.

    Prompt `"Use 3 5 2 to make 16.\\n"`; solution `"\\boxed{(3+5)*2}"`; answer
    `{"numbers":[3,5,2],"target":16}` (the `countdown` reward's gold). The space is every ordered
    tuple of n_numbers numbers from 1..max_number with every target in 1..max_target it can reach
    (only solvable instances). Split assignment hashes the sorted numbers and the target, so the
    orderings of one instance always share a split. "/" is used only when it divides exactly;
    intermediate values may be zero or negative. The solution is chosen deterministically by a fixed
    search: fewest negative intermediates, then shortest, rendered with minimal parentheses.
    """

    name = "countdown"

    def __init__(self, n_numbers: int = 3, max_number: int = 10, max_target: int = 100, ops: str = "+-*",
                 eval_fraction: float = 0.1, worked: bool = False):
        super().__init__(eval_fraction)
        self.worked = bool(worked)  # solution shows each step ("10-5=5 5*9=45 ") before the box
        if not (isinstance(n_numbers, int) and 2 <= n_numbers <= 5):
            raise ValueError(f"n_numbers must be an int in 2..5, got {n_numbers!r}")
        if not (isinstance(max_number, int) and 1 <= max_number <= 999):
            raise ValueError(f"max_number must be an int in 1..999, got {max_number!r}")
        if not (isinstance(max_target, int) and max_target >= 1):
            raise ValueError(f"max_target must be an int >= 1, got {max_target!r}")
        if not ops or set(ops) - set("+-*/") or len(set(ops)) != len(ops):
            raise ValueError(f"countdown ops must be distinct characters from '+-*/', got {ops!r}")
        self.n_numbers, self.max_number, self.max_target, self.ops = n_numbers, max_number, max_target, ops
        self.reward = "countdown"
        self._enum_items: list[tuple] | None = None

    def _n_tuples(self) -> int:
        return self.max_number ** self.n_numbers

    def _space_size(self) -> int:
        return self._n_tuples() * self.max_target

    def _enumerable(self) -> bool:
        # Enumerating = one reachability search per multiset of numbers.
        return self._n_tuples() <= 20_000

    def _items(self) -> Iterator[tuple]:
        for ms in itertools.combinations_with_replacement(range(1, self.max_number + 1), self.n_numbers):
            targets = sorted(t for t in _reachable(ms, self.ops) if 1 <= t <= self.max_target)
            if not targets:
                continue
            for perm in sorted(set(itertools.permutations(ms))):
                for t in targets:
                    yield perm, t

    def _item(self, i: int) -> tuple | None:
        i, t = divmod(i, self.max_target)
        nums = []
        for _ in range(self.n_numbers):
            i, d = divmod(i, self.max_number)
            nums.append(d + 1)
        target = t + 1
        if target not in _reachable(tuple(sorted(nums)), self.ops):
            return None
        return tuple(nums), target

    def _canonical(self, item: tuple) -> str:
        nums, target = item
        return f"{','.join(map(str, sorted(nums)))}:{target}"

    def _problem(self, item: tuple) -> Problem:
        nums, target = item
        expr = _solve(tuple(nums), self.ops)[target]
        gold = json.dumps({"numbers": list(nums), "target": target}, separators=(",", ":"))
        steps = "".join(f"{st} " for st in expression_steps(expr)) if self.worked else ""
        return Problem(prompt=f"Use {' '.join(map(str, nums))} to make {target}.\n", answer=gold,
                       solution=f"{steps}\\boxed{{{expr}}}", id=f"countdown:{' '.join(map(str, nums))}:{target}",
                       meta={"numbers": list(nums), "target": target})


_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def expression_steps(expr: str) -> list[str]:
    """The binary operations of an integer expression in evaluation order, as "a op b = v" texts.

    "(10-5)*9" -> ["10-5=5", "5*9=45"]. Only digits, + - * /, parentheses (our own generated text).
    """
    out: list[str] = []
    vals: list[int] = []
    ops: list[str] = []

    def reduce_top() -> None:
        op, b, a = ops.pop(), vals.pop(), vals.pop()
        v = _apply(op, a, b)
        out.append(f"{a}{op}{b}={v}")
        vals.append(v)

    i = 0
    while i < len(expr):
        c = expr[i]
        if c.isdigit():
            j = i
            while j < len(expr) and expr[j].isdigit():
                j += 1
            vals.append(int(expr[i:j]))
            i = j
            continue
        if c == "(":
            ops.append(c)
        elif c == ")":
            while ops[-1] != "(":
                reduce_top()
            ops.pop()
        else:
            while ops and ops[-1] != "(" and _PREC[ops[-1]] >= _PREC[c]:
                reduce_top()
            ops.append(c)
        i += 1
    while ops:
        reduce_top()
    return out


def _apply(op: str, a: int, b: int) -> int | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b != 0 and a % b == 0:  # "/" only when exact
        return a // b
    return None


def _render(op: str, left: tuple[str, int], right: tuple[str, int]) -> tuple[str, int]:
    """Join two (text, precedence) sub-expressions with minimal parentheses (leaves have prec 3)."""
    p = _PREC[op]
    ls = f"({left[0]})" if left[1] < p else left[0]
    need_r = right[1] < p or (right[1] == p and op in "-/")
    rs = f"({right[0]})" if need_r else right[0]
    return f"{ls}{op}{rs}", p


@lru_cache(maxsize=4096)
def _reachable(multiset: tuple[int, ...], ops: str) -> frozenset[int]:
    """Every value an expression using each number of `multiset` exactly once can take."""
    n = len(multiset)
    vals: dict[int, set[int]] = {1 << i: {x} for i, x in enumerate(multiset)}
    for mask in range(1, 1 << n):
        if mask in vals:
            continue
        out: set[int] = set()
        sub = (mask - 1) & mask
        while sub:
            other = mask ^ sub
            for a in vals[sub]:
                for b in vals[other]:
                    for op in ops:
                        v = _apply(op, a, b)
                        if v is not None:
                            out.add(v)
            sub = (sub - 1) & mask
        vals[mask] = out
    return frozenset(vals[(1 << n) - 1])


@lru_cache(maxsize=4096)
def _solve(numbers: tuple[int, ...], ops: str) -> dict[int, str]:
    """value -> one expression over `numbers` (each once). Deterministic: per value, the fewest
    negative intermediate results, then the shortest text, then the first found (subsets in index
    order, so the given order of the numbers is preferred)."""
    n = len(numbers)
    # per subset mask: value -> (n_negative_intermediates, text, precedence)
    exprs: dict[int, dict[int, tuple[int, str, int]]] = {1 << i: {x: (0, str(x), 3)} for i, x in enumerate(numbers)}
    for mask in range(1, 1 << n):
        if mask in exprs:
            continue
        out: dict[int, tuple[int, str, int]] = {}
        for sub in range(1, mask):
            if sub & mask != sub:
                continue
            other = mask ^ sub
            for a, ea in exprs[sub].items():
                for b, eb in exprs[other].items():
                    for op in ops:
                        v = _apply(op, a, b)
                        if v is None:
                            continue
                        text, prec = _render(op, (ea[1], ea[2]), (eb[1], eb[2]))
                        cand = (ea[0] + eb[0] + (v < 0), text, prec)
                        old = out.get(v)
                        if old is None or (cand[0], len(cand[1])) < (old[0], len(old[1])):
                            out[v] = cand
        exprs[mask] = out
    return {v: e[1] for v, e in exprs[(1 << n) - 1].items()}


# -------------------------------------------------------------------------------- file tasks
class _RowTask(Task):
    """Rows (dicts) -> Problems with a field mapping; shared by the JSONL and `datasets` loaders."""

    def __init__(self, prompt_field: str = "problem", answer_field: str = "answer",
                 answer_pattern: str | None = None, prompt_template: str = "{prompt}\n", reward: str = "math",
                 solution_field: str | None = None, id_field: str | None = None, strip_commas: bool = False):
        if "{prompt}" not in prompt_template:
            raise ValueError(f"prompt_template must contain '{{prompt}}', got {prompt_template!r}")
        self.prompt_field, self.answer_field = prompt_field, answer_field
        self.answer_pattern = answer_pattern
        self._answer_re = re.compile(answer_pattern) if answer_pattern else None
        if self._answer_re is not None and self._answer_re.groups < 1:
            raise ValueError(f"answer_pattern needs a capture group (group 1 = gold): {answer_pattern!r}")
        self.prompt_template, self.reward = prompt_template, reward
        self.solution_field, self.id_field, self.strip_commas = solution_field, id_field, strip_commas

    def _row_problem(self, row: Any, source: str, rowno: int) -> Problem:
        where = f"{source}, row {rowno}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
        fields = ", ".join(sorted(map(str, row))) or "(none)"

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

        prompt = get(self.prompt_field)
        answer = get(self.answer_field, numeric_ok=True)
        if self._answer_re is not None:
            m = self._answer_re.search(answer)
            if m is None or m.group(1) is None:
                raise ValueError(f"{where}: field {self.answer_field!r} does not match answer_pattern "
                                 f"{self.answer_pattern!r}: {answer[-80:]!r}")
            answer = m.group(1)
        answer = answer.strip()
        if self.strip_commas:
            answer = re.sub(r"(?<=\d),(?=\d{3}\b)", "", answer)
        solution = get(self.solution_field) if self.solution_field else None
        pid = str(row[self.id_field]) if self.id_field and self.id_field in row else f"{rowno}"
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
                 id_field: str | None = None, strip_commas: bool = False):
        super().__init__(prompt_field, answer_field, answer_pattern, prompt_template, reward, solution_field,
                         id_field, strip_commas)
        self.path = Path(path)
        self.train_path = Path(train_path) if train_path is not None else None
        self._cache: dict[Path, list[Problem]] = {}

    def load(self, path: str | Path) -> list[Problem]:
        """Every row of `path` as a Problem; ValueError naming file, row and field on a bad row."""
        path = Path(path)
        if path in self._cache:
            return self._cache[path]
        if not path.is_file():
            raise FileNotFoundError(f"task {self.name!r}: no such file {str(path)!r}")
        out: list[Problem] = []
        with open(path, encoding="utf-8") as f:
            for rowno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, row {rowno}: invalid JSON ({e.msg} at column {e.colno})") from None
                out.append(self._row_problem(row, str(path), rowno))
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


def _preset(name: str, cls_name: str, doc: str, **fixed: Any) -> type[JsonlTask]:
    """A JsonlTask subclass whose field mapping defaults to `fixed` (still overridable)."""

    def __init__(self, path: str | Path, **kw: Any) -> None:
        JsonlTask.__init__(self, path, **{**fixed, **kw})

    base = inspect.signature(JsonlTask.__init__)
    __init__.__signature__ = base.replace(parameters=[  # type: ignore[attr-defined]
        p.replace(default=fixed.get(p.name, p.default)) for p in base.parameters.values()])
    cls = type(cls_name, (JsonlTask,), {"name": name, "__doc__": doc, "__init__": __init__, "__module__": __name__})
    __init__.__qualname__ = f"{cls_name}.__init__"
    TASKS.add(name, cls)
    return cls


Gsm8kTask = _preset("gsm8k", "Gsm8kTask",
                    "GSM8K JSONL (question, answer ending '#### N'); gold = N without thousands commas.",
                    prompt_field="question", answer_field="answer", answer_pattern=r"####\s*(.+)$",
                    strip_commas=True)
Math500Task = _preset("math500", "Math500Task", "MATH-500 JSONL (problem, solution, answer, unique_id).",
                      prompt_field="problem", answer_field="answer", solution_field="solution",
                      id_field="unique_id")
Aime24Task = _preset("aime24", "Aime24Task", "AIME 2024 JSONL (id, problem, answer).", prompt_field="problem",
                     answer_field="answer", id_field="id")
Aime25Task = _preset("aime25", "Aime25Task", "AIME 2025 JSONL (problem, answer).", prompt_field="problem",
                     answer_field="answer")


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
                 data_files: Any = None, cache_dir: str | None = None):
        super().__init__(prompt_field, answer_field, answer_pattern, prompt_template, reward, solution_field,
                         id_field, strip_commas)
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

