"""The `countdown` task and its expression machinery: reachable values, solver, worked steps.

Built on `zoo.tasks_synthetic.SyntheticTask` (hash-assigned, disjoint train/eval sides).
"""
from __future__ import annotations

import itertools
import json
from functools import lru_cache
from typing import Iterator

from zoo.registry import TASKS
from zoo.tasks_synthetic import SyntheticTask
from zoo.types import Problem


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
