"""`zoo compare`: a matrix of algorithms x seeds on one benchmark, with paired statistics and plots.

    zoo compare --config configs/compare/smoke.yaml --out runs/compare/smoke [--set seeds=[0,1]]

Every cell (algorithm, seed) shares the base model, the training data and order, the eval problems
and protocol, and the budget; the cells differ only in the algorithm (by default all put on one
common base). The config and its expansion are in `zoo.compare_plan`, running the cells in
`zoo.compare_run`, statistics and the report in `zoo.compare_results`, plots in
`zoo.compare_plots`; this module holds the command and re-exports their public names.

Layout of DIR: compare.yaml (as run), cells/<algo>/seed<k>/ (a `zoo train` run dir + cell.json
when finished, per_problem.json, final_entropy.json; failed.json when it failed), results.json,
report.md, plots/*.png. TensorBoard: `tensorboard --logdir DIR/cells` groups runs by algorithm.
Re-running the same command skips finished cells, resumes a killed one from its checkpoint and
retries failed ones.
"""
from __future__ import annotations

from pathlib import Path

from zoo.compare_plan import COMMON_BASE, COMPARE_KEYS, Cell, Plan, load_compare_raw, plan_compare
from zoo.compare_plots import make_plots
from zoo.compare_results import N_BOOT, collect_results, finish, report_table, write_report
from zoo.compare_run import entropy_stats, final_rollout_entropy, run_cell, run_compare, summarize_cell

__all__ = [
    "COMMON_BASE", "COMPARE_KEYS", "N_BOOT", "Cell", "Plan", "load_compare_raw", "plan_compare",
    "final_rollout_entropy", "entropy_stats", "run_cell", "summarize_cell", "run_compare",
    "collect_results", "report_table", "write_report", "finish", "make_plots", "cmd_compare", "add_parser",
]


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def cmd_compare(args) -> int:
    import algorithms  # noqa: F401  registers the strategies

    raw = load_compare_raw(args.config, args.set)
    out = Path(args.out or f"runs/compare/{Path(args.config).stem}")
    plan = plan_compare(raw, out)
    if args.report_only:
        if not out.exists():
            raise FileNotFoundError(f"--report-only: {out} does not exist")
        res = collect_results(plan)
    else:
        res = run_compare(plan)
    finish(plan, res)
    print(report_table(res))
    failed = [f"{c['method']}/seed{c['seed']}" for c in res["cells"] if c["status"] == "failed"]
    print(f"\n{out / 'report.md'}  {out / 'results.json'}  {out / 'plots'}"
          + (f"\nfailed cells: {', '.join(failed)} (see failed.json in their dirs; re-run to retry)" if failed else ""))
    return 1 if failed else 0


def add_parser(subparsers) -> None:
    sp = subparsers.add_parser("compare", help="algorithms x seeds on one benchmark: results.json, report.md, plots")
    sp.add_argument("--config", required=True, help="compare YAML (algorithms, seeds, budget, shared settings)")
    sp.add_argument("--out", help="output dir (default runs/compare/<config name>); re-run to resume")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a key of the compare config, e.g. seeds=[0,1] or train.lr=5e-5 (repeatable)")
    sp.add_argument("--report-only", action="store_true", help="rebuild results/report/plots from finished cells")
    sp.set_defaults(fn=cmd_compare)
