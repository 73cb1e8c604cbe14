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
from dataclasses import dataclass
from pathlib import Path

import torch

from zoo import ops
from zoo.checkpoint import load_latest, rng_state, save_checkpoint, set_rng_state
from zoo.config import Config, ConfigError, save_config
from zoo.data import get_task
from zoo.evaluate import evaluate
from zoo.logging import MetricsLogger
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


@dataclass
class Scored:
    """A rollout batch with everything the optimizer steps need, (B, T) unless noted."""
    batch: RolloutBatch
    rewards: torch.Tensor        # (B,) final reward (correctness + shaping)
    correct: torch.Tensor        # (B,) correctness reward
    advantages: torch.Tensor     # (B, T) base advantages broadcast over valid tokens
    old_logp: torch.Tensor
    entropy: torch.Tensor
    ref_logp: torch.Tensor | None


class DataStream:
    """Deterministic, resumable stream of training problems (reshuffled every pass)."""

    def __init__(self, problems, seed: int):
        self.problems, self.seed, self.epoch, self.pos = problems, seed, 0, 0
        self._order = self._perm()

    def _perm(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.problems), generator=g).tolist()

    def take(self, n: int):
        out = []
        while len(out) < n:
            if self.pos >= len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._perm()
            out.append(self.problems[self._order[self.pos]])
            self.pos += 1
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, st: dict) -> None:
        self.epoch, self.pos = st["epoch"], st["pos"]
        self._order = self._perm()


class Trainer:
    def __init__(self, cfg: Config, out_dir: str | Path, resume: bool = False, log=print):
        self.cfg, self.out, self.print = cfg, Path(out_dir), log
        set_threads(cfg.train.threads)
        torch.manual_seed(cfg.train.seed)
        from rewards import get_reward

        self.task = get_task(cfg.task.name, **cfg.task.params)
        self.reward_fn = get_reward(cfg.reward.name or self.task.reward)
        avail = self.task.size("train")
        self.train_problems = self.task.problems("train", min(cfg.task.train_size, avail or cfg.task.train_size),
                                                 cfg.task.seed)
        self.eval_problems = self.task.problems("eval", cfg.eval.n or cfg.task.eval_size, cfg.task.seed)
        model_path = ensure_base_model(cfg, log=log)
        self.model, self.tok = load_policy(model_path, cfg.model.dtype, cfg.model.device)
        self.device = next(self.model.parameters()).device
        self.ref = None
        if cfg.algorithm.kl_coef > 0:
            self.ref, _ = load_policy(model_path, cfg.model.dtype, cfg.model.device)
            self.ref.eval().requires_grad_(False)
        self.base = get_base(cfg.algorithm.base)
        self.strategies = build_strategies(cfg.algorithm)
        self.reduce = Reducer()
        t = cfg.train
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2),
                                     weight_decay=t.weight_decay)
        total = t.steps * t.minibatches * t.epochs
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: _lr_factor(s, total, t.warmup_steps, t.lr_schedule))
        self.engine = HFEngine(self.model, self.tok)
        self.gen = torch.Generator().manual_seed(t.seed)
        self.data = DataStream(self.train_problems, t.seed)
        self.step_idx, self.opt_steps, self.bad_steps = 0, 0, 0
        self.budget = {"samples": 0, "tokens": 0}
        self.last_eval = None
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self._resume()
        elif any(self.out.glob("ckpt-*")):
            raise FileExistsError(f"{self.out} already holds checkpoints; pass --resume to continue it "
                                  "or choose another --out (nothing was overwritten)")
        save_config(cfg, self.out / "config.yaml")

    # ------------------------------------------------------------------------------------------
    def train(self) -> dict:
        cfg = self.cfg
        self.logger = MetricsLogger(self.out, cfg.train.steps, self.step_idx, cfg.log.tensorboard, cfg.log.progress)
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
            save_policy(self.model, self.tok, self.out / "final", meta={"step": self.step_idx})
        finally:
            self.logger.close()
        return last_eval

    def token_budget_reached(self) -> bool:
        return bool(self.cfg.train.max_tokens) and self.budget["tokens"] >= self.cfg.train.max_tokens

    def _eval_metrics(self, step: int) -> dict:
        e = self._evaluate()
        self.last_eval = e  # the latest EvalResult (per-problem scores for paired comparisons)
        self.logger.write(f"[eval] step {step}: accuracy {e.metrics['eval/accuracy']:.3f} "
                          + " ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in e.metrics.items() if "pass@" in k or "avg@" in k))
        if e.samples and self.logger.tb is not None:
            self.logger.tb.add_text("eval/samples", "\n\n".join(f"`{p!r}` -> `{c!r}` ({r})" for p, c, r in e.samples), step)
        return e.metrics

    def run_eval(self, step: int) -> dict:
        m = self._eval_metrics(step)
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
        """Sample until the batch is full of informative groups (dynamic sampling) or the cap."""
        cfg, r, a = self.cfg, self.cfg.rollout, self.cfg.algorithm
        t0, kept, dropped, rounds, m = time.perf_counter(), [], 0, 0, {}
        reward_s, all_correct, all_len, all_trunc, rounds_seen = 0.0, [], [], [], []
        while True:
            problems = self.data.take(r.prompts_per_step)
            b = self.engine.sample(problems, r.group_size, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                                   top_p=r.top_p, top_k=r.top_k, temperature_hook=self._temperature_hook(),
                                   generator=self.gen, group_offset=rounds * r.prompts_per_step)
            self.budget["samples"] += len(b.texts)
            self.budget["tokens"] += int(b.lengths.sum())
            tr = time.perf_counter()
            correct = torch.tensor([float(x) for x in self.reward_fn(b.texts, [p.answer for p in b.problems])])
            reward_s += time.perf_counter() - tr
            rew = correct + overlong_penalty(b.lengths, r.max_new_tokens, a.overlong_buffer, a.overlong_penalty)
            all_correct.append(correct); all_len.append(b.lengths.float()); all_trunc.append(b.truncated.float())
            rounds_seen.append(b)
            if a.dynamic_sampling:
                g = rew.view(-1, r.group_size)                                           # (groups, G)
                informative = g.max(-1).values > g.min(-1).values                        # not all equal
                dropped += int((~informative).sum())
                idx = [i for i in range(len(b.texts)) if informative[i // r.group_size]]
            else:
                idx = list(range(len(b.texts)))
            if idx:
                kept.append((b.select(idx), rew[idx], correct[idx]))
            rounds += 1
            n_groups = sum(len(k[1]) for k in kept) // r.group_size
            if not a.dynamic_sampling or n_groups >= r.prompts_per_step or rounds > a.max_resample_rounds:
                break
        # strategies see every sample of the step once (e.g. h_fork: auto = p80 of this step's rollouts)
        seen = _cat_batches(rounds_seen, self.tok.pad_token_id)
        for s in self.strategies:
            s.on_rollout(seen)
        correct_all = torch.cat(all_correct)
        m.update({"reward/accuracy": float(correct_all.mean()), "rollout/response_length": float(torch.cat(all_len).mean()),
                  "rollout/truncated_share": float(torch.cat(all_trunc).mean()), "rollout/rounds": rounds,
                  "rollout/dropped_groups": dropped, "budget/samples": self.budget["samples"],
                  "budget/tokens": self.budget["tokens"], "perf/reward_seconds": reward_s})
        if not kept:
            m["perf/rollout_seconds"] = time.perf_counter() - t0 - reward_s
            return None, m
        batch = _cat_batches([k[0] for k in kept], self.tok.pad_token_id)
        rewards, correct = torch.cat([k[1] for k in kept]), torch.cat([k[2] for k in kept])
        keep = min(len(rewards), r.prompts_per_step * r.group_size)
        batch, rewards, correct = batch.select(list(range(keep))), rewards[:keep], correct[:keep]
        m["reward/mean"] = float(rewards.mean())
        m["perf/rollout_seconds"] = time.perf_counter() - t0 - reward_s
        return self.score(batch, rewards, correct), m

    @torch.no_grad()
    def score(self, b: RolloutBatch, rewards: torch.Tensor, correct: torch.Tensor) -> Scored:
        """The scoring pass: π_old at each token's temperature, entropy at the base temperature."""
        adv = self.base.advantage(rewards, b.group_ids, self.cfg.algorithm.adv_eps)   # (B,)
        advantages = adv[:, None] * b.response_mask                                     # (B, T)
        old_logp, entropy = self._forward(self.model, b)
        ref = self._forward(self.ref, b)[0] if self.ref is not None else None
        return Scored(b, rewards, correct, advantages, old_logp, entropy, ref)

    def _forward(self, model, b: RolloutBatch, idx=None):
        model.eval()  # scoring / pre-pass: deterministic (optimizer_step switches back to train mode)
        mb = self.cfg.train.micro_batch_size or len(b.texts)
        rows = list(range(len(b.texts))) if idx is None else idx
        outs = []
        for s in range(0, len(rows), mb):
            sub = rows[s:s + mb]
            outs.append(response_logp_entropy(model, b.prompt_ids[sub], b.prompt_mask[sub], b.response_ids[sub],
                                              b.response_mask[sub], b.temperatures[sub], self.cfg.rollout.temperature,
                                              self.cfg.model.chunk_size))
        return torch.cat([o[0] for o in outs]).cpu(), torch.cat([o[1] for o in outs]).cpu()

    # ------------------------------------------------------------------------------------------
    def step(self) -> dict:
        t_start = time.perf_counter()
        sc, m = self.rollout()
        self._hist = {}
        if sc is None:
            m["train/skipped_no_signal"] = 1
            m["perf/step_seconds"] = time.perf_counter() - t_start
            return m
        b, cfg = sc.batch, self.cfg
        mask = b.response_mask
        m.update(entropy_metrics(sc.entropy, mask))
        m.update(quadrant_metrics(sc.advantages, sc.entropy, mask, b.group_ids))
        m["rollout/sampler_logp_mismatch"] = float(((b.logp - sc.old_logp).abs() * mask).sum() / mask.sum().clamp(min=1))
        self._hist = {"entropy/tokens": sc.entropy[mask]}
        t_train, first, step_logs = time.perf_counter(), True, []
        G = cfg.rollout.group_size
        n_groups = len(b.texts) // G
        for epoch in range(cfg.train.epochs):
            order = list(range(n_groups))
            if epoch > 0:
                order = torch.randperm(n_groups, generator=self.gen).tolist()
            for chunk in _split(order, cfg.train.minibatches):
                idx = [g * G + j for g in chunk for j in range(G)]
                step_logs.append(self.optimizer_step(sc, idx, first))
                first = False
        m.update(_mean_dicts(step_logs))
        m["perf/train_seconds"] = time.perf_counter() - t_train
        m["perf/step_seconds"] = time.perf_counter() - t_start
        m["perf/tokens_per_s"] = float(mask.sum()) / max(m["perf/step_seconds"], 1e-9)
        m["train/lr"] = self.sched.get_last_lr()[0]
        return m

    def optimizer_step(self, sc: Scored, idx: list[int], first: bool) -> dict:
        cfg, a, b = self.cfg, self.cfg.algorithm, sc.batch
        it = torch.tensor(idx)
        mask = b.response_mask[it]
        m: dict[str, float] = {}
        if first:                 # the policy still equals π_old: the scoring pass gives step statistics
            logp_now, ent_now = sc.old_logp[it], sc.entropy[it]
        else:                     # later steps on the same rollout batch: no-grad pre-pass at the current policy
            t0 = time.perf_counter()
            with torch.no_grad():
                logp_now, ent_now = self._forward(self.model, b, idx)
            m["perf/prepass_seconds"] = time.perf_counter() - t0
        mbs = cfg.train.micro_batch_size or len(idx)
        mb_ids = torch.arange(len(idx)) // mbs
        ctx = TokenContext(logp=logp_now, old_logp=sc.old_logp[it], entropy=ent_now, mask=mask,
                           advantages=sc.advantages[it], group_ids=b.group_ids[it], rewards=sc.rewards[it],
                           temperatures=b.temperatures[it], ref_logp=None if sc.ref_logp is None else sc.ref_logp[it],
                           micro_batch_ids=mb_ids, step=self.opt_steps, seed=cfg.train.seed,
                           clip_low=a.clip_low, clip_high=a.clip_high, base_temperature=cfg.rollout.temperature,
                           step_n_valid=float(mask.sum()), step_n_seqs=float(len(idx)),
                           max_new_tokens=cfg.rollout.max_new_tokens, reduce=self.reduce)
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
        m["train/weight_share"] = denom["sum_weights"] / max(denom["n_valid"], 1.0)
        # ---- loss over micro-batches, step-level denominators ------------------------------------
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        agg = dict(loss=0.0, clip_low=0.0, clip_high=0.0, kl_old=0.0, kl_ref=0.0)
        nv = max(float(mask.sum()), 1.0)
        for mb in range(int(mb_ids.max()) + 1 if len(idx) else 0):
            sel = (mb_ids == mb).nonzero().squeeze(-1)
            rows = [idx[i] for i in sel.tolist()]
            logp, ent = self._train_forward(b, rows)
            mctx = _slice_ctx(ctx, sel, logp, ent)
            mmask = mctx.mask
            per_tok = None
            for s in self.strategies:
                per_tok = s.policy_loss(mctx) if per_tok is None else per_tok
            if per_tok is None and self.base.policy_loss is not None:
                per_tok = self.base.policy_loss(mctx, a)
            if per_tok is None:
                per_tok = ops.clipped_surrogate(logp, mctx.old_logp, mctx.advantages, a.clip_low, a.clip_high)
            loss_mat = per_tok * weights[sel]
            if a.kl_coef > 0:
                kl = ops.k3_kl(logp, mctx.ref_logp)
                loss_mat = loss_mat + a.kl_coef * kl
                agg["kl_ref"] += float((kl.detach() * mmask).sum()) / nv
            loss = ops.agg_loss(loss_mat, mmask, a.loss_agg, denom)
            for s in self.strategies:
                extra = s.extra_loss(mctx)
                if extra is not None:
                    loss = loss + extra
            loss.backward()
            with torch.no_grad():
                ratio = torch.exp(logp.detach() - mctx.old_logp)
                A = mctx.advantages
                agg["loss"] += float(loss.detach())
                agg["clip_low"] += float((((ratio < 1 - a.clip_low) & (A < 0)) & mmask).sum()) / nv
                agg["clip_high"] += float((((ratio > 1 + a.clip_high) & (A > 0)) & mmask).sum()) / nv
                d = mctx.old_logp - logp.detach()
                agg["kl_old"] += float(((torch.exp(-d) + d - 1) * mmask).sum()) / nv   # k3 KL(π_old || π_θ)
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip or float("inf"))
        if not (math.isfinite(agg["loss"]) and torch.isfinite(gnorm)):
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
        m.update({"loss/total": agg["loss"], "clip/frac_low": agg["clip_low"], "clip/frac_high": agg["clip_high"],
                  "kl/old": agg["kl_old"], "train/grad_norm": float(gnorm),
                  "adv/mean_abs": float((ctx.advantages.abs() * mask).sum() / nv)})
        if a.kl_coef > 0:
            m["kl/ref"] = agg["kl_ref"]
        return m

    def _train_forward(self, b: RolloutBatch, rows: list[int]):
        logp, ent = response_logp_entropy(self.model, b.prompt_ids[rows], b.prompt_mask[rows], b.response_ids[rows],
                                          b.response_mask[rows], b.temperatures[rows], self.cfg.rollout.temperature,
                                          self.cfg.model.chunk_size)
        if not any(s.needs_entropy_grad for s in self.strategies):
            ent = ent.detach()
        return logp.cpu(), ent.cpu()

    # ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "rng": rng_state(), "gen": self.gen.get_state(), "data": self.data.state_dict(),
                "step": self.step_idx, "opt_steps": self.opt_steps, "bad_steps": self.bad_steps,
                "budget": dict(self.budget), "strategies": [s.state_dict() for s in self.strategies],
                "config": self.cfg.to_dict()}

    def save(self) -> None:
        import yaml

        save_checkpoint(self.out, self.step_idx, self.state_dict(), yaml.safe_dump(self.cfg.to_dict(), sort_keys=False),
                        keep=self.cfg.checkpoint.keep)

    def _resume(self) -> None:
        found = load_latest(self.out, warn=self.print)
        if found is None:
            raise FileNotFoundError(f"--resume: no usable checkpoint in {self.out}")
        path, st = found
        diff = config_diff(st["config"], self.cfg.to_dict(), ignore=("train.steps", "eval", "log", "checkpoint"))
        if diff:
            raise ConfigError(f"--resume: {path} was written with a different config; differing keys: "
                              + ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in diff))
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.sched.load_state_dict(st["sched"])
        set_rng_state(st["rng"])
        self.gen.set_state(st["gen"])
        self.data.load_state_dict(st["data"])
        self.step_idx, self.opt_steps, self.bad_steps = st["step"], st["opt_steps"], st["bad_steps"]
        self.budget = dict(st["budget"])
        for s, ss in zip(self.strategies, st["strategies"]):
            s.load_state_dict(ss)
        self.print(f"[zoo] resumed {self.out} from {path.name} (step {self.step_idx})")


# ----------------------------------------------------------------------------------------------
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
    from zoo.config import config_from_dict

    try:
        return config_from_dict(d).to_dict()
    except (ConfigError, KeyError, ValueError):
        return d


def entropy_metrics(entropy: torch.Tensor, mask: torch.Tensor) -> dict:
    v = entropy[mask].float()
    if v.numel() == 0:
        return {}
    return {"entropy/mean": float(v.mean()), "entropy/p50": float(ops.quantile_kth(v, 0.5)),
            "entropy/p80": float(ops.quantile_kth(v, 0.8)), "entropy/p95": float(ops.quantile_kth(v, 0.95)),
            "entropy/share_below_0.01": float((v < 0.01).float().mean())}


def quadrant_metrics(adv, entropy, mask, group_ids) -> dict:
    q = ops.quadrant_ids(adv, entropy, mask, group_ids)
    n = max(int(mask.sum()), 1)
    return {f"quadrant/{name}_share": float((q == i).sum()) / n for i, name in enumerate(ops.QUADRANTS)}


def _lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine" and total > warmup:
        prog = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(prog, 1.0)))
    return 1.0


def _split(items: list, n: int) -> list[list]:
    k, r = divmod(len(items), n)
    out, s = [], 0
    for i in range(n):
        e = s + k + (1 if i < r else 0)
        if e > s:
            out.append(items[s:e])
        s = e
    return out


def _mean_dicts(ds: list[dict]) -> dict:
    keys = {k for d in ds for k in d}
    return {k: sum(d[k] for d in ds if k in d) / sum(1 for d in ds if k in d) for k in keys}


def _slice_ctx(ctx: TokenContext, sel: torch.Tensor, logp, ent) -> TokenContext:
    from dataclasses import replace

    pick = lambda x: None if x is None else x[sel]  # noqa: E731
    return replace(ctx, logp=logp, old_logp=pick(ctx.old_logp), entropy=ent, mask=pick(ctx.mask),
                   advantages=pick(ctx.advantages), group_ids=pick(ctx.group_ids), rewards=pick(ctx.rewards),
                   temperatures=pick(ctx.temperatures), ref_logp=pick(ctx.ref_logp),
                   micro_batch_ids=pick(ctx.micro_batch_ids))


def _cat_batches(bs: list[RolloutBatch], pad: int) -> RolloutBatch:
    if len(bs) == 1:
        return bs[0]
    from zoo.rollout import _pad_cat

    f = lambda name, v, left=False: _pad_cat([getattr(b, name) for b in bs], v, left)  # noqa: E731
    return RolloutBatch(f("prompt_ids", pad, True), f("prompt_mask", False, True), f("response_ids", pad),
                        f("response_mask", False), f("logp", 0.0), f("temperatures", 1.0), f("entropy", 0.0),
                        torch.cat([b.truncated for b in bs]), torch.cat([b.group_ids for b in bs]),
                        sum((b.texts for b in bs), []), sum((b.problems for b in bs), []))
