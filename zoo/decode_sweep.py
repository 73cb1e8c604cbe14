"""`zoo decode-sweep`: the 80/20 paper's decoding-temperature experiment on a fixed model.

    zoo decode-sweep --model runs/base/tiny-arith --config configs/quickstart.yaml --n 300 --k 4 \\
        --out benchmarks/results/decoding_sweep

Wang et al. 2025 ("Beyond the 80/20 Rule", arXiv 2506.01939) decode a fixed model while changing the
temperature of one class of tokens only: (a) `fork`: the forking tokens (next-token entropy above
h_fork) at T, every other token at 1; (b) `rest`: the other tokens at T, forking tokens at 1; and,
here, (c) `all`: every token at T. h_fork is the model's own 80th percentile of token entropy, measured
on the baseline run (all tokens at T = 1, the same eval problems); `--h-fork 0.672` uses the paper's.
The entropy that decides is the untempered one of each step's next-token distribution (the sampler's).

Every setting samples the same eval problems k times from the same random stream (common random
numbers), so per-problem avg@k pairs across settings: each point gets a 95% bootstrap interval over
problems and a paired bootstrap Δ against the baseline. Outputs in --out: results.json, table.md, and
the plot (`--plot`, default OUT/decoding_sweep.png): accuracy against T (log axis) for the curves.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

MODES = ("fork", "rest", "all")
DEFAULT_TEMPERATURES = (0.1, 0.3, 0.5, 0.8, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 5.0)


def sweep_hook(mode: str, t: float, h_fork: float):
    """The sampler's temperature hook for one setting: (untempered H (B,), base T) -> (B,) temperatures.
    fork: T where H > h_fork else 1; rest: 1 where H > h_fork else T; all: None (plain temperature T)."""
    if mode == "all":
        return None
    if mode not in MODES:
        raise ValueError(f"decode-sweep: unknown mode '{mode}'; valid: {', '.join(MODES)}")

    def hook(H: torch.Tensor, base_t: float) -> torch.Tensor:
        hot = H.float() > h_fork
        if mode == "rest":
            hot = ~hot
        return torch.where(hot, torch.tensor(float(t), device=H.device), torch.tensor(1.0, device=H.device))
    return hook


def run_setting(engine, problems, reward_fn, *, k: int, max_new_tokens: int, temperature: float, hook, top_p: float,
                seed: int):
    """avg@k per problem (list) and the batch (texts, entropies) of one decoding setting."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        b = engine.sample(problems, k, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                          temperature_hook=hook, generator=g)
    r = torch.tensor([float(x) >= 1.0 for x in reward_fn(b.texts, [p.answer for p in b.problems])])
    return r.float().view(len(problems), k).mean(-1).tolist(), b


def decode_sweep(model, tok, problems, reward_fn, *, temperatures=DEFAULT_TEMPERATURES, modes=("fork", "rest"),
                 k: int = 4, max_new_tokens: int = 64, h_fork: float | None = None, quantile: float = 0.8,
                 top_p: float = 1.0, seed: int = 0, batch_size: int = 256, log=print) -> dict:
    """The whole sweep; returns the results mapping (see module docstring)."""
    from zoo import stats
    from zoo.ops import quantile_kth
    from zoo.rollout import HFEngine

    engine = HFEngine(model, tok, batch_size=batch_size)
    t0 = time.perf_counter()
    base_scores, b = run_setting(engine, problems, reward_fn, k=k, max_new_tokens=max_new_tokens, temperature=1.0,
                                 hook=None, top_p=top_p, seed=seed)
    ents = b.entropy[b.response_mask.bool()].float()
    measured = float(quantile_kth(ents, quantile)) if ents.numel() else 0.0
    h = measured if h_fork is None else float(h_fork)
    hot_share = float((ents > h).float().mean()) if ents.numel() else 0.0
    base = stats.bootstrap_ci([base_scores])
    log(f"[decode-sweep] baseline (all tokens T = 1): avg@{k} {base.mean:.3f}; h_fork {h:.4f} "
        f"({'measured p' + format(100 * quantile, '.0f') if h_fork is None else 'given'}; {hot_share:.1%} of tokens above)")
    rows = []
    for mode in modes:
        for t in temperatures:
            if float(t) == 1.0:
                scores = base_scores           # every mode at T = 1 is the baseline itself
            else:
                hook = sweep_hook(mode, float(t), h)
                scores, _ = run_setting(engine, problems, reward_fn, k=k, max_new_tokens=max_new_tokens,
                                        temperature=float(t) if mode == "all" else 1.0, hook=hook, top_p=top_p,
                                        seed=seed)
            ci = stats.bootstrap_ci([scores])
            row = {"mode": mode, "temperature": float(t), "accuracy": ci.to_dict()}
            if float(t) != 1.0:
                row["vs_baseline"] = stats.paired_bootstrap([scores], [base_scores]).to_dict()
            rows.append(row)
            log(f"[decode-sweep] {mode:>4} T = {float(t):<5g} avg@{k} {ci.mean:.3f} [{ci.lo:.3f}, {ci.hi:.3f}]")
    return {"n_problems": len(problems), "k": k, "top_p": top_p, "seed": seed, "max_new_tokens": max_new_tokens,
            "h_fork": h, "h_fork_source": f"measured p{100 * quantile:g}" if h_fork is None else "given",
            "h_fork_measured": measured, "hot_share_at_T1": hot_share, "baseline": base.to_dict(),
            "rows": rows, "seconds": time.perf_counter() - t0,
            "statistics": "95% percentile bootstrap over problems (4000 replicates); Δ: paired bootstrap of the "
                          "per-problem avg@k differences vs the baseline (all tokens at T = 1), same random stream"}


def table(res: dict) -> str:
    """Markdown: one row per temperature, a column block per mode."""
    modes = list(dict.fromkeys(r["mode"] for r in res["rows"]))
    temps = sorted({r["temperature"] for r in res["rows"]})
    at = {(r["mode"], r["temperature"]): r for r in res["rows"]}
    head = ["T"] + [f"{m}: avg@{res['k']} % [95% CI]" for m in modes] + [f"{m}: Δ vs T=1 [95% CI]" for m in modes]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in temps:
        cells, deltas = [], []
        for m in modes:
            r = at.get((m, t))
            if r is None:
                cells.append("-")
                deltas.append("-")
                continue
            a = r["accuracy"]
            cells.append(f"{100 * a['mean']:.1f} [{100 * a['lo']:.1f}, {100 * a['hi']:.1f}]")
            v = r.get("vs_baseline")
            deltas.append("(baseline)" if v is None else
                          f"{100 * v['diff']:+.1f} [{100 * v['lo']:+.1f}, {100 * v['hi']:+.1f}]")
        out.append(f"| {t:g} | " + " | ".join(cells + deltas) + " |")
    return "\n".join(out)


def plot(res: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"fork": "forking tokens at T (others at 1)", "rest": "other tokens at T (forking at 1)",
              "all": "all tokens at T"}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for mode in dict.fromkeys(r["mode"] for r in res["rows"]):
        rs = sorted((r for r in res["rows"] if r["mode"] == mode), key=lambda r: r["temperature"])
        x = [r["temperature"] for r in rs]
        y = [100 * r["accuracy"]["mean"] for r in rs]
        lo = [100 * r["accuracy"]["lo"] for r in rs]
        hi = [100 * r["accuracy"]["hi"] for r in rs]
        line, = ax.plot(x, y, marker="o", ls="--" if mode == "all" else "-", label=labels.get(mode, mode))
        ax.fill_between(x, lo, hi, alpha=0.15, color=line.get_color())
    ax.axhline(100 * res["baseline"]["mean"], color="grey", lw=0.8, ls=":", label="all tokens at T = 1")
    ax.set_xscale("log")
    ax.set_xlabel("temperature T")
    ax.set_ylabel(f"avg@{res['k']} accuracy (%)")
    ax.set_title(f"Decoding sweep, h_fork = {res['h_fork']:.3f} ({res['h_fork_source']}), {res['n_problems']} problems")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def _floats(text: str) -> list[float]:
    vals = [float(x) for x in text.split(",") if x.strip()]
    if not vals or any(v <= 0 for v in vals):
        raise ValueError(f"--temperatures: expected positive numbers separated by commas, got '{text}'")
    return vals


def cmd_decode_sweep(args) -> int:
    import algorithms  # noqa: F401  registers the strategies (config resolution)
    from zoo.config import load_config
    from zoo.data import get_task
    from zoo.evaluate import build_rewards
    from zoo.model import load_policy, set_threads

    cfg = load_config(args.config, args.set or [])
    set_threads(cfg.train.threads)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"--modes: unknown {', '.join(bad) or '(none)'}; valid: {', '.join(MODES)}")
    model, tok = load_policy(args.model, cfg.model.dtype, cfg.model.device)
    task = get_task(cfg.task.name, **cfg.task.params)
    n = args.n if args.n is not None else (cfg.eval.n or cfg.task.eval_size)
    problems = task.problems("eval", n, cfg.task.seed)
    res = decode_sweep(model, tok, problems, build_rewards(cfg.reward, task).correctness,
                       temperatures=_floats(args.temperatures), modes=modes, k=args.k,
                       max_new_tokens=args.max_new_tokens or cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens,
                       h_fork=None if args.h_fork == "auto" else float(args.h_fork), quantile=args.quantile,
                       top_p=args.top_p, seed=args.seed, batch_size=cfg.eval.batch_size)
    res["model"] = str(args.model)
    out = Path(args.out or "runs/decode_sweep")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    md = table(res)
    (out / "table.md").write_text(md + "\n")
    print(md)
    try:
        p = plot(res, Path(args.plot) if args.plot else out / "decoding_sweep.png")
        print(f"\n{out / 'results.json'}  {out / 'table.md'}  {p}")
    except ImportError as e:
        print(f"\n{out / 'results.json'}  {out / 'table.md'}  (plot skipped: {e}; pip install matplotlib)")
    return 0


def add_parser(subparsers) -> None:
    sp = subparsers.add_parser("decode-sweep", help="the 80/20 decoding experiment: accuracy vs the temperature "
                                                    "of forking / other / all tokens on a fixed model")
    sp.add_argument("--model", required=True, help="local HF causal-LM directory (the fixed model)")
    sp.add_argument("--config", help="YAML config for the task, reward and eval set (e.g. configs/quickstart.yaml)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    sp.add_argument("--n", type=int, help="eval problems (default eval.n)")
    sp.add_argument("--k", type=int, default=4, help="samples per problem (avg@k)")
    sp.add_argument("--temperatures", default=",".join(f"{t:g}" for t in DEFAULT_TEMPERATURES),
                    help="comma-separated temperatures (1 = the baseline, always run)")
    sp.add_argument("--modes", default="fork,rest,all", help="curves: fork, rest, all (comma-separated)")
    sp.add_argument("--h-fork", default="auto", help="'auto' = the model's --quantile of token entropy at T = 1, "
                                                     "or nats (the paper's 0.672)")
    sp.add_argument("--quantile", type=float, default=0.8, help="quantile for --h-fork auto (0.8: the top 20%%)")
    sp.add_argument("--top-p", type=float, default=1.0)
    sp.add_argument("--max-new-tokens", type=int, default=0)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", help="output dir (default runs/decode_sweep)")
    sp.add_argument("--plot", help="plot path (default OUT/decoding_sweep.png)")
    sp.set_defaults(fn=cmd_decode_sweep)
