"""Batched KV-cache sampler: prefill the prompts, then one token per step.

At every decoding step it computes the untempered entropy of each sequence's next-token
distribution, lets a hook set each sequence's temperature from it (forking-temperature
decoding), and records for every sampled token the log-prob under the distribution actually
sampled from, the temperature used and the untempered entropy.

Speed: each distinct prompt is prefilled once (a GRPO group repeats it), the KV cache is
preallocated (no per-step concatenation), tokens are drawn by inverse CDF from uniforms taken up
front from the caller's CPU generator, finished rows leave the batch once a quarter of it has
finished, and the decode step can go through torch.compile. The training forward
(`response_logp_entropy`) likewise runs a shared prompt once and expands its KV cache.
"""
from __future__ import annotations

import inspect
import warnings
import weakref
from typing import Callable, Protocol

import torch

from zoo.model import encode_prompts, lm_parts
from zoo.ops import logprobs_and_entropy
from zoo.types import Problem, RolloutBatch

TemperatureHook = Callable[[torch.Tensor, float], "torch.Tensor | None"]  # (entropy (B,), base T) -> (B,) temps


class RolloutEngine(Protocol):
    """What the trainer needs from an inference engine (see docs/engines.md)."""

    def sample(self, problems: list[Problem], group_size: int, *, max_new_tokens: int, temperature: float,
               top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
               temperature_hook: TemperatureHook | None = None, generator: torch.Generator | None = None,
               group_offset: int = 0, stop_at_eos: bool = True) -> RolloutBatch: ...

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
# KV cache helpers: a preallocated layer (no torch.cat per step) and row selection
# ----------------------------------------------------------------------------------------------
_PREALLOC_CLS = None


def _prealloc_layer_cls():
    """A transformers DynamicLayer whose keys/values live in a buffer sized for the whole
    generation, so a decoding step writes in place instead of re-concatenating the cache."""
    global _PREALLOC_CLS
    if _PREALLOC_CLS is not None:
        return _PREALLOC_CLS or None
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # an older transformers: keep its own cache
        _PREALLOC_CLS = False
        return None

    class PreallocatedLayer(DynamicLayer):
        def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int):
            super().__init__()
            B, H, n, D = keys.shape
            self._k = keys.new_empty(B, H, max(capacity, n), D)
            self._v = values.new_empty(B, values.shape[1], max(capacity, n), values.shape[-1])
            self._k[:, :, :n].copy_(keys)
            self._v[:, :, :n].copy_(values)
            self.device, self.is_initialized = keys.device, True
            self._set_len(n)

        def _set_len(self, n: int) -> None:
            self._n = n
            self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]

        def update(self, key_states, value_states, *args, **kwargs):
            n, q = self._n, key_states.shape[-2]
            if n + q > self._k.shape[2]:  # grow (only if a caller feeds more than planned)
                grow = max(n + q, 2 * self._k.shape[2]) - self._k.shape[2]
                self._k = torch.cat([self._k, self._k.new_empty(*self._k.shape[:2], grow, self._k.shape[-1])], 2)
                self._v = torch.cat([self._v, self._v.new_empty(*self._v.shape[:2], grow, self._v.shape[-1])], 2)
            self._k[:, :, n:n + q].copy_(key_states)
            self._v[:, :, n:n + q].copy_(value_states)
            self._set_len(n + q)
            return self.keys, self.values

        def get_seq_length(self, *args, **kwargs) -> int:
            return self._n

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove < 0:
                self._set_len(max(0, self._n + tokens_to_remove))

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self._k, self._v = self._k[indices], self._v[indices]
            self._set_len(self._n)

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            self.batch_select_indices(beam_idx.to(self._k.device))

        def batch_repeat_interleave(self, repeats: int) -> None:
            self._k = self._k.repeat_interleave(repeats, dim=0)
            self._v = self._v.repeat_interleave(repeats, dim=0)
            self._set_len(self._n)

    _PREALLOC_CLS = PreallocatedLayer
    return PreallocatedLayer


def _preallocate(cache, capacity: int, rows: torch.Tensor | None = None):
    """Swap the plain full-attention layers of a transformers Cache for preallocated ones (in place),
    taking batch rows `rows` (repeats allowed) if given; any other layer kind (sliding window,
    linear attention, ...) is kept as it is, row-selected."""
    cls = _prealloc_layer_cls()
    layers = getattr(cache, "layers", None)
    if cls is None or not isinstance(layers, list):
        if rows is not None:
            _select_rows(cache, rows)
        return cache
    from transformers.cache_utils import DynamicLayer

    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer and getattr(layer, "is_initialized", False) and layer.keys is not None \
                and layer.keys.dim() == 4:
            k, v = (layer.keys, layer.values) if rows is None else (layer.keys[rows], layer.values[rows])
            layers[i] = cls(k, v, capacity)
        elif rows is not None:
            layer.batch_select_indices(rows)
    return cache


def _select_rows(cache, idx: torch.Tensor) -> None:
    """Keep only batch rows idx of the KV cache (in place)."""
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(idx)
    elif hasattr(cache, "reorder_cache"):
        cache.reorder_cache(idx)
    else:  # pragma: no cover - a cache without either API
        raise TypeError(f"cannot select rows of a {type(cache).__name__}")


def _seq_lengths(cache) -> list[int]:
    return [layer.get_seq_length() for layer in getattr(cache, "layers", [])]


def _rollback(cache, lengths: list[int]) -> None:
    """Undo a partial update (a compiled step that failed half-way)."""
    for layer, n in zip(getattr(cache, "layers", []), lengths):
        extra = layer.get_seq_length() - n
        if extra > 0:
            layer.crop(-extra)


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


@torch.no_grad()
def generate(model, tokenizer, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, max_new_tokens: int,
             temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
             temperature_hook: TemperatureHook | None = None, generator: torch.Generator | None = None,
             stop_at_eos: bool = True, compact: bool = True, compile: bool = False, share_prompts: bool = True):
    """Sample continuations of left-padded prompts. Returns a dict of (B, T) tensors + truncated (B,).

    Per step and row: the untempered entropy H of the next-token distribution; the temperature
    (temperature_hook(H of the rows still generating, temperature), or `temperature`); the token,
    drawn by inverse CDF from one uniform per (row, step) taken up front from `generator` (so a
    row's draws do not depend on when other rows finish); its log-prob under the distribution it
    was drawn from. Greedy takes the argmax and records T = 1.

    stop_at_eos=False generates exactly max_new_tokens (benchmarks), treating EOS as an ordinary token.
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
    eos = tokenizer.eos_token_id if stop_at_eos else None
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
        u = None if greedy else torch.rand((B, N), generator=generator, dtype=torch.float64).to(dev)
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
            if eos is not None:
                alive = alive & (tok != eos)
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
    if eos is None:
        mask = torch.ones_like(resp, dtype=torch.bool)
        finished = torch.zeros(B, dtype=torch.bool, device=dev)
    else:                                           # valid = up to and including the first EOS
        is_eos = resp == eos
        mask = ~((is_eos.long().cumsum(-1) - is_eos.long()) > 0)
        finished = is_eos.any(-1)
    return {"response_ids": resp.masked_fill(~mask, pad).cpu(), "response_mask": mask.cpu(),
            "logp": (lps * mask).cpu(), "temperatures": temps.cpu(), "entropy": (ents * mask).cpu(),
            "truncated": (~finished).cpu()}


def decode_responses(tokenizer, response_ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
    eos = tokenizer.eos_token_id
    out = []
    for row, m in zip(response_ids.tolist(), mask.tolist()):
        toks = [t for t, v in zip(row, m) if v and t != eos]
        out.append(tokenizer.decode(toks, skip_special_tokens=True))
    return out


class HFEngine:
    """The default engine: the policy itself, sampled with `generate` above (no weight copy needed).

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
               group_offset: int = 0, stop_at_eos: bool = True) -> RolloutBatch:
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
                             temperature_hook=temperature_hook, generator=generator, stop_at_eos=stop_at_eos,
                             compact=self.compact, compile=self.compile)
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
def _shared_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor):
    """(first row of each distinct prompt (U,), inverse (B,) row -> distinct prompt) when at most
    half the rows are distinct (a GRPO group repeats its prompt G times); None otherwise."""
    B = prompt_ids.shape[0]
    if B < 2:
        return None
    key = torch.cat([prompt_ids, prompt_mask.long()], 1)
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
    U = uniq.shape[0]
    if 2 * U > B:
        return None
    first = torch.full((U,), B, dtype=torch.long, device=key.device).scatter_reduce(
        0, inverse, torch.arange(B, device=key.device), reduce="amin")
    return first, inverse


def _plain_dynamic_cache(cache) -> bool:
    """True for a transformers cache made only of full-attention DynamicLayers (safe to expand and
    to differentiate through)."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return False
    layers = getattr(cache, "layers", None)
    return isinstance(layers, list) and bool(layers) and all(type(x) is DynamicLayer for x in layers)


_UNSHAREABLE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # decoders whose cache cannot be shared


def _prompt_shared_hidden(decoder, prompt_ids, prompt_mask, response_ids, response_mask, shared):
    """Final hidden states (B, T, D) that predict the response tokens, running each distinct prompt
    once: its KV cache (with grad) is expanded to the rows that share it, then the responses run
    on top. The same numbers as one forward over prompt+response (up to float rounding), with the
    prompt's forward and backward done once per group instead of once per sample. None if the
    model's cache cannot be shared this way."""
    first, inv = shared
    if _UNSHAREABLE.get(decoder):                                              # learned on an earlier call
        return None
    pm = prompt_mask[first].long()
    out = decoder(input_ids=prompt_ids[first], attention_mask=pm, position_ids=(pm.cumsum(-1) - 1).clamp(min=0),
                  use_cache=True)
    cache = _get_cache(out)
    if not _plain_dynamic_cache(cache):
        _UNSHAREABLE[decoder] = True       # e.g. sliding-window / hybrid caches: never pay this forward twice
        return None
    h_last = out.last_hidden_state[:, -1][inv]                                 # (B, D) predicts response token 0
    T = response_ids.shape[1]
    if T == 1:
        return h_last[:, None]
    _select_rows(cache, inv)                                                   # (U, ...) -> (B, ...), differentiable
    am = torch.cat([prompt_mask, response_mask], 1).long()                     # (B, P+T)
    pos = (am.cumsum(-1) - 1).clamp(min=0)[:, prompt_ids.shape[1]:-1]          # (B, T-1)
    out = decoder(input_ids=response_ids[:, :-1], attention_mask=am[:, :-1], position_ids=pos, use_cache=True,
                  **{_cache_kw(decoder): cache})
    return torch.cat([h_last[:, None], out.last_hidden_state], 1)              # (B, T, D)


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
    if share_prompts and not (getattr(decoder, "gradient_checkpointing", False) and decoder.training):
        shared = _shared_prompts(pids, pmask)
        if shared is not None:
            h = _prompt_shared_hidden(decoder, pids, pmask, rids, m, shared)
    if h is None:
        ids = torch.cat([pids, rids], 1)                                       # (B, P+T)
        am = torch.cat([pmask, m], 1).long()                                   # (B, P+T)
        pos = (am.cumsum(-1) - 1).clamp(min=0)
        hidden = decoder(input_ids=ids, attention_mask=am, position_ids=pos).last_hidden_state  # (B, P+T, D)
        h = hidden[:, P - 1:-1, :]                                             # (B, T, D) predicts response tokens
    lp, ent = logprobs_and_entropy(h[m], weight, rids[m], temperatures.to(dev)[m],
                                   chunk_size or None, bias=bias, entropy_temperature=base_temperature,
                                   entropy_grad=entropy_grad, grad_rows=None if grad_rows is None else grad_rows.to(dev)[m])
    B, T = response_ids.shape
    logp = torch.zeros(B, T, device=dev, dtype=lp.dtype).masked_scatter(m, lp)  # (B, T)
    entropy = torch.zeros(B, T, device=dev, dtype=ent.dtype).masked_scatter(m, ent)
    return logp, entropy
