"""Prompt formats: how a problem becomes the text, or the chat, that a model is conditioned on.

`task.template` picks one (`task.system` and `task.template_kwargs` adjust it):

- `raw` (default): the task's prompt text as it is, tokenised with the tokenizer's special tokens
  (a Llama tokenizer adds its BOS), as the synthetic tasks and the tiny base model expect;
- `chat`: the tokenizer's own chat template with `add_generation_prompt`, the problem as the user
  message, `task.system` as a system message, `task.template_kwargs` passed to the template as
  variables (e.g. Qwen3's `enable_thinking`);
- a named format shipped in `zoo/templates/<name>.yaml` (`zoo list`): each cites its source and
  names the answer format the reward then expects (`qwen_math`, `boxed`, `boxed_plain`, `dapo`,
  `r1_zero`, `qwen3_think`);
- a file: a `.yaml` / `.yml` with the same keys as the shipped ones, or any other text file whose
  content is a plain-text prompt containing `{problem}`.

Format file keys: `chat` (render with the tokenizer's chat template), `user` (the user message,
chat), `text` (the whole prompt, not chat), `system`, `answer_format` (names of
`rewards.extract.FORMATS`), `stop` (stop strings), `template_kwargs`, `description`, `source`.
`{problem}` is replaced by the problem text with surrounding whitespace stripped (plain
replacement: other braces are literal). A prefix or suffix of the format that the problem text
already carries (the dapo_math rows hold DAPO's instruction) is not added twice.

A chat prompt is a `ChatPrompt`: a `str` (its value is the user message, what logs and the
leakage check see) that also holds the messages; `prompt_token_ids` renders it with the
tokenizer's chat template and tokenises the rendered text WITHOUT adding special tokens again,
which is exactly `tokenizer.apply_chat_template(messages, add_generation_prompt=True,
tokenize=True)` (no second `<|begin_of_text|>` on Llama 3).
"""
from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo.registry import nearest
from zoo.schema import ConfigError

BUILTIN = ("raw", "chat")
FILE_KEYS = ("description", "source", "answer_format", "chat", "system", "user", "text", "stop", "template_kwargs")


@dataclass(frozen=True)
class PromptFormat:
    """A resolved `task.template`."""
    name: str
    chat: bool = False
    system: str = ""
    user: str = "{problem}"                 # chat: the user message
    text: str = "{problem}"                 # not chat: the whole prompt
    answer_format: str | None = None        # what the reward then expects (None: the task's own)
    stop: tuple = ()                        # stop strings the format needs (e.g. r1_zero: </answer>)
    template_kwargs: dict = field(default_factory=dict)
    description: str = ""
    source: str = ""

    @property
    def is_raw(self) -> bool:
        return self.name == "raw"


def template_files() -> dict[str, Any]:
    """Name -> file of every named format shipped with the package (read with `.read_text()`)."""
    root = importlib.resources.files("zoo") / "templates"
    return {p.name[:-5]: p for p in sorted(root.iterdir(), key=lambda p: p.name) if p.name.endswith(".yaml")}


def template_names() -> list[str]:
    return list(BUILTIN) + list(template_files())


def _from_mapping(name: str, data: Any, where: str) -> PromptFormat:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(FILE_KEYS)}, got {type(data).__name__}")
    for k in data:
        if k not in FILE_KEYS:
            near = nearest(str(k), list(FILE_KEYS))
            raise ConfigError(f"{where}: unknown key '{k}'" + (f"; did you mean '{near}'?" if near else "")
                              + f" Valid keys: {', '.join(FILE_KEYS)}")
    chat = data.get("chat", "user" in data)
    if not isinstance(chat, bool):
        raise ConfigError(f"{where}: chat must be true or false, got {chat!r}")
    body_key = "user" if chat else "text"
    body = data.get(body_key, "{problem}")
    for k in ("system", "user", "text", "description", "source"):
        if k in data and not isinstance(data[k], str):
            raise ConfigError(f"{where}: {k} must be a string, got {type(data[k]).__name__}")
    if "{problem}" not in body:
        raise ConfigError(f"{where}: '{body_key}' must contain {{problem}}")
    if not chat and "system" in data:
        raise ConfigError(f"{where}: a system message needs chat: true")
    stop = data.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
        raise ConfigError(f"{where}: stop must be a list of non-empty strings, got {stop!r}")
    kw = data.get("template_kwargs") or {}
    if not isinstance(kw, dict):
        raise ConfigError(f"{where}: template_kwargs must be a mapping, got {kw!r}")
    fmt = data.get("answer_format")
    if fmt is not None:
        from rewards.format import parse_formats

        try:
            fmt = ",".join(parse_formats(fmt)) or None
        except ValueError as e:
            raise ConfigError(f"{where}: answer_format: {e}") from None
    return PromptFormat(name, chat, data.get("system", ""), body if chat else "{problem}", body if not chat else
                        "{problem}", fmt, tuple(stop), dict(kw), data.get("description", ""), data.get("source", ""))


def load_template(name: str, system: str = "", template_kwargs: dict | None = None) -> PromptFormat:
    """The PromptFormat for a `task.template` value, with `task.system` / `task.template_kwargs` applied
    (system replaces the format's system message; template_kwargs are merged over the format's).
    ConfigError naming `task.template` for an unknown name, a missing or malformed file."""
    where = f"task.template '{name}'"
    if not isinstance(name, str) or not name:
        raise ConfigError(f"task.template: expected a name or a file path, got {name!r}")
    files = template_files()
    if name == "raw":
        fmt = PromptFormat("raw")
    elif name == "chat":
        fmt = PromptFormat("chat", chat=True, description="the tokenizer's own chat template, problem as user message")
    elif name in files:
        fmt = _from_mapping(name, yaml.safe_load(files[name].read_text()) or {}, f"{where} ({files[name]})")
    elif Path(name).expanduser().is_file():
        p = Path(name).expanduser()
        if p.suffix in (".yaml", ".yml"):
            try:
                data = yaml.safe_load(p.read_text())
            except yaml.YAMLError as e:
                raise ConfigError(f"{where}: not valid YAML: {e}") from None
            fmt = _from_mapping(name, data, where)
        else:
            fmt = _from_mapping(name, {"chat": False, "text": p.read_text()}, where)
    else:
        near = nearest(name, template_names())
        looks_like_path = "/" in name or "." in name
        raise ConfigError(f"{where}: " + ("no such file" if looks_like_path else "unknown template")
                          + (f"; did you mean '{near}'?" if near and not looks_like_path else "")
                          + f" Valid: {', '.join(template_names())}, or a path to a .yaml / text file")
    if system:
        if not fmt.chat:
            raise ConfigError(f"task.system needs a chat template (task.template: chat or a chat format); "
                              f"'{fmt.name}' is plain text")
        fmt = _replace(fmt, system=system)
    if template_kwargs:
        if not fmt.chat:
            raise ConfigError(f"task.template_kwargs are chat-template variables; '{fmt.name}' is plain text")
        fmt = _replace(fmt, template_kwargs={**fmt.template_kwargs, **template_kwargs})
    return fmt


def _replace(fmt: PromptFormat, **kw) -> PromptFormat:
    from dataclasses import replace

    return replace(fmt, **kw)


# ----------------------------------------------------------------------------------------------
# Rendering and tokenisation
# ----------------------------------------------------------------------------------------------
class ChatPrompt(str):
    """A prompt rendered with the tokenizer's chat template when it is tokenised. The string value is
    the user message; `messages` the conversation (system, user); `template_kwargs` template variables."""

    messages: tuple
    template_kwargs: dict

    def __new__(cls, user: str, messages: tuple, template_kwargs: dict | None = None):
        obj = super().__new__(cls, user)
        obj.messages = tuple(dict(m) for m in messages)
        obj.template_kwargs = dict(template_kwargs or {})
        return obj

    def __reduce__(self):
        return (ChatPrompt, (str(self), self.messages, self.template_kwargs))


def _fill(body: str, problem: str) -> str:
    pre, _, post = body.partition("{problem}")
    p = problem.strip()
    if pre.strip() and p.startswith(pre.strip()):
        pre = ""
    if post.strip() and p.endswith(post.strip()):
        post = ""
    return pre + p + post


def render(fmt: PromptFormat, problem: str) -> str:
    """The prompt for one problem text: the text itself (raw), a plain string, or a ChatPrompt."""
    if fmt.is_raw:
        return problem
    if not fmt.chat:
        return _fill(fmt.text, problem)
    user = _fill(fmt.user, problem)
    msgs = ([{"role": "system", "content": fmt.system}] if fmt.system else []) + [{"role": "user", "content": user}]
    return ChatPrompt(user, tuple(msgs), fmt.template_kwargs)


def chat_text(tokenizer, prompt: ChatPrompt) -> str:
    """The chat template's rendering of a ChatPrompt, with the assistant's generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this prompt needs the model's chat template (task.template: chat or a chat format) "
                         "but its tokenizer has none: use a plain-text format (raw, boxed_plain, r1_zero) or a "
                         "template file with chat: false")
    return tokenizer.apply_chat_template([dict(m) for m in prompt.messages], tokenize=False,
                                         add_generation_prompt=True, **prompt.template_kwargs)


def prompt_token_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of one prompt. A ChatPrompt: its chat rendering, tokenised without adding special
    tokens (the template wrote them). Plain text: tokenised with the tokenizer's special tokens,
    unless the text already starts with the BOS token's text (no second BOS)."""
    if isinstance(prompt, ChatPrompt):
        return list(tokenizer(chat_text(tokenizer, prompt), add_special_tokens=False)["input_ids"])
    bos = getattr(tokenizer, "bos_token", None)
    add = not (isinstance(bos, str) and bos and prompt.startswith(bos))
    return list(tokenizer(prompt, add_special_tokens=add)["input_ids"])


def prompt_text(tokenizer, prompt: str) -> str:
    """The text the model sees for a prompt (the chat rendering of a ChatPrompt), for display."""
    return chat_text(tokenizer, prompt) if isinstance(prompt, ChatPrompt) else prompt
