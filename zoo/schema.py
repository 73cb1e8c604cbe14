"""The config tree: frozen dataclasses with every key commented, and the checked builder.

`build_dataclass(cls, mapping, path)` turns plain data (YAML) into a dataclass, rejecting unknown
keys (naming the dotted path and the nearest valid key) and wrong types. This module is the lower
layer of configuration: it imports nothing from the loop. Loading files, presets, overrides and
the resolution of base-objective defaults live in `zoo.config`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from zoo.registry import nearest


class ConfigError(ValueError):
    """A bad config: the message names the dotted path and what is accepted."""


# ----------------------------------------------------------------------------------------------
# The tree
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters through peft (`pip install -e ".[lora]"`); r = 0 trains the full model."""
    r: int = 0                      # adapter rank; 0 = off
    alpha: float = 16.0             # scaling = alpha / r
    dropout: float = 0.0            # LoRA dropout; > 0 makes π_old differ from π_θ by noise (logged)
    target_modules: tuple = ()      # () = every linear layer except the LM head (peft's "all-linear")


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = "runs/base/tiny-countdown"  # a local HF causal-LM dir; built by `zoo pretrain` if missing under runs/
    dtype: str = "float32"          # compute dtype: float32 | bfloat16 | float16 (entropy and log-probs are always fp32)
    param_dtype: str = "float32"    # trainable parameters and optimizer state; bfloat16 loses small updates (warned)
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    chunk_size: int = 0             # rows per log-prob/entropy chunk; 0 = auto
    lora: LoraConfig = field(default_factory=LoraConfig)


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


PROMPT_KEY = "_prompt"               # task.params key holding task.template / system / template_kwargs


@dataclass(frozen=True)
class TaskConfig:
    name: str = "countdown"         # countdown | arith | jsonl | hf | a named dataset: math, gsm8k, math500, aime24, ... (zoo list)
    params: dict = field(default_factory=dict)  # task constructor kwargs (path, n_numbers, ...)
    train_size: int = 10000         # capped at the task's train split (countdown defaults: 11,115)
    eval_size: int = 500
    seed: int = 1234
    allow_eval_overlap: bool = False  # train/compare refuse a task whose training rows include eval rows unless true
    template: str = "raw"           # how a problem becomes a prompt: raw | chat | a named format (qwen_math, boxed,
                                    # boxed_plain, dapo, r1_zero, qwen3_think; zoo list) | a .yaml / text file path
    system: str = ""                # system message (chat formats only); replaces the format's own
    template_kwargs: dict = field(default_factory=dict)  # chat-template variables, e.g. {enable_thinking: true}

    def __post_init__(self):
        # every caller builds the task as get_task(name, **params): the prompt format travels in
        # params under PROMPT_KEY (written here, from the three keys above; they always win)
        params = {k: v for k, v in dict(self.params).items() if k != PROMPT_KEY}
        if self.template != "raw" or self.system or self.template_kwargs:
            params[PROMPT_KEY] = {"template": self.template, "system": self.system,
                                  "template_kwargs": dict(self.template_kwargs)}
        object.__setattr__(self, "params", params)


@dataclass(frozen=True)
class RewardConfig:
    name: str = ""                  # one function (shorthand); "" = the task's default reward (zoo list shows the names)
    functions: tuple = ()           # several: [{name: math, weight: 1.0}, {name: format, weight: 0.1, params: {...}}];
                                    # the correctness function (accuracy, dynamic sampling) is the one marked
                                    # correctness: true, else the first; each logged as reward/<name>


@dataclass(frozen=True)
class AlgorithmConfig:
    preset: str = ""                # a named algorithm shipped in zoo/presets, or registered by a plugin (zoo list)
    base: str = "grpo"              # grpo | dapo | dr_grpo | gspo (zoo list)
    strategies: tuple = ()          # ordered [{name: ..., param: value}, ...]
    loss_agg: str = ""              # "" = the base's mode; token-mean | weighted-token-mean | seq-mean-token-mean | seq-mean-token-sum-norm
    clip_low: float | None = None   # ε_low; None = base default (0.2; GSPO 3e-4)
    clip_high: float | None = None  # ε_high; None = base default (GRPO 0.2, DAPO 0.28, GSPO 4e-4)
    kl_coef: float = 0.0            # β for k3 KL to a frozen reference model (0 = no reference model)
    dynamic_sampling: bool | None = None   # drop zero-std groups and resample (DAPO); None = base default
    max_resample_rounds: int = 3    # cap on extra generation rounds per step for dynamic sampling
    overlong_buffer: int | None = None     # DAPO L_c in tokens; None = base default (DAPO: max_new_tokens // 5, as 4096 of 20480), 0 = off
    overlong_penalty: float = 1.0   # scale of the overlong penalty (our rewards are 0/1)
    adv_eps: float = 1.0e-4         # GRPO std epsilon
    clip_ratio_c: float | None = None      # dual clip c (> 1): for A < 0 the loss is capped at -c·A (verl's clip_ratio_c;
                                           # verl default 3, the DAPO / 80-20 / ARCHER recipes 10); None = off


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
    stop: tuple = ()                # stop strings: a response ends with the token that completes one (that token
                                    # is kept and trained on, nothing after it is generated); a string that is one
                                    # special token of the tokenizer stops as that token. EOS and the model's
                                    # end-of-turn ids always stop (unless ignore_eos).

    def stop_spec(self, problems=()) -> "bool | tuple":
        """The sampler's `stop_at_eos`: False (ignore_eos), True (EOS and end-of-turn ids) or the stop
        strings: rollout.stop plus those the problems' prompt format needs (Problem.meta["stop"])."""
        if self.ignore_eos:
            return False
        extra = [s for p in problems for s in (getattr(p, "meta", None) or {}).get("stop", ())]
        return tuple(dict.fromkeys(list(self.stop) + extra)) or True


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
    gradient_checkpointing: bool = False  # recompute each layer in the backward (memory for long responses)
    sharding: str = "none"          # none (one process or DDP) | fsdp (FSDP2: params, grads, optimizer state sharded)
    fsdp_offload: bool = False      # FSDP: keep parameters, gradients and optimizer state in CPU memory


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
