"""Batched KV-cache sampler: prefill the prompts, then one token per step.

At every decoding step it computes the untempered entropy of each sequence's next-token
distribution, lets a hook set each sequence's temperature from it (forking-temperature
decoding), and records for every sampled token the log-prob under the distribution actually
sampled from, the temperature used and the untempered entropy.
"""
from __future__ import annotations

import inspect
from typing import Callable, Protocol

import torch

from zoo.model import encode_prompts, lm_parts
from zoo.ops import entropy_from_logits, logprobs_and_entropy
from zoo.types import Problem, RolloutBatch

TemperatureHook = Callable[[torch.Tensor, float], "torch.Tensor | None"]  # (entropy (B,), base T) -> (B,) temps


class RolloutEngine(Protocol):
    """What the trainer needs from an inference engine (see docs/engines.md)."""

    def sample(self, problems: list[Problem], group_size: int, *, max_new_tokens: int, temperature: float,
               top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
               temperature_hook: TemperatureHook | None = None, generator: torch.Generator | None = None,
               group_offset: int = 0) -> RolloutBatch: ...

    def sync_weights(self, model) -> None: ...


def _cache_kw(model) -> str:
    """transformers 5.x calls the KV cache argument `cache`; 4.x `past_key_values`."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _get_cache(out):
    c = out.get("cache") if hasattr(out, "get") else None
    return c if c is not None else out.get("past_key_values")


def filter_logits(logits: torch.Tensor, top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """Mask logits outside top-k / the top-p nucleus with -inf. (B, V) -> (B, V)."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        cum = probs.cumsum(-1)
        remove = cum - probs > top_p           # keep the smallest prefix whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    return logits


@torch.no_grad()
def generate(model, tokenizer, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, max_new_tokens: int,
             temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
             temperature_hook: TemperatureHook | None = None, generator: torch.Generator | None = None,
             stop_at_eos: bool = True):
    """Sample continuations of left-padded prompts. Returns a dict of (B, T) tensors + truncated (B,).

    stop_at_eos=False generates exactly max_new_tokens (benchmarks), treating EOS as an ordinary token.
    """
    dev = next(model.parameters()).device
    ids, am = prompt_ids.to(dev), prompt_mask.to(dev).long()
    B = ids.shape[0]
    eos, pad = (tokenizer.eos_token_id if stop_at_eos else -1), tokenizer.pad_token_id
    pos = (am.cumsum(-1) - 1).clamp(min=0)                                     # (B, P) explicit for left padding
    kw = _cache_kw(model)
    out = model(input_ids=ids, attention_mask=am, position_ids=pos, use_cache=True)
    cache, logits = _get_cache(out), out.logits[:, -1, :].float()              # (B, V)
    next_pos = pos[:, -1] + 1                                                  # (B,)
    toks, lps, temps, ents = [], [], [], []
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    for _ in range(max_new_tokens):
        H = entropy_from_logits(logits)                                        # (B,) untempered
        t = torch.full((B,), float(temperature), device=dev)
        if temperature_hook is not None and not greedy:
            ht = temperature_hook(H, float(temperature))
            if ht is not None:
                t = ht.to(dev).float()
        if greedy:
            tok = logits.argmax(-1)
            lp = torch.log_softmax(logits, -1).gather(-1, tok[:, None]).squeeze(-1)
            t = torch.ones(B, device=dev)
        else:
            scaled = filter_logits(logits / t[:, None], top_p, top_k)          # the distribution sampled from
            logp_all = torch.log_softmax(scaled, -1)
            # sample on the CPU so a CPU torch.Generator (seeded, checkpointed) also drives GPU runs
            tok = torch.multinomial(logp_all.exp().cpu(), 1, generator=generator).squeeze(-1).to(dev)
            lp = logp_all.gather(-1, tok[:, None]).squeeze(-1)
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        toks.append(tok); lps.append(lp); temps.append(t); ents.append(H)
        was_done = done
        done = done | (tok == eos)
        if bool(done.all()):
            break
        am = torch.cat([am, (~was_done).long()[:, None]], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=am, position_ids=next_pos[:, None],
                    use_cache=True, **{kw: cache})
        cache, logits = _get_cache(out), out.logits[:, -1, :].float()
        next_pos = next_pos + 1
    resp = torch.stack(toks, 1)                                                # (B, T)
    # valid = up to and including the first EOS
    is_eos = resp == eos
    after = (is_eos.long().cumsum(-1) - is_eos.long()) > 0                     # strictly after the first EOS
    mask = ~after
    finished = is_eos.any(-1)
    resp = resp.masked_fill(~mask, pad)
    return {"response_ids": resp.cpu(), "response_mask": mask.cpu(),
            "logp": (torch.stack(lps, 1) * mask).cpu(), "temperatures": torch.stack(temps, 1).cpu(),
            "entropy": (torch.stack(ents, 1) * mask).cpu(), "truncated": (~finished).cpu()}


def decode_responses(tokenizer, response_ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
    eos = tokenizer.eos_token_id
    out = []
    for row, m in zip(response_ids.tolist(), mask.tolist()):
        toks = [t for t, v in zip(row, m) if v and t != eos]
        out.append(tokenizer.decode(toks, skip_special_tokens=True))
    return out


class HFEngine:
    """The default engine: the policy itself, sampled with `generate` above (no weight copy needed)."""

    def __init__(self, model, tokenizer, batch_size: int = 0):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def sync_weights(self, model) -> None:
        self.model = model  # shares parameters with the trainer

    def sample(self, problems: list[Problem], group_size: int, *, max_new_tokens: int, temperature: float,
               top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
               temperature_hook: TemperatureHook | None = None, generator: torch.Generator | None = None,
               group_offset: int = 0) -> RolloutBatch:
        prompts = [p.prompt for p in problems for _ in range(group_size)]
        expanded = [p for p in problems for _ in range(group_size)]
        gids = torch.arange(len(problems)).repeat_interleave(group_size) + group_offset
        was_training = self.model.training
        self.model.eval()
        bs = self.batch_size or len(prompts)
        parts = []
        try:
            for s in range(0, len(prompts), bs):
                pids, pmask = encode_prompts(self.tokenizer, prompts[s:s + bs])
                g = generate(self.model, self.tokenizer, pids, pmask, max_new_tokens=max_new_tokens,
                             temperature=temperature, top_p=top_p, top_k=top_k, greedy=greedy,
                             temperature_hook=temperature_hook, generator=generator)
                parts.append((pids, pmask, g))
        finally:
            self.model.train(was_training)
        return _concat(parts, self.tokenizer, gids, expanded)


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
                          chunk_size: int = 0):
    """logp (B, T) at each token's sampling temperature and entropy (B, T) at the base temperature.

    Only valid response positions go through the LM head (chunked); others are 0.
    """
    dev = next(model.parameters()).device
    P = prompt_ids.shape[1]
    ids = torch.cat([prompt_ids, response_ids], 1).to(dev)                    # (B, P+T)
    am = torch.cat([prompt_mask, response_mask], 1).to(dev).long()            # (B, P+T)
    pos = (am.cumsum(-1) - 1).clamp(min=0)
    decoder, weight, bias = lm_parts(model)
    hidden = decoder(input_ids=ids, attention_mask=am, position_ids=pos).last_hidden_state  # (B, P+T, D)
    h = hidden[:, P - 1:-1, :]                                                 # (B, T, D) predicts response tokens
    m = response_mask.to(dev)
    lp, ent = logprobs_and_entropy(h[m], weight, response_ids.to(dev)[m], temperatures.to(dev)[m],
                                   chunk_size or None, bias=bias, entropy_temperature=base_temperature)
    B, T = response_ids.shape
    logp = torch.zeros(B, T, device=dev, dtype=lp.dtype).masked_scatter(m, lp)  # (B, T)
    entropy = torch.zeros(B, T, device=dev, dtype=ent.dtype).masked_scatter(m, ent)
    return logp, entropy
