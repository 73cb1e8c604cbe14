"""Rollout engines and the training forward.

The engine interface (`RolloutEngine`, see docs/engines.md) and the default engine `HFEngine`, which
samples the policy itself with the batched KV-cache sampler of `zoo.sampler` (re-exported here:
`generate`, `TemperatureHook`, `filter_logits`, `sample_from_logp`) and assembles a RolloutBatch;
and `response_logp_entropy`, the scoring / training forward, which likewise runs a shared prompt
once and expands its KV cache (`zoo.kv_cache`).
"""
from __future__ import annotations

from typing import Protocol

import torch

from zoo.kv_cache import _prompt_shared_hidden, _shared_prompts
from zoo.model import compute_context, encode_prompts, lm_parts
from zoo.ops import logprobs_and_entropy
from zoo.sampler import TemperatureHook, filter_logits, generate, sample_from_logp  # noqa: F401
from zoo.types import Problem, RolloutBatch


class RolloutEngine(Protocol):
    """What the trainer needs from an inference engine (see docs/engines.md)."""

    def sample(self, problems: list[Problem], group_size: int, *, max_new_tokens: int, temperature: float,
               top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
               temperature_hook: TemperatureHook | None = None, generator: torch.Generator | None = None,
               group_offset: int = 0, stop_at_eos: bool = True, seed: int | None = None) -> RolloutBatch:
        """... seed: key every row's random stream by (seed, global row = (group_offset + group) x
        group_size + sample) instead of drawing from `generator`: rank-invariant sampling."""

    def sync_weights(self, model) -> None: ...


def decode_responses(tokenizer, response_ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
    eos = tokenizer.eos_token_id
    out = []
    for row, m in zip(response_ids.tolist(), mask.tolist()):
        toks = [t for t, v in zip(row, m) if v and t != eos]
        out.append(tokenizer.decode(toks, skip_special_tokens=True))
    return out


class HFEngine:
    """The default engine: the policy itself, sampled with `generate` (zoo.sampler; no weight copy needed).

    compact: drop finished rows from the decoding batch; compile: torch.compile the decode step
    (falls back to eager with a warning where compilation is unavailable).
    """

    def __init__(self, model, tokenizer, batch_size: int = 0, *, compact: bool = True, compile: bool = False):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.compact, self.compile = compact, compile

    def sync_weights(self, model) -> None:
        self.model = model  # shares parameters with the trainer

    def sample(self, problems: list[Problem], group_size: int, *, max_new_tokens: int, temperature: float,
               top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
               temperature_hook: TemperatureHook | None = None, generator: torch.Generator | None = None,
               group_offset: int = 0, stop_at_eos: bool = True, seed: int | None = None) -> RolloutBatch:
        prompts = [p.prompt for p in problems for _ in range(group_size)]
        expanded = [p for p in problems for _ in range(group_size)]
        gids = torch.arange(len(problems)).repeat_interleave(group_size) + group_offset
        keys = None if seed is None else row_keys(seed, gids, group_size)           # (B,) per-row streams
        was_training = self.model.training
        self.model.eval()
        bs = self.batch_size or len(prompts)
        parts = []
        try:
            for s in range(0, len(prompts), bs):
                pids, pmask = encode_prompts(self.tokenizer, prompts[s:s + bs])
                g = generate(self.model, self.tokenizer, pids, pmask, max_new_tokens=max_new_tokens,
                             row_seeds=None if keys is None else keys[s:s + bs],
                             temperature=temperature, top_p=top_p, top_k=top_k, greedy=greedy,
                             temperature_hook=temperature_hook, generator=generator, stop_at_eos=stop_at_eos,
                             compact=self.compact, compile=self.compile)
                parts.append((pids, pmask, g))
        finally:
            self.model.train(was_training)
        return _concat(parts, self.tokenizer, gids, expanded)


def row_keys(seed: int, group_ids: torch.Tensor, group_size: int) -> torch.Tensor:
    """A 63-bit key per row from (seed, global row id): rows of a group_ids vector (B,) that repeats
    each group id group_size times in order. The same global row gets the same key on any rank."""
    B = len(group_ids)
    rows = (group_ids.long() * group_size + torch.arange(B) % group_size).tolist()    # global row ids
    mix = int(seed) * 0xBF58476D1CE4E5B9
    return torch.tensor([(r * 0x9E3779B97F4A7C15 + mix) % (2**63 - 1) for r in rows], dtype=torch.long)


def _pad_cat(ts: list[torch.Tensor], value, left: bool = False) -> torch.Tensor:
    L = max(t.shape[1] for t in ts)
    out = []
    for t in ts:
        padw = L - t.shape[1]
        if padw:
            fill = torch.full((t.shape[0], padw), value, dtype=t.dtype)
            t = torch.cat([fill, t] if left else [t, fill], dim=1)
        out.append(t)
    return torch.cat(out, 0)


def _concat(parts, tokenizer, gids, problems) -> RolloutBatch:
    pad = tokenizer.pad_token_id
    pids = _pad_cat([p[0] for p in parts], pad, left=True)
    pmask = _pad_cat([p[1] for p in parts], False, left=True)
    g = {k: _pad_cat([p[2][k] for p in parts], pad if k == "response_ids" else (False if k == "response_mask" else (1.0 if k == "temperatures" else 0.0)))
         for k in ("response_ids", "response_mask", "logp", "temperatures", "entropy")}
    trunc = torch.cat([p[2]["truncated"] for p in parts])
    texts = decode_responses(tokenizer, g["response_ids"], g["response_mask"])
    return RolloutBatch(pids, pmask, g["response_ids"], g["response_mask"], g["logp"], g["temperatures"],
                        g["entropy"], trunc, gids, texts, list(problems))


# ----------------------------------------------------------------------------------------------
# The scoring / training forward: log-probs and entropy of response tokens
# ----------------------------------------------------------------------------------------------
def response_logp_entropy(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response_ids: torch.Tensor,
                          response_mask: torch.Tensor, temperatures: torch.Tensor, base_temperature: float,
                          chunk_size: int = 0, share_prompts: bool = True, *, entropy_grad: bool = False,
                          grad_rows: torch.Tensor | None = None):
    """logp (B, T) at each token's sampling temperature and entropy (B, T) at the base temperature.

    Only valid response positions go through the LM head (fused, chunked); others are 0.
    entropy_grad: False returns the entropy detached. grad_rows (B, T) bool: only those tokens' logp
    carry gradient (the sparse LM-head backward of `zoo.ops.logprobs_and_entropy`).
    share_prompts: when at most half the rows have distinct prompts (GRPO groups), each distinct
    prompt is run once and its KV cache shared by its rows (see `_prompt_shared_hidden`).
    """
    dev = next(model.parameters()).device
    P = prompt_ids.shape[1]
    decoder, weight, bias = lm_parts(model)
    pids, pmask = prompt_ids.to(dev), prompt_mask.to(dev)
    rids, m = response_ids.to(dev), response_mask.to(dev)
    h = None
    with compute_context(model):                   # bf16 compute on fp32 master weights, when configured
        # gradient checkpointing recomputes each layer without a KV cache: the scoring pass then
        # takes the same unshared path as the training forward, so π_old and π_θ see the same numbers
        if share_prompts and not getattr(decoder, "gradient_checkpointing", False):
            shared = _shared_prompts(pids, pmask)
            if shared is not None:
                h = _prompt_shared_hidden(decoder, pids, pmask, rids, m, shared)
        if h is None:
            ids = torch.cat([pids, rids], 1)                                   # (B, P+T)
            am = torch.cat([pmask, m], 1).long()                               # (B, P+T)
            pos = (am.cumsum(-1) - 1).clamp(min=0)
            hidden = decoder(input_ids=ids, attention_mask=am, position_ids=pos).last_hidden_state  # (B, P+T, D)
            h = hidden[:, P - 1:-1, :]                                         # (B, T, D) predicts response tokens
    cd = getattr(model, "_zoo_compute_dtype", weight.dtype)
    if dev.type != "cpu" and cd.itemsize < weight.dtype.itemsize:
        weight = weight.to(cd)                     # the LM-head matmul in the compute dtype (fp32 accumulation)
    with torch.autocast(dev.type, enabled=False):  # the fused op picks its own dtypes; results are fp32
        lp, ent = logprobs_and_entropy(h[m], weight, rids[m], temperatures.to(dev)[m],
                                       chunk_size or None, bias=bias, entropy_temperature=base_temperature,
                                       entropy_grad=entropy_grad,
                                       grad_rows=None if grad_rows is None else grad_rows.to(dev)[m])
    B, T = response_ids.shape
    logp = torch.zeros(B, T, device=dev, dtype=lp.dtype).masked_scatter(m, lp)  # (B, T)
    entropy = torch.zeros(B, T, device=dev, dtype=ent.dtype).masked_scatter(m, ent)
    return logp, entropy
