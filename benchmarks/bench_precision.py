"""Peak memory and step time of the precision / memory modes, on a 4-layer Qwen2-shaped model.

    python benchmarks/bench_precision.py                  # CPU: 8 responses x 512 tokens per step
    python benchmarks/bench_precision.py --device cuda --hidden 896 --layers 8 --vocab 32000

Each mode runs in its own process (so peak RSS is its own; on CUDA, torch.cuda.max_memory_allocated)
with the same random-weight Qwen2 model (zoo.tiny_hf, byte-level BPE tokenizer), the same prompts
and exactly `--length` response tokens (EOS ignored): 1 warm-up step, then `--steps` timed full RL
steps (rollout + scoring + update). Printed per mode: step, generation and update seconds, the
peak memory of the steps over the memory before them (activations, gradients, optimizer state),
and each as a ratio to the fp32 baseline measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODES = {   # name -> (what it is, config sections)
    "fp32": ("fp32 parameters and compute", {}),
    "bf16": ("bf16 compute, fp32 master weights", {"model": {"dtype": "bfloat16"}}),
    "bf16-params": ("bf16 parameters (lossy)", {"model": {"dtype": "bfloat16", "param_dtype": "bfloat16"}}),
    "fp32+ckpt": ("fp32 + gradient checkpointing", {"train": {"gradient_checkpointing": True}}),
    "bf16+ckpt": ("bf16 compute + gradient checkpointing",
                  {"model": {"dtype": "bfloat16"}, "train": {"gradient_checkpointing": True}}),
    "lora": ("LoRA r=16, fp32", {"model": {"lora": {"r": 16}}}),
    "lora+bf16+ckpt": ("LoRA r=16 + bf16 compute + checkpointing",
                       {"model": {"dtype": "bfloat16", "lora": {"r": 16}}, "train": {"gradient_checkpointing": True}}),
}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args) -> None:
    import torch

    from rewards.registry import register_reward
    from zoo.config import config_from_dict
    from zoo.trainer import Trainer

    @register_reward("_bench_parity")
    def _parity(completions, golds):
        return [float(len(c) % 2) for c in completions]

    sections = json.loads(args.mode_json)
    raw = {"model": {"name_or_path": args.model, "device": args.device, **sections.get("model", {})},
           "task": {"name": "countdown", "train_size": 256, "eval_size": 4}, "reward": {"name": "_bench_parity"},
           "algorithm": {"preset": "grpo", "loss_agg": "token-mean"},
           "rollout": {"group_size": args.group, "prompts_per_step": args.prompts, "max_new_tokens": args.length,
                       "ignore_eos": True},
           "train": {"steps": args.steps + 1, "lr": 1.0e-5, "threads": args.threads, "sparse_backward": False,
                     **sections.get("train", {})},
           "eval": {"every": 0, "n": 4, "k": 0, "at_start": False},
           "checkpoint": {"every": 0}, "log": {"progress": False, "tensorboard": False}}
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(config_from_dict(raw), Path(d) / "run", log=lambda *a: None)
        t.step()                                                   # warm-up
        cuda = t.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
        else:
            base = _rss_mb()
        gen = upd = 0.0
        t0 = time.perf_counter()
        for _ in range(args.steps):
            m = t.step()
            gen += m.get("perf/rollout_seconds", 0.0)
            upd += m.get("perf/train_seconds", 0.0)
        if cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        step = (time.perf_counter() - t0) / args.steps
        n_train = sum(p.numel() for p in t.model.parameters() if p.requires_grad)
    print(json.dumps({"step_s": step, "gen_s": gen / args.steps, "update_s": upd / args.steps,
                      "base_mb": base, "peak_mb": peak, "trainable": n_train}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=2048, help="BPE tokenizer size (trained here)")
    ap.add_argument("--model-vocab", type=int, default=0, help="pad the model's vocabulary to this (151936 = Qwen2.5)")
    ap.add_argument("--kv-heads", type=int, default=0, help="default heads // 2")
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", default="", help="comma-separated subset of: " + ", ".join(MODES))
    ap.add_argument("--model", default="")
    ap.add_argument("--mode-json", default="")
    args = ap.parse_args()
    if args.mode_json:
        return child(args)
    from zoo.tiny_hf import build_tiny_hf

    work = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    model = build_tiny_hf("qwen2", work / "qwen2", layers=args.layers, hidden=args.hidden, heads=args.heads,
                          kv_heads=args.kv_heads or max(1, args.heads // 2), intermediate=args.intermediate,
                          vocab_size=args.vocab, max_positions=args.length + 128, model_vocab=args.model_vocab)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()] or list(MODES)
    print(f"Qwen2-shaped random model: {args.layers} layers, hidden {args.hidden}, "
          f"vocab {max(args.vocab, args.model_vocab)}; "
          f"{args.prompts}x{args.group} responses x {args.length} tokens per step; {args.device}, "
          f"{args.threads} thread(s); {args.steps} timed steps after 1 warm-up; each mode in its own process")
    rows = {}
    for name in modes:
        cmd = [sys.executable, __file__, "--model", str(model), "--mode-json", json.dumps(MODES[name][1])]
        for k in ("device", "length", "prompts", "group", "steps", "threads"):
            cmd += [f"--{k}", str(getattr(args, k))]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"{name}: failed\n{p.stderr[-2000:]}")
            continue
        rows[name] = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"  done: {name}: {json.dumps(rows[name])}", flush=True)
    ref = rows.get("fp32")
    print("\n| mode | trainable params | step s | gen s | update s | step vs fp32 | peak - before (MB) | vs fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        extra = r["peak_mb"] - r["base_mb"]
        rs = f"{r['step_s'] / ref['step_s']:.2f}x" if ref else "-"
        rm = f"{extra / max(ref['peak_mb'] - ref['base_mb'], 1e-9):.2f}x" if ref else "-"
        print(f"| {name}: {MODES[name][0]} | {r['trainable']:,} | {r['step_s']:.2f} | {r['gen_s']:.2f} | {r['update_s']:.2f} | {rs} "
              f"| {extra:.0f} | {rm} |")


if __name__ == "__main__":
    main()
