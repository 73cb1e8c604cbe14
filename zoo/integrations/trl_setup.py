"""What `zoo.integrations.trl.ZooGRPOTrainer` decides before it trains: the supported TRL versions,
the algorithm resolved from a preset name or an `algorithm:` mapping, and which of TRL's own options
it replaces, honours, refuses or warns about. Imports no TRL (tested without building a trainer).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from zoo.config import BUILTIN_PLUGINS, import_plugins, resolve_algorithm_block
from zoo.objectives import BaseObjective, build_strategies, get_base, resolve_algorithm
from zoo.schema import AlgorithmConfig, ConfigError, RolloutConfig, build_dataclass
from zoo.strategy import Strategy

# Tested: 1.16.0. The trainer overrides TRL's private `_compute_loss`, `_prepare_inputs`,
# `_generate_and_score_completions` and `_calculate_rewards`, whose contracts change between minor versions.
TRL_MIN, TRL_BELOW = "1.16.0", "1.17.0"
SUPPORTED_TRL = f">={TRL_MIN},<{TRL_BELOW}"
ALLOW_ENV = "ZOO_TRL_ALLOW_UNTESTED"

# TRL loss_type -> our aggregation with the same formula (docs/algorithms.md §3)
TRL_AGG = {"grpo": "seq-mean-token-mean", "dapo": "token-mean", "bnpo": "token-mean",
           "dr_grpo": "seq-mean-token-sum-norm"}
# our base -> TRL's scale_rewards giving the same advantages (TRL computes the base advantages)
BASE_SCALE = {"grpo": "group", "dapo": "group", "gspo": "group", "dr_grpo": "none"}


def check_trl_version(version: str | None = None) -> str:
    """The installed TRL version, or a RuntimeError naming the supported range (warning only when
    the environment variable ZOO_TRL_ALLOW_UNTESTED=1 is set)."""
    from packaging.version import Version

    if version is None:
        from importlib.metadata import PackageNotFoundError, version as _v
        try:
            version = _v("trl")
        except PackageNotFoundError:
            raise ImportError(f"zoo.integrations.trl needs TRL ({SUPPORTED_TRL}): "
                              f"pip install 'trl{SUPPORTED_TRL}'") from None
    if not Version(TRL_MIN) <= Version(version) < Version(TRL_BELOW):
        msg = (f"zoo.integrations.trl supports TRL {SUPPORTED_TRL} (tested: {TRL_MIN}), found {version}: it overrides "
               f"GRPOTrainer internals that change between versions. pip install 'trl{SUPPORTED_TRL}'")
        if os.environ.get(ALLOW_ENV) != "1":
            raise RuntimeError(msg + f", or set {ALLOW_ENV}=1 to try anyway")
        import warnings
        warnings.warn(msg + f" ({ALLOW_ENV}=1: trying anyway)", stacklevel=3)
    return version


@dataclass
class TRLSetup:
    algo: AlgorithmConfig                  # resolved; kl_coef is the one the loss uses
    base: BaseObjective
    strategies: list[Strategy]
    keep_groups: bool                      # shuffle whole groups so a micro-batch holds whole groups
    warnings: list[str] = field(default_factory=list)


def _refuse(cond: bool, msg: str) -> None:
    if cond:
        raise ConfigError(f"ZooGRPOTrainer: {msg}")


def resolve_for_trl(algorithm: Any, args: Any, plugins: tuple | list = ()) -> TRLSetup:
    """Resolve `algorithm` (a preset name or an `algorithm:` mapping) against a GRPOConfig `args`.

    Errors (ConfigError) for what cannot run inside TRL; warnings (returned, printed by the trainer)
    for the parts of the algorithm that are TRL's business there."""
    import_plugins(BUILTIN_PLUGINS + tuple(plugins))
    block = resolve_algorithm_block(algorithm if algorithm is not None else "grpo")
    algo = build_dataclass(AlgorithmConfig, block, "algorithm")
    G, L, T = int(args.num_generations), int(args.max_completion_length), float(args.temperature)
    algo = resolve_algorithm(algo, RolloutConfig(group_size=G, max_new_tokens=L, temperature=T))
    base, strategies = get_base(algo.base), build_strategies(algo)
    warn: list[str] = []
    name = algo.preset or algo.base

    # ---- TRL loss options that ZooGRPOTrainer's loss replaces (they would be silently dropped) --------
    _refuse(args.loss_type not in TRL_AGG, f"loss_type='{args.loss_type}' has no equivalent here: the loss is the "
            f"algorithm's; use one of {', '.join(TRL_AGG)} (or the algorithm's loss_agg)")
    _refuse(args.top_entropy_quantile < 1.0, "top_entropy_quantile < 1 is TRL's own 80/20 mask; use the strategy "
            "instead: algorithm={'preset': 'top20'} or strategies: [{name: top_entropy, rho: 0.2, scope: micro_batch}]")
    _refuse(args.entropy_coef != 0.0 or args.use_adaptive_entropy, "entropy_coef / use_adaptive_entropy: use the "
            "entropy_reg strategy (coef, target) instead")
    _refuse(args.off_policy_mask_threshold is not None, "off_policy_mask_threshold is not supported")
    _refuse(args.delta is not None, "delta (two-sided clipping) is not supported; use the algorithm's clip_ratio_c "
            "(dual clip)")
    _refuse(args.importance_sampling_level != "token", "importance_sampling_level='sequence' is TRL's GSPO: use "
            "algorithm={'preset': 'gspo'} (base gspo) with importance_sampling_level='token'")
    samplers = [s.name for s in strategies if s.overrides("token_temperature")]
    _refuse(bool(samplers), f"{', '.join(samplers)} sets per-token sampling temperatures, which needs zoo's sampler; "
            "TRL's generation (transformers or vLLM) samples every token at GRPOConfig.temperature")

    # ---- the algorithm decides the loss; say so where TRL's options differ ----------------------------
    if TRL_AGG[args.loss_type] != algo.loss_agg:
        warn.append(f"loss aggregation is the algorithm's '{algo.loss_agg}' ({name}); GRPOConfig(loss_type="
                    f"'{args.loss_type}') is not used")
    eps_hi = args.epsilon_high if args.epsilon_high is not None else args.epsilon
    if (args.epsilon, eps_hi) != (algo.clip_low, algo.clip_high):
        warn.append(f"clip range is the algorithm's {algo.clip_low}/{algo.clip_high} ({name}); GRPOConfig(epsilon="
                    f"{args.epsilon}, epsilon_high={args.epsilon_high}) is not used")
    want = BASE_SCALE.get(base.name)
    if want and args.scale_rewards != want:
        warn.append(f"base '{base.name}' takes A = (R - mean){' / std' if want == 'group' else ''} per group, but TRL "
                    f"computes the advantages with scale_rewards='{args.scale_rewards}': set GRPOConfig(scale_rewards="
                    f"'{want}') for the base's advantages")

    # ---- DAPO's data-side parts are TRL's business ------------------------------------------------------
    if algo.dynamic_sampling:
        warn.append(f"dynamic sampling of '{name}' (drop groups with equal rewards, generate more) is not done inside "
                    "TRL: such groups keep A = 0 (TRL logs frac_reward_zero_std); raise num_generations or filter "
                    "prompts in the dataset for a similar effect")
    if algo.overlong_buffer:
        warn.append(f"overlong reward shaping of '{name}' (buffer {algo.overlong_buffer}) is not applied by the loss: "
                    "add TRL's reward trl.rewards.get_soft_overlong_punishment(max_completion_len="
                    f"{L}, soft_punish_cache={algo.overlong_buffer}) to reward_funcs, or set "
                    "GRPOConfig(mask_truncated_completions=True)")

    # ---- KL: TRL loads the reference and scores it only when beta != 0 --------------------------------
    beta = float(args.beta)
    needs_ref = [s.name for s in strategies if s.needs_reference]
    if algo.kl_coef > 0:
        _refuse(beta != algo.kl_coef, f"algorithm kl_coef={algo.kl_coef} needs the reference model, which TRL "
                f"loads only with beta != 0: set GRPOConfig(beta={algo.kl_coef})")
    elif needs_ref:
        _refuse(beta == 0.0, f"{', '.join(needs_ref)} reads the reference model's log-probs, which TRL computes only "
                f"with beta != 0: set GRPOConfig(beta=...) (any non-zero value: the loss's KL term stays the "
                f"algorithm's kl_coef = 0)")
        warn.append(f"GRPOConfig(beta={beta}) only loads the reference for {', '.join(needs_ref)}; the base KL term "
                    "uses the algorithm's kl_coef = 0")
    elif beta > 0:
        algo = dataclasses.replace(algo, kl_coef=beta)           # the user's TRL KL stays on
    if getattr(args, "use_vllm", False) and getattr(args, "vllm_importance_sampling_correction", False):
        warn.append("vLLM importance-sampling correction multiplies the per-token policy loss (as in TRL); "
                    "strategies' statistics use the trainer's own log-probs")

    # ---- scopes ---------------------------------------------------------------------------------------
    gas = int(args.gradient_accumulation_steps)
    if gas > 1:
        warn.append(f"gradient_accumulation_steps={gas}: an optimizer step is {gas} micro-batches, and the "
                    "strategies' step-level hooks (advantage shaping, token weights, their statistics, metrics and "
                    "any adaptive state) run per micro-batch (micro-batch scope, as TRL's own top_entropy_quantile); "
                    "loss denominators stay step-level (token counts from TRL's num_items_in_batch). With "
                    "gradient_accumulation_steps=1 they are step-scope over all processes")
    bs = int(args.per_device_train_batch_size)
    keep_groups = bs % G == 0
    if not keep_groups:
        warn.append(f"per_device_train_batch_size={bs} is not a multiple of num_generations={G}: micro-batches hold "
                    "parts of groups, so group statistics (EAPO's mean/std entropy, quadrants, GTPO's rewards) are "
                    "taken over the part of each group in the micro-batch; use a multiple to keep groups whole")
    return TRLSetup(algo=algo, base=base, strategies=strategies, keep_groups=keep_groups, warnings=warn)
