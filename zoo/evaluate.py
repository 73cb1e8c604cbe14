"""Evaluation: greedy accuracy, sampled avg@k and unbiased pass@k on a task's eval problems."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from rewards.combine import RewardFunctions
from zoo.rollout import HFEngine, TemperatureHook
from zoo.schema import ConfigError
from zoo.types import Problem


def build_rewards(reward_cfg, task) -> RewardFunctions:
    """The run's reward functions from the `reward` config section and the task.

    `reward: {name: X}` (or `name: ""` = the task's default reward) is one function; `reward:
    {functions: [...]}` several, weighted (rewards.combine: the correctness function is the one
    marked `correctness: true`, else the first). The task's `answer_format` is passed as `formats`
    to the functions that accept it. `.correctness` (a SafeReward) scores accuracy: rollouts'
    reward/accuracy, dynamic sampling and every eval."""
    multi = bool(reward_cfg.functions)
    try:
        return RewardFunctions.build(reward_cfg.functions or None, reward_cfg.name or task.reward,
                                     getattr(task, "answer_format", None))
    except (KeyError, ValueError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        if not multi:
            msg = "name: " + msg.split(": ", 1)[1] if msg.startswith("functions[0]: ") else "name: " + msg
        raise ConfigError(f"reward.{msg}") from None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), n samples, c correct."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


@dataclass
class EvalResult:
    metrics: dict[str, float]
    samples: list[tuple[str, str, float]] = field(default_factory=list)  # (prompt, completion, reward)
    per_problem: list[float] = field(default_factory=list)             # greedy (or avg@k) correctness per problem


def evaluate(model, tokenizer, problems: list[Problem], reward_fn, *, max_new_tokens: int, greedy: bool = True,
             k: int = 1, temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 256,
             temperature_hook: TemperatureHook | None = None, seed: int = 0, n_samples: int = 2,
             metric: str | None = None, stop: tuple | list = ()) -> EvalResult:
    """metric: which number is eval/accuracy ('greedy' or 'sampled' = avg@k); default greedy when run.
    stop: stop strings (rollout.stop); the stop strings of the problems' prompt format
    (Problem.meta["stop"], e.g. r1_zero's </answer>) are always added, as in training rollouts."""
    engine = HFEngine(model, tokenizer, batch_size=batch_size)
    strings = tuple(dict.fromkeys(list(stop) + [x for p in problems for x in (p.meta or {}).get("stop", ())]))
    until = strings or True                 # the sampler's stop_at_eos: EOS + end-of-turn ids (+ strings)
    golds = [p.answer for p in problems]
    m: dict[str, float] = {}
    samples: list = []
    per_problem: list[float] = []
    if greedy:
        b = engine.sample(problems, 1, max_new_tokens=max_new_tokens, temperature=1.0, greedy=True, stop_at_eos=until)
        r = [float(x) for x in reward_fn(b.texts, golds)]
        per_problem = [1.0 if x >= 1.0 else 0.0 for x in r]
        m["eval/accuracy_greedy"] = sum(per_problem) / max(len(problems), 1)
        m["eval/response_length"] = float(b.lengths.float().mean())
        samples = [(p.prompt, t, x) for p, t, x in zip(problems, b.texts, r)][:n_samples]
    if k > 0:
        g = torch.Generator().manual_seed(seed)
        b = engine.sample(problems, k, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                          temperature_hook=temperature_hook, generator=g, stop_at_eos=until)
        r = torch.tensor([float(x) >= 1.0 for x in reward_fn(b.texts, [p.answer for p in b.problems])]).view(len(problems), k)
        c = r.sum(-1).tolist()
        m[f"eval/avg@{k}"] = float(r.float().mean())
        kk = 1
        while kk <= k:
            m[f"eval/pass@{kk}"] = sum(pass_at_k(k, int(ci), kk) for ci in c) / max(len(problems), 1)
            kk *= 2
        m["eval/entropy_mean"] = float((b.entropy * b.response_mask).sum() / b.response_mask.sum().clamp(min=1))
        if not greedy:
            per_problem = r.float().mean(-1).tolist()
            m["eval/response_length"] = float(b.lengths.float().mean())
            samples = [(p.prompt, t, float(x)) for p, t, x in zip(b.problems, b.texts, r.flatten().tolist())][:n_samples]
    metric = metric or ("greedy" if greedy else "sampled")
    m["eval/accuracy"] = m["eval/accuracy_greedy"] if metric == "greedy" else m[f"eval/avg@{k}"]
    if metric == "sampled" and greedy:
        per_problem = r.float().mean(-1).tolist()
    m["eval/n_problems"] = float(len(problems))
    return EvalResult(m, samples, per_problem)
