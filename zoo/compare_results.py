"""`zoo compare` results: per-method statistics over the finished cells, results.json and report.md.

Accuracy intervals are percentile bootstraps over problems (and seeds when several); each method
is compared with the baseline by a paired bootstrap on the shared seeds (McNemar exact too for 0/1
scores), with the minimum detectable difference (MDE). `finish` draws the plots and writes
results.json and report.md.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from zoo.compare_plan import Cell, Plan
from zoo.compare_plots import make_plots

N_BOOT = 4000


def _write_json(path: Path, obj) -> None:
    from zoo.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1))


def _cell_record(c: Cell) -> dict:
    for name in ("cell.json", "failed.json"):
        p = c.dir / name
        if p.exists():
            rec = json.loads(p.read_text())
            rec.pop("traceback", None)
            return rec
    return {"method": c.method, "seed": c.seed, "status": "pending", "dir": str(c.dir)}


def _per_problem(c: Cell) -> tuple[list[float], str] | None:
    p = c.dir / "per_problem.json"
    if not (c.dir / "cell.json").exists() or not p.exists():
        return None
    d = json.loads(p.read_text())
    return d["scores"], d.get("fingerprint", "")


def _mean(xs):
    xs = [x for x in xs if isinstance(x, (int, float)) and x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def collect_results(plan: Plan) -> dict:
    from zoo import stats

    cells = [_cell_record(c) for c in plan.cells]
    scores: dict[str, dict[int, list[float]]] = {m: {} for m in plan.methods}
    prints = set()
    for c in plan.cells:
        pp = _per_problem(c)
        if pp is not None:
            scores[c.method][c.seed] = pp[0]
            prints.add(pp[1])
    if len(prints) > 1:
        raise ValueError("cells were evaluated on different eval problems; a paired comparison is impossible")
    methods = {}
    base_scores = scores[plan.baseline]
    for name, block in plan.methods.items():
        done = [r for r in cells if r["method"] == name and r["status"] == "done"]
        m = {"algorithm": block, "seeds_done": sorted(scores[name]), "cells_failed": sum(
            r["status"] == "failed" for r in cells if r["method"] == name),
             "inert_mechanisms": plan.inert.get(name, [])}
        if scores[name]:
            mat = [scores[name][s] for s in sorted(scores[name])]
            m["accuracy"] = stats.bootstrap_ci(mat, n_boot=N_BOOT).to_dict()
            common = sorted(set(scores[name]) & set(base_scores))
            if name != plan.baseline and common:
                a = [scores[name][s] for s in common]
                b = [base_scores[s] for s in common]
                m["vs_baseline"] = {"baseline": plan.baseline, "seeds": common,
                                    **stats.paired_bootstrap(a, b, n_boot=N_BOOT).to_dict()}
                if stats.is_binary(a) and stats.is_binary(b):
                    m["vs_baseline"]["mcnemar_exact"] = stats.mcnemar_exact(a, b)
        fin = lambda key: _mean([r["final"].get(key) for r in done])  # noqa: E731
        pass_keys = sorted({k for r in done for k in r["final"] if k.startswith(("avg@", "pass@"))})
        m.update({
            "best_accuracy": _mean([r.get("best_accuracy") for r in done]),
            **{k: fin(k) for k in pass_keys},
            "response_length": fin("response_length"),
            "final_entropy": {k: _mean([r["final_entropy"].get(k) for r in done])
                              for k in ("mean", "p50", "p80", "p95", "share_below_0.01")} if done else {},
            "samples": _mean([r["budget"]["samples"] for r in done]),
            "tokens": _mean([r["budget"]["tokens"] for r in done]),
            "wall_seconds": _mean([r["wall_seconds"] for r in done]),
            "tokens_per_s": _mean([r.get("tokens_per_s") for r in done]),
        })
        methods[name] = m
    res = {
        "out": str(plan.out), "baseline": plan.baseline, "seeds": plan.seeds,
        "budget": {"steps": plan.budget_steps, "tokens": plan.budget_tokens or None},
        "common_base": plan.common_base, "common_train": plan.common_train,
        "train": {k: getattr(plan.cells[0].cfg.train, k) for k in ("minibatches", "epochs", "lr")},
        "eval": {"n_problems": len(next(iter(next(iter(scores.values())).values()), [])) if any(scores.values()) else None,
                 **dataclasses.asdict(plan.cells[0].cfg.eval)},
        "statistics": {"interval": f"95% percentile bootstrap over problems (and seeds when several), {N_BOOT} replicates",
                       "paired_test": "paired bootstrap of the per-(seed, problem) differences vs the baseline, "
                                      "two-sided p from the null-centred replicates; McNemar exact also given for 0/1 scores",
                       "mde": "2.80 x bootstrap SE of the paired difference (alpha 0.05 two-sided, power 0.8)"},
        "methods": methods, "cells": cells,
    }
    return res


def _f(x, nd=3, pct=False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.{nd}f}"


def report_table(res: dict) -> str:
    base = res["baseline"]
    ks = sorted({k for m in res["methods"].values() for k in m if k.startswith(("avg@", "pass@"))},
                key=lambda k: (k.split("@")[0], int(k.split("@")[1])))
    pk = [k for k in ks if k.startswith("pass@")]
    show = [k for k in ks if k.startswith("avg@")] + (pk[-1:] if pk else [])
    head = (["method", "seeds", "acc % [95% CI]", f"Δ vs {base} [95% CI]", "p", "MDE", "best %"] + [f"{k} %" for k in show]
            + ["len", "H mean", "H p80", "H<0.01", "samples", "tokens", "wall s", "tok/s"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in res["methods"].items():
        a = m.get("accuracy")
        acc = f"{_f(a['mean'], pct=True)} [{_f(a['lo'], pct=True)}, {_f(a['hi'], pct=True)}]" if a else "-"
        v = m.get("vs_baseline")
        if v:
            delta = f"{100 * v['diff']:+.1f} [{100 * v['lo']:+.1f}, {100 * v['hi']:+.1f}]"
            p, mde = f"{v['p_value']:.3f}", _f(v["mde"], pct=True)
        else:
            delta, p, mde = ("(baseline)" if name == base else "-"), "-", "-"
        e = m.get("final_entropy") or {}
        row = ([name, str(len(m["seeds_done"])) + (f" ({m['cells_failed']} failed)" if m["cells_failed"] else ""),
                acc, delta, p, mde, _f(m.get("best_accuracy"), pct=True)] + [_f(m.get(k), pct=True) for k in show]
               + [_f(m.get("response_length"), 1), _f(e.get("mean")), _f(e.get("p80")), _f(e.get("share_below_0.01"), 2),
                  _f(m.get("samples"), 0), _f(m.get("tokens"), 0), _f(m.get("wall_seconds"), 1), _f(m.get("tokens_per_s"), 0)])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _algo_line(block: dict) -> str:
    strat = ", ".join(f"{s.get('name')}(" + ", ".join(f"{k}={v}" for k, v in s.items() if k != "name") + ")"
                      for s in block.get("strategies") or []) or "none"
    return (f"base {block.get('base')}, loss {block.get('loss_agg') or '(base)'}, clip {block.get('clip_low')}/"
            f"{block.get('clip_high')}, dual clip {block.get('clip_ratio_c')}, kl {block.get('kl_coef')}, "
            f"dynamic sampling {block.get('dynamic_sampling')}, "
            f"overlong buffer {block.get('overlong_buffer')}; strategies: {strat}")


def _updates_line(res: dict) -> str:
    t = res.get("train") or {}
    mb, ep = t.get("minibatches", 1), t.get("epochs", 1)
    src = " (common base)" if (res.get("common_train") or {}).get("minibatches") else ""
    return f"{mb} minibatch(es){src} x {ep} epoch(s) = {mb * ep} optimizer step(s) per rollout batch"


def write_report(res: dict, out: Path, plots: list[str]) -> str:
    b = res["budget"]
    ev = res["eval"]
    budget = f"{b['tokens']} generated training tokens per cell (cap {b['steps']} steps)" if b["tokens"] \
        else f"{b['steps']} rollout steps per cell"
    cb = res["common_base"]
    metric = "greedy" if ev.get("metric", "greedy") == "greedy" else "avg@%d (sampled)" % ev["k"]
    lines = [
        f"# zoo compare: {Path(res['out']).name}", "",
        f"- Budget: {budget}; seeds {res['seeds']}; baseline `{res['baseline']}`.",
        f"- Eval: {ev['n_problems']} problems, the same for every cell; accuracy = {metric} correctness of the "
        f"final model; avg@{ev['k']}/pass@k sampled at T={ev['temperature']}, top-p {ev['top_p']}.",
        "- Common base: " + (", ".join(f"{k}={v}" for k, v in cb.items()) if cb else
                             "off (each preset keeps its own base)") + " (keys set in an entry win); "
        + _updates_line(res) + ".",
        f"- Intervals: {res['statistics']['interval']}. Δ: {res['statistics']['paired_test']}. "
        f"MDE: {res['statistics']['mde']}.", "",
        report_table(res), "",
    ]
    notes = []
    for name, m in res["methods"].items():
        v = m.get("vs_baseline")
        if v and abs(v["diff"]) < v["mde"]:
            notes.append(f"`{name}` vs `{res['baseline']}`: |Δ| {100 * abs(v['diff']):.1f} points is below the "
                         f"detectable difference {100 * v['mde']:.1f}: this run cannot separate them.")
    inert = {n: m.get("inert_mechanisms") for n, m in res["methods"].items() if m.get("inert_mechanisms")}
    if inert:
        notes += [f"**`{n}`: inert mechanisms** (one optimizer step per rollout batch, ratio π_θ/π_old = 1): "
                  + "; ".join(v) + ". Its numbers do not measure them." for n, v in inert.items()]
    if notes:
        lines += ["## Reading", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Cells", "", "| method | seed | status | steps | final acc % | best acc % | samples | tokens | "
              "wall s | train s | tok/s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in res["cells"]:
        if c["status"] == "done":
            lines.append(f"| {c['method']} | {c['seed']} | done{' (resumed)' if c.get('resumed') else ''} | {c['steps']} | "
                         f"{_f(c['final'].get('accuracy'), pct=True)} | {_f(c.get('best_accuracy'), pct=True)} | "
                         f"{c['budget']['samples']} | {c['budget']['tokens']} | {_f(c['wall_seconds'], 1)} | "
                         f"{_f(c['train_seconds'], 1)} | {_f(c.get('tokens_per_s'), 0)} |")
        else:
            err = str(c.get("error", "")).replace("|", "/").replace("\n", " ")[:160]
            lines.append(f"| {c['method']} | {c['seed']} | **{c['status']}** {err} | - | - | - | - | - | - | - | - |")
    lines += ["", "## Algorithms as run", ""] + [f"- `{n}`: {_algo_line(m['algorithm'])}" for n, m in res["methods"].items()]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}](plots/{Path(p).name})" for p in plots]
    lines += ["", f"TensorBoard (runs grouped by algorithm): `tensorboard --logdir {Path(res['out']) / 'cells'}`", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text


def finish(plan: Plan, res: dict, log=print) -> dict:
    try:
        plots = make_plots(plan, res)
    except ImportError as e:
        log(f"[compare] plots skipped: {e} (pip install 'entropy-zoo[plots]')")
        plots = []
    res["plots"] = [str(p) for p in plots]
    _write_json(plan.out / "results.json", res)
    write_report(res, plan.out, plots)
    return res
