"""Frozen dataclass config tree, loaded from YAML with `--set a.b=c` overrides.

Unknown keys and wrong types are errors naming the dotted path and the nearest valid key.
Presets (configs/presets/*.yaml) fill the `algorithm` block: `algorithm: {preset: top20}`
(or just `algorithm: top20`); keys given beside `preset` override the preset's.
Derived values (base-objective defaults) are resolved once at load time, and the resolved
config is what a run saves as `config.yaml`.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo.registry import nearest

REPO_ROOT = Path(__file__).resolve().parent.parent
PRESET_DIR = REPO_ROOT / "configs" / "presets"
# The built-in strategy package registers itself like any plugin (zoo never imports a concrete strategy).
BUILTIN_PLUGINS = ("algorithms",)


class ConfigError(ValueError):
    """A bad config: the message names the dotted path and what is accepted."""


# ----------------------------------------------------------------------------------------------
# The tree
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = "runs/base/tiny-countdown"  # a local HF causal-LM dir; built by `zoo pretrain` if missing under runs/
    dtype: str = "float32"          # float32 | bfloat16 | float16 (entropy and log-probs are always fp32)
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    chunk_size: int = 0             # rows per log-prob/entropy chunk; 0 = auto


@dataclass(frozen=True)
class PretrainConfig:
    """The tiny base model `zoo pretrain` builds: a Qwen2-style LM on a character tokenizer."""
    layers: int = 2
    hidden: int = 128
    heads: int = 4
    intermediate: int = 512
    steps: int = 400                # cosine schedule length
    batch_size: int = 128
    lr: float = 3.0e-3
    seed: int = 0
    eval_every: int = 25            # sampled accuracy check on held-out train-split problems
    eval_n: int = 200
    stop_at_accuracy: float = 0.2   # stop once sampled accuracy reaches this: leave RL room (aim 15-40%)
    min_steps: int = 100
    train_size: int = 20000


@dataclass(frozen=True)
class TaskConfig:
    name: str = "countdown"         # countdown | arith | jsonl | gsm8k | math500 | hf
    params: dict = field(default_factory=dict)  # task constructor kwargs (path, n_numbers, ...)
    train_size: int = 10000         # capped at the task's train split (countdown defaults: 11,115)
    eval_size: int = 500
    seed: int = 1234


@dataclass(frozen=True)
class RewardConfig:
    name: str = ""                  # "" = the task's default reward (zoo list shows the names)


@dataclass(frozen=True)
class AlgorithmConfig:
    preset: str = ""                # a named algorithm from configs/presets (zoo list)
    base: str = "grpo"              # grpo | dapo (+ more in later issues)
    strategies: tuple = ()          # ordered [{name: ..., param: value}, ...]
    loss_agg: str = ""              # "" = the base's mode; token-mean | weighted-token-mean | seq-mean-token-mean | seq-mean-token-sum-norm
    clip_low: float | None = None   # ε_low; None = base default (0.2)
    clip_high: float | None = None  # ε_high; None = base default (GRPO 0.2, DAPO 0.28)
    kl_coef: float = 0.0            # β for k3 KL to a frozen reference model (0 = no reference model)
    dynamic_sampling: bool | None = None   # drop zero-std groups and resample (DAPO); None = base default
    max_resample_rounds: int = 3    # cap on extra generation rounds per step for dynamic sampling
    overlong_buffer: int | None = None     # DAPO L_c in tokens; None = base default (DAPO: max_new_tokens // 4), 0 = off
    overlong_penalty: float = 1.0   # scale of the overlong penalty (our rewards are 0/1)
    adv_eps: float = 1.0e-4         # GRPO std epsilon


@dataclass(frozen=True)
class RolloutConfig:
    group_size: int = 8             # G responses per prompt
    prompts_per_step: int = 16      # prompts per rollout batch
    max_new_tokens: int = 64
    temperature: float = 1.0        # base temperature (entropy is always taken at this one)
    top_p: float = 1.0
    top_k: int = 0                  # 0 = off
    ignore_eos: bool = False        # generate exactly max_new_tokens (EOS is an ordinary token; benchmarks)
    compile: bool = False           # torch.compile the decoding step (falls back to eager with a warning)
    compact: bool = True            # drop finished sequences from the decoding batch


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 200                # rollout batches (each gives minibatches x epochs optimizer steps)
    max_tokens: int = 0             # also stop once this many training tokens were generated (0 = off)
    lr: float = 1.0e-4
    lr_schedule: str = "constant"   # constant | cosine
    warmup_steps: int = 0
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0
    minibatches: int = 1            # optimizer steps per rollout batch (groups never split)
    epochs: int = 1                 # passes over each rollout batch
    micro_batch_size: int = 0       # responses per gradient-accumulation micro-batch; 0 = whole minibatch
    seed: int = 0
    threads: int = 0                # torch threads; 0 = auto (1 when CI is set)
    max_bad_steps: int = 3          # consecutive non-finite steps before the run stops
    old_logp: str = "rescore"       # π_old: rescore (a scoring forward) | rollout (the built-in sampler's records)
    sparse_backward: bool = True    # LM-head backward only over tokens with non-zero weight, when nothing else needs the rest


@dataclass(frozen=True)
class EvalConfig:
    every: int = 50                 # in rollout steps; 0 = only at start/end
    n: int = 500                    # eval problems (0 = the task's whole eval split)
    at_start: bool = True
    greedy: bool = True             # run the greedy pass (eval/accuracy_greedy)
    metric: str = "greedy"          # eval/accuracy is: greedy | sampled (avg@k at eval.temperature / top_p)
    k: int = 1                      # samples per problem for avg@k / pass@k (0 = skip sampling)
    temperature: float = 1.0
    top_p: float = 1.0              # the 80/20 paper reports avg@k at T=1.0, top-p 0.7
    max_new_tokens: int = 0         # 0 = rollout.max_new_tokens
    batch_size: int = 256
    use_strategy_sampler: bool = False  # sample with the strategies' token_temperature hook


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 50                 # rollout steps; 0 = only at the end
    keep: int = 2


@dataclass(frozen=True)
class LogConfig:
    tensorboard: bool = True
    progress: bool = True
    samples: int = 2                # completions logged as text per eval


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    plugins: tuple = ()             # importable modules (or .py paths) imported before names are resolved

    def to_dict(self) -> dict:
        return _to_plain(self)


# ----------------------------------------------------------------------------------------------
# Building a dataclass from plain data, with dotted-path errors
# ----------------------------------------------------------------------------------------------
def _to_plain(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _to_plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    return x


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_value(value: Any, tp: Any, path: str) -> Any:
    """Check/convert one leaf value against its annotation; raise ConfigError naming the path."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_value(value, a, path)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{path}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is tuple or origin is tuple or tp is list or origin is list:
        if isinstance(value, (list, tuple)):
            return tuple(value)
    elif tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, path)
    else:
        return value
    raise ConfigError(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def build_dataclass(cls: type, data: Any, path: str = "") -> Any:
    """Instantiate dataclass `cls` from a mapping, checking keys and types recursively."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of {cls.__name__} fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in names:
            near = nearest(str(key), names)
            hint = f"; did you mean '{(path + '.') if path else ''}{near}'?" if near else ""
            raise ConfigError(f"unknown config key '{sub}'{hint} Valid keys here: {', '.join(names)}")
        kwargs[key] = _check_value(value, hints[key], sub)
    return cls(**kwargs)


# ----------------------------------------------------------------------------------------------
# Presets and plugins
# ----------------------------------------------------------------------------------------------
def preset_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PRESET_DIR.glob("*.yaml"))}


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
    from zoo.objectives import resolve_algorithm

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
    if t.lr_schedule not in ("constant", "cosine"):
        raise ConfigError(f"train.lr_schedule: unknown '{t.lr_schedule}'; valid: constant, cosine")
    if t.old_logp not in ("rescore", "rollout"):
        raise ConfigError(f"train.old_logp: unknown '{t.old_logp}'; valid: rescore, rollout")
    if t.old_logp == "rollout" and r.temperature != 1.0:
        raise ConfigError("train.old_logp: rollout reuses the sampler's untempered entropy, so it needs "
                          f"rollout.temperature 1.0 (got {r.temperature}); use old_logp: rescore")
    if cfg.model.dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"model.dtype: unknown '{cfg.model.dtype}'; valid: float32, bfloat16, float16")
    _positive("eval.n", cfg.eval.n, allow_zero=True)
    if cfg.eval.metric not in ("greedy", "sampled"):
        raise ConfigError(f"eval.metric: unknown '{cfg.eval.metric}'; valid: greedy, sampled")
    if cfg.eval.metric == "greedy" and not cfg.eval.greedy:
        raise ConfigError("eval.metric is 'greedy' but eval.greedy is false; set eval.metric: sampled")
    if cfg.eval.metric == "sampled" and cfg.eval.k < 1:
        raise ConfigError("eval.metric is 'sampled' but eval.k is 0; set eval.k >= 1")
    _positive("eval.k", cfg.eval.k, allow_zero=True)


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
