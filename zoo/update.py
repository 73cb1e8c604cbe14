"""The update phase of the loop: every optimizer step on one scored rollout batch.

`UpdatePhase` is mixed into `zoo.trainer.Trainer` (it uses the trainer's model, optimizer,
strategies and reducer). One rollout batch is split into `train.minibatches` group-aligned
minibatches per epoch; each is one optimizer step, processed in gradient-accumulation
micro-batches. Strategies see the whole optimizer step at once (step-scope statistics), and
every loss denominator is counted over the whole step, all micro-batches and all ranks.
"""
from __future__ import annotations

import math
import time

import torch

from zoo import ops
from zoo.batches import Scored, entropy_metrics, mean_dicts, quadrant_metrics, slice_ctx, split_groups
from zoo.loss import micro_batch_loss, shape_and_weight
from zoo.strategy import TokenContext
from zoo.types import RolloutBatch


class NonFiniteError(RuntimeError):
    """`train.max_bad_steps` consecutive optimizer steps had a non-finite loss or gradient."""


class UpdatePhase:
    """Mixin: `update` (all optimizer steps of a rollout batch) and what one step needs."""

    def update(self, sc: Scored) -> dict:
        """All optimizer steps on one scored rollout batch (this rank's share of it)."""
        b, cfg, red = sc.batch, self.cfg, self.reduce
        mask = b.response_mask
        ents = red.masked_values(sc.entropy, mask)       # every rank's valid tokens, gathered once
        m = entropy_metrics(ents)
        m.update(quadrant_metrics(sc.advantages, sc.entropy, mask, b.group_ids, red))
        mis = float(red.sum(((b.logp - sc.old_logp).abs() * mask).sum().double()))
        m["rollout/sampler_logp_mismatch"] = mis / max(ents.numel(), 1)
        self._hist = {"entropy/tokens": ents}
        t_train, first, step_logs = time.perf_counter(), True, []
        G = cfg.rollout.group_size
        n_mine = len(b.texts) // G
        g0, n_groups = red.offset(n_mine)               # this rank holds global groups [g0, g0 + n_mine)
        for epoch in range(cfg.train.epochs):
            order = list(range(n_groups))
            if epoch > 0:                                 # the same shuffle on every rank, resumable
                g = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + self.step_idx * 1_009 + epoch)
                order = torch.randperm(n_groups, generator=g).tolist()
            for chunk in split_groups(order, cfg.train.minibatches):       # minibatches of global groups
                idx = [(k - g0) * G + j for k in chunk if g0 <= k < g0 + n_mine for j in range(G)]
                step_logs.append(self.optimizer_step(sc, idx, first))
                first = False
        m.update(mean_dicts([d for d in step_logs if d]))
        m["perf/train_seconds"] = time.perf_counter() - t_train
        return m

    def optimizer_step(self, sc: Scored, idx: list[int], first: bool) -> dict:
        """One optimizer step on rows idx of this rank's share; every denominator and statistic is
        global (all ranks, all micro-batches). Ranks with fewer micro-batches, or none, run
        zero-loss ones so that every rank makes the same collective calls."""
        cfg, a, b, red, dev = self.cfg, self.cfg.algorithm, sc.batch, self.reduce, self.device
        n_rows = int(red.sum(torch.tensor(len(idx))))
        if n_rows == 0:
            return {}
        it = torch.tensor(idx, dtype=torch.long)
        on = lambda x: None if x is None else x[it].to(dev)  # noqa: E731
        mask = on(b.response_mask)
        m: dict[str, float] = {}
        if first:                 # the policy still equals π_old: the scoring pass gives step statistics
            logp_now, ent_now = sc.old_logp[it], sc.entropy[it]
        else:                     # later steps on the same rollout batch: no-grad pre-pass at the current policy
            t0 = time.perf_counter()
            with torch.no_grad():
                logp_now, ent_now = self._forward(self.model, b, idx)
            m["perf/prepass_seconds"] = time.perf_counter() - t0
        mbs = cfg.train.micro_batch_size or max(len(idx), 1)
        mb_ids = torch.arange(len(idx), device=dev) // mbs
        n_mb = int(red.max(torch.tensor(-(-len(idx) // mbs))))
        nv = float(red.sum(mask.sum()))
        ctx = TokenContext(logp=logp_now.to(dev), old_logp=on(sc.old_logp), entropy=ent_now.to(dev), mask=mask,
                           advantages=on(sc.advantages), group_ids=on(b.group_ids), rewards=on(sc.rewards),
                           temperatures=on(b.temperatures), ref_logp=on(sc.ref_logp),
                           micro_batch_ids=mb_ids, n_micro_batches=n_mb, step=self.opt_steps, seed=cfg.train.seed,
                           clip_low=a.clip_low, clip_high=a.clip_high, clip_ratio_c=a.clip_ratio_c,
                           base_temperature=cfg.rollout.temperature,
                           step_n_valid=nv, step_n_seqs=float(n_rows),
                           max_new_tokens=cfg.rollout.max_new_tokens, reduce=red)
        # ---- strategies: advantages, then weights (step-level) -----------------------------------
        weights = shape_and_weight(self.strategies, ctx)                 # ctx.advantages shaped in place
        for s in self.strategies:
            m.update({f"{s.name}/{k}": float(v) for k, v in s.metrics(ctx).items()})
        denom = ops.agg_denominators(mask, weights, cfg.rollout.max_new_tokens)
        denom["n_valid"], denom["n_seqs"], denom["sum_weights"] = red.sum(torch.tensor(
            [denom["n_valid"], denom["n_seqs"], denom["sum_weights"]], dtype=torch.float64)).tolist()
        m["train/weight_share"] = denom["sum_weights"] / max(denom["n_valid"], 1.0)
        # (B, T) tokens whose log-prob gradient can be non-zero under the clipped surrogate (w ≠ 0, A ≠ 0)
        nonzero = (weights != 0) & (ctx.advantages != 0) & mask
        n_nonzero = float(red.sum(nonzero.sum()))
        sparse = self._sparse_backward_applies() and n_nonzero < 0.75 * nv
        m["train/sparse_backward"] = float(sparse)
        # ---- loss over micro-batches, step-level denominators ------------------------------------
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        sums = torch.zeros(6, dtype=torch.float64)       # loss, clip low, clip high, k3 KL old, k3 KL ref, |A|
        sums[5] = float((ctx.advantages.abs() * mask).sum())
        for mb in range(n_mb):
            sync = mb == n_mb - 1        # DDP / FSDP: reduce gradients with the last micro-batch only
            with self.grad_sync(sync):
                sel = (mb_ids == mb).nonzero().squeeze(-1)
                if len(sel) == 0:
                    self._empty_backward()
                    continue
                rows_nz = nonzero[sel] if sparse else None      # (a micro-batch with none stays dense: its
                if rows_nz is not None and not bool(rows_nz.any()):  # loss is 0, and DDP wants every parameter used)
                    rows_nz = None
                logp, ent = self._train_forward(b, [idx[i] for i in sel.tolist()], rows_nz)
                mctx = slice_ctx(ctx, sel, logp, ent)
                if first:   # π_old = this forward's own detached log-prob: the ratio is exactly 1 by
                    mctx.old_logp = logp.detach()   # construction (bf16, checkpointing, LoRA alike)
                loss, loss_mat = self._micro_batch_loss(mctx, weights[sel], denom)
                (loss * self.world).backward()           # DDP averages over ranks: the step loss is their sum
            with torch.no_grad():
                mm, lp = mctx.mask, logp.detach()
                ratio, A = torch.exp(lp - mctx.old_logp), mctx.advantages
                d = mctx.old_logp - lp
                sums[:5] += torch.stack([
                    loss.detach().double().cpu(),
                    ((((ratio < 1 - a.clip_low) & (A < 0)) & mm).sum()).double().cpu(),
                    ((((ratio > 1 + a.clip_high) & (A > 0)) & mm).sum()).double().cpu(),
                    (((torch.exp(-d) + d - 1) * mm).sum()).double().cpu(),             # k3 KL(π_old || π_θ)
                    ((ops.k3_kl(lp, mctx.ref_logp) * mm).sum().double().cpu() if mctx.ref_logp is not None
                     else torch.zeros((), dtype=torch.float64))])
        sums = red.sum(sums)
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip or float("inf"))
        gnorm = gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm      # FSDP: a DTensor
        loss_total = float(sums[0])
        if not (math.isfinite(loss_total) and torch.isfinite(gnorm)):
            self.opt.zero_grad(set_to_none=True)
            self.bad_steps += 1
            self.print(f"[zoo] non-finite loss or gradient at step {self.step_idx}: update skipped "
                       f"({self.bad_steps}/{cfg.train.max_bad_steps} in a row)")
            if self.bad_steps >= cfg.train.max_bad_steps:
                raise NonFiniteError(f"{self.bad_steps} consecutive non-finite steps; stopping. Lower train.lr "
                                     "or check the strategy parameters.")
            return {"train/skipped_nonfinite": 1.0}
        self.bad_steps = 0
        self.opt.step()
        self.sched.step()
        self.opt_steps += 1
        nvc = max(nv, 1.0)
        m.update({"loss/total": loss_total, "clip/frac_low": float(sums[1]) / nvc,
                  "clip/frac_high": float(sums[2]) / nvc, "kl/old": float(sums[3]) / nvc,
                  "train/grad_norm": float(gnorm), "adv/mean_abs": float(sums[5]) / nvc})
        if sc.ref_logp is not None:
            m["kl/ref"] = float(sums[4]) / nvc
        return m

    def _micro_batch_loss(self, mctx: TokenContext, weights: torch.Tensor, denom: dict):
        """The micro-batch's share of the step loss (step-level denominators) and its (B, T) loss."""
        return micro_batch_loss(mctx, weights, denom, self.cfg.algorithm, self.base, self.strategies)   # zoo.loss

    def _train_forward(self, b: RolloutBatch, rows: list[int], grad_rows: torch.Tensor | None = None):
        ent_grad = any(s.needs_entropy_grad for s in self.strategies)
        return self.train_forward(b.prompt_ids[rows], b.prompt_mask[rows], b.response_ids[rows],
                                  b.response_mask[rows], b.temperatures[rows], self.cfg.rollout.temperature,
                                  self.cfg.model.chunk_size, entropy_grad=ent_grad, grad_rows=grad_rows)

    def _sparse_backward_applies(self) -> bool:
        """Only the weighted tokens' log-probs need gradients: no reference KL, no extra loss, no
        replaced per-token loss (GSPO's sequence ratio, Archer's KL, KL-Cov read every token), no
        entropy gradient. Otherwise the dense backward."""
        a = self.cfg.algorithm
        return (self.cfg.train.sparse_backward and a.kl_coef == 0 and self.base.policy_loss is None
                and not any(s.overrides("policy_loss") or s.overrides("extra_loss") or s.needs_entropy_grad
                            for s in self.strategies))

    def _empty_backward(self) -> None:
        """A zero-loss micro-batch (one EOS token): keeps a rank with no rows in step with DDP."""
        eos = self.tok.eos_token_id
        one = torch.tensor([[eos]])
        lp, _ = self.train_forward(one, torch.ones(1, 1, dtype=torch.bool), one, torch.ones(1, 1, dtype=torch.bool),
                                   torch.ones(1, 1), self.cfg.rollout.temperature, self.cfg.model.chunk_size)
        (lp.sum() * 0.0).backward()
