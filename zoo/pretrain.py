"""`zoo pretrain`: build the tiny base model by supervised fine-tuning on a synthetic task.

It trains a small Llama-style LM with a locally built character tokenizer on prompt+solution
pairs (loss on the solution only) and stops as soon as its *sampled* accuracy on held-out
training-split problems reaches `pretrain.stop_at_accuracy` (after `min_steps`): a base that
solves some but not most problems, so RL has room. The result is a plain `save_pretrained`
directory that transformers loads as is.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from zoo.config import Config
from zoo.model import build_char_tokenizer, build_tiny_model, save_policy


def ensure_base_model(cfg: Config, log=print) -> Path:
    """The policy directory for cfg.model.name_or_path, pretraining it first when it is a missing
    path under runs/ (so the quickstart builds or reuses it)."""
    p = Path(cfg.model.name_or_path)
    if (p / "config.json").exists():
        meta = p / "zoo_meta.json"
        if meta.exists():
            m = json.loads(meta.read_text())
            want = {"name": cfg.task.name, "params": dict(cfg.task.params)}
            if m.get("task") and m["task"] != want:
                log(f"[zoo] note: base model {p} was pretrained on task {m['task']}, this run uses {want}")
        return p
    if p.exists() and any(p.iterdir()):
        raise ValueError(f"model path '{p}' exists but has no config.json: not a Hugging Face model directory")
    if p.is_absolute() or not p.parts or p.parts[0] != "runs":
        raise FileNotFoundError(f"model path '{p}' does not exist; give a local HF causal-LM directory, or a path "
                                "under runs/ to have `zoo pretrain` build the tiny base model there")
    log(f"[zoo] base model {p} not found: pretraining it on task '{cfg.task.name}' (zoo pretrain)")
    pretrain(cfg, p, log=log)
    return p


def _encode(tok, problems, max_len: int):
    seqs, starts = [], []
    for pr in problems:
        a = tok(pr.prompt)["input_ids"]
        b = tok(pr.solution, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append((a + b)[:max_len])
        starts.append(len(a))
    return seqs, starts


def _batch(seqs, starts, idx, pad):
    L = max(len(seqs[i]) for i in idx)
    ids = torch.full((len(idx), L), pad, dtype=torch.long)
    labels = torch.full((len(idx), L), -100, dtype=torch.long)
    am = torch.zeros((len(idx), L), dtype=torch.long)
    for r, i in enumerate(idx):
        s = seqs[i]
        ids[r, :len(s)] = torch.tensor(s)
        am[r, :len(s)] = 1
        labels[r, starts[i]:len(s)] = torch.tensor(s[starts[i]:])
    return ids, am, labels


def pretrain(cfg: Config, out: str | Path, log=print) -> dict:
    from zoo.data import get_task
    from zoo.evaluate import build_rewards, evaluate
    from zoo.model import set_threads

    pc, out = cfg.pretrain, Path(out)
    set_threads(cfg.train.threads)
    task = get_task(cfg.task.name, **cfg.task.params)
    reward = build_rewards(cfg.reward, task).correctness
    avail = task.size("train")
    n_train = min(pc.train_size + pc.eval_n, avail) if avail else pc.train_size + pc.eval_n
    problems = task.problems("train", n_train, pc.seed)
    val, train = problems[-pc.eval_n:], problems[:-pc.eval_n]
    if any(p.solution is None for p in train[:10]):
        raise ValueError(f"task '{cfg.task.name}' has no reference solutions: cannot pretrain on it")
    tok = build_char_tokenizer()
    model = build_tiny_model(tok, pc.layers, pc.hidden, pc.heads, pc.intermediate, seed=pc.seed)
    seqs, starts = _encode(tok, train, 512)
    opt = torch.optim.AdamW(model.parameters(), lr=pc.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / pc.steps, 1.0))))
    g = torch.Generator().manual_seed(pc.seed)
    order, pos = torch.randperm(len(seqs), generator=g).tolist(), 0
    t0, acc, step, hist = time.time(), 0.0, 0, []
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[pretrain] {n_params / 1e6:.2f}M parameters, {len(train)} SFT examples, up to {pc.steps} steps")
    for step in range(1, pc.steps + 1):
        if pos + pc.batch_size > len(order):
            order, pos = torch.randperm(len(seqs), generator=g).tolist(), 0
        idx, pos = order[pos:pos + pc.batch_size], pos + pc.batch_size
        ids, am, labels = _batch(seqs, starts, idx, tok.pad_token_id)
        model.train()
        loss = model(input_ids=ids, attention_mask=am, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % pc.eval_every == 0 or step == pc.steps:
            res = evaluate(model, tok, val, reward, max_new_tokens=cfg.rollout.max_new_tokens, greedy=False, k=1,
                           seed=pc.seed)
            acc = res.metrics["eval/avg@1"]
            hist.append({"step": step, "loss": loss.item(), "sampled_accuracy": acc})
            log(f"[pretrain] step {step}: loss {loss.item():.3f}, sampled accuracy {acc:.3f} ({time.time() - t0:.0f}s)")
            if step >= pc.min_steps and acc >= pc.stop_at_accuracy:
                break
    greedy = evaluate(model, tok, val, reward, max_new_tokens=cfg.rollout.max_new_tokens, greedy=True, k=0)
    meta = {"task": {"name": cfg.task.name, "params": dict(cfg.task.params)}, "pretrain": cfg.to_dict()["pretrain"],
            "steps": step, "sampled_accuracy": acc, "greedy_accuracy": greedy.metrics["eval/accuracy_greedy"],
            "seconds": time.time() - t0, "parameters": n_params}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        save_policy(model, tok, tmp, meta=meta)
        (tmp / "pretrain_log.json").write_text(json.dumps(hist, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"[pretrain] saved {out}: sampled accuracy {acc:.3f}, greedy {meta['greedy_accuracy']:.3f} "
        f"after {step} steps ({meta['seconds']:.0f}s)")
    return meta
