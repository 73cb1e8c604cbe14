"""KV-cache helpers of the sampler and of the training forward, and prompt sharing.

The transformers cache API across versions (`_cache_kw`, `_get_cache`), a preallocated cache layer
(no torch.cat per decoding step), batch-row selection and rollback; and prompt sharing: a GRPO group
repeats its prompt G times, so each distinct prompt is run once and its KV cache expanded to the rows
that share it (`_shared_prompts`, `_prompt_shared_hidden`). Used by `zoo.sampler` and `zoo.rollout`.
"""
from __future__ import annotations

import inspect
import weakref

import torch

def _cache_kw(model) -> str:
    """transformers 5.x calls the KV cache argument `cache`; 4.x `past_key_values`."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _get_cache(out):
    c = out.get("cache") if hasattr(out, "get") else None
    return c if c is not None else out.get("past_key_values")


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
# Prompt sharing: a GRPO group's prompt runs once (training forward; the sampler's prefill)
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
