"""LM-head backward of zoo.ops.logprobs_and_entropy with grad_rows (rho = 0.2) vs the dense backward.

    python benchmarks/bench_sparse.py [--quick] [--rho 0.2] [--threads 1 --clock cpu]

Loss = Σ w_i logp_i with w_i = 0 outside a random 20% of the rows (the top-entropy / 80-20 setting).
Sparse: grad_rows = those rows; dense: the same op with grad_rows=None and the same weights. Only the
backward call is timed (a fresh forward precedes each, untimed); best of --reps runs, the two
interleaved. Also prints the max |difference| between the two runs' gradients (they must agree).
Target: the sparse backward takes >= 3x less time than the dense one.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zoo import ops  # noqa: E402


def run(D, V, N, rho, reps, clock, device, dtype, gen):
    h = torch.randn(N, D, generator=gen).to(device, dtype).requires_grad_()
    W = (torch.randn(V, D, generator=gen) * (2.0 / math.sqrt(D))).to(device, dtype).requires_grad_()
    y = torch.randint(0, V, (N,), generator=gen).to(device)
    rows = torch.zeros(N, dtype=torch.bool)
    rows[torch.randperm(N, generator=gen)[: max(1, round(rho * N))]] = True
    rows = rows.to(device)
    w = torch.randn(N, generator=gen).to(device) * rows

    def backward(sparse: bool):
        h.grad = W.grad = None
        lp, _ = ops.logprobs_and_entropy(h, W, y, 1.0, entropy_grad=False, grad_rows=rows if sparse else None)
        loss = (lp * w).sum()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = clock()
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return clock() - t0, h.grad.float().clone(), W.grad.float().clone()

    best = {True: float("inf"), False: float("inf")}
    out = {}
    for _ in range(reps + 1):                      # first round = warm-up (also gives the gradients)
        for sparse in (False, True):
            dt, gh, gw = backward(sparse)
            if sparse in out:
                best[sparse] = min(best[sparse], dt)
            out[sparse] = (gh, gw)
    diff = max((out[True][0] - out[False][0]).abs().max().item(), (out[True][1] - out[False][1]).abs().max().item())
    scale = max(out[False][0].abs().max().item(), out[False][1].abs().max().item())
    return best[False], best[True], diff, scale


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rho", type=float, default=0.2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="cpu: process CPU time (robust on a shared machine; use with --threads 1)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if args.quick:
        grid = [(256, 32000, 1024), (896, 32000, 1024)]
    else:
        grid = [(256, 32000, 1024), (256, 32000, 2048), (256, 152000, 1024),
                (896, 32000, 1024), (896, 32000, 2048), (896, 152000, 512)]
    gen = torch.Generator().manual_seed(0)
    print(f"# bench_sparse: torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
          f"dtype {args.dtype}, clock {args.clock}, reps {args.reps}, rho {args.rho}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print()
    print("| D | V | N | dense bwd ms | sparse bwd ms | dense/sparse | max abs grad diff (max abs grad) |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    t_start = time.perf_counter()
    for D, V, N in grid:
        td, ts, diff, scale = run(D, V, N, args.rho, args.reps, clock, device, dtype, gen)
        ratios.append(td / ts)
        print(f"| {D} | {V} | {N} | {td * 1e3:.0f} | {ts * 1e3:.0f} | {td / ts:.2f}x | {diff:.1e} ({scale:.1e}) |",
              flush=True)
    print(f"\n# wall {time.perf_counter() - t_start:.0f} s\n")
    gmean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    verdict = "PASS" if min(ratios) >= 3.0 else "FAIL"
    print(f"{verdict}  sparse backward (rho={args.rho}) >= 3x less time than dense: worst {min(ratios):.2f}x, "
          f"geo-mean {gmean:.2f}x over {len(ratios)} cases")


if __name__ == "__main__":
    main()
