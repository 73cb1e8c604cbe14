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


# ---- finished rows leave the batch (compaction), compiled decode step ------------------------------
def _gen(model, tok, compact, greedy=False, hook=None, seed=0, n=16, **kw):
    from zoo.data import get_task

    prompts = [p.prompt for p in get_task("countdown").problems("train", 24, 0)]
    ids, mask = encode_prompts(tok, prompts)
    return generate(model, tok, ids, mask, max_new_tokens=n, greedy=greedy, temperature_hook=hook,
                    generator=torch.Generator().manual_seed(seed), compact=compact, **kw)


def _count_compactions(monkeypatch):
    import zoo.sampler as S         # `generate` lives there and looks `_select_rows` up in its module
    calls = []
    real = S._select_rows
    monkeypatch.setattr(S, "_select_rows", lambda cache, idx: (calls.append(len(idx)), real(cache, idx)))
    return calls


@pytest.mark.parametrize("greedy,hook", [(True, None), (False, None), (False, _hook)])
def test_compaction_gives_the_same_result(eos_model, monkeypatch, greedy, hook):
    model, tok = eos_model
    for bias in torch.linspace(0.5, 3.0, 51).tolist():  # an EOS bias that ends some rows and not others
        with torch.no_grad():
            model.lm_head.bias[tok.eos_token_id] = bias
        tr = _gen(model, tok, compact=False, greedy=greedy, hook=hook)["truncated"]
        if tr.any() and (~tr).float().mean() >= 0.5:   # enough finish to trigger a compaction
            break
    plain = _gen(model, tok, compact=False, greedy=greedy, hook=hook)
    assert plain["truncated"].any() and (~plain["truncated"]).any()
    calls = _count_compactions(monkeypatch)
    comp = _gen(model, tok, compact=True, greedy=greedy, hook=hook)
    assert calls, "some rows should finish early enough to compact the batch"
    assert torch.equal(plain["response_ids"], comp["response_ids"])
    assert torch.equal(plain["response_mask"], comp["response_mask"])
    assert torch.equal(plain["truncated"], comp["truncated"])
    for k in ("logp", "entropy", "temperatures"):
        assert_close(plain[k], comp[k], atol=1e-5, rtol=0)


def test_finished_rows_are_padded_and_records_match_recomputation(eos_model, monkeypatch):
    model, tok = eos_model
    calls = _count_compactions(monkeypatch)
    b = HFEngine(model, tok).sample(PROBLEMS, 8, max_new_tokens=14, temperature=1.0, temperature_hook=_hook,
                                    generator=torch.Generator().manual_seed(3))
    assert calls and all(n < 24 for n in calls)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    for row, m, tr in zip(b.response_ids, b.response_mask, b.truncated):
        L = int(m.sum())
        assert (row[L:] == pad).all() and (tr or row[L - 1] == eos)
    assert (b.logp[~b.response_mask] == 0).all() and (b.entropy[~b.response_mask] == 0).all()
    with torch.no_grad():
        lp, ent = response_logp_entropy(model, b.prompt_ids, b.prompt_mask, b.response_ids, b.response_mask,
                                        b.temperatures, base_temperature=1.0)
    assert_close(lp[b.response_mask], b.logp[b.response_mask], atol=1e-5, rtol=0)
    assert_close(ent[b.response_mask], b.entropy[b.response_mask], atol=1e-5, rtol=0)


def test_hook_sees_only_rows_still_generating(eos_model):
    model, tok = eos_model
    sizes = []

    def hook(H, t):
        sizes.append(H.shape[0])
        return torch.full_like(H, 1.3)

    out = _gen(model, tok, compact=True, hook=hook, n=12)
    alive = out["response_mask"].sum(0)            # rows still generating at each step
    assert sizes == alive.tolist()
    assert (out["temperatures"][out["response_mask"]] == 1.3).all()


def test_stop_at_eos_false_gives_exact_length(eos_model):
    model, tok = eos_model
    out = _gen(model, tok, compact=True, stop_at_eos=False, n=9)
    assert out["response_ids"].shape == (24, 9) and out["response_mask"].all() and out["truncated"].all()
    assert (out["response_ids"] == tok.eos_token_id).any()    # EOS sampled, but generation went on


def test_sample_from_logp_distribution_and_zero_mass():
    from zoo.rollout import sample_from_logp

    p = torch.tensor([0.5, 0.0, 0.3, 0.2, 0.0])
    logp = p.log().expand(20000, -1)
    tok = sample_from_logp(logp, torch.rand(20000, generator=torch.Generator().manual_seed(0)))
    freq = torch.bincount(tok, minlength=5).float() / 20000
    assert freq[1] == 0 and freq[4] == 0
    assert_close(freq, p, atol=0.015, rtol=0)
    edge = sample_from_logp(p.log()[None].expand(2, -1), torch.tensor([0.0, 1.0 - 2 ** -24]))
    assert edge.tolist() == [0, 3]


def test_compile_falls_back_cleanly(tiny, monkeypatch):
    import zoo.sampler as S         # the compiled-step cache lives with `generate`
    model, tok = tiny
    ref = _gen(model, tok, compact=True, n=6)

    def broken_compile(fn, **kw):   # compiles "fine", then fails on the first call after a partial update
        def run(tokens, am, pos, cache):
            fn(tokens, am, pos, cache)
            raise RuntimeError("simulated backend failure")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(S, "_COMPILED", S.weakref.WeakKeyDictionary())
    with pytest.warns(RuntimeWarning, match="falling back to eager"):
        out = _gen(model, tok, compact=True, n=6, compile=True)
    for k in ref:
        assert torch.equal(ref[k], out[k]), k

    def no_compile(fn, **kw):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(torch, "compile", no_compile)
    monkeypatch.setattr(S, "_COMPILED", S.weakref.WeakKeyDictionary())
    with pytest.warns(RuntimeWarning, match="torch.compile unavailable"):
        out = _gen(model, tok, compact=True, n=6, compile=True)
    assert torch.equal(ref["response_ids"], out["response_ids"])


@pytest.mark.slow
def test_compiled_decode_matches_eager(tiny):
    model, tok = tiny
    ref = _gen(model, tok, compact=True, n=8)
    out = _gen(model, tok, compact=True, n=8, compile=True)
    assert torch.equal(ref["response_ids"], out["response_ids"])
    assert_close(ref["logp"], out["logp"], atol=1e-5, rtol=0)


# ---- a GRPO group's prompt runs once (prefill and training forward) ---------------------------------
def test_shared_prompt_prefill_gives_the_same_samples(eos_model):
    import zoo.rollout as R
    model, tok = eos_model
    prompts = [p.prompt for p in PROBLEMS for _ in range(4)]
    ids, mask = encode_prompts(tok, prompts)
    assert R._shared_prompts(ids, mask)[0].shape[0] == 3
    run = lambda share: generate(model, tok, ids, mask, max_new_tokens=10, temperature_hook=_hook,  # noqa: E731
                                 generator=torch.Generator().manual_seed(5), share_prompts=share)
    a, b = run(True), run(False)
    assert torch.equal(a["response_ids"], b["response_ids"]) and torch.equal(a["response_mask"], b["response_mask"])
    for k in ("logp", "entropy", "temperatures"):
        assert_close(a[k], b[k], atol=1e-5, rtol=0)


def test_shared_prompt_training_forward_matches_full_forward(tiny, monkeypatch):
    import zoo.rollout as R

    model, tok = tiny
    model.train()
    b = HFEngine(model, tok).sample(PROBLEMS, 4, max_new_tokens=9, temperature=1.0, temperature_hook=_hook,
                                    generator=torch.Generator().manual_seed(2))
    args = (b.prompt_ids, b.prompt_mask, b.response_ids, b.response_mask, b.temperatures, 1.0)
    shared_runs = []
    real = R._prompt_shared_hidden
    monkeypatch.setattr(R, "_prompt_shared_hidden",
                        lambda *a, **k: (lambda h: (shared_runs.append(h is not None), h)[1])(real(*a, **k)))
    outs, grads = [], []
    for share in (True, False):
        model.zero_grad(set_to_none=True)
        lp, ent = response_logp_entropy(model, *args, share_prompts=share, entropy_grad=True)
        ((lp * torch.linspace(-1, 1, lp.numel()).view_as(lp)).sum() + ent.sum()).backward()
        outs.append((lp.detach(), ent.detach()))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert shared_runs == [True]                       # the shared path ran (once: share=True only)
    assert_close(outs[0][0], outs[1][0], atol=1e-5, rtol=0)
    assert_close(outs[0][1], outs[1][1], atol=1e-5, rtol=0)
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert_close(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4, msg=n)
    # distinct prompts only: nothing to share, the plain forward runs
    one = [0, 4, 8]
    lp1, _ = response_logp_entropy(model, *(x[one] for x in args[:5]), 1.0)
    assert_close(lp1, outs[1][0][one], atol=1e-5, rtol=0)


def test_rare_tokens_of_a_large_vocabulary_can_be_drawn():
    """Float64 uniforms and CDF: a token of probability ~1e-10 in a 152k vocabulary keeps a
    non-empty interval and is drawn when the uniform falls in it (fp32 would round it away)."""
    from zoo.rollout import sample_from_logp

    V = 151_936
    logits = torch.randn(1, V, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4
    logits[0, 100_000] = logits.max() - 18.0                                   # p ~ 1e-10
    logp = torch.log_softmax(logits.float(), -1)
    cdf = logp.double().exp().cumsum(-1)
    lo, hi = float(cdf[0, 99_999]), float(cdf[0, 100_000])
    assert hi > lo
    u = torch.tensor([(lo + hi) / 2 / float(cdf[0, -1])], dtype=torch.float64)
    assert int(sample_from_logp(logp, u)) == 100_000
