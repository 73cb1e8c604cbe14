"""Time and peak extra memory of zoo.ops.logprobs_and_entropy (fused LM-head op) vs two baselines.

    python benchmarks/bench_ops.py            # default grid: ~3 min on 2 idle cores, ~6 min on a loaded machine
    python benchmarks/bench_ops.py --threads 1 --clock cpu   # CPU time: robust when other jobs share the cores
    python benchmarks/bench_ops.py --quick    # a few small cases, about a minute
    python benchmarks/bench_ops.py --device cuda --dtype bf16

Methods (all compute logp of the targets and the full-vocabulary entropy from hidden (N, D) and an
LM head (V, D), temperature 1):
  ours   zoo.ops.logprobs_and_entropy at its default chunking (entropy_grad=False)
  naive  (a) full logits h @ W.T, log_softmax, gather, entropy from the same log_softmax (detached)
  trl    (b) TRL's CPU path: full logits h @ W.T viewed as (B, T, V) with T = 256 tokens per sequence,
         then trl.trainer.utils.selective_log_softmax_and_entropy(..., entropy_requires_grad=False)
         (or selective_log_softmax + entropy_from_logits in older TRL); skipped when TRL is absent.
Modes: "fwd" = forward under torch.no_grad(); "fwd+bwd" = forward, then logp.sum().backward() for the
gradients wrt hidden and weight (entropy computed but unused).

Time: best of --reps runs after one warm-up run, methods interleaved so that they share the same
machine conditions (the ratios compare runs of the same process).
Peak extra memory: on CPU, the warm-up run of each (case, method, mode) is measured as
VmHWM - VmRSS from /proc/self/status, after garbage collection, malloc_trim(0) and resetting the
high-water mark (`echo 5 > /proc/self/clear_refs`); only the inputs exist before the reset. On CUDA:
torch.cuda.max_memory_allocated() - memory_allocated() before the run. In fwd+bwd mode the size of the
gradient tensors of hidden and weight (outputs that every method must return) is subtracted, so the
figure is the working memory of the op at its peak.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zoo import fused, ops  # noqa: E402

SEQ = 256                                   # tokens per sequence for TRL's (B, T, V) layout
CLOCK = time.perf_counter                   # --clock cpu: time.process_time (use with --threads 1)

try:                                        # TRL is optional
    from trl.trainer import utils as _trl_utils
    _TRL_FUSED = getattr(_trl_utils, "selective_log_softmax_and_entropy", None)
    _TRL_SLS = _trl_utils.selective_log_softmax
    _TRL_ENT = _trl_utils.entropy_from_logits
    import trl as _trl
    TRL_NOTE = f"trl {_trl.__version__}: " + ("selective_log_softmax_and_entropy" if _TRL_FUSED
                                              else "selective_log_softmax + entropy_from_logits")
except Exception as exc:                    # pragma: no cover - depends on the environment
    _TRL_FUSED = _TRL_SLS = _TRL_ENT = None
    TRL_NOTE = f"trl not importable ({type(exc).__name__}): column (b) skipped"

_LIBC = None
try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:                             # pragma: no cover
    pass


# ---------------------------------------------------------------------------------------------
# the three methods: f(h, W, y) -> (logp (N,), entropy (N,))
# ---------------------------------------------------------------------------------------------
def run_ours(h, W, y):
    return ops.logprobs_and_entropy(h, W, y, 1.0, entropy_grad=False)


def run_naive(h, W, y):
    logits = (h @ W.T).float()                                            # (N, V)
    ls = torch.log_softmax(logits, -1)
    lp = ls.gather(1, y[:, None]).squeeze(1)
    lsd = ls.detach()
    ent = -(lsd.exp() * lsd).sum(-1)
    return lp, ent


def run_trl(h, W, y):
    N = h.shape[0]
    B = max(1, N // SEQ)
    logits = (h @ W.T).view(B, N // B, -1)                                # (B, T, V)
    ids = y.view(B, N // B)
    if _TRL_FUSED is not None:
        lp, ent = _TRL_FUSED(logits, ids, entropy_requires_grad=False, temperature=1.0)
    else:
        lp = _TRL_SLS(logits, ids)
        with torch.no_grad():
            ent = _TRL_ENT(logits)
    return lp.reshape(N), ent.reshape(N)


METHODS = {"ours": run_ours, "naive": run_naive, "trl": run_trl}


# ---------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------
def _status_kb() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0])
    return out


class PeakMem:
    """Peak extra memory (bytes) of the code run inside the context."""

    def __init__(self, device: torch.device):
        self.device = device
        self.bytes = float("nan")

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            if _LIBC is not None:
                _LIBC.malloc_trim(0)
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.base = _status_kb()["VmRSS"] * 1024
            except OSError:                 # pragma: no cover - not Linux / not allowed
                self.base = None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self.base
        elif self.base is not None:
            self.bytes = _status_kb()["VmHWM"] * 1024 - self.base
        return False


def one_run(fn, h, W, y, mode: str):
    if mode == "fwd":
        with torch.no_grad():
            lp, ent = fn(h, W, y)
        del lp, ent
    else:
        h.grad = W.grad = None
        lp, ent = fn(h, W, y)
        lp.sum().backward()
        del lp, ent
        h.grad = W.grad = None
    if h.device.type == "cuda":
        torch.cuda.synchronize()


def bench_case(D, V, N, mode, methods, reps, device, dtype, gen):
    h = torch.randn(N, D, generator=gen).to(device, dtype)
    W = (torch.randn(V, D, generator=gen) * (2.0 / math.sqrt(D))).to(device, dtype)
    y = torch.randint(0, V, (N,), generator=gen).to(device)
    if mode != "fwd":
        h.requires_grad_(True)
        W.requires_grad_(True)
    res = {m: {"t": float("inf"), "mem": float("nan")} for m in methods}
    # the gradients of hidden and weight are outputs every method must materialise: not counted as extra
    grads = 0 if mode == "fwd" else (h.numel() + W.numel()) * h.element_size()
    for m in methods:                                   # warm-up run = memory run
        with PeakMem(device) as pm:
            one_run(METHODS[m], h, W, y, mode)
        res[m]["mem"] = pm.bytes - grads
    for _ in range(reps):
        for m in methods:
            gc.collect()
            t0 = CLOCK()
            one_run(METHODS[m], h, W, y, mode)
            res[m]["t"] = min(res[m]["t"], CLOCK() - t0)
    return res


def default_grid(quick: bool, full: bool):
    if quick:
        return [(256, 32000, 256), (256, 32000, 1024), (896, 32000, 256), (256, 152000, 256)]
    if full:
        return [(D, V, N) for D in (256, 896) for V in (32000, 152000) for N in (256, 1024, 2048)]
    return [(256, 32000, 256), (256, 32000, 1024), (256, 32000, 2048),
            (256, 152000, 256), (256, 152000, 1024),
            (896, 32000, 256), (896, 32000, 1024),
            (896, 152000, 256)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few small cases")
    ap.add_argument("--full", action="store_true", help="every D x V x N (256/896 x 32k/152k x 256/1024/2048)")
    ap.add_argument("--cases", default=None, help="explicit cases 'D:V:N,D:V:N'")
    ap.add_argument("--modes", default="fwd,fwd+bwd")
    ap.add_argument("--reps", type=int, default=2, help="timed runs per case after the warm-up (best kept)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="wall: perf_counter; cpu: process CPU time, robust to other processes on a shared "
                         "machine (meaningful with --threads 1)")
    ap.add_argument("--rows", type=int, default=0, help="override zoo.fused.FUSED_ROWS (tuning)")
    ap.add_argument("--tile-elems", type=int, default=0, help="override zoo.fused.FUSED_TILE_ELEMS (tuning)")
    ap.add_argument("--no-trl", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.rows:
        fused.FUSED_ROWS = args.rows         # read there by logprobs_and_entropy
    if args.tile_elems:
        fused.FUSED_TILE_ELEMS = args.tile_elems
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    methods = ["ours", "naive"] + ([] if (args.no_trl or _TRL_SLS is None) else ["trl"])
    if args.cases:
        grid = [tuple(int(x) for x in c.split(":")) for c in args.cases.split(",")]
    else:
        grid = default_grid(args.quick, args.full)
    modes = args.modes.split(",")
    gen = torch.Generator().manual_seed(0)

    # one tiny warm-up of every method (lazy initialisation out of the first memory figure)
    for mode in modes:
        bench_case(64, 4096, 64, mode, methods, 0, device, dtype, gen)

    cpu_name = ""
    if device.type == "cpu":
        try:
            cpu_name = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
    else:
        cpu_name = torch.cuda.get_device_name(device)
    print(f"# bench_ops: torch {torch.__version__}, device {device} ({cpu_name}), {torch.get_num_threads()} threads, "
          f"dtype {args.dtype}, clock {args.clock}, reps {args.reps}; {TRL_NOTE}")
    print(f"# ours at its defaults: FUSED_ROWS={fused.FUSED_ROWS}, FUSED_TILE_ELEMS={fused.FUSED_TILE_ELEMS}, "
          f"FUSED_TILE_FRACTION={fused.FUSED_TILE_FRACTION}, DIRECT_MAX_ELEMS={fused.DIRECT_MAX_ELEMS}; "
          f"load average {os.getloadavg()[0]:.1f}")
    has_trl = "trl" in methods
    hdr = ("| mode | D | V | N | ours ms | naive ms | trl ms | trl/ours time | naive/ours time "
           "| ours MB | naive MB | trl MB | ours/naive mem |")
    print()
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    rows = []
    t_start = time.perf_counter()
    for mode in modes:
        for (D, V, N) in grid:
            r = bench_case(D, V, N, mode, methods, args.reps, device, dtype, gen)
            to, tn = r["ours"]["t"], r["naive"]["t"]
            tt = r["trl"]["t"] if has_trl else float("nan")
            mo, mn = r["ours"]["mem"], r["naive"]["mem"]
            mt = r["trl"]["mem"] if has_trl else float("nan")
            row = dict(mode=mode, D=D, V=V, N=N, t_ours=to, t_naive=tn, t_trl=tt,
                       speed_trl=tt / to, speed_naive=tn / to, mem_ratio=mo / mn if mn > 0 else float("nan"))
            rows.append(row)
            print(f"| {mode} | {D} | {V} | {N} | {to * 1e3:.0f} | {tn * 1e3:.0f} | {tt * 1e3:.0f} | "
                  f"{row['speed_trl']:.2f}x | {row['speed_naive']:.2f}x | {mo / 2**20:.0f} | {mn / 2**20:.0f} | "
                  f"{mt / 2**20:.0f} | {row['mem_ratio']:.3f} |", flush=True)
    print(f"\n# wall {time.perf_counter() - t_start:.0f} s")

    # targets (stated for CPU at the op's default chunking)
    def check(name, sel, key, ok):
        vals = [r[key] for r in rows if sel(r)]
        if not vals or all(math.isnan(v) for v in vals):
            print(f"SKIP  {name}: no data")
            return
        worst = min(vals) if key != "mem_ratio" else max(vals)
        gmean = math.exp(sum(math.log(v) for v in vals) / len(vals))
        verdict = "PASS" if all(ok(v) for v in vals) else "FAIL"
        print(f"{verdict}  {name}: worst {worst:.2f}, geo-mean {gmean:.2f} over {len(vals)} cases")

    print()
    if has_trl:
        check("fwd (no grad) >= 1.5x faster than trl, D=256", lambda r: r["mode"] == "fwd" and r["D"] == 256,
              "speed_trl", lambda v: v >= 1.5)
        check("fwd (no grad) >= 1.5x faster than trl, D=896", lambda r: r["mode"] == "fwd" and r["D"] == 896,
              "speed_trl", lambda v: v >= 1.5)
        check("fwd+bwd >= 1.2x faster than trl, D=256", lambda r: r["mode"] == "fwd+bwd" and r["D"] == 256,
              "speed_trl", lambda v: v >= 1.2)
        check("fwd+bwd no slower than trl (>= 1.0x), D=896", lambda r: r["mode"] == "fwd+bwd" and r["D"] == 896,
              "speed_trl", lambda v: v >= 1.0)
    else:
        print(f"SKIP  speed targets vs trl: {TRL_NOTE}")
    check("peak extra memory <= 0.3x naive (all cases, both modes)", lambda r: True, "mem_ratio",
          lambda v: v <= 0.3)
    return rows


if __name__ == "__main__":
    main()
