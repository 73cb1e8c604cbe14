"""Batched KV-cache sampler: prefill the prompts, then one token per step.

At every decoding step it computes the untempered entropy of each sequence's next-token
distribution, lets a hook set each sequence's temperature from it (forking-temperature
decoding), and records for every sampled token the log-prob under the distribution actually
sampled from, the temperature used and the untempered entropy.

Speed: each distinct prompt is prefilled once (a GRPO group repeats it), the KV cache is
preallocated (no per-step concatenation), tokens are drawn by inverse CDF from uniforms taken up
front from the caller's CPU generator, finished rows leave the batch once a quarter of it has
finished, and the decode step can go through torch.compile. The KV-cache helpers live in
`zoo.kv_cache`; `zoo.rollout` re-exports `generate`, `TemperatureHook`, `filter_logits` and
`sample_from_logp`.
"""
from __future__ import annotations

import inspect
import warnings
import weakref
from typing import Callable

import torch

from zoo.model import in_compute_dtype
from zoo.kv_cache import (_cache_kw, _get_cache, _preallocate, _rollback, _select_rows, _seq_lengths,
                          _shared_prompts)
from zoo.stopping import stop_rule

TemperatureHook = Callable[[torch.Tensor, float], "torch.Tensor | None"]  # (entropy (B,), base T) -> (B,) temps


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


def sample_from_logp(logp: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: one token per row of log-probs (W, V) from uniforms u (W,) in [0, 1).

    The uniforms come from the caller's (CPU) generator, so a run is reproducible on any device
    while only W numbers cross to the device; a token of probability 0 is never returned. Float64
    uniforms and CDF: in fp32 both sit on a ~6e-8 grid, so at a 152k vocabulary thousands of rare
    tokens could never be drawn (a ~1e-3 total-variation gap from the recorded log-probs).
    """
    probs = logp.double().exp()
    cdf = probs.cumsum(-1)                                                      # (W, V) float64
    total = cdf[:, -1:]
    x = torch.minimum(u.to(cdf.dtype)[:, None] * total, torch.nextafter(total, torch.zeros_like(total)))
    tok = torch.searchsorted(cdf, x, right=True).squeeze(-1).clamp_(max=logp.shape[-1] - 1)
    # a parallel scan need not be exactly monotone: never keep a zero-probability pick
    bad = probs.gather(-1, tok[:, None]).squeeze(-1) <= 0
    return torch.where(bad, probs.argmax(-1), tok)


# ----------------------------------------------------------------------------------------------
# The decode step, optionally compiled
# ----------------------------------------------------------------------------------------------
_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # model -> compiled step, or False


def _decode_step(model, kw: str):
    ref = weakref.ref(model)        # the compiled step is cached per model: it must not keep the model alive

    def step(tok, am, pos, cache):
        out = ref()(input_ids=tok, attention_mask=am, position_ids=pos, use_cache=True, **{kw: cache})
        return out.logits[:, -1, :].float()
    return step


def _compiled_step(model, kw: str):
    """torch.compile of the decode step, made once per model; None (with a warning) if unavailable."""
    fn = _COMPILED.get(model)
    if fn is not None:
        return fn or None
    try:
        fn = torch.compile(_decode_step(model, kw), dynamic=True)
    except Exception as e:  # noqa: BLE001 - any backend/platform problem means: run eagerly
        warnings.warn(f"zoo.rollout: torch.compile unavailable ({type(e).__name__}: {e}); decoding eagerly",
                      RuntimeWarning, stacklevel=3)
        fn = False
    _COMPILED[model] = fn
    return fn or None


def _compile_failed(model, e: Exception) -> None:
    _COMPILED[model] = False
    warnings.warn(f"zoo.rollout: compiled decode step failed ({type(e).__name__}: {str(e)[:300]}); "
                  "falling back to eager decoding for this model", RuntimeWarning, stacklevel=3)


def _uniforms(B: int, N: int, generator: torch.Generator | None, row_seeds: torch.Tensor | None) -> torch.Tensor:
    """(B, N) float64 uniforms on the CPU: from one generator, or, with row_seeds (B,), each row from
    its own stream seeded by its key, so a row's draws do not depend on which process samples it
    or with which other rows (rank-invariant sampling)."""
    if row_seeds is None:
        return torch.rand((B, N), generator=generator, dtype=torch.float64)
    g = torch.Generator()
    return torch.stack([torch.rand(N, generator=g.manual_seed(int(k)), dtype=torch.float64)
                        for k in row_seeds.tolist()]) if B else torch.zeros(0, N, dtype=torch.float64)


@torch.no_grad()
@in_compute_dtype
def generate(model, tokenizer, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, max_new_tokens: int,
             temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
             temperature_hook: TemperatureHook | None = None, generator: torch.Generator | None = None,
             row_seeds: torch.Tensor | None = None,
             stop_at_eos: bool = True, compact: bool = True, compile: bool = False, share_prompts: bool = True):
    """Sample continuations of left-padded prompts. Returns a dict of (B, T) tensors + truncated (B,).

    Per step and row: the untempered entropy H of the next-token distribution; the temperature
    (temperature_hook(H of the rows still generating, temperature), or `temperature`); the token,
    drawn by inverse CDF from one uniform per (row, step) taken up front from `generator` (so a
    row's draws do not depend on when other rows finish); its log-prob under the distribution it
    was drawn from. Greedy takes the argmax and records T = 1. row_seeds (B,) int64: draw each row's
    uniforms from its own seeded stream instead (the trainer keys them by step and global row, so 1
    process and N processes sample the same tokens).

    stop_at_eos: True stops a row at EOS, at every end-of-turn id of the model's generation config and
    chat template (`zoo.stopping`); a sequence of strings adds those stop strings (the row ends with
    the token that completes one); False generates exactly max_new_tokens (benchmarks), treating EOS
    as an ordinary token. A stop token or the token completing a stop string is the row's last valid
    token (in the mask, its log-prob recorded); nothing after it is generated.
    compact: drop finished rows from the batch (and KV cache) once at least a quarter of the rows
    still in it have finished; results are scattered back to the full (B, T) outputs.
    compile: run the decode step through torch.compile (falls back to eager with a warning).
    share_prompts: prefill each distinct prompt once and copy its KV cache to the rows that repeat
    it (a GRPO group), when at most half the rows are distinct.
    """
    dev = next(model.parameters()).device
    ids, pm = prompt_ids.to(dev), prompt_mask.to(dev).long()
    B, P = ids.shape
    N = int(max_new_tokens)
    stop = stop_rule(model, tokenizer, stop_at_eos, B, dev)   # None: never stop early
    pad = tokenizer.pad_token_id
    base_t = 1.0 if greedy else float(temperature)
    resp = torch.full((B, N), pad, dtype=torch.long, device=dev)
    lps = torch.zeros(B, N, device=dev)
    ents = torch.zeros(B, N, device=dev)
    temps = torch.full((B, N), base_t, device=dev)
    steps = 0
    if N > 0 and B > 0:
        # one uniform per (row, step), drawn on the CPU generator up front: device-independent and
        # the generator advances by the same amount whatever the rows do
        u = None if greedy else _uniforms(B, N, generator, row_seeds).to(dev)
        unit_t = (not greedy and temperature_hook is None and base_t == 1.0 and not top_k and top_p >= 1.0)
        am = torch.ones(B, P + N, dtype=torch.long, device=dev)                 # (B, P+N), sliced per step
        am[:, :P] = pm
        pos = (pm.cumsum(-1) - 1).clamp(min=0)                                  # (B, P) explicit for left padding
        kw = _cache_kw(model)
        extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        shared = _shared_prompts(ids, pm) if share_prompts else None
        if shared is None:
            out = model(input_ids=ids, attention_mask=pm, position_ids=pos, use_cache=True, **extra)
            cache, logits = _get_cache(out), out.logits[:, -1, :].float()      # (B, V)
            cache = _preallocate(cache, P + N)
        else:                                           # prefill each distinct prompt once (GRPO groups)
            first, inv = shared
            out = model(input_ids=ids[first], attention_mask=pm[first], position_ids=pos[first], use_cache=True,
                        **extra)
            cache, logits = _get_cache(out), out.logits[:, -1, :].float()[inv]
            cache = _preallocate(cache, P + N, rows=inv)
        del out
        eager = _decode_step(model, kw)
        step_fn = (_compiled_step(model, kw) if compile else None) or eager
        next_pos = pos[:, -1] + 1                                               # (B,)
        rows = torch.arange(B, device=dev)              # working batch row -> output row
        alive = torch.ones(B, dtype=torch.bool, device=dev)
        W, n_alive = B, B                               # working batch size, rows in it still generating
        for s in range(N):
            logp1 = torch.log_softmax(logits, -1)                               # untempered
            H = -(logp1.exp() * logp1).sum(-1)                                  # (W,)
            t = None
            if temperature_hook is not None and not greedy:
                if n_alive == W:
                    t = temperature_hook(H, base_t)
                else:                                   # the hook sees only the rows still generating
                    a = alive.nonzero().squeeze(-1)
                    ta = temperature_hook(H[a], base_t)
                    if ta is not None:
                        ta = torch.as_tensor(ta, device=dev).float().reshape(-1).expand(a.shape[0])
                        t = torch.full((W,), base_t, device=dev).index_copy_(0, a, ta)
                if t is not None:
                    t = torch.as_tensor(t, device=dev).float().reshape(-1).expand(W)
            if greedy:
                tok = logits.argmax(-1)
                lp = logp1.gather(-1, tok[:, None]).squeeze(-1)
            else:
                if unit_t:
                    logp_s = logp1                      # T = 1, no filter: the entropy's log-softmax
                else:
                    scaled = logits / (t[:, None] if t is not None else base_t)
                    logp_s = torch.log_softmax(filter_logits(scaled, top_p, top_k), -1)  # distribution sampled from
                tok = sample_from_logp(logp_s, u[rows, s] if W < B else u[:, s])
                lp = logp_s.gather(-1, tok[:, None]).squeeze(-1)
            # record the rows still generating
            if n_alive == B:
                resp[:, s], lps[:, s], ents[:, s] = tok, lp, H
                if t is not None:
                    temps[:, s] = t
            else:
                r = rows if n_alive == W else rows[alive]
                sel = slice(None) if n_alive == W else alive
                resp[r, s], lps[r, s], ents[r, s] = tok[sel], lp[sel], H[sel]
                if t is not None:
                    temps[r, s] = t[sel]
            steps = s + 1
            if stop is not None:                        # stop ids and stop strings (zoo.stopping)
                alive = alive & ~stop.step(tok, alive, rows, resp, s)
                n_alive = int(alive.sum())
                if n_alive == 0:
                    break
            if s == N - 1:
                break
            if compact and n_alive < W and 4 * (W - n_alive) >= W:              # a quarter finished: drop them
                keep = alive.nonzero().squeeze(-1)
                _select_rows(cache, keep)
                rows, am, next_pos, tok = rows[keep], am[keep], next_pos[keep], tok[keep]
                alive = torch.ones(n_alive, dtype=torch.bool, device=dev)
                W = n_alive
            L = P + s + 1
            args = (tok[:, None], am[:, :L], next_pos[:, None], cache)
            if step_fn is eager:
                logits = eager(*args)
            else:
                lengths = _seq_lengths(cache)
                try:
                    logits = step_fn(*args)
                except Exception as e:  # noqa: BLE001 - compile problems surface on first call
                    _compile_failed(model, e)
                    _rollback(cache, lengths)
                    step_fn = eager
                    logits = eager(*args)
            next_pos = next_pos + 1
    resp, lps, ents, temps = resp[:, :steps], lps[:, :steps], ents[:, :steps], temps[:, :steps]
    if stop is None:
        mask = torch.ones_like(resp, dtype=torch.bool)
        finished = torch.zeros(B, dtype=torch.bool, device=dev)
    else:                                           # valid = up to and including the first stop
        is_end = stop.ends(resp)
        mask = ~((is_end.long().cumsum(-1) - is_end.long()) > 0)
        finished = is_end.any(-1)
    return {"response_ids": resp.masked_fill(~mask, pad).cpu(), "response_mask": mask.cpu(),
            "logp": (lps * mask).cpu(), "temperatures": temps.cpu(), "entropy": (ents * mask).cpu(),
            "truncated": (~finished).cpu()}
