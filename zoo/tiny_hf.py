"""Tiny random-weight models of real architectures, built offline in seconds, for tests and benchmarks.

    build_tiny_hf("qwen2", "runs/test-models/qwen2")            # Qwen2 + byte-level BPE + ChatML template
    build_tiny_hf("llama", "runs/test-models/llama", layers=4)   # Llama + Llama-3-style BOS and template

Each is a real `transformers` architecture (Qwen2ForCausalLM, LlamaForCausalLM) with random
weights and a byte-level BPE tokenizer trained locally with `tokenizers` on generated math text,
saved with `save_pretrained`, so `AutoTokenizer` / `AutoModelForCausalLM` load the directory as
they would a downloaded checkpoint (special tokens, chat template, generation config included).
Qwen2 mirrors Qwen2.5: no BOS, `<|endoftext|>` pads, the ChatML template, tied embeddings at
small size. Llama mirrors Llama 3: the tokenizer adds `<|begin_of_text|>`, the chat template
writes it too (so a chat prompt must be tokenised without special tokens), `<|eot_id|>` ends a turn.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
LLAMA_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")
ARCHS = ("qwen2", "llama")


def _corpus(n: int, seed: int) -> list[str]:
    """Generated math-flavoured text: problems, worked steps, boxed answers, chat words."""
    rng = random.Random(seed)
    words = ["Compute", "Find", "Let", "the", "answer", "is", "Answer:", "so", "Thus", "we", "get", "wait",
             "Solve", "for", "x", "Step", "sum", "of", "and", "then", "Therefore", "final", "user", "assistant",
             "system", "Please", "reason", "step", "by", "put", "your", "within", "think"]
    out = []
    for _ in range(n):
        a, b, c = (rng.randint(0, 99) for _ in range(3))
        op = rng.choice("+-*")
        val = {"+": a + b, "-": a - b, "*": a * b}[op]
        out.append(f"{rng.choice(words)} {a}{op}{b}. {' '.join(rng.choices(words, k=6))} "
                   f"{a}{op}{b}={val} \\boxed{{{val}}} $\\frac{{{a}}}{{{c + 1}}}$ <think> {c} </think>\n")
    return out


def build_bpe_tokenizer(arch: str, vocab_size: int = 512, seed: int = 0):
    """A byte-level BPE tokenizer trained here, with the architecture's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if arch not in ARCHS:
        raise ValueError(f"unknown test architecture '{arch}'; valid: {', '.join(ARCHS)}")
    specials = QWEN_SPECIALS if arch == "qwen2" else LLAMA_SPECIALS
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(2000, seed), trainer=trainer)
    if arch == "qwen2":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                       chat_template=QWEN_TEMPLATE, padding_side="left",
                                       additional_special_tokens=["<|im_start|>"])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|end_of_text|>", chat_template=LLAMA_TEMPLATE, padding_side="left",
                                   additional_special_tokens=["<|start_header_id|>", "<|end_header_id|>"])


def build_tiny_hf(arch: str, out: str | Path, layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                  intermediate: int = 128, vocab_size: int = 512, max_positions: int = 1024, seed: int = 0,
                  model_vocab: int = 0) -> Path:
    """Build and save a tiny random-weight model of `arch` (qwen2 | llama) with its tokenizer. Returns out.
    model_vocab > the tokenizer's size pads the embedding/LM head as real checkpoints do (Qwen2.5:
    151,936 rows for 151,665 tokens), for benchmarks at a real vocabulary size."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    tok = build_bpe_tokenizer(arch, vocab_size, seed)
    common = dict(vocab_size=max(len(tok), model_vocab), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, attention_dropout=0.0)
    torch.manual_seed(seed)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True, rope_theta=10000.0))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common, bos_token_id=tok.bos_token_id, tie_word_embeddings=False,
                                             rope_theta=500000.0))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "zoo_meta.json").write_text(json.dumps({"tiny_hf": arch, "seed": seed}, indent=2))
    return out
