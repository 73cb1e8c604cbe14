"""Policy + tokenizer: the tiny character-level model trained here, or any local HF causal LM."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
# printable ASCII + newline: every character the synthetic tasks (and most math text) use
DEFAULT_CHARSET = "\n" + "".join(chr(c) for c in range(32, 127))


def build_char_tokenizer(charset: str = DEFAULT_CHARSET):
    """A one-character-per-token tokenizer made locally (no hub), as a PreTrainedTokenizerFast."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(charset))
    vocab = {tok: i for i, tok in enumerate(SPECIALS + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>", padding_side="left")


def build_tiny_model(tokenizer, layers: int = 2, hidden: int = 128, heads: int = 4, intermediate: int = 512,
                     max_positions: int = 512, seed: int = 0):
    """A small Llama-style causal LM with tied embeddings (0.5M parameters at the defaults).

    Llama rather than Qwen2: AutoTokenizer maps a qwen2 config to Qwen2Tokenizer, which drops the
    spaces of our character tokenizer; for a llama config it loads tokenizer.json as saved.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=intermediate,
                      max_position_embeddings=max_positions, tie_word_embeddings=True,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(cfg)


def set_threads(n: int) -> None:
    """torch threads: n, or (n <= 0) 1 under CI and min(4, cores) otherwise."""
    if n <= 0:
        n = 1 if os.environ.get("CI") else max(1, min(4, os.cpu_count() or 1))
    torch.set_num_threads(n)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_EXPECTED = ("expected a local Hugging Face causal-LM directory (config.json, weights, tokenizer files, as "
             "written by save_pretrained), e.g. Llama / Qwen2 / GPT-2; build the tiny one with `zoo pretrain`")
# Bidirectional encoders that transformers can put a causal-LM head on only when is_decoder is set.
_ENCODER_TYPES = frozenset({
    "bert", "bert-generation", "big_bird", "camembert", "data2vec-text", "electra", "ernie", "megatron-bert",
    "reformer", "rembert", "roberta", "roberta-prelayernorm", "roc_bert", "roformer", "xlm-roberta",
    "xlm-roberta-xl", "xmod",
})


class ModelLoadError(ValueError):
    """A model directory that cannot serve as the policy (the message names the path and why)."""


def _not_causal_reason(cfg) -> str | None:
    """Why a transformers config does not describe a causal LM we can train, or None."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as causal

    mt = getattr(cfg, "model_type", None)
    archs = [str(a) for a in (getattr(cfg, "architectures", None) or [])]
    if mt not in causal:
        return f"transformers has no causal-LM class for model_type '{mt}'"
    names = set(causal.values())
    if archs and not any(a in names or a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "none of its architectures is a causal LM"
    if getattr(cfg, "is_encoder_decoder", False):
        return "it is an encoder-decoder (seq2seq) model"
    if mt in _ENCODER_TYPES and not getattr(cfg, "is_decoder", False):
        return "it is a bidirectional encoder (is_decoder: false)"
    return None


def load_policy(path: str | Path, dtype: str = "float32", device: str = "auto", param_dtype: str | None = None):
    """(model, tokenizer) from a local HF causal-LM directory.

    dtype is the compute dtype, param_dtype (default: the same) the dtype the parameters are
    stored in. When they differ, every forward through `compute_context(model)` (the sampler, the
    scoring and training forwards) runs under autocast in `dtype` while the optimizer updates
    `param_dtype` master weights (bf16 compute with fp32 master weights, as TRL and verl do).

    Clear errors (naming the path and what was expected) for a missing path (FileNotFoundError),
    a directory without config.json, an unreadable config, a model that is not a causal LM (its
    model_type and architectures are named), missing or corrupt weights, or no tokenizer
    (ModelLoadError, a ValueError).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model path '{path}' does not exist ({_EXPECTED})")
    if not p.is_dir():
        raise ModelLoadError(f"model path '{path}' is a file, not a directory ({_EXPECTED})")
    if not (p / "config.json").exists():
        raise ModelLoadError(f"model path '{path}' has no config.json: not a Hugging Face model directory "
                             f"({_EXPECTED})")
    param_dtype = param_dtype or dtype
    for what, d in (("dtype", dtype), ("param_dtype", param_dtype)):
        if d not in _DTYPES:
            raise ModelLoadError(f"model {what} '{d}' is not one of {', '.join(_DTYPES)}")
    try:
        cfg = AutoConfig.from_pretrained(p, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - bad JSON, no model_type, unknown model_type, ...
        raise ModelLoadError(f"model path '{path}': cannot read config.json ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}) ({_EXPECTED})") from e
    why = _not_causal_reason(cfg)
    if why is not None:
        archs = ", ".join(getattr(cfg, "architectures", None) or []) or "none listed"
        raise ModelLoadError(f"model path '{path}' is not a causal LM: {why} (model_type: "
                             f"{getattr(cfg, 'model_type', None)}, architectures: {archs}); {_EXPECTED}")
    try:
        model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True, dtype=_DTYPES[param_dtype])
    except Exception as e:  # noqa: BLE001 - missing / truncated / garbage weight files
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ModelLoadError(f"model path '{path}' ({cfg.model_type}): cannot load the weights "
                             f"({type(e).__name__}: {msg}); {_EXPECTED}") from e
    try:
        tok = AutoTokenizer.from_pretrained(p, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ModelLoadError(f"model path '{path}': cannot load its tokenizer ({type(e).__name__}: {msg}); "
                             f"{_EXPECTED}") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.to(resolve_device(device))
    model.generation_config.pad_token_id = tok.pad_token_id
    set_compute_dtype(model, dtype)
    return model, tok


def set_compute_dtype(model, dtype: str | torch.dtype) -> None:
    """Record the compute dtype `compute_context(model)` runs forwards in."""
    model._zoo_compute_dtype = _DTYPES[dtype] if isinstance(dtype, str) else dtype


def compute_context(model):
    """Autocast to the model's compute dtype when its parameters are stored in another one (bf16
    compute on fp32 master weights); a no-op otherwise. Casts of the weights are cached for the
    whole context, so one context around a decoding loop casts them once, not per token."""
    from contextlib import nullcontext

    p = next(model.parameters())
    cd = getattr(model, "_zoo_compute_dtype", None)
    if cd is None or cd == p.dtype or not p.is_floating_point():
        return nullcontext()
    return torch.autocast(device_type=p.device.type, dtype=cd)


def in_compute_dtype(fn):
    """Decorator: run fn(model, ...) inside `compute_context(model)`."""
    import functools

    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        with compute_context(model):
            return fn(model, *args, **kwargs)
    return wrapper


def disable_dropout(model) -> list[str]:
    """Set every dropout probability in the model to 0 (nn.Dropout modules and the float
    `*dropout*` attributes attention modules read) and return what was changed. π_old, the ratio
    and the reference KL compare the same function in different forwards: random dropout masks
    would make the ratio differ from 1 with no policy change."""
    changed = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Dropout) and mod.p > 0:
            changed.append(f"{name or 'model'}.p={mod.p}")
            mod.p = 0.0
        for attr, v in list(vars(mod).items()):
            if "dropout" in attr and isinstance(v, float) and not isinstance(v, bool) and v > 0:
                changed.append(f"{name or 'model'}.{attr}={v}")
                setattr(mod, attr, 0.0)
    cfg = getattr(model, "config", None)
    for attr in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if isinstance(getattr(cfg, attr, None), float) and getattr(cfg, attr) > 0:
            setattr(cfg, attr, 0.0)
    return changed


def save_policy(model, tokenizer, out: str | Path, meta: dict | None = None, state_dict: dict | None = None) -> None:
    """save_pretrained for model and tokenizer, so transformers loads the directory as is.
    state_dict: the weights to write instead of the model's own (a sharded model's full state)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, **({"state_dict": state_dict} if state_dict is not None else {}))
    tokenizer.save_pretrained(out)
    if meta is not None:
        (out / "zoo_meta.json").write_text(json.dumps(meta, indent=2))


def lm_parts(model):
    """(decoder returning final hidden states, LM-head weight (V, D), LM-head bias or None)."""
    head = model.get_output_embeddings()
    return model.get_decoder(), head.weight, getattr(head, "bias", None)


def encode_prompts(tokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids (B, P) and bool mask. Plain text is tokenised with the tokenizer's
    special tokens (no second BOS when the text already starts with it); a `zoo.prompts.ChatPrompt`
    is rendered with the tokenizer's chat template and tokenised without adding them again. A
    prompt repeated in the list (a GRPO group) is tokenised once."""
    from zoo.prompts import prompt_token_ids

    seen: dict[int, list[int]] = {}
    enc = [seen[id(p)] if id(p) in seen else seen.setdefault(id(p), prompt_token_ids(tokenizer, p)) for p in prompts]
    P = max(len(e) for e in enc)
    ids = torch.full((len(enc), P), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(enc), P), dtype=torch.bool)
    for i, e in enumerate(enc):
        ids[i, P - len(e):] = torch.tensor(e, dtype=torch.long)
        mask[i, P - len(e):] = True
    return ids, mask
