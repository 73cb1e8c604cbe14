"""Token entropy statistics of a model's rollouts, next to the 80/20 paper's (Qwen3-8B, AIME).

    python benchmarks/entropy_stats.py --model runs/base/tiny-arith --config configs/quickstart.yaml

Samples `--k` completions per eval problem at the config's rollout temperature and reports the
share of tokens below 0.01 nats, the 50/80/95th percentiles, and the most frequent tokens among
the high-entropy ones (H >= 80th percentile), with the context they appear in.
"""
from __future__ import annotations

import argparse
import collections

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--config", default="configs/quickstart.yaml")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from zoo.config import load_config
    from zoo.data import get_task
    from zoo.model import load_policy
    from zoo.ops import quantile_kth
    from zoo.rollout import HFEngine

    cfg = load_config(args.config)
    model, tok = load_policy(args.model)
    problems = get_task(cfg.task.name, **cfg.task.params).problems("eval", args.n, cfg.task.seed)
    b = HFEngine(model, tok, batch_size=256).sample(problems, args.k, max_new_tokens=cfg.rollout.max_new_tokens,
                                                    temperature=cfg.rollout.temperature,
                                                    generator=torch.Generator().manual_seed(0))
    H = b.entropy[b.response_mask]
    p80 = float(quantile_kth(H, 0.8))
    high = collections.Counter()
    kinds = collections.Counter()
    for ids, ent, m in zip(b.response_ids.tolist(), b.entropy.tolist(), b.response_mask.tolist()):
        toks = [tok.decode([t]) if t != tok.eos_token_id else "<eos>" for t, v in zip(ids, m) if v]
        for i, (t, h) in enumerate(zip(toks, ent)):
            if h >= p80:
                prev = toks[i - 1] if i else "^"
                high[t] += 1
                kinds["after '='" if prev == "=" else ("after ' '" if prev == " " else "inside a number or expression")] += 1
    n_high = sum(high.values())
    print(f"model {args.model}: {len(b.texts)} completions, {H.numel()} tokens, T = {cfg.rollout.temperature}")
    print(f"{'statistic':<28}{'this model':>12}{'80/20 paper':>14}")
    print(f"{'share of tokens H < 0.01':<28}{float((H < 0.01).float().mean()):>12.3f}{'> 0.5':>14}")
    print(f"{'50th percentile (nats)':<28}{float(quantile_kth(H, 0.5)):>12.3f}{'-':>14}")
    print(f"{'80th percentile (nats)':<28}{p80:>12.3f}{'0.672':>14}")
    print(f"{'95th percentile (nats)':<28}{float(quantile_kth(H, 0.95)):>12.3f}{'-':>14}")
    print(f"{'mean (nats)':<28}{float(H.mean()):>12.3f}{'-':>14}")
    print(f"{'share above 0.672 (h_fork)':<28}{float((H > 0.672).float().mean()):>12.3f}{'0.20':>14}")
    print(f"most frequent high-entropy tokens (H >= p80, {n_high} tokens):")
    print("  " + ", ".join(f"{t!r} {c / n_high:.0%}" for t, c in high.most_common(args.top)))
    print("  where they sit: " + ", ".join(f"{k} {v / n_high:.0%}" for k, v in kinds.most_common()))


if __name__ == "__main__":
    main()
