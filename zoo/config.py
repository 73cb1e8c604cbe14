"""Loading a run config: YAML files, `--set a.b=c` overrides, presets, plugins, resolution.

Unknown keys and wrong types are errors naming the dotted path and the nearest valid key (the
tree and its checked builder are in `zoo.schema`; its names are re-exported here).
Presets (`zoo/presets/*.yaml`, shipped inside the package and found through importlib.resources,
so an installed wheel resolves them from any directory) fill the `algorithm` block:
`algorithm: {preset: top20}` (or just `algorithm: top20`); keys given beside `preset` override
the preset's. Derived values (base-objective defaults) are resolved once at load time, and the
resolved config is what a run saves as `config.yaml`.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import importlib.resources
import sys
from pathlib import Path
from typing import Any

import yaml

from zoo.objectives import resolve_algorithm
from zoo.schema import (  # noqa: F401  (re-exported: the config API in one place)
    AlgorithmConfig, CheckpointConfig, Config, ConfigError, EvalConfig, LogConfig, LoraConfig, ModelConfig, PretrainConfig,
    RewardConfig, RolloutConfig, TaskConfig, TrainConfig, build_dataclass,
)

# The built-in strategy package registers itself like any plugin (zoo never imports a concrete strategy).
BUILTIN_PLUGINS = ("algorithms",)


# ----------------------------------------------------------------------------------------------
# Presets and plugins
# ----------------------------------------------------------------------------------------------
def preset_files() -> dict[str, Any]:
    """Name -> file of every preset shipped with the package (read with `.read_text()`)."""
    root = importlib.resources.files("zoo") / "presets"
    return {p.name[:-5]: p for p in sorted(root.iterdir(), key=lambda p: p.name) if p.name.endswith(".yaml")}


def load_preset(name: str) -> dict:
    """The raw preset mapping (description, paper, algorithm)."""
    from zoo.registry import PRESETS, unknown_name_message

    files = preset_files()
    if name in files:
        data = yaml.safe_load(files[name].read_text()) or {}
        if "algorithm" not in data:
            raise ConfigError(f"preset file {files[name]} has no 'algorithm' block")
        return data
    if name in PRESETS:  # presets registered in code (e.g. by plugins)
        return copy.deepcopy(PRESETS.get(name))
    raise ConfigError("algorithm.preset: " + unknown_name_message("preset", name, list(files) + PRESETS.names()))


def import_plugins(plugins: tuple | list) -> None:
    """Import each plugin: a module name, or a path to a .py file (its strategies register themselves)."""
    for p in plugins:
        p = str(p)
        try:
            if p.endswith(".py") or "/" in p:
                path = Path(p).expanduser().resolve()
                if not path.exists():
                    raise ConfigError(f"plugins: file '{p}' does not exist")
                modname = f"zoo_plugin_{path.stem}"
                if modname in sys.modules:
                    continue
                spec = importlib.util.spec_from_file_location(modname, path)
                mod = importlib.util.module_from_spec(spec)
                sys.modules[modname] = mod
                spec.loader.exec_module(mod)
            else:
                importlib.import_module(p)
        except ConfigError:
            raise
        except ImportError as e:
            raise ConfigError(f"plugins: cannot import '{p}': {e}") from e


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects key=value (e.g. train.lr=1e-4), got '{item}'")
    key, _, raw = item.partition("=")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        keys, value = parse_override(item)
        node = raw
        for k in keys[:-1]:
            if isinstance(node.get(k), str) and k == "algorithm":  # `algorithm: top20` shorthand
                node[k] = {"preset": node[k]}
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: '{k}' is not a section")
        node[keys[-1]] = value
    return raw


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def resolve_algorithm_block(algo: Any) -> dict:
    """Expand a preset reference into a full algorithm mapping (explicit keys win)."""
    if algo is None:
        return {}
    if isinstance(algo, str):
        algo = {"preset": algo}
    if not isinstance(algo, dict):
        raise ConfigError(f"algorithm: expected a preset name or a mapping, got {algo!r}")
    name = algo.get("preset")
    if not name:
        return dict(algo)
    preset = load_preset(name)["algorithm"]
    if isinstance(preset, dict) and preset.get("preset"):
        raise ConfigError(f"preset '{name}' refers to another preset; presets must be complete")
    return _merge(preset, {k: v for k, v in algo.items()}) | {"preset": name}


def config_from_dict(raw: dict, overrides: list[str] | None = None) -> Config:
    raw = apply_overrides(raw or {}, overrides)
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a mapping, got {type(raw).__name__}")
    import_plugins(BUILTIN_PLUGINS + tuple(raw.get("plugins") or ()))
    raw = dict(raw)
    raw["algorithm"] = resolve_algorithm_block(raw.get("algorithm"))
    cfg = build_dataclass(Config, raw)
    return resolve(cfg)


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict:
    """A YAML file's top-level mapping, with clear errors for a missing file, bad YAML or a non-mapping."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} '{path}' does not exist")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} '{path}' is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} '{path}': expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    raw = read_yaml_mapping(path) if path is not None else {}
    return config_from_dict(raw, overrides)


def resolve(cfg: Config) -> Config:
    """Fill base-objective defaults and validate the algorithm (strategies, combinations)."""
    algo = resolve_algorithm(cfg.algorithm, cfg.rollout)
    cfg = dataclasses.replace(cfg, algorithm=algo)
    _validate(cfg)
    return cfg


def _positive(path: str, v: float, allow_zero: bool = False) -> None:
    if v < 0 or (v == 0 and not allow_zero):
        raise ConfigError(f"{path} must be {'>= 0' if allow_zero else '> 0'}, got {v}")


def _validate(cfg: Config) -> None:
    r, t = cfg.rollout, cfg.train
    _positive("rollout.group_size", r.group_size)
    from zoo.objectives import get_base

    if r.group_size < 2 and get_base(cfg.algorithm.base).group_relative:
        raise ConfigError(f"rollout.group_size is {r.group_size}, but base '{cfg.algorithm.base}' takes each advantage "
                          "relative to the prompt's group (mean, std): a group of one gives A = 0 everywhere and "
                          "nothing trains; use group_size >= 2")
    _positive("rollout.prompts_per_step", r.prompts_per_step)
    _positive("rollout.max_new_tokens", r.max_new_tokens)
    _positive("rollout.temperature", r.temperature)
    if r.top_p != 1.0 or r.top_k != 0:
        raise ConfigError("rollout.top_p / rollout.top_k: training rollouts must sample the full distribution "
                          f"(top_p 1.0, top_k 0; got {r.top_p}, {r.top_k}): π_old is the trainer's full-softmax "
                          "log-prob, which a truncated sampler would not match. Use eval.top_p for evaluation.")
    _positive("train.steps", t.steps, allow_zero=True)
    _positive("train.lr", t.lr)
    _positive("train.max_tokens", t.max_tokens, allow_zero=True)
    _positive("train.minibatches", t.minibatches)
    _positive("train.epochs", t.epochs)
    if r.prompts_per_step % t.minibatches:
        raise ConfigError(f"train.minibatches ({t.minibatches}) must divide rollout.prompts_per_step "
                          f"({r.prompts_per_step}): a group is never split across minibatches")
    if t.micro_batch_size and t.micro_batch_size % r.group_size:
        raise ConfigError(f"train.micro_batch_size ({t.micro_batch_size}) must be a multiple of "
                          f"rollout.group_size ({r.group_size}) so groups stay whole")
    if t.sharding not in ("none", "fsdp"):
        raise ConfigError(f"train.sharding: unknown '{t.sharding}'; valid: none, fsdp")
    if t.lr_schedule not in ("constant", "cosine"):
        raise ConfigError(f"train.lr_schedule: unknown '{t.lr_schedule}'; valid: constant, cosine")
    if t.old_logp not in ("rescore", "rollout"):
        raise ConfigError(f"train.old_logp: unknown '{t.old_logp}'; valid: rescore, rollout")
    if t.old_logp == "rollout" and r.temperature != 1.0:
        raise ConfigError("train.old_logp: rollout reuses the sampler's untempered entropy, so it needs "
                          f"rollout.temperature 1.0 (got {r.temperature}); use old_logp: rescore")
    for key in ("dtype", "param_dtype"):
        if getattr(cfg.model, key) not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"model.{key}: unknown '{getattr(cfg.model, key)}'; valid: float32, bfloat16, float16")
    lo = cfg.model.lora
    if lo.r < 0 or lo.alpha <= 0 or not 0.0 <= lo.dropout < 1.0:
        raise ConfigError(f"model.lora: need r >= 0, alpha > 0 and 0 <= dropout < 1, got r={lo.r}, "
                          f"alpha={lo.alpha}, dropout={lo.dropout}")
    _positive("eval.n", cfg.eval.n, allow_zero=True)
    if cfg.eval.metric not in ("greedy", "sampled"):
        raise ConfigError(f"eval.metric: unknown '{cfg.eval.metric}'; valid: greedy, sampled")
    if cfg.eval.metric == "greedy" and not cfg.eval.greedy:
        raise ConfigError("eval.metric is 'greedy' but eval.greedy is false; set eval.metric: sampled")
    if cfg.eval.metric == "sampled" and cfg.eval.k < 1:
        raise ConfigError("eval.metric is 'sampled' but eval.k is 0; set eval.k >= 1")
    _positive("eval.k", cfg.eval.k, allow_zero=True)
    _validate_reward(cfg)
    _validate_prompt(cfg)


def _validate_prompt(cfg: Config) -> None:
    """task.template / system / template_kwargs resolve to a prompt format; rollout.stop is strings."""
    from zoo.prompts import load_template

    r = cfg.rollout
    if any(not isinstance(x, str) or not x for x in r.stop):
        raise ConfigError(f"rollout.stop: expected a list of non-empty strings, got {list(r.stop)!r}")
    if r.stop and r.ignore_eos:
        raise ConfigError("rollout.stop and rollout.ignore_eos: ignore_eos generates exactly max_new_tokens and "
                          "never stops; drop one of them")
    load_template(cfg.task.template, cfg.task.system, cfg.task.template_kwargs)   # ConfigError naming the key


def _validate_reward(cfg: Config) -> None:
    """reward.functions: shape, names and params (the task's default reward, name "", is resolved later)."""
    from rewards.combine import check_specs, parse_specs

    if not cfg.reward.functions:
        return
    if cfg.reward.name:
        raise ConfigError(f"reward: give reward.name (one function) or reward.functions (several), not both; "
                          f"e.g. functions: [{{name: {cfg.reward.name}}}, {{name: format, weight: 0.1}}]")
    try:
        check_specs(parse_specs(cfg.reward.functions))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"reward.{e.args[0] if isinstance(e, KeyError) and e.args else e}") from None


def save_config(cfg: Config, path: str | Path) -> None:
    from zoo.checkpoint import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def config_diff(old: dict, new: dict, ignore=(), prefix: str = "") -> list[tuple[str, object, object]]:
    """Differing dotted keys between two resolved configs. A config saved before a key existed
    is first completed with today's defaults, so adding a config key never breaks a resume."""
    if not prefix:
        old = _with_defaults(old)
    out = []
    for k in sorted(set(old) | set(new)):
        path = f"{prefix}{k}"
        if any(path == i or path.startswith(i + ".") for i in ignore):
            continue
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, ignore, path + ".")
        elif a != b:
            out.append((path, a, b))
    return out


def _with_defaults(d: dict) -> dict:
    try:
        return config_from_dict(d).to_dict()
    except (ConfigError, KeyError, ValueError):
        return d
