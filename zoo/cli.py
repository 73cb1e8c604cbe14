"""Command line: `zoo list|pretrain|train|eval` (also `python -m zoo ...`)."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from zoo.config import ConfigError, load_config

EXTRA_COMMAND_MODULES = ("zoo.compare", "zoo.decode_sweep", "zoo.inspect", "zoo.scaffold")


def _load_everything(plugins=()) -> None:
    import algorithms  # noqa: F401  registers the strategies
    from zoo.config import import_plugins

    import_plugins(plugins)


def cmd_list(args) -> int:
    import yaml

    from rewards import reward_description, reward_names
    from zoo.config import preset_files
    import zoo.objectives  # noqa: F401  registers the base objectives
    from zoo.registry import BASES, PRESETS, STRATEGIES, TASKS

    _load_everything(args.plugins or ())
    import zoo.data  # noqa: F401  registers the tasks

    def table(title, rows):
        print(f"\n{title}")
        w = max((len(r[0]) for r in rows), default=4)
        for name, desc, paper in rows:
            print(f"  {name:<{w}}  {desc}" + (f"  [{paper}]" if paper and paper != "-" else ""))

    table("Strategies (algorithm.strategies[].name)",
          [(n, c.description, c.paper) for n, c in STRATEGIES.items()])
    presets = []
    for name, path in preset_files().items():
        d = yaml.safe_load(path.read_text()) or {}
        presets.append((name, d.get("description", ""), d.get("paper", "")))
    presets += [(n, p.get("description", ""), p.get("paper", "")) for n, p in PRESETS.items()]
    table("Presets (algorithm.preset)", sorted(presets))
    table("Base objectives (algorithm.base)", [(n, b.description, b.paper) for n, b in BASES.items()])
    table("Rewards (reward.name)", [(n, reward_description(n), "") for n in reward_names()])
    table("Tasks (task.name)", [(n, (t.__doc__ or "").strip().split("\n")[0], "") for n, t in TASKS.items()])
    from zoo.prompts import load_template, template_names

    fmts = [load_template(n) for n in template_names()]
    table("Prompt formats (task.template; or a path to a .yaml / text file)",
          [(f.name, (f.description or ("the task's prompt text as is" if f.is_raw else ""))
            + (f"; answer format {f.answer_format}" if f.answer_format else ""), f.source) for f in fmts])
    return 0


def _config(args):
    return load_config(args.config, args.set or [])


def cmd_train(args) -> int:
    from zoo.trainer import Trainer

    _load_everything()
    cfg = _config(args)
    from zoo.objectives import inert_warning

    warn = inert_warning(cfg)          # a clip / KL to π_old that one update per rollout batch leaves inert
    if warn:
        print(warn, file=sys.stderr)
    out = Path(args.out or f"runs/train/{Path(args.config).stem if args.config else 'default'}")
    trainer = Trainer(cfg, out, resume=args.resume)
    res = trainer.train()
    print(json.dumps({"out": str(out), **{k: round(v, 4) for k, v in res.items()}}, indent=1))
    return 0


def cmd_pretrain(args) -> int:
    from zoo.pretrain import pretrain

    _load_everything()
    cfg = _config(args)
    out = Path(args.out or cfg.model.name_or_path)
    if (out / "config.json").exists() and not args.force:
        print(f"{out} already exists (use --force to rebuild)")
        return 0
    meta = pretrain(cfg, out)
    print(json.dumps({k: v for k, v in meta.items() if k != "pretrain"}, indent=1))
    return 0


def cmd_eval(args) -> int:
    from zoo.data import get_task
    from zoo.evaluate import build_rewards, evaluate
    from zoo.model import load_policy
    from zoo.objectives import build_strategies
    from zoo.model import set_threads

    _load_everything()
    sets = list(args.set or [])
    if args.task:
        sets.append(f"task.name={args.task}")
    if args.data:
        sets.append(f"task.params.path={args.data}")
    cfg = load_config(args.config, sets)
    set_threads(cfg.train.threads)
    model, tok = load_policy(args.model, cfg.model.dtype, cfg.model.device)
    task = get_task(cfg.task.name, **cfg.task.params)
    n = args.n if args.n is not None else (cfg.eval.n or cfg.task.eval_size)
    problems = task.problems("eval", n, cfg.task.seed)
    hook = None
    if args.sampler:
        from zoo.config import resolve_algorithm_block, build_dataclass, AlgorithmConfig

        algo = build_dataclass(AlgorithmConfig, resolve_algorithm_block(args.sampler), "--sampler")
        strategies = [s for s in build_strategies(algo) if s.overrides("token_temperature")]
        if not strategies:
            raise ConfigError(f"--sampler {args.sampler}: no strategy in it sets token temperatures")
        hook = lambda H, T: strategies[0].token_temperature(H, T)  # noqa: E731
    k = args.k if args.k is not None else max(cfg.eval.k, 1)
    res = evaluate(model, tok, problems, build_rewards(cfg.reward, task).correctness,
                   max_new_tokens=args.max_new_tokens or cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens,
                   greedy=not args.no_greedy, k=k, temperature=args.temperature, top_p=args.top_p,
                   batch_size=cfg.eval.batch_size, temperature_hook=hook, seed=args.seed, stop=cfg.rollout.stop)
    out = {k2: round(v, 4) for k2, v in res.metrics.items()}
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"metrics": res.metrics, "per_problem": res.per_problem}, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zoo", description="Entropy-aware RL for language models.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def add_cfg(sp, required=False):
        sp.add_argument("--config", required=required, help="YAML config file")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")

    sp = sub.add_parser("list", help="strategies, presets, bases, rewards and tasks")
    sp.add_argument("--plugins", nargs="*", help="extra modules / .py files to import first")
    sp.set_defaults(fn=cmd_list)
    sp = sub.add_parser("train", help="RL training run")
    add_cfg(sp, required=True)
    sp.add_argument("--out", help="run directory (default runs/train/<config name>)")
    sp.add_argument("--resume", action="store_true", help="continue --out from its last checkpoint")
    sp.set_defaults(fn=cmd_train)
    sp = sub.add_parser("pretrain", help="build the tiny base model (SFT on a synthetic task)")
    add_cfg(sp)
    sp.add_argument("--out", help="output dir (default model.name_or_path)")
    sp.add_argument("--force", action="store_true", help="rebuild even if it exists")
    sp.set_defaults(fn=cmd_pretrain)
    sp = sub.add_parser("eval", help="greedy accuracy, avg@k and pass@k of a model directory")
    add_cfg(sp)
    sp.add_argument("--model", required=True, help="local HF causal-LM directory")
    sp.add_argument("--task", help="task name (countdown, arith, gsm8k, math500, jsonl, ...)")
    sp.add_argument("--data", help="benchmark file for jsonl/gsm8k/math500 tasks (task.params.path)")
    sp.add_argument("--n", type=int, help="number of eval problems (0 = all)")
    sp.add_argument("--k", type=int, help="samples per problem for avg@k / pass@k")
    sp.add_argument("--temperature", type=float, default=1.0)
    sp.add_argument("--top-p", type=float, default=1.0, help="the 80/20 paper uses 0.7 with T=1.0")
    sp.add_argument("--max-new-tokens", type=int, default=0)
    sp.add_argument("--no-greedy", action="store_true", help="skip the greedy pass")
    sp.add_argument("--sampler", help="a preset whose strategy sets per-token temperatures (e.g. fork_t12)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", help="write metrics and per-problem results as JSON")
    sp.set_defaults(fn=cmd_eval)
    # Commands that live beside their implementation: each module has add_parser(subparsers).
    for mod in EXTRA_COMMAND_MODULES:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        m.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, FileNotFoundError, FileExistsError, KeyError, ValueError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"zoo {args.cmd}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
