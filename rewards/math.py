"""Safe, fast math answer verifier and the ``math`` reward.

    is_equivalent("... so the answer is \\boxed{\\dfrac{1}{2}}", "0.5")   # True
    verify_batch(completions, golds, timeout=1.0)                        # list[bool]
    get_reward("math")(completions, golds)                               # list[float]

Three stages, cheapest first:

1. string stage (this process, pure Python, bounded): extract the final answer, normalise
   LaTeX spacing / units / dollars / degrees / thousands separators, compare the normalised
   strings, and compare plain numbers (integers, decimals, fractions, percent, mixed numbers,
   scientific notation) exactly as Fractions. Most answers are decided here.
2. symbolic stage (worker processes): our own parser (rewards.math_parse) builds sympy objects
   and compares them (numeric evaluation at 30 digits, random points for expressions, sets,
   tuples, intervals, matrices, equations). It runs in killable workers: a case that exceeds
   its budget is killed and scored False, so sympy can never stall the caller.
3. an LRU cache of decided pairs.

Model text is never evaluated or handed to a sympy string parser. Nothing here raises on model
output; anything undecidable is False. The first call pays a one-off worker start (~0.5 s,
``warmup()`` does it ahead of time); the per-call budget applies from then on.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from typing import Sequence

from rewards.extract import extract_final
from rewards.math_prepare import prepare
from rewards.registry import register_reward, report

__all__ = ["extract_answer", "is_equivalent", "verify_batch", "math_reward", "warmup", "shutdown",
           "clear_cache", "DEFAULT_TIMEOUT", "extract_final"]

DEFAULT_TIMEOUT = 1.0
STARTUP_TIMEOUT = 60.0     # a fresh worker must be ready within this (not part of a call's budget)
CACHE_SIZE = 65_536
MAX_WORKERS = max(1, min(4, os.cpu_count() or 1))

# --------------------------------------------------------------------------------------------
# string stage (rewards.math_prepare) and its cache
# --------------------------------------------------------------------------------------------
def extract_answer(text: str, formats: str | Sequence[str] = "auto") -> str | None:
    """The final answer of a completion under the extraction policy (rewards.extract), or None."""
    e = extract_final(text, formats)
    return e.text if e is not None else None


_cache: OrderedDict[tuple[str, str], bool] = OrderedDict()
_cache_lock = threading.Lock()


def _cache_get(key: tuple[str, str]) -> bool | None:
    with _cache_lock:
        v = _cache.get(key)
        if v is not None:
            _cache.move_to_end(key)
        return v


def _cache_put(key: tuple[str, str], value: bool) -> None:
    with _cache_lock:
        _cache[key] = value
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)


def clear_cache() -> None:
    """Forget every cached decision (benchmarks measure cold)."""
    with _cache_lock:
        _cache.clear()


# --------------------------------------------------------------------------------------------
# symbolic stage: killable worker processes
# --------------------------------------------------------------------------------------------
_WORKER_CMD = "from rewards.math_worker import main; main()"


class _Worker:
    """One symbolic-stage worker: a separate Python process spoken to with JSON lines on pipes.

    A plain subprocess (not multiprocessing) so it never re-imports the caller's __main__ and never
    forks a multi-threaded trainer; it can be killed at any moment.
    """

    def __init__(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CMD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, close_fds=True,
        )
        self.fd = self.proc.stdout.fileno()
        self.buf = b""
        self.ready = False

    def readline(self, timeout: float) -> bytes | None:
        """One reply line within timeout seconds, or None (timed out or dead)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.fd], [], [], left)
            if not r:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def wait_ready(self) -> bool:
        if not self.ready:
            self.ready = self.readline(STARTUP_TIMEOUT) == b"ready"
        return self.ready

    def send(self, job: tuple[str, str]) -> None:
        self.proc.stdin.write(json.dumps(job).encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=2.0)
        except Exception:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except Exception:
                pass


class _Pool:
    def __init__(self, size: int):
        self.size = size
        self.workers: list[_Worker] = []
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def ensure(self, n: int) -> list[_Worker]:
        """n ready workers (starting or replacing as needed)."""
        if self.pid != os.getpid():  # forked: do not share the parent's pipes
            self.workers = []
            self.pid = os.getpid()
        n = max(1, min(n, self.size))
        while len(self.workers) < n:
            self.workers.append(_Worker())
        for i in range(n):
            w = self.workers[i]
            if w.proc.poll() is not None or not w.wait_ready():
                w.kill()
                w = _Worker()
                self.workers[i] = w
                w.wait_ready()
        return [w for w in self.workers[:n] if w.ready]

    def _replace(self, w: _Worker) -> None:
        """Kill a worker and start its replacement at once (it warms up while others work)."""
        w.kill()
        self.workers[self.workers.index(w)] = _Worker()

    def run(self, jobs: list[tuple[str, str]], budgets: list[float], events: dict | None = None) -> list[bool]:
        """Each job gets its own budget from the moment a worker takes it; overruns are killed.

        A job whose worker overruns its budget, dies mid-job (crash, killed from outside) or
        cannot be started scores False; its worker is replaced. When `events` is given, the
        indices of those jobs are added to its lists "timeouts" and "errors" (crashes, no worker).
        """
        results = [False] * len(jobs)
        if events is not None:
            events.setdefault("timeouts", [])
            events.setdefault("errors", [])

        def fault(kind: str, k: int) -> None:
            results[k] = False
            if events is not None:
                events[kind].append(k)

        if not jobs:
            return results
        with self.lock:
            idle = self.ensure(len(jobs))
            pending = deque(range(len(jobs)))
            busy: dict[int, tuple[_Worker, int, float]] = {}
            while pending or busy:
                while pending and idle:
                    w = idle.pop()
                    k = pending.popleft()
                    try:
                        w.send(jobs[k])
                        busy[w.fd] = (w, k, time.monotonic() + budgets[k])
                    except (OSError, ValueError):  # died while idle: the job has not started, retry it
                        self._replace(w)
                        pending.appendleft(k)
                if not busy:
                    if pending:  # every worker was replaced: wait for fresh ones
                        idle = self.ensure(len(pending))
                        if not idle:  # no worker can start at all: give up rather than spin
                            while pending:
                                fault("errors", pending.popleft())
                    continue
                now = time.monotonic()
                first = min(d for _, _, d in busy.values())
                try:
                    ready, _, _ = select.select(list(busy), [], [], max(0.0, first - now))
                except (OSError, ValueError):
                    ready = []
                for fd in ready:
                    w, k, d = busy[fd]
                    try:
                        chunk = os.read(fd, 65536)
                    except OSError:
                        chunk = b""
                    if not chunk:  # the worker died mid-job
                        del busy[fd]
                        fault("errors", k)
                        self._replace(w)
                        continue
                    w.buf += chunk
                    if b"\n" in w.buf:
                        line, w.buf = w.buf.split(b"\n", 1)
                        del busy[fd]
                        results[k] = line.strip() == b"1"
                        idle.append(w)
                now = time.monotonic()
                for fd, (w, k, d) in list(busy.items()):
                    if now >= d:
                        del busy[fd]
                        fault("timeouts", k)
                        self._replace(w)
        return results

    def close(self) -> None:
        for w in self.workers:
            w.kill()
        self.workers = []


_pool: _Pool | None = None
_pool_lock = threading.Lock()


def _get_pool() -> _Pool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _Pool(MAX_WORKERS)
        return _pool


def warmup(workers: int = 1) -> None:
    """Start the worker processes now, so the first verification does not pay their start."""
    p = _get_pool()
    with p.lock:
        p.ensure(max(1, workers))


def shutdown() -> None:
    """Stop the worker processes (they restart on the next call that needs them)."""
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.close()
            _pool = None


atexit.register(shutdown)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def is_equivalent(answer: str, gold: str, timeout: float = DEFAULT_TIMEOUT, formats: str | Sequence[str] = "auto") -> bool:
    """True when ``answer`` (a bare answer or a whole completion) is mathematically equal to ``gold``.

    Never raises; returns within ``timeout`` seconds (once the workers are started), False when
    the budget runs out or the answer cannot be read.
    """
    return verify_batch([answer], [gold], timeout=timeout, formats=formats)[0]


def verify_batch(completions: Sequence[str], golds: Sequence[str], timeout: float = DEFAULT_TIMEOUT,
                 formats: str | Sequence[str] = "auto") -> list[bool]:
    """Verify many (completion, gold) pairs; each pair gets ``timeout`` seconds of symbolic work.

    The string stage runs here; the rest is spread over a pool of killable worker processes, so
    one slow case costs at most its own budget and never blocks the others. Never raises.
    A pair whose worker times out or crashes is False; inside a `get_reward(...)` call those
    samples are counted (rewards.registry.report) as "timeouts" / "errors".
    """
    try:
        n = min(len(completions), len(golds))
    except Exception:
        return []
    out = [False] * n
    todo: dict[tuple[str, str], list[int]] = {}
    budgets: dict[tuple[str, str], float] = {}
    for i in range(n):
        t0 = time.monotonic()
        try:
            prep = prepare(completions[i], golds[i], formats)
        except Exception:
            prep = False
        if isinstance(prep, bool):
            out[i] = prep
            continue
        hit = _cache_get(prep)
        if hit is not None:
            out[i] = hit
            continue
        todo.setdefault(prep, []).append(i)
        budgets[prep] = max(0.01, timeout - (time.monotonic() - t0))
    if todo:
        keys = list(todo)
        events: dict[str, list[int]] = {"timeouts": [], "errors": []}
        try:
            res = _get_pool().run(keys, [budgets[k] for k in keys], events)
        except Exception:
            res = [False] * len(keys)
            events = {"timeouts": [], "errors": list(range(len(keys)))}
        crashed = set(events["errors"])
        for j, (k, r) in enumerate(zip(keys, res)):
            if j not in crashed:  # a crashed or missing worker decided nothing: retry next time
                _cache_put(k, r)  # (a timeout is cached: the same hostile case never costs twice)
            for i in todo[k]:
                out[i] = r
        for kind, idx in events.items():
            n_samples = sum(len(todo[keys[j]]) for j in idx)
            if n_samples:
                report(kind, n_samples)
    return out


@register_reward("math", "1.0 when the completion's final answer (\\boxed{} etc.) equals the gold answer "
                         "(MATH / GSM8K / AIME; safe sympy check with a per-case time budget), else 0.0")
def math_reward(completions: Sequence[str], golds: Sequence[str], formats: str | Sequence[str] = "auto") -> list[float]:
    """1.0 / 0.0 per completion: is its final answer (read under `formats`, see rewards.extract)
    equivalent to the gold answer."""
    return [1.0 if ok else 0.0 for ok in verify_batch(completions, golds, formats=formats)]
