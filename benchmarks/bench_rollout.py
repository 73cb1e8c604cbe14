"""Rollout speed: our KV-cache sampler vs `model.generate` on the same model, prompts and lengths.

    python benchmarks/bench_rollout.py [--model DIR] [--batch 128] [--new 32] [--repeats 5]
                                       [--group G] [--eos] [--compile] [--device cuda --dtype bf16]

Both sample at T=1 with no top-k/top-p (HF's default top_k=50 is switched off) and the same
max_new_tokens. By default HF is forced to the same length (min_new_tokens) and ours treats EOS
as an ordinary token, so both do the same work; ours additionally records per-token log-probs,
temperatures and entropy (a per-token temperature hook is installed). Prints the median time of
each and the ratio HF / ours (> 1 means ours is faster), measured in the same run, interleaved.

--group G: the batch is batch/G distinct prompts repeated G times (a GRPO rollout), which our
sampler prefills once per distinct prompt. --eos: both stop at EOS (ours drops finished rows from
the batch; HF keeps computing them until every row is done) - use a trained --model for that.
--compile: ours runs its decode step through torch.compile (compiled in the warm-up).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="", help="HF model dir (default: a fresh tiny model)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--group", type=int, default=1, help="samples per distinct prompt")
    ap.add_argument("--eos", action="store_true", help="stop at EOS (both); default: exactly --new tokens")
    ap.add_argument("--compile", action="store_true", help="torch.compile our decode step")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from zoo.data import get_task
    from zoo.model import build_char_tokenizer, build_tiny_model, encode_prompts, load_policy, resolve_device
    from zoo.rollout import generate

    dev = resolve_device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if args.model:
        model, tok = load_policy(args.model, device=str(dev))
    else:
        tok = build_char_tokenizer()
        model = build_tiny_model(tok)
    model.to(device=dev, dtype=dtype).eval()
    n_prompts = max(1, args.batch // args.group)
    probs = get_task("countdown").problems("train", n_prompts, 0)
    ids, mask = encode_prompts(tok, [p.prompt for p in probs for _ in range(args.group)])
    ids, mask = ids.to(dev), mask.to(dev)
    B = ids.shape[0]
    hot = lambda H, t: torch.where(H > 1.0, 1.0, t) * torch.ones_like(H)  # noqa: E731  (per-token temperature path)
    lengths = {}
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def ours():
        out = generate(model, tok, ids, mask, max_new_tokens=args.new, temperature=1.0, temperature_hook=hot,
                       generator=torch.Generator().manual_seed(0), stop_at_eos=args.eos, compile=args.compile)
        lengths["zoo generate"] = float(out["response_mask"].sum(-1).float().mean())

    @torch.no_grad()
    def hf():
        kw = {} if args.eos else {"min_new_tokens": args.new}
        out = model.generate(input_ids=ids, attention_mask=mask.long(), do_sample=True, top_k=0, top_p=1.0,
                             temperature=1.0, max_new_tokens=args.new, pad_token_id=tok.pad_token_id, **kw)
        resp = out[:, ids.shape[1]:]
        is_eos = resp == tok.eos_token_id
        valid = (is_eos.long().cumsum(-1) - is_eos.long()) == 0
        lengths["transformers generate"] = float(valid.sum(-1).float().mean())

    for fn in (ours, hf):  # warm-up (and compilation)
        fn()
    times = {"zoo generate": [], "transformers generate": []}
    for _ in range(args.repeats):  # interleaved, so load changes hit both
        for name, fn in (("zoo generate", ours), ("transformers generate", hf)):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'sampler':<22}{'median s':>10}{'tokens/s':>12}{'mean len':>10}")
    for k, m in med.items():
        print(f"{k:<22}{m:>10.3f}{B * lengths[k] / m:>12.0f}{lengths[k]:>10.1f}")
    print(f"ratio (HF time / zoo time): {med['transformers generate'] / med['zoo generate']:.2f}x  "
          f"(batch {B} = {n_prompts} prompts x {args.group}, {args.new} new tokens"
          f"{', stop at EOS' if args.eos else ' exactly'}, {args.threads} thread(s), {dev} {args.dtype}, "
          f"{args.repeats} repeats{', compiled decode' if args.compile else ''})")


if __name__ == "__main__":
    main()
