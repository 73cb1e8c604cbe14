"""Real architectures (tiny random Qwen2 / Llama with a locally trained byte-level BPE tokenizer):
mixed precision with fp32 master weights, the ratio exactly 1 on the first minibatch, gradient
checkpointing, LoRA with the reference as the disabled adapter, merged `final/`, exact resume."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from rewards.registry import register_reward
from zoo.config import config_from_dict

peft = pytest.importorskip("peft", reason="LoRA tests need peft (pip install -e '.[lora]')")


@register_reward("_hf_parity", "test only: 1.0 for completions of odd length")
def _hf_parity(completions, golds):
    return [float(len(c) % 2) for c in completions]


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory) -> dict[str, Path]:
    from zoo.tiny_hf import build_tiny_hf

    root = tmp_path_factory.mktemp("hf-models")
    return {a: build_tiny_hf(a, root / a) for a in ("qwen2", "llama")}


def _raw(model_dir, **sections):
    raw = {"model": {"name_or_path": str(model_dir)},
           "task": {"name": "countdown", "train_size": 64, "eval_size": 4},
           "reward": {"name": "_hf_parity"},
           "algorithm": {"preset": "grpo", "loss_agg": "token-mean"},
           "rollout": {"group_size": 4, "prompts_per_step": 4, "max_new_tokens": 10},
           "train": {"steps": 1, "lr": 1.0e-3, "threads": 1, "seed": 0},
           "eval": {"every": 0, "n": 4, "k": 1, "at_start": False, "greedy": True},
           "checkpoint": {"every": 0}, "log": {"progress": False, "tensorboard": False}}
    for k, v in sections.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return raw


def _trainer(model_dir, out, **sections):
    from zoo.trainer import Trainer

    return Trainer(config_from_dict(_raw(model_dir, **sections)), out, log=lambda *a: None)


# ----------------------------------------------------------------------------------------------
def test_tiny_models_load_like_downloaded_checkpoints(hf_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    q, ll = (AutoTokenizer.from_pretrained(hf_models[a]) for a in ("qwen2", "llama"))
    assert q.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True) \
        == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert q.eos_token == "<|im_end|>" and q.bos_token is None
    text = ll.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|begin_of_text|><|start_header_id|>user") and ll.eos_token == "<|eot_id|>"
    assert ll("Hi")["input_ids"][0] == ll.bos_token_id          # the tokenizer adds BOS, as Llama 3's does
    assert q.decode(q("Compute 12*3 \\boxed{36}")["input_ids"]) == "Compute 12*3 \\boxed{36}"
    m = AutoModelForCausalLM.from_pretrained(hf_models["llama"])
    assert type(m).__name__ == "LlamaForCausalLM" and m.config.num_key_value_heads == 2


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_zoo_train_runs_on_real_architectures(hf_models, tmp_path, arch):
    t = _trainer(hf_models[arch], tmp_path / "run", train={"steps": 2})
    t.train()
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 2 and all(r["perf/tokens_per_s"] > 0 for r in rows if "perf/tokens_per_s" in r)


# ----------------------------------------------------------------------------------------------
# Mixed precision
# ----------------------------------------------------------------------------------------------
def _changed_share_after_one_step(model_dir, out, param_dtype):
    t = _trainer(model_dir, out, model={"dtype": "bfloat16", "param_dtype": param_dtype},
                 train={"lr": 1.0e-6, "grad_clip": 0.0})
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    t.step()
    changed = n_grad = 0
    for n, p in t.model.named_parameters():
        g = p.grad
        if g is None:
            continue
        nz = g != 0
        n_grad += int(nz.sum())
        changed += int(((p.detach() != before[n]) & nz).sum())
    assert n_grad > 1000, "the step produced no gradient to look at"
    return changed / n_grad, t


def test_bf16_compute_updates_fp32_master_weights(hf_models, tmp_path):
    share, t = _changed_share_after_one_step(hf_models["qwen2"], tmp_path / "a", "float32")
    assert all(p.dtype == torch.float32 for p in t.model.parameters())
    assert all(s["exp_avg"].dtype == torch.float32 for s in t.opt.state.values())
    assert share >= 0.9, f"only {share:.1%} of the parameters with a gradient changed"
    share_bf16, t16 = _changed_share_after_one_step(hf_models["qwen2"], tmp_path / "b", "bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in t16.model.parameters())
    assert share_bf16 < 0.05, f"bf16 parameters kept {share_bf16:.1%} of lr-1e-6 updates"


def test_reference_model_is_stored_in_the_compute_dtype(hf_models, tmp_path):
    t = _trainer(hf_models["qwen2"], tmp_path / "r", model={"dtype": "bfloat16"}, algorithm={"kl_coef": 0.05})
    assert {p.dtype for p in t.policy.ref.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in t.model.parameters()} == {torch.float32}
    m = t.step()
    assert m["kl/ref"] >= 0 and m["kl/old"] == 0.0


# ----------------------------------------------------------------------------------------------
# The ratio is exactly 1 on the first minibatch, in every mode
# ----------------------------------------------------------------------------------------------
MODES = {
    "bf16": dict(model={"dtype": "bfloat16"}),
    "checkpointing": dict(train={"gradient_checkpointing": True}),
    "lora": dict(model={"lora": {"r": 4}}),
    "minibatches4": dict(train={"minibatches": 4}, model={"dtype": "bfloat16"}),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_ratio_is_exactly_one_on_the_first_minibatch(hf_models, tmp_path, monkeypatch, mode):
    from zoo import ops

    sections = {k: dict(v) for k, v in MODES[mode].items()}
    sections["train"] = {"lr": 1.0e-2, **sections.get("train", {})}
    t = _trainer(hf_models["llama"], tmp_path / "run", **sections)
    seen = []
    real = ops.clipped_surrogate

    def spy(logp, old_logp, adv, lo, hi):
        seen.append((t.opt_steps, torch.exp(logp.detach() - old_logp)))
        return real(logp, old_logp, adv, lo, hi)

    monkeypatch.setattr(ops, "clipped_surrogate", spy)
    t.step()
    first = [r for s, r in seen if s == 0]
    assert first and all(torch.equal(r, torch.ones_like(r)) for r in first)
    if mode == "minibatches4":   # later minibatches see the updated policy: the clip can act there
        later = [r for s, r in seen if s > 0]
        assert len({s for s, _ in seen}) == 4 and any(not torch.equal(r, torch.ones_like(r)) for r in later)


# ----------------------------------------------------------------------------------------------
# Gradient checkpointing
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_gradient_checkpointing_gives_the_same_gradients(hf_models, tmp_path, arch):
    grads = []
    for ckpt in (False, True):
        t = _trainer(hf_models[arch], tmp_path / f"c{int(ckpt)}", train={"gradient_checkpointing": ckpt},
                     algorithm={"kl_coef": 0.05})
        assert getattr(t.model.get_decoder(), "gradient_checkpointing", False) == ckpt
        t.step()
        grads.append({n: p.grad.clone() for n, p in t.model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-5, rtol=1e-4, msg=n)


# ----------------------------------------------------------------------------------------------
# LoRA through `zoo train`
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_lora_trains_adapters_only_and_saves_a_merged_model(hf_models, tmp_path, arch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from zoo.cli import main

    raw = _raw(hf_models[arch], model={"lora": {"r": 4, "alpha": 8}}, algorithm={"kl_coef": 0.05},
               train={"steps": 2, "lr": 5.0e-2}, checkpoint={"every": 1, "keep": 2})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(run)]) == 0
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    kl = [r["kl/ref"] for r in rows if "kl/ref" in r]
    assert len(kl) == 2 and kl[0] == 0.0 and kl[1] > 0     # adapters start at B = 0: the policy IS the reference

    final = run / "final"
    assert (final / "adapter" / "adapter_config.json").exists() and not (final / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(final)
    base = AutoModelForCausalLM.from_pretrained(hf_models[arch])
    m_sd, b_sd = merged.state_dict(), base.state_dict()
    assert m_sd.keys() == b_sd.keys()
    touched = [k for k in b_sd if not torch.equal(m_sd[k], b_sd[k])]
    assert touched and all("proj" in k for k in touched), touched            # only LoRA-targeted linears moved
    assert all(torch.equal(m_sd[k], b_sd[k]) for k in b_sd if "norm" in k or "embed" in k)
    reloaded = PeftModel.from_pretrained(base, final / "adapter").merge_and_unload().state_dict()
    for k in touched:
        torch.testing.assert_close(reloaded[k], m_sd[k], atol=1e-6, rtol=1e-5)

    # resume from the step-1 checkpoint: step 2 is the same as in the uninterrupted run
    rerun = tmp_path / "rerun"
    shutil.copytree(run, rerun, ignore=shutil.ignore_patterns("ckpt-0000002", "final", "metrics.jsonl", "tb"))
    (rerun / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(rerun), "--resume"]) == 0
    again = [json.loads(ln) for ln in (rerun / "metrics.jsonl").read_text().splitlines()]
    keys = ("loss/total", "kl/ref", "reward/mean", "train/grad_norm")
    assert [[r.get(k) for k in keys] for r in again if r["step"] == 2] == \
        [[r.get(k) for k in keys] for r in rows if r["step"] == 2]


def test_bf16_resume_with_a_kl_reference_is_exact(hf_models, tmp_path):
    from zoo.cli import main

    raw = _raw(hf_models["qwen2"], model={"dtype": "bfloat16"}, algorithm={"kl_coef": 0.05},
               train={"steps": 3, "minibatches": 2}, checkpoint={"every": 1, "keep": 5})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    run, rerun = tmp_path / "run", tmp_path / "rerun"
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(run)]) == 0
    shutil.copytree(run, rerun, ignore=shutil.ignore_patterns("ckpt-0000002", "ckpt-0000003", "final", "tb"))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (rerun / "metrics.jsonl").write_text("\n".join(ln for ln in lines if json.loads(ln)["step"] <= 1) + "\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(rerun), "--resume"]) == 0
    drop = ("perf/", "time")
    clean = lambda p: [{k: v for k, v in json.loads(ln).items() if not k.startswith(drop)}  # noqa: E731
                       for ln in p.read_text().splitlines()]
    assert clean(rerun / "metrics.jsonl") == clean(run / "metrics.jsonl")
    sd = torch.load(rerun / "ckpt-0000003" / "state.pt", weights_only=True)["model"]
    assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.float32}   # param_dtype
