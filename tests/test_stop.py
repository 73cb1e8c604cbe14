"""Stopping: EOS, the generation config's end-of-turn ids (a list), the chat template's end of turn,
rollout.stop strings (ending at a token boundary or inside a token), masks, lengths, and the stop
token's log-prob present in training."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zoo.config import ConfigError, config_from_dict
from zoo.model import encode_prompts, load_policy
from zoo.rollout import generate
from zoo.stopping import chat_end_of_turn, stop_token_ids


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    from zoo.tiny_hf import build_tiny_hf

    root = tmp_path_factory.mktemp("stop-models")
    return {a: build_tiny_hf(a, root / a) for a in ("qwen2", "llama")}


def _boost(model, token_id: int, value: float) -> None:
    """An LM-head bias making `token_id` likely (the fused scoring op reads the same bias)."""
    head = model.get_output_embeddings()
    bias = torch.zeros(head.weight.shape[0])
    bias[token_id] = value
    head.bias = torch.nn.Parameter(bias, requires_grad=False)


def _valid_rows(out):
    """Every row's mask is a prefix; returns [(ids of the valid part, logp of it)]."""
    rows = []
    for ids, m, lp in zip(out["response_ids"], out["response_mask"], out["logp"]):
        n = int(m.sum())
        assert m[:n].all() and not m[n:].any()
        rows.append((ids[:n].tolist(), lp[:n]))
    return rows


def test_stop_ids_come_from_generation_config_tokenizer_and_chat_template(tiny_dirs):
    model, tok = load_policy(tiny_dirs["qwen2"])
    im_end, eot = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    assert chat_end_of_turn(tok) == [im_end]
    model.generation_config.eos_token_id = [im_end, eot]           # as Qwen2.5-Instruct lists them
    assert stop_token_ids(model, tok) == sorted([im_end, eot])
    # a base model (Qwen2.5-Math style): EOS <|endoftext|> only; the chat template's <|im_end|> still stops
    model.generation_config.eos_token_id = eot
    tok.eos_token = "<|endoftext|>"
    assert set(stop_token_ids(model, tok)) == {im_end, eot}
    llama, ltok = load_policy(tiny_dirs["llama"])
    assert chat_end_of_turn(ltok) == [ltok.convert_tokens_to_ids("<|eot_id|>")]
    # a stop string that is one special token stops as that id
    assert ltok.convert_tokens_to_ids("<|end_of_text|>") in stop_token_ids(llama, ltok, ["<|end_of_text|>"])


@pytest.mark.parametrize("compact", [True, False])
def test_every_end_of_turn_id_stops_with_the_token_kept(tiny_dirs, compact):
    model, tok = load_policy(tiny_dirs["qwen2"])
    im_end, eot = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config.eos_token_id = [im_end, eot]
    _boost(model, eot, 4.0)                                         # <|endoftext|> ends most rows early
    pids, pm = encode_prompts(tok, ["Compute 1+2.", "Find x.", "Let the sum", "Solve for x"] * 4)
    g = torch.Generator().manual_seed(0)
    out = generate(model, tok, pids, pm, max_new_tokens=16, generator=g, compact=compact)
    rows = _valid_rows(out)
    ended = [r for r in rows if r[0][-1] in (im_end, eot)]
    assert len(ended) >= 4 and any(len(r[0]) > 1 for r in ended)
    for (ids, lp), trunc in zip(rows, out["truncated"].tolist()):
        stops = [i for i, t in enumerate(ids) if t in (im_end, eot)]
        assert stops == ([len(ids) - 1] if not trunc else []), "a stop id ends the row and is its last token"
        assert (lp < 0).all(), "every valid token, the stop token included, has its log-prob recorded"
        assert trunc == (len(ids) == 16 and not stops)
    free = generate(model, tok, pids, pm, max_new_tokens=16, generator=torch.Generator().manual_seed(0),
                    stop_at_eos=False)
    assert free["response_mask"].all() and free["response_ids"].shape[1] == 16


def _first_hit(tok, ids: list[int], stop: str) -> int:
    """Reference: the first j whose prefix ids[:j+1] decodes to a text containing `stop` (-1: none)."""
    for j in range(len(ids)):
        if stop in tok.decode(ids[:j + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False):
            return j
    return -1


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_stop_strings_at_a_token_boundary_and_inside_a_token(tiny_dirs, arch):
    model, tok = load_policy(tiny_dirs[arch])
    prompts = ["Compute 12*3.", "Find the sum of 4 and 5.", "Let x be", "Therefore"]
    pids, pm = encode_prompts(tok, prompts)
    free = generate(model, tok, pids, pm, max_new_tokens=24, generator=torch.Generator().manual_seed(0))
    ref = [r[0] for r in _valid_rows(free)]

    def clean(x: str) -> bool:
        return len(x) >= 3 and all(32 < ord(c) < 127 for c in x)

    def dec(ids):
        return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    # a token of >= 2 printable characters, late enough in its row: the stop strings end with it / inside it
    base, k = next((r, i) for r in ref for i in range(3, len(r)) if clean(dec(r[:i + 1])[-4:])
                   and len(dec([r[i]])) >= 2 and clean(dec(r[:i + 1])[:-1][-3:]))
    text_k = dec(base[:k + 1])
    boundary = text_k[-4:]                          # ends exactly where token k ends
    inside = text_k[:-1][-3:]                       # ends one character before token k ends
    for stop in (boundary, inside):
        out = generate(model, tok, pids, pm, max_new_tokens=24, generator=torch.Generator().manual_seed(0),
                       stop_at_eos=(stop,), compact=True)
        rows = _valid_rows(out)
        for r, (ids, lp), trunc in zip(ref, rows, out["truncated"].tolist()):
            j = _first_hit(tok, r, stop)
            stopped = [t for t in r if t in stop_token_ids(model, tok)]
            if j < 0 or (stopped and r.index(stopped[0]) < j):
                assert ids == r                                 # never hit: the free run, unchanged
                continue
            assert ids == r[:j + 1] and not trunc, (stop, ids, r[:j + 1])
            text = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            assert stop in text and stop not in tok.decode(ids[:-1], skip_special_tokens=False,
                                                           clean_up_tokenization_spaces=False)
            assert (lp < 0).all()
        assert _first_hit(tok, base, stop) >= 0


def test_stop_config_is_checked():
    base = {"task": {"name": "arith"}, "rollout": {"stop": ["</answer>"]}}
    cfg = config_from_dict(base)
    assert cfg.rollout.stop_spec() == ("</answer>",)
    assert config_from_dict({"rollout": {"ignore_eos": True}}).rollout.stop_spec() is False
    assert config_from_dict({}).rollout.stop_spec() is True
    with pytest.raises(ConfigError, match="ignore_eos"):
        config_from_dict({"rollout": {"stop": ["x"], "ignore_eos": True}})
    with pytest.raises(ConfigError, match="rollout.stop"):
        config_from_dict({"rollout": {"stop": [""]}})


def test_stop_token_and_stop_string_are_trained_on(tiny_dirs, tmp_path, monkeypatch):
    from zoo import ops
    from zoo.trainer import Trainer

    raw = {"model": {"name_or_path": str(tiny_dirs["qwen2"])},
           "task": {"name": "countdown", "train_size": 64, "eval_size": 4},
           "reward": {"name": "countdown"}, "algorithm": {"preset": "grpo", "loss_agg": "token-mean"},
           "rollout": {"group_size": 4, "prompts_per_step": 4, "max_new_tokens": 12, "stop": ["="]},
           "train": {"steps": 1, "lr": 1.0e-3, "threads": 1, "seed": 0},
           "eval": {"every": 0, "n": 4, "k": 0, "at_start": False, "greedy": True},
           "checkpoint": {"every": 0}, "log": {"progress": False, "tensorboard": False}}
    t = Trainer(config_from_dict(raw), tmp_path / "run", log=lambda *a: None)
    eot = t.tok.convert_tokens_to_ids("<|endoftext|>")
    t.model.generation_config.eos_token_id = [t.tok.eos_token_id, eot]
    _boost(t.model, eot, 3.0)
    sc, _ = t.rollout()
    b, ids_stop = sc.batch, set(stop_token_ids(t.model, t.tok))
    by_id = by_str = 0
    for i in range(len(b.texts)):
        n = int(b.response_mask[i].sum())
        ids = b.response_ids[i, :n].tolist()
        assert (sc.old_logp[i, :n] < 0).all(), "the scoring pass gives every valid token a log-prob"
        assert (sc.old_logp[i, n:] == 0).all()
        text = t.tok.decode(ids, skip_special_tokens=False)
        if ids[-1] in ids_stop:
            by_id += 1
        elif "=" in text:
            by_str += 1
            assert "=" not in t.tok.decode(ids[:-1], skip_special_tokens=False)
        else:
            assert bool(b.truncated[i]) and n == 12
    assert by_id and by_str, (by_id, by_str)
    seen = []
    real = ops.clipped_surrogate

    def spy(logp, old_logp, adv, lo, hi):
        seen.append((logp.detach().clone(), logp.requires_grad))
        return real(logp, old_logp, adv, lo, hi)

    monkeypatch.setattr(ops, "clipped_surrogate", spy)
    t.update(sc)
    logp = torch.cat([s[0].reshape(-1) for s in seen])
    assert all(s[1] for s in seen)
    assert int((logp != 0).sum()) == int(b.response_mask.sum()), "every valid token, stop tokens included, is trained"
