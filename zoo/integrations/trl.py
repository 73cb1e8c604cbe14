"""The zoo's strategies inside TRL's GRPOTrainer: `ZooGRPOTrainer(..., algorithm="eapo")`.

    from trl import GRPOConfig
    from zoo.integrations.trl import ZooGRPOTrainer
    trainer = ZooGRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(...), train_dataset=...,
                             algorithm="eapo")          # or {"base": "dapo", "strategies": [...]}
    trainer.train()

TRL keeps generation (transformers or vLLM), rewards, the base advantages (`scale_rewards`), the
reference model (`beta`), accelerate/DeepSpeed/FSDP and PEFT. The loss is ours, built by
`zoo.loss` exactly as our trainer builds it: the strategies' advantage shaping and token weights,
the one policy-loss replacement or the base's clipped surrogate (with dual clip), the KL term,
the algorithm's `loss_agg` with step-level denominators, extra losses. Diagnostics are logged
under each strategy's name next to TRL's own metrics.

- Group ids (and each row's total reward) are carried through `_generate_and_score_completions`
  as `zoo_group_ids` / `zoo_rewards`; when `per_device_train_batch_size` is a multiple of
  `num_generations` the generation batch is shuffled by whole groups (TRL shuffles rows), so a
  micro-batch holds whole groups.
- Scope: with `gradient_accumulation_steps=1` a micro-batch is the optimizer step (over all
  processes, through `zoo.distributed.DistReducer`), so step-scope statistics hold; otherwise the
  step-level hooks run per micro-batch (a warning says so).
- What is TRL's business or cannot run here is listed by `zoo.integrations.trl_setup`.
Supported TRL: `SUPPORTED_TRL` (checked at construction, a clear error outside it).
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings

import torch

from zoo.integrations.trl_setup import SUPPORTED_TRL, check_trl_version, resolve_for_trl  # noqa: F401
from zoo.loss import micro_batch_loss, shape_and_weight
from zoo.strategy import Reducer, TokenContext

check_trl_version()

from trl import GRPOTrainer  # noqa: E402
from trl.trainer.utils import split_pixel_values_by_grid, split_tensor_dict, unsplit_pixel_values_by_grid  # noqa: E402

STATE_FILE = "zoo_strategies.json"


def shuffle_groups(batch: dict, group_ids: torch.Tensor) -> dict:
    """TRL's `shuffle_sequence_dict`, permuting whole groups (rows of a group stay together, in order)."""
    uniq, inv = torch.unique(group_ids.cpu(), return_inverse=True)
    rank = torch.empty_like(uniq)
    rank[torch.randperm(len(uniq))] = torch.arange(len(uniq))        # each group's new position
    perm = torch.argsort(rank[inv] * len(inv) + torch.arange(len(inv)))

    def permute(v):
        if v is None or (isinstance(v, torch.Tensor) and v.ndim == 0):
            return v
        if isinstance(v, torch.Tensor):
            return v[perm.to(v.device)]
        return [v[i] for i in perm.tolist()]

    return {k: permute(v) for k, v in batch.items()}


class ZooGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose loss is the zoo algorithm `algorithm` (a preset name or an `algorithm:` mapping).

    `plugins`: modules or .py files to import first (strategies registered outside the package)."""

    def __init__(self, model, reward_funcs, args=None, *rest, algorithm="grpo", plugins=(), **kwargs):
        if args is not None:        # refuse before TRL loads the model(s)
            resolve_for_trl(algorithm, args, plugins=plugins)
        super().__init__(model, reward_funcs, args, *rest, **kwargs)
        setup = resolve_for_trl(algorithm, self.args, plugins)
        self.zoo_algo, self.zoo_base, self.zoo_strategies = setup.algo, setup.base, setup.strategies
        self.zoo_keep_groups = setup.keep_groups
        if self.accelerator.num_processes > 1:
            from zoo.distributed import DistReducer
            self.zoo_reduce = DistReducer(self.accelerator.device)
        else:
            self.zoo_reduce = Reducer()
        for s in self.zoo_strategies:
            s.reduce = self.zoo_reduce
        if self.accelerator.is_main_process:
            for w in setup.warnings:
                warnings.warn(f"ZooGRPOTrainer: {w}", stacklevel=2)
        self._zoo_rewards_per_func = None

    # ---- carrying group ids and rewards through generation -----------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._zoo_rewards_per_func = out                       # (all processes' rows, reward functions)
        return out

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        G = self.num_generations if self.model.training else self.num_generations_eval
        n, dev = len(inputs), out["completion_ids"].device
        start = self.accelerator.process_index * n             # TRL's process slice of the gathered batch
        out["zoo_group_ids"] = torch.arange(start, start + n, device=dev) // G
        rpf = self._zoo_rewards_per_func
        if rpf is not None and rpf.shape[0] >= start + n:
            r = (rpf * self.reward_weights.to(rpf.device).unsqueeze(0)).nansum(dim=1)
            out["zoo_rewards"] = r[start:start + n].to(dev)
        return out

    def _prepare_inputs(self, generation_batch):
        if not (self.model.training and self.zoo_keep_groups):
            return super()._prepare_inputs(generation_batch)
        # TRL's train path (trl 1.16 GRPOTrainer._prepare_inputs), with whole groups shuffled instead of rows
        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            batch = self._generate_and_score_completions(generation_batch)
            batch = split_pixel_values_by_grid(batch)
            batch = shuffle_groups(batch, batch["zoo_group_ids"])
            batches = split_tensor_dict(batch, self.args.steps_per_generation)
            self._buffered_inputs = [unsplit_pixel_values_by_grid(b) for b in batches]
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    # ---- the loss ------------------------------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        mask = mask.bool()
        logp, ent, aux_loss = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
            **{k: inputs.get(k) for k in ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask",
                                          "spatial_shapes", "num_tiles", "image_sizes", "token_type_ids",
                                          "mm_token_type_ids", "image_position_ids")})
        B, T = logp.shape
        dev, red, a = logp.device, self.zoo_reduce, self.zoo_algo
        adv = inputs["advantages"]
        adv = (adv.unsqueeze(1) if adv.dim() == 1 else adv).float().expand(B, T) * mask
        old = inputs.get("old_per_token_logps")
        old = logp.detach() if old is None else old
        G = self.num_generations if mode == "train" else self.num_generations_eval
        gids = inputs.get("zoo_group_ids")
        gids = torch.arange(B, device=dev) // G if gids is None else gids
        rewards = inputs.get("zoo_rewards")
        rewards = torch.zeros(B, device=dev) if rewards is None else rewards
        gas = self.current_gradient_accumulation_steps if mode == "train" else 1
        spg = self.args.steps_per_generation if mode == "train" else 1
        L = self.max_completion_length

        # step-level denominators: exact over all processes when a step is one micro-batch; otherwise
        # TRL's token count of the generation batch per optimizer step (exact when steps_per_generation
        # equals gradient_accumulation_steps, TRL's default) and this micro-batch's counts times gas
        counts = red.sum(torch.tensor([float(B), float(mask.sum())], dtype=torch.float64)).tolist()
        n_seqs, n_valid = counts[0] * gas, counts[1] * gas
        if gas > 1 and inputs.get("num_items_in_batch") is not None:
            n_valid = float(inputs["num_items_in_batch"]) * gas / spg
        ctx = TokenContext(logp=logp.detach(), old_logp=old, entropy=ent.detach().float(), mask=mask, advantages=adv,
                           group_ids=gids, rewards=rewards.float(),
                           temperatures=torch.full_like(logp, self.temperature),
                           ref_logp=inputs.get("ref_per_token_logps"), step=int(self.state.global_step),
                           seed=int(self.args.seed), clip_low=a.clip_low, clip_high=a.clip_high,
                           clip_ratio_c=a.clip_ratio_c, base_temperature=float(self.temperature),
                           step_n_valid=n_valid, step_n_seqs=n_seqs, max_new_tokens=L, reduce=red)
        weights = shape_and_weight(self.zoo_strategies, ctx)
        metrics = {f"{s.name}/{k}": float(v) for s in self.zoo_strategies for k, v in s.metrics(ctx).items()}
        sw = float(red.sum(weights.detach().sum().double())) * gas
        denom = {"n_valid": n_valid, "n_seqs": n_seqs, "sum_weights": sw, "max_len": float(L)}
        ent_grad = any(s.needs_entropy_grad for s in self.zoo_strategies)
        mctx = dataclasses.replace(ctx, logp=logp, entropy=ent.float() if ent_grad else ctx.entropy)
        scale = None
        if self.use_vllm and self.vllm_importance_sampling_correction:
            scale = inputs["importance_sampling_ratio"]
        kl_scale = None                         # TRL's default: the KL term times the ratio (unbiased gradient)
        if a.kl_coef > 0 and getattr(self.args, "use_bias_correction_kl", False):
            kl_scale = torch.exp(logp - old)
        loss, _ = micro_batch_loss(mctx, weights, denom, a, self.zoo_base, self.zoo_strategies, token_scale=scale,
                                   kl_scale=kl_scale)
        loss = loss * red.world                 # DDP averages gradients over processes: the step loss is their sum
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * aux_loss / gas
            metrics["aux_loss"] = float(red.sum(aux_loss.detach().float())) / red.world
        self._zoo_log(mode, mctx, weights, metrics, kl_scale)
        return loss

    def _zoo_log(self, mode: str, mctx: TokenContext, weights: torch.Tensor, metrics: dict, kl_scale=None) -> None:
        """TRL's usual loss metrics (entropy, clip ratios, kl) plus the strategies' diagnostics."""
        red, m = self.zoo_reduce, mctx.mask
        with torch.no_grad():
            ratio, A = torch.exp(mctx.logp.detach() - mctx.old_logp), mctx.advantages
            low = (ratio < 1 - mctx.clip_low) & (A < 0)
            high = (ratio > 1 + mctx.clip_high) & (A > 0)
            out = {"entropy": red.masked_mean(mctx.entropy, m), "clip_ratio/low_mean": red.masked_mean(low, m),
                   "clip_ratio/high_mean": red.masked_mean(high, m),
                   "clip_ratio/region_mean": red.masked_mean(low | high, m),
                   "zoo/adv_mean_abs": red.masked_mean(A.abs(), m), "zoo/weight_share": red.masked_mean(weights, m)}
            if mctx.ref_logp is not None:
                d = mctx.ref_logp - mctx.logp.detach()
                kl = torch.exp(d) - d - 1                       # as TRL logs it (times the ratio with bias correction)
                out["kl"] = red.masked_mean(kl if kl_scale is None else kl * kl_scale.detach(), m)
        out = {k: float(v) for k, v in out.items()}
        for k, v in {**out, **metrics}.items():
            self._metrics[mode][k].append(v)

    # ---- strategy state (entropy_reg's adaptive c, ...) in TRL checkpoints -----------------------------
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            d = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            if os.path.isdir(d):
                with open(os.path.join(d, STATE_FILE), "w") as f:
                    json.dump([s.state_dict() for s in self.zoo_strategies], f)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        path = os.path.join(checkpoint, STATE_FILE) if checkpoint else None
        if path and os.path.isfile(path):
            with open(path) as f:
                for s, st in zip(self.zoo_strategies, json.load(f)):
                    s.load_state_dict(st)
