"""The training loop: sample -> reward -> filter -> advantages -> strategies -> loss -> step.

    trainer = Trainer(load_config("configs/quickstart.yaml"), out_dir="runs/quickstart")
    trainer.train()

One rollout batch (prompts x G responses) is split into `train.minibatches` group-aligned
minibatches; each is one optimizer step, processed in gradient-accumulation micro-batches.
Strategies see the whole optimizer step at once (step-scope statistics), and every loss
denominator is counted over the whole step (docs/algorithms.md "Steps, batches and scopes").
This module holds setup, the loop, evaluation, rollout and the scoring pass; the update phase
(optimizer steps, the loss) is `zoo.update.UpdatePhase` and checkpoint state and resume are
`zoo.run_state.RunState`, both mixed into `Trainer`.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from zoo.batches import DataStream, PolicyScorer, Scored, cat_batches, rank_share
from zoo.config import Config, ConfigError, save_config
from zoo.data import get_task
from zoo.distributed import DistReducer, make_accelerator
from zoo.evaluate import evaluate
from zoo.logging import MetricsLogger, NullLogger
from zoo.model import set_threads
from zoo.objectives import build_strategies, get_base, overlong_penalty
from zoo.policy import build_policy, trainable_parameters
from zoo.pretrain import ensure_base_model
from zoo.rollout import HFEngine, response_logp_entropy
from zoo.run_state import RunState
from zoo.sharding import ShardedTraining, full_model_state, full_weights
from zoo.strategy import Reducer
from zoo.types import RolloutBatch
from zoo.update import UpdatePhase


class Trainer(UpdatePhase, RunState, ShardedTraining):
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
        from zoo.data import check_eval_overlap
        from zoo.evaluate import build_rewards

        self.task = get_task(cfg.task.name, **cfg.task.params)
        self.rewards = build_rewards(cfg.reward, self.task)    # reward.functions, weighted, each guarded
        self.reward_fn = self.rewards.correctness             # accuracy (rollouts, dynamic sampling, evals)
        avail = self.task.size("train")
        self.train_problems = self.task.problems("train", min(cfg.task.train_size, avail or cfg.task.train_size),
                                                 cfg.task.seed)
        self.eval_problems = self.task.problems("eval", cfg.eval.n or cfg.task.eval_size, cfg.task.seed)
        check_eval_overlap(self.train_problems, self.eval_problems, cfg.task, log=self.print)  # no silent leakage
        if self.is_main:
            model_path = ensure_base_model(cfg, log=log)
        self.reduce.barrier()                               # rank 0 may have pretrained the base model
        if not self.is_main:
            model_path = ensure_base_model(cfg, log=self.print)
        device = str(self.acc.device) if self.acc else cfg.model.device
        self.policy = build_policy(cfg, model_path, device, log=self.print)   # precision, LoRA, reference
        self.model, self.tok = self.policy.model, self.policy.tok
        self.device = next(self.model.parameters()).device
        self.base = get_base(cfg.algorithm.base)
        self.strategies = build_strategies(cfg.algorithm)
        for s in self.strategies:
            s.reduce = self.reduce
        # the training forward goes through one module, so DDP (accelerate.prepare) sees every call,
        # and under FSDP that module is the sharding root (zoo.sharding)
        self.train_forward = self._setup_sharding(PolicyScorer(self.model))
        t = cfg.train
        self.opt = torch.optim.AdamW(trainable_parameters(self.model), lr=t.lr, betas=(t.beta1, t.beta2),
                                     weight_decay=t.weight_decay)
        total = t.steps * t.minibatches * t.epochs
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: _lr_factor(s, total, t.warmup_steps, t.lr_schedule))
        self.engine = HFEngine(self.model, self.tok, compact=cfg.rollout.compact, compile=cfg.rollout.compile)
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
            full = full_model_state(self.train_forward) if self.sharded else None   # a collective
            if self.is_main:
                self.model = self.policy.save_final(self.out / "final", meta={"step": self.step_idx}, state_dict=full)
                self.engine.model = self.model
            self.reduce.barrier()
        finally:
            self.logger.close()
        return last_eval

    def token_budget_reached(self) -> bool:
        return bool(self.cfg.train.max_tokens) and self.budget["tokens"] >= self.cfg.train.max_tokens

    def _eval_metrics(self, step: int) -> dict:
        with self.gathered():         # FSDP: every rank gathers the weights, so rank 0 runs no collective
            if not self.is_main:      # rank 0 evaluates the (identical) policy alone
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
                       seed=cfg.train.seed + 7919, n_samples=cfg.log.samples, metric=e.metric,
                       stop=cfg.rollout.stop)
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
        names = self.rewards.names                    # sums: 7 counters, then each reward function's total
        reward_s, rounds_seen, sums = 0.0, [], torch.zeros(7 + len(names), dtype=torch.float64)
        lo, hi = rank_share(r.prompts_per_step, self.rank, self.world)
        self.engine.sync_weights(self.model)          # the engine samples from the current policy
        while True:
            problems = self.data.take(r.prompts_per_step)[lo:hi]
            b = self.engine.sample(problems, r.group_size, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                                   top_p=r.top_p, top_k=r.top_k, temperature_hook=self._temperature_hook(),
                                   group_offset=rounds * r.prompts_per_step + lo,
                                   stop_at_eos=r.stop_spec(problems),   # EOS, end-of-turn ids, stop strings
                                   seed=self.cfg.train.seed * 1_000_003 + self.step_idx)   # rank-invariant draws
            tr = time.perf_counter()
            sc = self.rewards(b.texts, [p.answer for p in b.problems])     # every function, weighted
            correct = torch.tensor(sc.correct, dtype=torch.float32)          # the correctness function
            reward_s += time.perf_counter() - tr
            faults = self.rewards.last_stats                  # samples scored 0 by a failing reward, all functions
            rew = (torch.tensor(sc.total, dtype=torch.float32)
                   + overlong_penalty(b.lengths, r.max_new_tokens, a.overlong_buffer, a.overlong_penalty))
            sums += torch.tensor([len(b.texts), float(b.lengths.sum()), float(correct.sum()),
                                  float(b.truncated.float().sum()), 0.0, faults.get("errors", 0),
                                  faults.get("timeouts", 0)] + [float(sum(sc.values[n])) for n in names],
                                 dtype=torch.float64)
            rounds_seen.append(b)
            if a.dynamic_sampling:   # DAPO / 80-20 recipes: drop groups whose CORRECTNESS is all equal
                g = correct.view(-1, r.group_size)                                       # (groups, G)
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
        totals = red.sum(sums).tolist()
        n_samples, n_tokens, n_correct, n_trunc, dropped, r_errors, r_timeouts = totals[:7]
        self.budget["samples"] += int(n_samples)
        self.budget["tokens"] += int(n_tokens)
        m.update({"reward/accuracy": n_correct / n_samples, "rollout/response_length": n_tokens / n_samples,
                  "rollout/truncated_share": n_trunc / n_samples, "rollout/rounds": rounds,
                  "rollout/dropped_groups": int(dropped), "budget/samples": self.budget["samples"],
                  "budget/tokens": self.budget["tokens"], "perf/reward_seconds": reward_s,
                  "reward/errors": int(r_errors), "reward/timeouts": int(r_timeouts)})
        m.update({f"reward/{n}": v / n_samples for n, v in zip(names, totals[7:])})   # each function, unweighted
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
        ref = None
        if self.cfg.algorithm.kl_coef > 0 or any(s.needs_reference for s in self.strategies):
            with self.policy.reference() as ref_model:    # a frozen copy, or the policy without its adapters
                ref = self._forward(ref_model, b)[0]
        return Scored(b, rewards, correct, advantages, old_logp, entropy, ref)

    def _forward(self, model, b: RolloutBatch, idx=None):
        """No-grad log-probs and entropy of (a subset of) a batch, in micro-batches. (n, T) on CPU."""
        model.eval()  # scoring / pre-pass: deterministic (optimizer_step switches back to train mode)
        mb = self.cfg.train.micro_batch_size or len(b.texts) or 1
        rows = list(range(len(b.texts))) if idx is None else idx
        T = b.response_ids.shape[1]
        outs = [(torch.zeros(0, T), torch.zeros(0, T))]
        root = self.root_of(model)                       # FSDP: through the sharding root, weights gathered
        with full_weights(root):                         # once (ranks may hold different numbers of rows)
            outs += self._forward_rows(model, root, b, rows, mb)
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def _forward_rows(self, model, root, b: RolloutBatch, rows: list[int], mb: int) -> list:
        outs = []
        for s in range(0, len(rows), mb):
            sub = rows[s:s + mb]
            args = (b.prompt_ids[sub], b.prompt_mask[sub], b.response_ids[sub], b.response_mask[sub],
                    b.temperatures[sub], self.cfg.rollout.temperature, self.cfg.model.chunk_size)
            lp, ent = root(*args) if root is not None else response_logp_entropy(model, *args)
            outs.append((lp.float().cpu(), ent.float().cpu()))
        return outs

    # ------------------------------------------------------------------------------------------
    def step(self) -> dict:
        t_start = time.perf_counter()
        with self.gathered():                             # FSDP: full weights once per rollout batch
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


# ----------------------------------------------------------------------------------------------
def _lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine" and total > warmup:
        prog = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(prog, 1.0)))
    return 1.0


