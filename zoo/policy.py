"""The trained policy as the config asks for it: precision, dropout, checkpointing, LoRA, reference.

    policy = build_policy(cfg, model_path, device, log)   # policy.model, policy.tok, policy.reference()

- Mixed precision: `model.dtype` is the compute dtype, `model.param_dtype` (default float32) the
  dtype of the trainable parameters and the optimizer state. bf16 compute on fp32 parameters runs
  every forward under autocast (one context per decoding loop, so the weights are cast once per
  rollout, not per token) and AdamW updates fp32 master weights. Chosen over a bf16 sampling copy
  synced after each step: no second copy of the weights (+2 bytes/parameter) and no sync; the
  cost is the cast inside each forward (measured in benchmarks/bench_precision.py).
  `param_dtype: bfloat16` halves parameter and optimizer memory but rounds small updates away.
- Dropout is off in every forward: π_old, the ratio and the reference KL compare one function.
- LoRA (peft): only the adapters train; the KL reference is the same model with its adapters
  disabled, so there is no second copy; `final/` is the merged model with the adapter alone in
  `final/adapter/`.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from zoo.model import disable_dropout, load_policy, save_policy
from zoo.schema import Config, ConfigError

_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class Policy:
    """The model being trained (a transformers model; with LoRA its adapters are injected), its
    tokenizer, the peft wrapper when LoRA is on, and a frozen reference model when one is kept."""

    def __init__(self, model, tok, peft_model=None, ref=None):
        self.model, self.tok, self.peft, self.ref = model, tok, peft_model, ref

    @contextmanager
    def reference(self):
        """The model whose log-probs are the KL reference: a frozen copy, or the policy with its
        LoRA adapters disabled. None when no reference is kept."""
        if self.ref is not None:
            yield self.ref
        elif self.peft is not None:
            with self.peft.disable_adapter():
                yield self.model
        else:
            yield None

    def save_final(self, out: Path, meta: dict, state_dict: dict | None = None):
        """`save_pretrained` of the policy into out. With LoRA: the adapter alone in out/adapter/ and
        the merged model in out/ (transformers loads it directly). Returns the model to use afterwards."""
        if self.peft is None:
            save_policy(self.model, self.tok, out, meta=meta, state_dict=state_dict)
            return self.model
        self.peft.save_pretrained(Path(out) / "adapter")
        merged = self.peft.merge_and_unload()
        save_policy(merged, self.tok, out, meta=dict(meta, lora_adapter="adapter"))
        self.model, self.peft = merged, None
        return merged


def build_policy(cfg: Config, path: str | Path, device: str, log=print) -> Policy:
    m = cfg.model
    model, tok = load_policy(path, m.dtype, device, param_dtype=m.param_dtype)
    if _BYTES[m.param_dtype] < 4:
        log(f"[zoo] warning: model.param_dtype {m.param_dtype}: parameters and optimizer state are kept in "
            f"{m.param_dtype}, whose 8-bit mantissa rounds away updates smaller than ~1/256 of a weight (at lr "
            "1e-6 nearly all of them); use param_dtype: float32 with dtype: bfloat16 for fp32 master weights")
    changed = disable_dropout(model)
    if changed:
        log("[zoo] dropout off in every forward (rollout, scoring, reference, training), so that π_old, the "
            f"ratio and the KL compare one function: {', '.join(changed[:6])}" + (" ..." if len(changed) > 6 else ""))
    if cfg.train.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ConfigError(f"train.gradient_checkpointing: {type(model).__name__} does not support it")
        kw = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):          # transformers >= 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
        if not getattr(model.get_decoder(), "gradient_checkpointing", False):
            raise ConfigError(f"train.gradient_checkpointing: enabling it on {type(model).__name__} had no effect")
        log("[zoo] gradient checkpointing on: the training forward and the scoring pass run each prompt with "
            "its response (no shared prompt KV cache: a recomputed layer keeps no cache)")
    from zoo.objectives import needs_reference   # kl_coef > 0, or a strategy's own KL to π_ref (ARCHER)

    peft_model = ref = None
    if m.lora.r > 0:
        peft_model = _add_lora(model, m.lora, log)
    elif needs_reference(cfg.algorithm):
        ref, _ = load_policy(path, m.dtype, device)          # the frozen reference, stored in the compute dtype
        ref.eval().requires_grad_(False)
        disable_dropout(ref)
    return Policy(model, tok, peft_model, ref)


def _add_lora(model, lo, log):
    """Inject LoRA adapters into `model` in place (peft) and return the peft wrapper; the base
    weights are frozen."""
    try:
        import peft
    except ImportError:
        raise ConfigError("model.lora needs peft: pip install -e \".[lora]\" (or pip install peft)") from None
    if lo.dropout > 0:
        log(f"[zoo] note: model.lora.dropout {lo.dropout} as asked: the training forward draws dropout masks the "
            "scoring pass does not, so the ratio is not exactly 1 on the first minibatch; 0 keeps it exact")
    targets = list(lo.target_modules) if lo.target_modules else "all-linear"
    conf = peft.LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=targets,
                           task_type="CAUSAL_LM")
    try:
        pm = peft.get_peft_model(model, conf)
    except ValueError as e:
        raise ConfigError(f"model.lora: {e}") from None
    assert pm.get_base_model() is model                      # adapters live inside `model`
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    log(f"[zoo] LoRA r={lo.r} alpha={lo.alpha} on {targets}: {n_train:,} of {n_all:,} parameters train "
        f"({100 * n_train / max(n_all, 1):.2f}%)")
    return pm


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
