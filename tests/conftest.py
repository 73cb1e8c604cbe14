from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 1-layer model + character tokenizer, saved like any HF checkpoint."""
    from zoo.model import build_char_tokenizer, build_tiny_model, save_policy

    d = tmp_path_factory.mktemp("tiny-model")
    tok = build_char_tokenizer()
    model = build_tiny_model(tok, layers=1, hidden=32, heads=2, intermediate=64, seed=0)
    save_policy(model, tok, d)
    return d


@pytest.fixture
def tiny(tiny_model_dir):
    from zoo.model import load_policy

    return load_policy(tiny_model_dir)


def small_config(model_dir, **sections):
    """A fast config on the tiny random model; keyword args override whole sections' keys."""
    from zoo.config import config_from_dict

    raw = {
        "model": {"name_or_path": str(model_dir)},
        "task": {"name": "countdown", "train_size": 200, "eval_size": 16},
        "algorithm": {"preset": "grpo"},
        "rollout": {"group_size": 4, "prompts_per_step": 4, "max_new_tokens": 12},
        "train": {"steps": 2, "lr": 1.0e-3, "threads": 1},
        "eval": {"every": 0, "n": 16, "k": 2, "at_start": True},
        "checkpoint": {"every": 0},
        "log": {"progress": False, "tensorboard": False},
    }
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(raw.get(k), dict):
            raw[k] = {**raw[k], **v}
        else:
            raw[k] = v
    return config_from_dict(raw)
