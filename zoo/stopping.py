"""When a sampled response ends: stop token ids and stop strings (used by `zoo.sampler.generate`).

Stop ids: the tokenizer's EOS, every id of the model's generation config `eos_token_id` (an int or
a list: Qwen2.5-Instruct lists `<|im_end|>` and `<|endoftext|>`), the chat template's end-of-turn
token (the special token the template writes right after an assistant message: `<|im_end|>`,
`<|eot_id|>`, ...; so a base model prompted through a chat template stops at the end of its turn),
and every stop string that is exactly one special token of the tokenizer.

The rule (the same for training, evaluation and inspection):

- a stop token counts as generated: it is the response's last valid token, its log-prob is
  recorded, it is trained on (mask True) and it ends the sequence (nothing after it is sampled);
- a stop string ends the response at the token that completes it: that token is the last valid
  one (generated, recorded, trained on); nothing after it is generated or trained on. A token is
  never split: when the stop string ends inside a token, the whole token is kept, so the response
  text may carry that token's few characters past the end of the stop string. The stop string
  itself stays in the response (and in its text): formats such as `</answer>` remain checkable.
- stop strings are matched in the response only (never across the prompt boundary), on the text
  of the response's token ids decoded with special tokens kept.
"""
from __future__ import annotations

import weakref
from typing import Sequence

import torch

_EOT_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_CAND_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_PROBE = "Zq7Xv"


def _ids(x) -> list[int]:
    if x is None:
        return []
    if isinstance(x, int):
        return [x]
    return [int(i) for i in x if i is not None]


def chat_end_of_turn(tokenizer) -> list[int]:
    """The special token the chat template writes right after an assistant message ([] if none)."""
    try:
        cached = _EOT_CACHE.get(tokenizer)
    except TypeError:
        cached = None
    if cached is not None:
        return list(cached)
    out: list[int] = []
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"},
                                                  {"role": "assistant", "content": _PROBE}], tokenize=False)
            k = text.rfind(_PROBE)
            if k >= 0:
                rest = tokenizer(text[k + len(_PROBE):], add_special_tokens=False)["input_ids"]
                if rest and rest[0] in set(tokenizer.all_special_ids):
                    out = [int(rest[0])]
        except Exception:  # noqa: BLE001 - an unusual template (roles it refuses): no extra id
            out = []
    try:
        _EOT_CACHE[tokenizer] = tuple(out)
    except TypeError:
        pass
    return out


def stop_token_ids(model, tokenizer, strings: Sequence[str] = ()) -> list[int]:
    """Every token id that ends a response (see the module docstring)."""
    ids = set(_ids(getattr(tokenizer, "eos_token_id", None)))
    gc = getattr(model, "generation_config", None)
    ids |= set(_ids(getattr(gc, "eos_token_id", None) if gc is not None else getattr(model.config, "eos_token_id", None)))
    ids |= set(chat_end_of_turn(tokenizer))
    ids |= set(single_token_strings(tokenizer, strings).values())
    return sorted(ids)


def single_token_strings(tokenizer, strings: Sequence[str]) -> dict[str, int]:
    """The stop strings that are exactly one special token of the tokenizer -> that token's id."""
    if not strings:
        return {}
    special = set(getattr(tokenizer, "all_special_tokens", None) or [])
    added = getattr(tokenizer, "get_added_vocab", lambda: {})() or {}
    out = {}
    for s in strings:
        if s in special or s in added:
            i = tokenizer.convert_tokens_to_ids(s)
            if isinstance(i, int) and i >= 0:
                out[s] = i
    return out


class StopStrings:
    """Detects stop strings in the rows being sampled, cheaply: only a row whose newest token could
    end a stop string (its text holds a stop string's last character, or an incomplete UTF-8
    sequence) has its last few tokens decoded."""

    def __init__(self, tokenizer, strings: Sequence[str], vocab: int, device):
        self.tok, self.strings = tokenizer, tuple(strings)
        self.window = max(len(s.encode("utf-8")) for s in self.strings) + 1      # tokens: each is >= 1 byte
        self.cand = self._candidates(vocab).to(device)                           # (V,) bool

    def _candidates(self, vocab: int) -> torch.Tensor:
        key = (self.strings, vocab)
        try:
            per_tok = _CAND_CACHE.setdefault(self.tok, {})
        except TypeError:
            per_tok = {}
        if key in per_tok:
            return per_tok[key]
        last = {s[-1] for s in self.strings}
        n = min(vocab, len(self.tok))
        texts = self.tok.batch_decode([[i] for i in range(n)], skip_special_tokens=False,
                                      clean_up_tokenization_spaces=False)
        cand = torch.zeros(vocab, dtype=torch.bool)
        cand[:n] = torch.tensor([(not t) or "\ufffd" in t or any(c in t for c in last) for t in texts],
                                dtype=torch.bool)
        per_tok[key] = cand
        return cand

    def hits(self, resp: torch.Tensor, out_rows: list[int], s: int) -> list[bool]:
        """For output rows whose newest token (step s) is a candidate: does its response now contain a
        stop string? resp (B, N) holds every row's tokens up to step s."""
        lo = max(0, s + 1 - self.window)
        windows = resp[out_rows, lo:s + 1].tolist()
        texts = self.tok.batch_decode(windows, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return [any(x in t for x in self.strings) for t in texts]


class StopRule:
    """What ends a response in one `generate` call: stop ids, and optional stop strings."""

    def __init__(self, model, tokenizer, strings: Sequence[str], B: int, vocab: int, device):
        strings = tuple(dict.fromkeys(s for s in strings if s))
        single = single_token_strings(tokenizer, strings)
        self.ids = torch.tensor(stop_token_ids(model, tokenizer, strings), dtype=torch.long, device=device)
        rest = [s for s in strings if s not in single]
        self.strings = StopStrings(tokenizer, rest, vocab, device) if rest else None
        self.ended = torch.full((B,), -1, dtype=torch.long, device=device)   # step a stop string ended, per row

    def step(self, tok: torch.Tensor, alive: torch.Tensor, rows: torch.Tensor, resp: torch.Tensor,
             s: int) -> torch.Tensor:
        """(W,) bool: the working rows whose token at step s ends their response."""
        done = torch.isin(tok, self.ids)
        if self.strings is not None:
            cand = alive & ~done & self.strings.cand[tok]
            if bool(cand.any()):
                idx = cand.nonzero().squeeze(-1)
                out = rows[idx]
                hit = torch.tensor(self.strings.hits(resp, out.tolist(), s), dtype=torch.bool, device=tok.device)
                if bool(hit.any()):
                    done[idx[hit]] = True
                    self.ended[out[hit]] = s
        return done

    def ends(self, resp: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: the tokens that end a response (a stop id, or the token completing a stop string)."""
        T = resp.shape[1]
        at = torch.arange(T, device=resp.device)[None, :] == self.ended[:, None]
        return torch.isin(resp, self.ids) | at


def stop_rule(model, tokenizer, stop_at_eos, B: int, device) -> StopRule | None:
    """`generate`'s stop_at_eos: False/None = never stop early; True = stop ids; a sequence of
    strings = stop ids and those stop strings."""
    if stop_at_eos is False or stop_at_eos is None:
        return None
    strings = () if stop_at_eos is True else tuple(stop_at_eos)
    return StopRule(model, tokenizer, strings, B, _vocab_size(model, tokenizer) if strings else 0, device)


def _vocab_size(model, tokenizer) -> int:
    """Rows of the LM head (every id a row can sample), for the stop-string candidate table."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    w = getattr(head, "weight", None)
    return int(w.shape[0]) if w is not None else max(len(tokenizer), int(getattr(model.config, "vocab_size", 0)))
