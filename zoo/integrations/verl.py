"""The zoo's strategies as verl policy losses (verl 0.9: `verl.trainer.ppo.core_algos` policy-loss registry).

Every preset is registered as the policy loss `zoo_<preset>` (`zoo_top20`, `zoo_eapo`, ...), chosen in a
verl config by `actor_rollout_ref.actor.policy_loss.loss_mode`. verl's policy-loss signature,
`fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights)`, passes
no entropy, group id or reference log-prob, so the **actor extension** `zoo_ppo_loss` hands them over:
it is verl's actor loss (`verl.workers.utils.losses.ppo_loss`, which calls the registered policy loss),
run inside a context that carries the micro-batch's entropy (the model output's, `calculate_entropy`),
group ids (`uid`), reference log-probs (`ref_log_prob`) and sequence rewards (`token_level_scores`).
`install()` registers the losses and makes verl's actor worker use `zoo_ppo_loss` (for `zoo_*` loss
modes only; every other mode runs verl's own loss unchanged). From a YAML config, verl imports
`zoo.integrations.verl_plugin` (which calls `install()`) through `actor_rollout_ref.model.external_lib`.

Scope (what verl's loss call sees): one micro-batch on one data-parallel rank. Our step-level hooks run
on that micro-batch, so token statistics (entropy quantiles, covariance selections, group means,
ARCHER's subset means) are per micro-batch: equal to our trainer's step scope when a mini-batch is one
micro-batch on one rank (ppo_micro_batch_size_per_gpu = ppo_mini_batch_size x rollout.n, dp 1), as
verl's own clip_cov / kl_cov. The loss denominators are verl's global ones (`config.global_batch_info`:
tokens and responses of the whole mini-batch, all ranks), so the aggregation itself is exact for any
split. The preset's base block beyond the loss (advantage estimator, dynamic sampling, overlong
shaping) is verl's business: set verl's own options (`algorithm.adv_estimator`, the DAPO recipe's
`filter_groups`, `reward.overlong_buffer`).

This module imports verl only inside functions: it imports cleanly without verl.
"""
from __future__ import annotations

import contextvars
import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from zoo.config import BUILTIN_PLUGINS, import_plugins, preset_files, resolve_algorithm_block
from zoo.loss import micro_batch_loss, shape_and_weight
from zoo.objectives import build_strategies, get_base, resolve_algorithm
from zoo.registry import PRESETS
from zoo.schema import AlgorithmConfig, ConfigError, RolloutConfig, build_dataclass
from zoo.strategy import Strategy, TokenContext

PREFIX = "zoo_"


@dataclass
class Handover:
    """What the actor extension hands to the policy loss for one micro-batch, (B, T) padded like log_prob."""
    entropy: torch.Tensor | None = None        # H at the rollout temperature (with grad as the model gives it)
    group_ids: torch.Tensor | None = None      # (B,) int: responses to one prompt share an id (verl's uid)
    ref_log_prob: torch.Tensor | None = None   # reference log-probs (verl computes them with a reference policy)
    rewards: torch.Tensor | None = None        # (B,) sequence reward: Σ_t token_level_scores


_HANDOVER: contextvars.ContextVar[Handover | None] = contextvars.ContextVar("zoo_verl_handover", default=None)


def unsupported_reason(strategies: list[Strategy]) -> str | None:
    """Why an algorithm cannot run as a verl policy loss (None: it can)."""
    samplers = [s.name for s in strategies if s.overrides("token_temperature") or s.overrides("on_rollout")]
    if samplers:
        return (f"{', '.join(samplers)} changes how tokens are sampled (per-token temperatures): verl's rollout "
                "engines (vLLM, SGLang) cannot honour it, and a loss alone cannot either")
    return None


def algorithm_from_spec(spec: str | dict | AlgorithmConfig) -> AlgorithmConfig:
    """A preset name, a mapping like the config's `algorithm:` block, or an AlgorithmConfig -> resolved config."""
    import_plugins(BUILTIN_PLUGINS)
    if not isinstance(spec, AlgorithmConfig):
        spec = build_dataclass(AlgorithmConfig, resolve_algorithm_block(spec), "algorithm")
    return resolve_algorithm(spec, RolloutConfig())


class ZooPolicyLoss:
    """One algorithm (base + strategies) as a verl policy loss: call it with verl's policy-loss arguments.

    Per call (one micro-batch): the step-level hooks (shape_advantages, token_weights, metrics) on the
    micro-batch with detached log-probs, then the per-token loss (a strategy's, the base's, or the clipped
    surrogate with the algorithm's dual clip) times the weights (times verl's rollout_is_weights when given),
    aggregated by the algorithm's `loss_agg` over verl's global denominators, plus the reference KL
    (`kl_coef`) and the strategies' extra losses. Returns (loss, metrics) as verl expects.
    `step` counts calls (it seeds Clip-Cov's draw with `seed`); set it to line up with another run.
    """

    def __init__(self, spec: str | dict | AlgorithmConfig, name: str = "", seed: int = 0):
        self.algo = algorithm_from_spec(spec)
        self.base = get_base(self.algo.base)
        self.strategies = build_strategies(self.algo)
        self.name = name or f"{PREFIX}{self.algo.preset or 'custom'}"
        self.seed, self.step = int(seed), 0
        reason = unsupported_reason(self.strategies)
        if reason:
            raise ConfigError(f"{self.name}: {reason}")
        if self.algo.loss_agg == "weighted-token-mean":
            raise ConfigError(f"{self.name}: loss_agg weighted-token-mean needs Σw over the whole mini-batch on all "
                              "ranks, which a verl policy loss does not see; use normalize: all (token-mean)")
        self._warned: set[str] = set()

    # -- helpers -----------------------------------------------------------------------------------
    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"[zoo] {self.name}: {msg}", stacklevel=3)

    def _denominators(self, mask: torch.Tensor, config: Any) -> tuple[dict, float]:
        """Step denominators from verl's global batch info (dp-wide), and the dp size."""
        info = dict(getattr(config, "global_batch_info", None) or {}) if config is not None else {}
        dp = float(info.get("dp_size") or 1)
        n_tok, n_seq = info.get("batch_num_tokens"), info.get("global_batch_size")
        max_len = info.get("loss_scale_factor") or mask.shape[-1]
        as_float = lambda x: float(x.item() if isinstance(x, torch.Tensor) else x)  # noqa: E731
        return {"n_valid": as_float(n_tok) if n_tok is not None else float(mask.sum()),
                "n_seqs": as_float(n_seq) if n_seq is not None else float(mask.shape[0]),
                "sum_weights": 0.0, "max_len": as_float(max_len)}, dp

    def context(self, old_log_prob, log_prob, advantages, mask, h: Handover) -> TokenContext:
        B, T = mask.shape
        a = self.algo
        if self.strategies and h.entropy is None:
            raise RuntimeError(f"{self.name}: no token entropy was handed over. Run the loss through the actor "
                               "extension (zoo.integrations.verl.install(), or external_lib: "
                               "zoo.integrations.verl_plugin) and set actor_rollout_ref.actor.calculate_entropy=true")
        ent = h.entropy if h.entropy is not None else torch.zeros_like(log_prob)
        if tuple(ent.shape) != (B, T):
            raise RuntimeError(f"{self.name}: handed-over entropy has shape {tuple(ent.shape)}, log_prob {(B, T)}")
        gids = h.group_ids
        if gids is None:
            if self.strategies:
                self._warn_once("uid", "no group ids (verl's `uid`) were handed over: every response is its own group")
            gids = torch.arange(B)
        rewards = h.rewards if h.rewards is not None else torch.zeros(B)
        dev = log_prob.device
        return TokenContext(
            logp=log_prob.detach(), old_logp=old_log_prob.detach(), entropy=ent.detach().float(), mask=mask,
            advantages=advantages.detach().float() * mask, group_ids=gids.to(dev), rewards=rewards.to(dev).float(),
            temperatures=torch.ones_like(log_prob), ref_logp=None if h.ref_log_prob is None else h.ref_log_prob.detach(),
            micro_batch_ids=None, n_micro_batches=1, step=self.step, seed=self.seed,
            clip_low=a.clip_low, clip_high=a.clip_high, clip_ratio_c=a.clip_ratio_c,
            step_n_valid=float(mask.sum()), step_n_seqs=float(B))

    # -- the policy loss -----------------------------------------------------------------------------
    def __call__(self, old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                 response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", config: Any = None,
                 rollout_is_weights: torch.Tensor | None = None, **_: Any):
        a, h = self.algo, _HANDOVER.get() or Handover()
        mask = response_mask.bool()
        if loss_agg_mode and loss_agg_mode != a.loss_agg:
            self._warn_once("agg", f"aggregates with the preset's loss_agg '{a.loss_agg}', not verl's "
                                   f"loss_agg_mode '{loss_agg_mode}' (which still applies to verl's entropy/KL terms)")
        ctx = self.context(old_log_prob, log_prob, advantages, mask, h)
        weights = shape_and_weight(self.strategies, ctx)              # step-level hooks, this micro-batch
        metrics: dict[str, float] = {}
        for s in self.strategies:
            metrics.update({f"zoo/{s.name}/{k}": float(v) for k, v in s.metrics(ctx).items()})
        ent = h.entropy if h.entropy is not None else ctx.entropy
        needs_grad = any(s.needs_entropy_grad for s in self.strategies)
        mctx = dataclasses.replace(ctx, logp=log_prob, entropy=ent.float() if needs_grad else ctx.entropy)
        if a.kl_coef > 0 and mctx.ref_logp is None:
            raise RuntimeError(f"{self.name}: kl_coef > 0 needs reference log-probs: enable verl's reference "
                               "policy (actor_rollout_ref.actor.use_kl_loss=true with kl_loss_coef=0)")
        denom, dp = self._denominators(mask, config)
        # extra losses are normalised over the micro-batch (its own step); weighting each by its share of the
        # mini-batch's tokens makes the shares add up to the mini-batch value (exact for token-level terms)
        share = float(mask.sum()) / max(denom["n_valid"], 1.0)
        loss, _ = micro_batch_loss(mctx, weights, denom, a, self.base, self.strategies,
                                   token_scale=rollout_is_weights, extra_scale=share)
        loss = loss * dp                                            # verl's FSDP averages gradients over dp ranks
        with torch.no_grad():
            lp, nv = log_prob.detach(), mask.sum().clamp(min=1)
            r, A = torch.exp(lp - ctx.old_logp), ctx.advantages
            metrics["actor/pg_clipfrac"] = float(((((r > 1 + a.clip_high) & (A > 0)) | ((r < 1 - a.clip_low) & (A < 0)))
                                                  & mask).sum() / nv)
            metrics["actor/ppo_kl"] = float(((ctx.old_logp - lp) * mask).sum() / nv)
            metrics["zoo/weight_share"] = float(weights.sum() / nv)
        self.step += 1
        return loss, metrics


class _Refused:
    """A registered name whose algorithm cannot run in verl: calling it raises with the reason."""

    def __init__(self, name: str, reason: str):
        self.name, self.reason = name, reason

    def __call__(self, *args: Any, **kwargs: Any):
        raise ConfigError(f"{self.name}: {self.reason}")


def preset_names() -> list[str]:
    return sorted(set(preset_files()) | set(PRESETS.names()))


def build_losses(names: list[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """`zoo_<preset>` -> its loss (a ZooPolicyLoss, or a refusal that raises with the reason when called)."""
    out: dict[str, Any] = {}
    for p in names or preset_names():
        try:
            out[PREFIX + p] = ZooPolicyLoss(p, PREFIX + p, seed=seed)
        except ConfigError as e:
            out[PREFIX + p] = _Refused(PREFIX + p, str(e).split(": ", 1)[-1])
    return out


def register(names: list[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """Register `zoo_<preset>` for every preset (or `names`) in verl's policy-loss registry. Returns them."""
    from verl.trainer.ppo import core_algos

    losses = build_losses(names, seed)
    for name, fn in losses.items():
        core_algos.register_policy_loss(name)(fn)
    return losses


def register_algorithm(name: str, algorithm: str | dict, seed: int = 0) -> ZooPolicyLoss:
    """Register a custom algorithm mapping (like the config's `algorithm:` block) under a verl loss name."""
    from verl.trainer.ppo import core_algos

    fn = ZooPolicyLoss(algorithm, name, seed=seed)
    core_algos.register_policy_loss(name)(fn)
    return fn


# ------------------------------------------------------------------------------------------------
# The actor extension
# ------------------------------------------------------------------------------------------------
def _padded(td: Any, key: str) -> torch.Tensor | None:
    """A per-token field of verl's micro-batch TensorDict, padded to (B, T), or None when absent."""
    if key not in td.keys():
        return None
    return td.select(key).to_padded_tensor()[key]


def group_ids_from_uids(uids: Any) -> torch.Tensor:
    """verl's per-response `uid` strings -> (B,) ints, equal ids for equal uids (order of first appearance)."""
    uids = uids.tolist() if hasattr(uids, "tolist") else list(uids)
    index: dict[Any, int] = {}
    return torch.tensor([index.setdefault(u, len(index)) for u in uids], dtype=torch.long)


def collect_handover(model_output: dict, data: Any) -> Handover:
    """Entropy, group ids, reference log-probs and rewards of one verl micro-batch, padded like log_prob."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import no_padding_2_padding

    ent = model_output.get("entropy", None)
    if ent is not None:
        ent = no_padding_2_padding(ent, data)
    uids = tu.get(data, "uid", None) if "uid" in data.keys() else None
    scores = _padded(data, "token_level_scores")
    return Handover(entropy=ent, group_ids=None if uids is None else group_ids_from_uids(uids),
                    ref_log_prob=_padded(data, "ref_log_prob"),
                    rewards=None if scores is None else scores.float().sum(-1))


def zoo_ppo_loss(config: Any, model_output: dict, data: Any, dp_group: Any = None):
    """The actor extension: verl's actor loss (`verl.workers.utils.losses.ppo_loss`) with the micro-batch's
    entropy, group ids, reference log-probs and rewards handed to a `zoo_*` policy loss. Other loss modes run
    verl's loss unchanged. Same signature as verl's `ppo_loss(config, model_output, data, dp_group)`."""
    from verl.workers.utils import losses

    mode = str(config.policy_loss.get("loss_mode", "vanilla"))
    if not mode.startswith(PREFIX):
        return losses.ppo_loss(config, model_output, data, dp_group)
    token = _HANDOVER.set(collect_handover(model_output, data))
    try:
        return losses.ppo_loss(config, model_output, data, dp_group)
    finally:
        _HANDOVER.reset(token)


def install(seed: int = 0) -> dict[str, Any]:
    """Register every `zoo_<preset>` loss and make verl's actor worker compute its loss with `zoo_ppo_loss`.
    Idempotent. Call it in every process that builds an actor (verl does, through external_lib)."""
    losses = register(seed=seed)
    try:
        from verl.workers import engine_workers
    except Exception as e:  # noqa: BLE001  (ray / engine deps missing: the registry part still works)
        warnings.warn(f"[zoo] verl's engine workers not importable ({type(e).__name__}: {e}); "
                      "registered the zoo_* losses only", stacklevel=2)
        return losses
    if getattr(engine_workers, "ppo_loss", None) is not zoo_ppo_loss:
        engine_workers.ppo_loss = zoo_ppo_loss
    return losses
