"""zoo.integrations.trl: our strategies inside TRL's GRPOTrainer (CPU, a tiny random Llama-style model).

- identity strategy: loss and gradients equal GRPOTrainer's own on the same prepared batch
  (grpo / dapo / dr_grpo aggregations, clip and KL active);
- top_entropy at micro-batch scope equals TRL's own `top_entropy_quantile` path;
- a few `train()` steps with eapo and entropy_adv: finite, with the strategies' diagnostics logged;
- group ids survive TRL's shuffle; setup errors and warnings; the supported TRL range.
"""
from __future__ import annotations

import math
import re
import warnings

import pytest
import torch

pytest.importorskip("trl")

from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from zoo.schema import ConfigError  # noqa: E402

G = 4
PROMPTS = ["12+7=", "3*4=", "9-5=", "8+8="]


def reward_fn(completions, **kw):
    return [float(c.count("1") + (len(c) % 3 == 0)) for c in completions]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from zoo.model import build_char_tokenizer, build_tiny_model, save_policy

    d = tmp_path_factory.mktemp("trl-tiny")
    tok = build_char_tokenizer()
    save_policy(build_tiny_model(tok, layers=1, hidden=32, heads=2, intermediate=64, seed=0), tok, d)
    return d


def config(tmp_path, **over) -> GRPOConfig:
    kw = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=G,
              max_completion_length=8, gradient_checkpointing=False, bf16=False, use_vllm=False, report_to="none",
              use_cpu=True, save_strategy="no", logging_steps=1, max_steps=2, seed=0, learning_rate=1e-3)
    kw.update(over)
    return GRPOConfig(**kw)


def trainer(cls, model_dir, tmp_path, algorithm=None, **over):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {} if algorithm is None else {"algorithm": algorithm}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=reward_fn,
                   args=config(tmp_path, **over), train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}),
                   processing_class=AutoTokenizer.from_pretrained(model_dir), **extra)


def prepared_batch(zt) -> dict:
    """One generation batch through ZooGRPOTrainer (group ids, rewards), made off-policy (π_old != π_θ)
    with random advantages, a perturbed reference and uneven lengths, so that the clip, both signs of A,
    the KL and every aggregation's denominators all act."""
    zt.model.train()
    torch.manual_seed(0)
    b = zt._generate_and_score_completions([{"prompt": p} for p in PROMPTS[:2] for _ in range(G)])
    ids = torch.cat([b["prompt_ids"], b["completion_ids"]], 1)
    am = torch.cat([b["prompt_mask"], b["completion_mask"]], 1)
    with torch.no_grad():
        logp, _, _ = zt._get_per_token_logps_and_entropies(zt.model, ids, am, b["completion_ids"].size(1))
    g = torch.Generator().manual_seed(1)
    b["old_per_token_logps"] = logp + 0.3 * torch.randn(logp.shape, generator=g)
    b["advantages"] = torch.randn(logp.shape[0], generator=g)
    if "ref_per_token_logps" in b:                      # a reference away from the policy: KL value and gradient
        b["ref_per_token_logps"] = logp + 0.2 * torch.randn(logp.shape, generator=g)
    b["completion_mask"][::3, 5:] = 0                   # responses of different lengths (as if EOS came earlier)
    b["num_items_in_batch"] = b["completion_mask"].sum()
    return b


def loss_and_grads(tr, batch):
    tr.model.train()
    tr.model.zero_grad(set_to_none=True)
    tr.current_gradient_accumulation_steps = 1
    loss = tr.compute_loss(tr.model, dict(batch))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None}


def assert_same(a, b, tol=1e-6):
    (la, ga), (lb, gb) = a, b
    assert torch.allclose(la, lb, atol=tol, rtol=tol), (float(la), float(lb))
    assert ga.keys() == gb.keys() and ga
    for k in ga:
        assert torch.allclose(ga[k], gb[k], atol=tol, rtol=1e-5), (k, float((ga[k] - gb[k]).abs().max()))


@pytest.mark.parametrize("loss_type,algorithm,over", [
    ("grpo", "grpo", {"beta": 0.04}),                                  # seq-mean-token-mean, k3 KL to the reference
    ("dapo", {"base": "dapo", "dynamic_sampling": False, "overlong_buffer": 0}, {"epsilon_high": 0.28}),
    ("dr_grpo", "dr_grpo", {"scale_rewards": "none"}),
])
def test_identity_equals_grpo_trainer(model_dir, tmp_path, loss_type, algorithm, over):
    from zoo.integrations.trl import ZooGRPOTrainer

    zt = trainer(ZooGRPOTrainer, model_dir, tmp_path, algorithm, loss_type=loss_type, **over)
    tt = trainer(GRPOTrainer, model_dir, tmp_path, loss_type=loss_type, **over)
    batch = prepared_batch(zt)
    assert_same(loss_and_grads(zt, batch), loss_and_grads(tt, batch))
    clipped = tt._metrics["train"]["clip_ratio/region_mean"][-1]
    assert clipped > 0 and zt._metrics["train"]["clip_ratio/region_mean"][-1] == pytest.approx(clipped, abs=1e-6)
    if "beta" in over:
        assert zt._metrics["train"]["kl"][-1] == pytest.approx(tt._metrics["train"]["kl"][-1], rel=1e-5)


def test_top_entropy_micro_batch_equals_trl_top_entropy_quantile(model_dir, tmp_path):
    from zoo.integrations.trl import ZooGRPOTrainer

    algo = {"base": "dapo", "dynamic_sampling": False, "overlong_buffer": 0,
            "strategies": [{"name": "top_entropy", "rho": 0.2, "scope": "micro_batch"}]}
    zt = trainer(ZooGRPOTrainer, model_dir, tmp_path, algo, loss_type="dapo", epsilon_high=0.28)
    tt = trainer(GRPOTrainer, model_dir, tmp_path, loss_type="dapo", epsilon_high=0.28, top_entropy_quantile=0.2)
    batch = prepared_batch(zt)
    assert_same(loss_and_grads(zt, batch), loss_and_grads(tt, batch))
    assert 0.15 < zt._metrics["train"]["top_entropy/kept_share"][-1] < 0.35


@pytest.mark.parametrize("algorithm,keys,over", [
    ("eapo", ["eapo/PHR/share", "eapo/NLR/share"], {}),
    ("entropy_adv", ["entropy_advantage/psi_mean", "entropy_advantage/cap_share"], {"gradient_accumulation_steps": 2}),
])
def test_train_steps_log_diagnostics(model_dir, tmp_path, algorithm, keys, over):
    from zoo.integrations.trl import ZooGRPOTrainer

    zt = trainer(ZooGRPOTrainer, model_dir, tmp_path, algorithm, max_steps=3, **over)
    zt.train()
    logs = [h for h in zt.state.log_history if "loss" in h]
    assert len(logs) == 3
    for h in logs:
        assert math.isfinite(h["loss"]) and math.isfinite(h["grad_norm"])
        for k in keys + ["zoo/weight_share", "entropy"]:
            assert k in h and math.isfinite(h[k]), k
    assert any("eapo/NHR/abs_adv" in h or "entropy_advantage/psi_mean" in h for h in logs)
    # TRL shuffles the generation batch: whole groups stay together and keep their ids
    for mb in zt._buffered_inputs:
        ids = mb["zoo_group_ids"]
        for g in ids.unique():
            rows = (ids == g).nonzero().squeeze(-1)
            assert len(rows) == G and (mb["prompt_ids"][rows] == mb["prompt_ids"][rows[0]]).all()


def test_setup_errors_and_warnings(tmp_path):
    from zoo.integrations.trl_setup import resolve_for_trl

    cfg = lambda **o: config(tmp_path, **o)  # noqa: E731
    for algo, over, words in [
        ("fork_t12", {}, "sampler"),
        ("grpo", {"top_entropy_quantile": 0.2}, "top_entropy"),
        ("grpo", {"loss_type": "sapo"}, "loss_type"),
        ("grpo", {"entropy_coef": 0.01}, "entropy_reg"),
        ("archer", {}, "beta"),
        ({"preset": "grpo", "kl_coef": 0.1}, {"beta": 0.04}, "beta=0.1"),
    ]:
        with pytest.raises(ConfigError, match=words):
            resolve_for_trl(algo, cfg(**over))
    s = resolve_for_trl("dapo", cfg(gradient_accumulation_steps=2, per_device_train_batch_size=6))
    text = " ".join(s.warnings)
    for w in ("get_soft_overlong_punishment", "mask_truncated_completions", "dynamic sampling",
              "micro-batch scope", "not a multiple of num_generations", "epsilon_high"):
        assert w in text, w
    assert not s.keep_groups
    assert resolve_for_trl("grpo", cfg(beta=0.04)).algo.kl_coef == 0.04      # TRL's KL stays on
    assert resolve_for_trl("archer", cfg(beta=0.04)).algo.kl_coef == 0.0     # beta only loads the reference
    assert resolve_for_trl("grpo", cfg(loss_type="grpo")).warnings == []


def test_supported_trl_range(monkeypatch):
    from zoo.integrations.trl_setup import ALLOW_ENV, SUPPORTED_TRL, check_trl_version

    check_trl_version("1.16.0")
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    for v in ("1.15.2", "1.17.0", "2.0.0"):
        with pytest.raises(RuntimeError, match=re.escape(SUPPORTED_TRL)):
            check_trl_version(v)
    monkeypatch.setenv(ALLOW_ENV, "1")
    with pytest.warns(UserWarning, match="trying anyway"):
        check_trl_version("1.17.0")
