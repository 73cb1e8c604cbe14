"""Worker process of the math verifier (started by rewards.math; not for direct use).

Reads JSON lines ``[answer, gold]`` on stdin, writes ``1`` or ``0`` per line on stdout. Runs the
symbolic stage under an address-space limit; the parent kills it when a case overruns its budget.
"""
from __future__ import annotations

import json
import os
import sys
import time

MEMORY_LIMIT_BYTES = 2 << 30


def main() -> None:
    """Serve verification requests until stdin closes."""
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except Exception:
        pass
    sys.setrecursionlimit(4000)
    from rewards.math_parse import symbolic_equivalent

    try:  # tests simulate a stalled sympy with this; never set in production
        delay = float(os.environ.get("REWARDS_MATH_TEST_DELAY", "0") or 0)
    except ValueError:
        delay = 0.0
    out = sys.stdout.buffer
    out.write(b"ready\n")
    out.flush()
    for line in sys.stdin.buffer:
        if delay > 0:
            time.sleep(delay)
        try:
            a, g = json.loads(line)
            ok = bool(symbolic_equivalent(str(a), str(g)))
        except BaseException:  # noqa: BLE001 - one bad case never ends the worker
            ok = False
        out.write(b"1\n" if ok else b"0\n")
        out.flush()


if __name__ == "__main__":
    main()
