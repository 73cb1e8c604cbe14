"""Seeded synthetic tasks: the `SyntheticTask` split machinery, the `arith` task and the charset.

Synthetic splits are disjoint by construction: each canonical problem goes to "eval" iff a stable
sha256 hash of its canonical key (salted with the task name) falls below `eval_fraction`; each
split samples only from its own side. Within a split, problems are a seeded shuffle of that side
(without replacement), so (split, n, seed) always gives the same list and a smaller n gives a
prefix of a larger one. Asking for more problems than the side holds is a ValueError.

The `countdown` task (and its expression solver) is in `zoo.tasks_countdown`.
"""
from __future__ import annotations

import hashlib
import inspect
import random
from typing import Hashable, Iterator, Sequence

from zoo.registry import TASKS
from zoo.tasks_base import Task, _check_n, _check_split
from zoo.types import Problem

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
