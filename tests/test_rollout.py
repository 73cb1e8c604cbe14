"""The KV-cache sampler: EOS handling, recorded log-probs/temperatures/entropy, determinism."""
import pytest
import torch
from torch.testing import assert_close

from zoo.model import encode_prompts
from zoo.ops import entropy_from_logits
from zoo.rollout import HFEngine, filter_logits, generate, response_logp_entropy
from zoo.types import Problem

PROBLEMS = [Problem("Use 3 5 2 to make 16.\n", "{}"), Problem("Compute 1+2*3.\n", "7"), Problem("Hi\n", "x")]


@pytest.fixture
def eos_model(tiny):
    """The tiny model with an untied LM head whose bias makes EOS likely (so sequences end early)."""
    model, tok = tiny
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.get_output_embeddings().weight)
        head.bias.zero_()
        head.bias[tok.eos_token_id] = 2.5
    model.lm_head = head
    return model, tok


def _hook(H, base_t):
    return torch.where(H > H.median(), torch.full_like(H, 1.5), torch.full_like(H, 0.7))


def test_eos_mask_padding_and_truncation(eos_model):
    model, tok = eos_model
    b = HFEngine(model, tok).sample(PROBLEMS, 6, max_new_tokens=10, temperature=1.0,
                                    generator=torch.Generator().manual_seed(0))
    eos, pad = tok.eos_token_id, tok.pad_token_id
    ended = (b.response_ids == eos).any(-1)
    assert ended.any() and (~ended).any(), "fixture should give both finished and truncated rows"
    for row, m, tr in zip(b.response_ids, b.response_mask, b.truncated):
        L = int(m.sum())
        assert m[:L].all() and not m[L:].any()          # valid prefix, then nothing
        if not tr:
            assert row[L - 1] == eos                     # EOS itself is valid
            assert (row[:L - 1] != eos).all()
        else:
            assert L == b.response_ids.shape[1] and (row != eos).all()
        assert (row[L:] == pad).all()
    assert (b.logp[~b.response_mask] == 0).all() and (b.entropy[~b.response_mask] == 0).all()
    assert torch.equal(b.truncated, ~ended)


def test_recorded_logp_under_per_token_temperature_equals_recomputation(eos_model):
    model, tok = eos_model
    b = HFEngine(model, tok).sample(PROBLEMS, 4, max_new_tokens=12, temperature=1.0, temperature_hook=_hook,
                                    generator=torch.Generator().manual_seed(1))
    temps = b.temperatures[b.response_mask]
    assert {0.7, 1.5} <= set(round(t, 4) for t in temps.tolist())
    with torch.no_grad():
        lp, ent = response_logp_entropy(model, b.prompt_ids, b.prompt_mask, b.response_ids, b.response_mask,
                                        b.temperatures, base_temperature=1.0)
    assert_close(lp[b.response_mask], b.logp[b.response_mask], atol=1e-5, rtol=0)
    # the recorded entropy is the untempered one, whatever temperature the token was sampled at
    assert_close(ent[b.response_mask], b.entropy[b.response_mask], atol=1e-5, rtol=0)
    # the trainer's entropy at another base temperature differs (it is taken at rollout.temperature)
    with torch.no_grad():
        _, ent07 = response_logp_entropy(model, b.prompt_ids, b.prompt_mask, b.response_ids, b.response_mask,
                                         b.temperatures, base_temperature=0.7)
    assert (ent07[b.response_mask] < ent[b.response_mask]).float().mean() > 0.9


def test_same_generator_seed_same_samples(tiny):
    model, tok = tiny
    run = lambda s: HFEngine(model, tok).sample(PROBLEMS, 3, max_new_tokens=8, temperature=1.0,  # noqa: E731
                                                generator=torch.Generator().manual_seed(s))
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.response_ids, b.response_ids) and a.texts == b.texts
    assert not torch.equal(a.response_ids, c.response_ids)
    assert a.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_greedy_matches_hf_generate(eos_model):
    model, tok = eos_model
    ids, mask = encode_prompts(tok, [p.prompt for p in PROBLEMS])
    ours = generate(model, tok, ids, mask, max_new_tokens=8, greedy=True)
    ref = model.generate(input_ids=ids, attention_mask=mask.long(), max_new_tokens=8, do_sample=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[:, ids.shape[1]:]
    T = ours["response_ids"].shape[1]
    ref = torch.nn.functional.pad(ref, (0, max(0, T - ref.shape[1])), value=tok.pad_token_id)[:, :T]
    assert torch.equal(ours["response_ids"], ref.masked_fill(~ours["response_mask"], tok.pad_token_id))


def test_filter_logits_top_p_top_k():
    # probs 0.5, 0.3, 0.15, 0.05: top_p 0.7 keeps the first two (cum before 2nd = 0.5 < 0.7)
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    out = filter_logits(logits, top_p=0.7)
    assert torch.isfinite(out).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_k=3)).tolist() == [[True, True, True, False]]
    assert torch.equal(filter_logits(logits), logits)


def test_entropy_at_every_step_feeds_the_hook(tiny):
    model, tok = tiny
    seen = []

    def hook(H, t):
        seen.append(H.clone())
        return None

    ids, mask = encode_prompts(tok, ["ab\n", "abc\n"])
    out = generate(model, tok, ids, mask, max_new_tokens=5, temperature_hook=hook,
                   generator=torch.Generator().manual_seed(0))
    assert len(seen) == out["response_ids"].shape[1]
    assert_close(torch.stack(seen, 1) * out["response_mask"], out["entropy"])
    assert (out["temperatures"] == 1.0).all()
    first = model(input_ids=ids, attention_mask=mask.long(),
                  position_ids=(mask.long().cumsum(-1) - 1).clamp(min=0)).logits[:, -1]
    assert_close(seen[0], entropy_from_logits(first.detach()), atol=1e-5, rtol=0)
