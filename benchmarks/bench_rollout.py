"""Rollout speed: our KV-cache sampler vs `model.generate` on the same model, prompts and lengths.

    python benchmarks/bench_rollout.py [--model DIR] [--batch 128] [--new 32] [--repeats 5]

Both sample at T=1 with no top-k/top-p (HF's default top_k=50 is switched off) and the same
max_new_tokens; HF is forced to the same length (min_new_tokens) so both do the same work, and
ours additionally records per-token log-probs, temperatures and entropy. Prints the median time
of each and the ratio HF / ours (> 1 means ours is faster), measured in the same run.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="", help="HF model dir (default: a fresh tiny model)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from zoo.data import get_task
    from zoo.model import build_char_tokenizer, build_tiny_model, encode_prompts, load_policy
    from zoo.rollout import generate

    if args.model:
        model, tok = load_policy(args.model)
    else:
        tok = build_char_tokenizer()
        model = build_tiny_model(tok)
    model.eval()
    probs = get_task("countdown").problems("train", args.batch, 0)
    ids, mask = encode_prompts(tok, [p.prompt for p in probs])
    never_eos = lambda H, t: None  # noqa: E731  (placeholder hook: the per-token temperature path is exercised)

    def ours():  # same length for both: no early stop
        generate(model, tok, ids, mask, max_new_tokens=args.new, temperature=1.0, temperature_hook=never_eos,
                 generator=torch.Generator().manual_seed(0), stop_at_eos=False)

    @torch.no_grad()
    def hf():
        model.generate(input_ids=ids, attention_mask=mask.long(), do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                       max_new_tokens=args.new, min_new_tokens=args.new, pad_token_id=tok.pad_token_id)

    for fn in (ours, hf):  # warm-up
        fn()
    t_ours, t_hf = [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit both
        for fn, acc in ((ours, t_ours), (hf, t_hf)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    mo, mh = statistics.median(t_ours), statistics.median(t_hf)
    toks = args.batch * args.new
    print(f"{'sampler':<22}{'median s':>10}{'tokens/s':>12}")
    print(f"{'zoo generate':<22}{mo:>10.3f}{toks / mo:>12.0f}")
    print(f"{'transformers generate':<22}{mh:>10.3f}{toks / mh:>12.0f}")
    print(f"ratio (HF time / zoo time): {mh / mo:.2f}x  (batch {args.batch}, {args.new} new tokens, "
          f"{args.threads} thread(s), {args.repeats} repeats)")


if __name__ == "__main__":
    main()
