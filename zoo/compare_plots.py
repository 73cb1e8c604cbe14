"""`zoo compare` plots (matplotlib, Agg): curves with seed bands, final entropy histogram, quadrant shares.

Written to DIR/plots/: eval_accuracy.png, reward.png, entropy.png (mean over seeds per step, band
= min-max across seeds), entropy_hist.png (final-model rollout entropies) and quadrants.png.
"""
from __future__ import annotations

import json
from pathlib import Path

from zoo.compare_plan import Plan
from zoo.logging import read_metrics


def _series(cell_dir: Path, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in read_metrics(cell_dir) if isinstance(r.get(key), (int, float))}


def _smooth(ys: list[float], w: int) -> list[float]:
    if w <= 1:
        return ys
    out, acc = [], []
    for y in ys:
        acc.append(y)
        acc = acc[-w:]
        out.append(sum(acc) / len(acc))
    return out


def _band_plot(ax, plan: Plan, key: str, smooth: bool = False) -> bool:
    """Mean over seeds per step, with the min-max band across seeds."""
    drawn = False
    for i, name in enumerate(plan.methods):
        per_seed = [_series(c.dir, key) for c in plan.cells if c.method == name]
        per_seed = [s for s in per_seed if s]
        if not per_seed:
            continue
        if smooth:
            w = max(1, max(len(s) for s in per_seed) // 20)
            per_seed = [dict(zip(sorted(s), _smooth([s[k] for k in sorted(s)], w))) for s in per_seed]
        steps = sorted(set().union(*per_seed))
        vals = [[s[t] for s in per_seed if t in s] for t in steps]
        mean = [sum(v) / len(v) for v in vals]
        color = f"C{i % 10}"
        ax.plot(steps, mean, color=color, label=f"{name} (n={len(per_seed)})", marker="o" if len(steps) < 12 else None)
        if len(per_seed) > 1:
            ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], color=color, alpha=0.2, linewidth=0)
        drawn = True
    ax.set_xlabel("rollout step")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    return drawn


def make_plots(plan: Plan, res: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pdir = plan.out / "plots"
    pdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig, name):
        path = pdir / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    band = "mean over seeds, band = min-max across seeds"
    for key, name, title, smooth in (
            ("eval/accuracy", "eval_accuracy.png", "eval accuracy", False),
            ("reward/mean", "reward.png", "training reward (moving average)", True),
            ("entropy/mean", "entropy.png", "mean token entropy of rollouts (nats)", False)):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        if not _band_plot(ax, plan, key, smooth):
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{title}\n({band})", fontsize=10)
        ax.set_ylabel(key)
        save(fig, name)

    # final-rollout entropy histogram, log-x, 80th percentile marked
    fig, ax = plt.subplots(figsize=(7, 4.2))
    floor = 1e-6
    pooled = {}
    for name in plan.methods:
        vals = []
        for c in plan.cells:
            f = c.dir / "final_entropy.json"
            if c.method == name and f.exists() and (c.dir / "cell.json").exists():
                vals += json.loads(f.read_text())["entropy"]
        if vals:
            pooled[name] = np.clip(np.asarray(vals, dtype=np.float64), floor, None)
    if pooled:
        hi = max(float(v.max()) for v in pooled.values())
        lo = max(floor, min(float(v.min()) for v in pooled.values()) / 1.5)
        bins = np.logspace(np.log10(lo), np.log10(max(hi, 10 * lo)) + 1e-9, 40)
        for i, (name, v) in enumerate(pooled.items()):
            color = f"C{list(plan.methods).index(name) % 10}"
            p80 = float(np.quantile(v, 0.8))
            ax.hist(v, bins=bins, histtype="step", color=color, linewidth=1.5,
                    weights=np.full(v.size, 1.0 / v.size), label=f"{name}: p80 {p80:.3f}, <0.01 {np.mean(v < 0.01):.0%}")
            ax.axvline(p80, color=color, linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished cells", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"token entropy (nats, log scale; values below {floor:g} shown at {floor:g})")
    ax.set_ylabel("share of tokens")
    ax.set_title("entropy of final-model rollouts on the eval prompts\n(dashed: 80th percentile)", fontsize=10)
    save(fig, "entropy_hist.png")

    # quadrant shares over training for the entropy-aware methods (those with strategies)
    aware = [n for n, b in plan.methods.items() if any(s.get("name") != "identity" for s in b.get("strategies") or [])]
    shown = aware or list(plan.methods)
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.6), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], shown):
        cells = [c for c in plan.cells if c.method == name]
        for j, q in enumerate(("PHR", "PLR", "NHR", "NLR")):
            per_seed = [s for s in (_series(c.dir, f"quadrant/{q}_share") for c in cells) if s]
            if not per_seed:
                continue
            steps = sorted(set().union(*per_seed))
            mean = [float(np.mean([s[t] for s in per_seed if t in s])) for t in steps]
            w = max(1, len(steps) // 20)
            ax.plot(steps, _smooth(mean, w), color=f"C{j}", label=q)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("rollout step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share of valid tokens")
    if axes[0][-1].get_legend_handles_labels()[0]:
        axes[0][-1].legend(fontsize=8)
    fig.suptitle("EAPO quadrants (sign of A x entropy vs group mean) over training"
                 + ("" if aware else " (no entropy-aware method: all shown)"), fontsize=10)
    save(fig, "quadrants.png")
    return written
