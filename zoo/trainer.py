"""The training loop: sample -> reward -> filter -> advantages -> strategies -> loss -> step.

    trainer = Trainer(load_config("configs/quickstart.yaml"), out_dir="runs/quickstart")
    trainer.train()

One rollout batch (prompts x G responses) is split into `train.minibatches` group-aligned
minibatches; each is one optimizer step, processed in gradient-accumulation micro-batches.
Strategies see the whole optimizer step at once (step-scope statistics), and every loss
denominator is counted over the whole step (ALGORITHMS.md "Steps, batches").
"""
from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from zoo import ops
from zoo.batches import (DataStream, PolicyScorer, Scored, cat_batches, entropy_metrics, mean_dicts,
                         quadrant_metrics, rank_share, slice_ctx, split_groups)
from zoo.checkpoint import load_latest, load_state, rng_state, save_checkpoint, set_rng_state
from zoo.config import Config, ConfigError, config_diff, save_config
from zoo.data import get_task
from zoo.distributed import DistReducer, make_accelerator
from zoo.evaluate import evaluate
from zoo.logging import MetricsLogger, NullLogger
from zoo.model import load_policy, save_policy
from zoo.objectives import build_strategies, get_base, overlong_penalty
from zoo.pretrain import ensure_base_model
from zoo.rollout import HFEngine, response_logp_entropy
from zoo.strategy import Reducer, TokenContext
from zoo.types import RolloutBatch


def set_threads(n: int) -> None:
    if n <= 0:
        n = 1 if os.environ.get("CI") else max(1, min(4, os.cpu_count() or 1))
    torch.set_num_threads(n)


class NonFiniteError(RuntimeError):
    pass


class Trainer:
    def __init__(self, cfg: Config, out_dir: str | Path, resume: bool = False, log=print):
        self.cfg, self.out = cfg, Path(out_dir)
        set_threads(cfg.train.threads)
        torch.manual_seed(cfg.train.seed)
        # multi-process (accelerate launch / torchrun): every rank holds whole groups, and every
        # global statistic goes through self.reduce; rank 0 alone evaluates, logs and saves
        self.acc = make_accelerator(cfg.model.device)
        self.reduce = DistReducer(self.acc.device) if self.acc else Reducer()
        self.rank, self.world = self.reduce.rank, self.reduce.world
        self.is_main = self.rank == 0
        self.print = log if self.is_main else (lambda *a, **k: None)
        if cfg.rollout.prompts_per_step < self.world:
            raise ConfigError(f"rollout.prompts_per_step ({cfg.rollout.prompts_per_step}) must be >= the number of "
                              f"processes ({self.world}): each rank samples whole groups")
        from rewards import get_reward

        self.task = get_task(cfg.task.name, **cfg.task.params)
        self.reward_fn = get_reward(cfg.reward.name or self.task.reward)
        avail = self.task.size("train")
        self.train_problems = self.task.problems("train", min(cfg.task.train_size, avail or cfg.task.train_size),
                                                 cfg.task.seed)
        self.eval_problems = self.task.problems("eval", cfg.eval.n or cfg.task.eval_size, cfg.task.seed)
        if self.is_main:
            model_path = ensure_base_model(cfg, log=log)
        self.reduce.barrier()                               # rank 0 may have pretrained the base model
        if not self.is_main:
            model_path = ensure_base_model(cfg, log=self.print)
        device = str(self.acc.device) if self.acc else cfg.model.device
        self.model, self.tok = load_policy(model_path, cfg.model.dtype, device)
        self.device = next(self.model.parameters()).device
        self.ref = None
        if cfg.algorithm.kl_coef > 0:
            self.ref, _ = load_policy(model_path, cfg.model.dtype, device)
            self.ref.eval().requires_grad_(False)
        self.base = get_base(cfg.algorithm.base)
        self.strategies = build_strategies(cfg.algorithm)
        for s in self.strategies:
            s.reduce = self.reduce
        # the training forward goes through one module, so DDP (accelerate.prepare) sees every call
        scorer = PolicyScorer(self.model)
        self.train_forward = self.acc.prepare(scorer) if self.acc else scorer
        t = cfg.train
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2),
                                     weight_decay=t.weight_decay)
        total = t.steps * t.minibatches * t.epochs
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: _lr_factor(s, total, t.warmup_steps, t.lr_schedule))
        self.engine = HFEngine(self.model, self.tok, compact=cfg.rollout.compact, compile=cfg.rollout.compile)
        self.gen = torch.Generator().manual_seed(t.seed + 1_000_003 * self.rank)   # each rank its own samples
        self.data = DataStream(self.train_problems, t.seed)
        self.step_idx, self.opt_steps, self.bad_steps = 0, 0, 0
        self.budget = {"samples": 0, "tokens": 0}
        self.last_eval = None
        if resume:
            self._resume()
        elif any(self.out.glob("ckpt-*")):
            raise FileExistsError(f"{self.out} already holds checkpoints; pass --resume to continue it "
                                  "or choose another --out (nothing was overwritten)")
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
        self.reduce.barrier()

    # ------------------------------------------------------------------------------------------
    def train(self) -> dict:
        cfg = self.cfg
        self.logger = (MetricsLogger(self.out, cfg.train.steps, self.step_idx, cfg.log.tensorboard, cfg.log.progress)
                       if self.is_main else NullLogger())
        last_eval = {}
        try:
            if self.step_idx == 0 and cfg.eval.at_start:
                last_eval = self.run_eval(0)
            while self.step_idx < cfg.train.steps and not self.token_budget_reached():
                self.step_idx += 1
                m = self.step()
                if self.token_budget_reached():
                    m["budget/token_budget_reached"] = 1
                if (cfg.eval.every and self.step_idx % cfg.eval.every == 0 and self.step_idx < cfg.train.steps
                        and not self.token_budget_reached()):
                    m.update(self._eval_metrics(self.step_idx))
                self.logger.log(self.step_idx, m, histograms=self._hist)
                self.logger.advance()
                if cfg.checkpoint.every and self.step_idx % cfg.checkpoint.every == 0:
                    self.save()
            last_eval = self.run_eval(self.step_idx)
            self.save()
            if self.is_main:
                save_policy(self.model, self.tok, self.out / "final", meta={"step": self.step_idx})
            self.reduce.barrier()
        finally:
            self.logger.close()
        return last_eval

    def token_budget_reached(self) -> bool:
        return bool(self.cfg.train.max_tokens) and self.budget["tokens"] >= self.cfg.train.max_tokens

    def _eval_metrics(self, step: int) -> dict:
        if not self.is_main:          # rank 0 evaluates the (identical) policy alone
            return {}
        e = self._evaluate()
        self.last_eval = e  # the latest EvalResult (per-problem scores for paired comparisons)
        self.logger.write(f"[eval] step {step}: accuracy {e.metrics['eval/accuracy']:.3f} "
                          + " ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in e.metrics.items() if "pass@" in k or "avg@" in k))
        if e.samples and self.logger.tb is not None:
            self.logger.tb.add_text("eval/samples", "\n\n".join(f"`{p!r}` -> `{c!r}` ({r})" for p, c, r in e.samples), step)
        return e.metrics

    def run_eval(self, step: int) -> dict:
        m = self._eval_metrics(step)
        if m:
            self.logger.log(step, m)
        return m

    def _evaluate(self):
        cfg, e = self.cfg, self.cfg.eval
        state = torch.get_rng_state()
        hook = self._temperature_hook() if e.use_strategy_sampler else None
        res = evaluate(self.model, self.tok, self.eval_problems, self.reward_fn,
                       max_new_tokens=e.max_new_tokens or cfg.rollout.max_new_tokens, greedy=e.greedy, k=e.k,
                       temperature=e.temperature, top_p=e.top_p, batch_size=e.batch_size, temperature_hook=hook,
                       seed=cfg.train.seed + 7919, n_samples=cfg.log.samples, metric=e.metric)
        torch.set_rng_state(state)
        return res

    # ------------------------------------------------------------------------------------------
    def _temperature_hook(self):
        hooks = [s for s in self.strategies if s.overrides("token_temperature")]
        if not hooks:
            return None

        def hook(H, base_t):
            t = None
            for s in hooks:
                t = s.token_temperature(H, base_t) if t is None else t
            return t
        return hook

    def rollout(self) -> tuple[Scored | None, dict]:
        """Sample until the batch is full of informative groups (dynamic sampling) or the cap.

        Every rank draws the same prompts and samples its contiguous share of them (whole groups);
        the loop's decisions use global counts, so all ranks take the same number of rounds.
        """
        r, a, red = self.cfg.rollout, self.cfg.algorithm, self.reduce
        t0, kept, rounds, m = time.perf_counter(), [], 0, {}
        reward_s, rounds_seen, sums = 0.0, [], torch.zeros(7, dtype=torch.float64)
        lo, hi = rank_share(r.prompts_per_step, self.rank, self.world)
        self.engine.sync_weights(self.model)          # the engine samples from the current policy
        while True:
            problems = self.data.take(r.prompts_per_step)[lo:hi]
            b = self.engine.sample(problems, r.group_size, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                                   top_p=r.top_p, top_k=r.top_k, temperature_hook=self._temperature_hook(),
                                   generator=self.gen, group_offset=rounds * r.prompts_per_step + lo,
                                   stop_at_eos=not r.ignore_eos)
            tr = time.perf_counter()
            correct = torch.tensor([float(x) for x in self.reward_fn(b.texts, [p.answer for p in b.problems])])
            reward_s += time.perf_counter() - tr
            faults = getattr(self.reward_fn, "last_stats", None) or {}     # samples scored 0 by a failing verifier
            rew = correct + overlong_penalty(b.lengths, r.max_new_tokens, a.overlong_buffer, a.overlong_penalty)
            sums += torch.tensor([len(b.texts), float(b.lengths.sum()), float(correct.sum()),
                                  float(b.truncated.float().sum()), 0.0, faults.get("errors", 0),
                                  faults.get("timeouts", 0)], dtype=torch.float64)
            rounds_seen.append(b)
            if a.dynamic_sampling:
                g = rew.view(-1, r.group_size)                                           # (groups, G)
                informative = g.max(-1).values > g.min(-1).values                        # not all equal
                sums[4] += float((~informative).sum())
                idx = [i for i in range(len(b.texts)) if informative[i // r.group_size]]
            else:
                idx = list(range(len(b.texts)))
            kept.append((b.select(idx), rew[idx], correct[idx]))
            rounds += 1
            n_groups = int(red.sum(torch.tensor(sum(len(k[1]) for k in kept) // r.group_size)))
            if not a.dynamic_sampling or n_groups >= r.prompts_per_step or rounds > a.max_resample_rounds:
                break
        # strategies see every sample of the step once (e.g. h_fork: auto = p80 of this step's rollouts)
        seen = cat_batches(rounds_seen, self.tok.pad_token_id)
        for s in self.strategies:
            s.on_rollout(seen)
        n_samples, n_tokens, n_correct, n_trunc, dropped, r_errors, r_timeouts = red.sum(sums).tolist()
        self.budget["samples"] += int(n_samples)
        self.budget["tokens"] += int(n_tokens)
        m.update({"reward/accuracy": n_correct / n_samples, "rollout/response_length": n_tokens / n_samples,
                  "rollout/truncated_share": n_trunc / n_samples, "rollout/rounds": rounds,
                  "rollout/dropped_groups": int(dropped), "budget/samples": self.budget["samples"],
                  "budget/tokens": self.budget["tokens"], "perf/reward_seconds": reward_s,
                  "reward/errors": int(r_errors), "reward/timeouts": int(r_timeouts)})
        if n_groups == 0:
            m["perf/rollout_seconds"] = time.perf_counter() - t0 - reward_s
            return None, m
        # keep exactly prompts_per_step groups: the first ones in (round, rank) order, as one process would
        counts = red.gather(torch.tensor([len(k[1]) // r.group_size for k in kept])).view(self.world, rounds)
        quota, left = torch.zeros_like(counts), r.prompts_per_step
        for rd in range(rounds):
            for rk in range(self.world):
                quota[rk, rd] = min(int(counts[rk, rd]), left)
                left -= int(quota[rk, rd])
        take = [(k[0].select(range(q * r.group_size)), k[1][:q * r.group_size], k[2][:q * r.group_size])
                for k, q in zip(kept, quota[self.rank].tolist())]
        take = [k for k in take if len(k[1])] or take[:1]        # (an empty share keeps one empty part)
        batch = cat_batches([k[0] for k in take], self.tok.pad_token_id)
        rewards, correct = torch.cat([k[1] for k in take]), torch.cat([k[2] for k in take])
        keep = len(rewards)
        tot = red.sum(torch.tensor([float(rewards.sum()), float(keep)], dtype=torch.float64)).tolist()
        m["reward/mean"] = tot[0] / max(tot[1], 1.0)
        m["perf/rollout_seconds"] = time.perf_counter() - t0 - reward_s
        return self.score(batch, rewards, correct), m

    @torch.no_grad()
    def score(self, b: RolloutBatch, rewards: torch.Tensor, correct: torch.Tensor) -> Scored:
        """The scoring pass: π_old at each token's temperature, entropy at the base temperature.

        train.old_logp = rollout takes both from the built-in sampler's records instead (the same
        numbers up to float rounding, measured as rollout/sampler_logp_mismatch, without a forward).
        """
        adv = self.base.advantage(rewards, b.group_ids, self.cfg.algorithm.adv_eps)   # (B,)
        advantages = adv[:, None] * b.response_mask                                     # (B, T)
        if self.cfg.train.old_logp == "rollout":
            old_logp, entropy = b.logp * b.response_mask, b.entropy * b.response_mask
        else:
            old_logp, entropy = self._forward(self.model, b)
        ref = self._forward(self.ref, b)[0] if self.ref is not None else None
        return Scored(b, rewards, correct, advantages, old_logp, entropy, ref)

    def _forward(self, model, b: RolloutBatch, idx=None):
        """No-grad log-probs and entropy of (a subset of) a batch, in micro-batches. (n, T) on CPU."""
        model.eval()  # scoring / pre-pass: deterministic (optimizer_step switches back to train mode)
        mb = self.cfg.train.micro_batch_size or len(b.texts) or 1
        rows = list(range(len(b.texts))) if idx is None else idx
        T = b.response_ids.shape[1]
        outs = [(torch.zeros(0, T), torch.zeros(0, T))]
        for s in range(0, len(rows), mb):
            sub = rows[s:s + mb]
            lp, ent = response_logp_entropy(model, b.prompt_ids[sub], b.prompt_mask[sub], b.response_ids[sub],
                                            b.response_mask[sub], b.temperatures[sub], self.cfg.rollout.temperature,
                                            self.cfg.model.chunk_size)
            outs.append((lp.float().cpu(), ent.float().cpu()))
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    # ------------------------------------------------------------------------------------------
    def step(self) -> dict:
        t_start = time.perf_counter()
        sc, m = self.rollout()
        self._hist = {}
        if sc is None:
            m["train/skipped_no_signal"] = 1
            m["perf/step_seconds"] = time.perf_counter() - t_start
            return m
        m.update(self.update(sc))
        n_tokens = float(self.reduce.sum(sc.batch.response_mask.sum()))
        m["perf/step_seconds"] = time.perf_counter() - t_start
        m["perf/tokens_per_s"] = n_tokens / max(m["perf/step_seconds"], 1e-9)
        m["train/lr"] = self.sched.get_last_lr()[0]
        return m

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
                           clip_low=a.clip_low, clip_high=a.clip_high, base_temperature=cfg.rollout.temperature,
                           step_n_valid=nv, step_n_seqs=float(n_rows),
                           max_new_tokens=cfg.rollout.max_new_tokens, reduce=red)
        # ---- strategies: advantages, then weights (step-level) -----------------------------------
        for s in self.strategies:
            ctx.advantages = s.shape_advantages(ctx) * mask
        weights = torch.ones_like(ctx.advantages)
        for s in self.strategies:
            w = s.token_weights(ctx)
            if w is not None:
                weights = weights * w
        weights = weights * mask
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
            sync = self.acc is None or mb == n_mb - 1     # DDP: all-reduce gradients with the last micro-batch
            with (nullcontext() if sync else self.train_forward.no_sync()):
                sel = (mb_ids == mb).nonzero().squeeze(-1)
                if len(sel) == 0:
                    self._empty_backward()
                    continue
                rows_nz = nonzero[sel] if sparse else None      # (a micro-batch with none stays dense: its
                if rows_nz is not None and not bool(rows_nz.any()):  # loss is 0, and DDP wants every parameter used)
                    rows_nz = None
                logp, ent = self._train_forward(b, [idx[i] for i in sel.tolist()], rows_nz)
                mctx = slice_ctx(ctx, sel, logp, ent)
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
                    ((ops.k3_kl(lp, mctx.ref_logp) * mm).sum().double().cpu() if a.kl_coef > 0
                     else torch.zeros((), dtype=torch.float64))])
        sums = red.sum(sums)
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip or float("inf"))
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
        if a.kl_coef > 0:
            m["kl/ref"] = float(sums[4]) / nvc
        return m

    def _micro_batch_loss(self, mctx: TokenContext, weights: torch.Tensor, denom: dict):
        """The micro-batch's share of the step loss (step-level denominators) and its (B, T) loss."""
        a = self.cfg.algorithm
        per_tok = None
        for s in self.strategies:
            per_tok = s.policy_loss(mctx) if per_tok is None else per_tok
        if per_tok is None and self.base.policy_loss is not None:
            per_tok = self.base.policy_loss(mctx, a)
        if per_tok is None:
            per_tok = ops.clipped_surrogate(mctx.logp, mctx.old_logp, mctx.advantages, a.clip_low, a.clip_high)
        loss_mat = per_tok * weights
        if a.kl_coef > 0:
            loss_mat = loss_mat + a.kl_coef * ops.k3_kl(mctx.logp, mctx.ref_logp)
        loss = ops.agg_loss(loss_mat, mctx.mask, a.loss_agg, denom)
        for s in self.strategies:
            extra = s.extra_loss(mctx)
            if extra is not None:
                loss = loss + extra
        return loss, loss_mat

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

    # ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resume needs; the random states of every rank (a collective call)."""
        ranks = self.reduce.gather_objects({"rng": rng_state(), "gen": self.gen.get_state()})
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "rng": ranks[0]["rng"], "gen": ranks[0]["gen"], "ranks": ranks, "world": self.world,
                "data": self.data.state_dict(),
                "step": self.step_idx, "opt_steps": self.opt_steps, "bad_steps": self.bad_steps,
                "budget": dict(self.budget), "strategies": [s.state_dict() for s in self.strategies],
                "config": self.cfg.to_dict()}

    def save(self) -> None:
        import yaml

        st = self.state_dict()
        if self.is_main:
            save_checkpoint(self.out, self.step_idx, st, yaml.safe_dump(self.cfg.to_dict(), sort_keys=False),
                            keep=self.cfg.checkpoint.keep)
        self.reduce.barrier()

    def _resume(self) -> None:
        # rank 0 picks the checkpoint (verifying it) and every rank loads that one
        found, err = None, None
        if self.is_main:
            try:
                found = load_latest(self.out, warn=self.print)
            except FileNotFoundError as e:
                err = e
        picked = self.reduce.broadcast_object(("error", str(err)) if err else ("path", found and str(found[0])))
        if picked[0] == "error":
            raise err if err is not None else FileNotFoundError(picked[1])
        if picked[1] is None:
            raise FileNotFoundError(f"--resume: no usable checkpoint in {self.out}")
        path, st = found if found else (Path(picked[1]), load_state(Path(picked[1]), mmap=True))
        diff = config_diff(st["config"], self.cfg.to_dict(), ignore=("train.steps", "eval", "log", "checkpoint"))
        if diff:
            raise ConfigError(f"--resume: {path} was written with a different config; differing keys: "
                              + ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in diff))
        if st.get("world", 1) != self.world:
            raise ConfigError(f"--resume: {path} was written by {st.get('world', 1)} process(es), this launch has "
                              f"{self.world}; resume with the same number (each rank's sampler state is saved)")
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.sched.load_state_dict(st["sched"])
        mine = st["ranks"][self.rank] if "ranks" in st else {"rng": st["rng"], "gen": st["gen"]}
        set_rng_state(mine["rng"])
        self.gen.set_state(mine["gen"])
        self.data.load_state_dict(st["data"])
        self.step_idx, self.opt_steps, self.bad_steps = st["step"], st["opt_steps"], st["bad_steps"]
        self.budget = dict(st["budget"])
        for s, ss in zip(self.strategies, st["strategies"]):
            s.load_state_dict(ss)
        self.print(f"[zoo] resumed {self.out} from {path.name} (step {self.step_idx})")


# ----------------------------------------------------------------------------------------------
def _lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine" and total > warmup:
        prog = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(prog, 1.0)))
    return 1.0


