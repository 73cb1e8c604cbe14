"""Prompt formats (task.template): raw, chat (system, template_kwargs), the named formats and template
files, rendered through `zoo train` on the tiny Qwen2 and Llama models; prompt ids equal
apply_chat_template(..., tokenize=True) (no second BOS); answer formats handed to the rewards."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rewards.extract import FORMATS
from zoo.config import ConfigError, config_from_dict
from zoo.data import PromptedTask, get_task
from zoo.model import encode_prompts, load_policy
from zoo.prompts import ChatPrompt, load_template, prompt_token_ids, render, template_files

NAMED = sorted(template_files())
ROWS = [{"problem": f"Compute {a}+{b}.", "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    from zoo.tiny_hf import build_tiny_hf

    root = tmp_path_factory.mktemp("prompt-models")
    return {a: build_tiny_hf(a, root / a) for a in ("qwen2", "llama")}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("prompt-data")
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (root / "eval.jsonl").write_text(json.dumps({"problem": "Compute 9+9.", "answer": "18"}) + "\n")
    (root / "fmt.yaml").write_text(yaml.safe_dump({
        "description": "test", "source": "here", "chat": True, "system": "Be brief.",
        "user": "Problem: {problem}\nEnd with \\boxed{}.", "answer_format": "boxed", "stop": ["\n\n\n"]}))
    (root / "plain.txt").write_text("Q: {problem}\nA:")
    return {"train": str(root / "train.jsonl"), "eval": str(root / "eval.jsonl"),
            "yaml": str(root / "fmt.yaml"), "text": str(root / "plain.txt")}


def _ref_ids(tok, p: ChatPrompt) -> list[int]:
    ref = tok.apply_chat_template([dict(m) for m in p.messages], add_generation_prompt=True, tokenize=True,
                                  **p.template_kwargs)
    return list(ref["input_ids"] if hasattr(ref, "keys") else ref)


# ----------------------------------------------------------------------------------------------
def test_named_formats_cite_a_source_and_name_an_answer_format():
    assert {"qwen_math", "boxed", "dapo", "r1_zero"} <= set(NAMED)
    for name in NAMED:
        f = load_template(name)
        assert f.source and f.description, name
        assert f.answer_format and all(x in FORMATS for x in f.answer_format.split(",")), name
    assert load_template("qwen_math").system.endswith("put your final answer within \\boxed{}.")
    assert load_template("dapo").answer_format == "answer_line"
    r1 = load_template("r1_zero")
    assert "think" in r1.answer_format.split(",") and r1.stop == ("</answer>",) and not r1.chat


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_chat_prompt_ids_equal_apply_chat_template(tiny_dirs, arch):
    _, tok = load_policy(tiny_dirs[arch])
    fmts = [load_template("chat", system="You are terse.", template_kwargs={"enable_thinking": True})]
    fmts += [load_template(n) for n in NAMED if load_template(n).chat]
    for f in fmts:
        p = render(f, "Compute 1+2.\n")
        assert isinstance(p, ChatPrompt)
        ids = prompt_token_ids(tok, p)
        assert ids == _ref_ids(tok, p), f.name
        if tok.bos_token_id is not None:
            assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
        batch, mask = encode_prompts(tok, [p, p, "raw text"])
        assert batch[0][mask[0]].tolist() == ids
    # plain text already starting with the BOS text: no second BOS
    if tok.bos_token_id is not None:
        ids = prompt_token_ids(tok, tok.bos_token + "Hi")
        assert ids.count(tok.bos_token_id) == 1


def test_rendering_rules(data):
    f = load_template("boxed")
    p = render(f, "  What is 2+2?\n")
    assert str(p) == "What is 2+2?\nPlease reason step by step, and put your final answer within \\boxed{}."
    assert render(f, str(p)) == str(p), "an instruction already present is not added twice"
    assert render(load_template("raw"), "x\n") == "x\n"
    y = load_template(data["yaml"])
    q = render(y, "Compute 1.")
    assert q.messages[0] == {"role": "system", "content": "Be brief."} and y.stop == ("\n\n\n",)
    assert render(load_template(data["yaml"], system="Other."), "a").messages[0]["content"] == "Other."
    assert render(load_template(data["text"]), "Compute 1.\n") == "Q: Compute 1.\nA:"


def test_dapo_instruction_is_not_duplicated(tmp_path):
    from zoo.tasks_datasets import DAPO_PREFIX, DAPO_SUFFIX

    row = {"prompt": [{"role": "user", "content": DAPO_PREFIX + "Find 2+3." + DAPO_SUFFIX}],
           "reward_model": {"ground_truth": "5"}, "extra_info": {"index": "a"}}
    path = tmp_path / "dapo.jsonl"
    path.write_text(json.dumps(row) + "\n")
    cfg = config_from_dict({"task": {"name": "dapo_math", "params": {"path": str(path)}, "template": "dapo"}})
    t = get_task(cfg.task.name, **cfg.task.params)
    (p,) = t.problems("eval", 0)
    assert str(p.prompt) == DAPO_PREFIX + "Find 2+3." + DAPO_SUFFIX and t.answer_format == "answer_line"
    cfg2 = config_from_dict({"task": {"name": "dapo_math", "template": "dapo",
                                      "params": {"path": str(path), "strip_instruction": True}}})
    (p2,) = get_task(cfg2.task.name, **cfg2.task.params).problems("eval", 0)
    assert str(p2.prompt) == str(p.prompt)


def test_task_config_carries_the_format_and_answer_format(data):
    raw = {"task": {"name": "jsonl", "params": {"path": data["eval"], "train_path": data["train"]},
                    "template": "qwen_math"}}
    cfg = config_from_dict(raw)
    t = get_task(cfg.task.name, **cfg.task.params)
    assert isinstance(t, PromptedTask) and t.answer_format == "boxed" and t.size("train") == 4
    assert [p.id for p in t.problems("train", 0)] == [p.id for p in t.task.problems("train", 0)]
    assert config_from_dict(cfg.to_dict()) == cfg, "the saved config loads back to the same config"
    again = config_from_dict(cfg.to_dict(), ["task.template=r1_zero"])
    t2 = get_task(again.task.name, **again.task.params)
    assert t2.format.name == "r1_zero" and t2.problems("eval", 0)[0].meta["stop"] == ("</answer>",)
    kept = config_from_dict({"task": {**raw["task"], "params": {**raw["task"]["params"], "answer_format": "auto"}}})
    assert get_task(kept.task.name, **kept.task.params).answer_format == "auto"
    plain = config_from_dict({"task": {"name": "arith"}})
    assert "_prompt" not in plain.task.params and not isinstance(get_task("arith"), PromptedTask)


def test_bad_template_settings_are_config_errors(data):
    with pytest.raises(ConfigError, match="did you mean 'qwen_math'"):
        config_from_dict({"task": {"template": "qwen_mth"}})
    with pytest.raises(ConfigError, match="no such file"):
        config_from_dict({"task": {"template": "my/format.yaml"}})
    with pytest.raises(ConfigError, match="task.system needs a chat template"):
        config_from_dict({"task": {"template": "raw", "system": "x"}})
    with pytest.raises(ConfigError, match="template_kwargs"):
        config_from_dict({"task": {"template": "r1_zero", "template_kwargs": {"a": 1}}})
    bad = Path(data["yaml"]).with_name("bad.yaml")
    bad.write_text("chat: true\nuser: no placeholder\n")
    with pytest.raises(ConfigError, match="must contain"):
        load_template(str(bad))
    bad.write_text("chat: true\nusr: '{problem}'\n")
    with pytest.raises(ConfigError, match="did you mean 'user'"):
        load_template(str(bad))


def test_a_model_without_chat_template_is_refused_clearly():
    from zoo.model import build_char_tokenizer

    with pytest.raises(ValueError, match="has none"):
        prompt_token_ids(build_char_tokenizer(), render(load_template("chat"), "x"))


# ----------------------------------------------------------------------------------------------
# Through `zoo train` on both architectures
# ----------------------------------------------------------------------------------------------
def _train_config(model_dir, data, tmp_path, **task):
    raw = {"model": {"name_or_path": str(model_dir)},
           "task": {"name": "jsonl", "params": {"path": data["eval"], "train_path": data["train"]},
                    "train_size": 4, "eval_size": 1, **task},
           "reward": {"functions": [{"name": "math"}, {"name": "format", "weight": 0.1}]},
           "algorithm": {"preset": "grpo"},
           "rollout": {"group_size": 2, "prompts_per_step": 2, "max_new_tokens": 6},
           "train": {"steps": 1, "lr": 1.0e-3, "threads": 1},
           "eval": {"every": 0, "n": 1, "k": 1, "at_start": False},
           "checkpoint": {"every": 0}, "log": {"progress": False, "tensorboard": False}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_every_format_runs_through_zoo_train(tiny_dirs, data, tmp_path, monkeypatch, arch):
    import zoo.rollout
    from zoo.cli import main

    seen = []
    real = zoo.rollout.encode_prompts

    def spy(tok, prompts):
        ids, mask = real(tok, prompts)
        seen.append((tok, list(prompts), ids, mask))
        return ids, mask

    monkeypatch.setattr(zoo.rollout, "encode_prompts", spy)
    cases = [dict(template="chat", system="You are terse.", template_kwargs={"enable_thinking": False})]
    cases += [dict(template=n) for n in NAMED] + [dict(template=data["yaml"]), dict(template=data["text"])]
    for i, task in enumerate(cases):
        seen.clear()
        cfg = _train_config(tiny_dirs[arch], data, tmp_path, **task)
        run = tmp_path / f"run{i}"
        assert main(["train", "--config", str(cfg), "--out", str(run)]) == 0, task
        rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
        assert any("reward/format" in r for r in rows)
        fmt = load_template(task["template"], task.get("system", ""), task.get("template_kwargs"))
        assert seen, task
        for tok, prompts, ids, mask in seen:
            for p, row, m in zip(prompts, ids, mask):
                want = _ref_ids(tok, p) if isinstance(p, ChatPrompt) else prompt_token_ids(tok, p)
                assert row[m].tolist() == want
                assert isinstance(p, ChatPrompt) == fmt.chat
                if fmt.chat and fmt.system:
                    assert p.messages[0] == {"role": "system", "content": fmt.system}
                if fmt.template_kwargs:
                    assert p.template_kwargs == fmt.template_kwargs
                assert "Compute" in p


def test_inspect_takes_a_format(tiny_dirs, tmp_path):
    from zoo.cli import main

    for arch, fmt, expect in (("llama", "r1_zero", "A conversation between User and Assistant"),
                              ("qwen2", "qwen_math", "&lt;|im_start|&gt;system")):
        page = tmp_path / f"{arch}.html"
        assert main(["inspect", "--model", str(tiny_dirs[arch]), "--prompt", "Compute 1+2.", "--template", fmt,
                     "--out", str(page), "--max-new-tokens", "6", "--threads", "1"]) == 0
        assert expect in page.read_text()
