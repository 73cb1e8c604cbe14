"""The `format` reward: 1.0 when a completion states its final answer in the required form, else 0.0.

    format_reward(["<think>add</think> \\boxed{4}"], ["4"], formats="think,boxed")   # [1.0]
    format_reward(["I think it is 4 or 5"], ["4"])                                   # [0.0]

It never looks at the gold: it scores form, not correctness (combine it with a correctness reward,
e.g. `reward: {functions: [{name: math}, {name: format, weight: 0.1}]}`). `formats` names the
accepted answer formats of `rewards.extract.FORMATS` (a name, a comma-separated string or a list;
a completion passes when its final answer statement is in one of them):

- no required format (`formats` None, "" or "auto"): a non-empty answer that `extract_final`
  finds under its `auto` policy (a box, an answer line, "the answer is ...", a bare short answer);
- `boxed`, `answer_line`, `minerva`, `the_answer_is`, `gsm8k`: the final answer is stated in that
  form (the last such statement in the text);
- `think` (alone, or with the formats above, e.g. "think,boxed"): in addition the completion has a
  well-formed reasoning block: exactly one `</think>`, at most one `<think>`, which must open the
  completion (leading whitespace allowed; it may also be absent when the chat template put the
  `<think>` into the prompt), non-empty text inside, no tag after `</think>`, and the answer after
  `</think>`.

A hedge (several alternatives offered as the final answer: "\\boxed{3} or \\boxed{4}") is not a
well-formed answer and scores 0.0. The trainer passes the task's declared answer format (task
attribute `answer_format`, `task.params.answer_format` for the file tasks) as `formats` unless the
reward function's own `params` set it.
"""
from __future__ import annotations

import difflib
import re
from typing import Sequence

from rewards.extract import FORMATS, extract_final
from rewards.registry import register_reward

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_TAG = re.compile(r"</?think>")


def parse_formats(formats: object) -> tuple[str, ...]:
    """The accepted format names as a tuple (() = no required format); ValueError naming the nearest
    valid name on an unknown one."""
    if formats is None:
        return ()
    if isinstance(formats, str):
        names = [f.strip() for f in re.split(r"[,+\s]+", formats) if f.strip()]
    elif isinstance(formats, (list, tuple)):
        names = [str(f).strip() for f in formats]
    else:
        raise ValueError(f"formats: expected a format name or a list of names, got {formats!r}")
    for f in names:
        if f not in FORMATS:
            near = difflib.get_close_matches(f, FORMATS, n=1, cutoff=0.5)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise ValueError(f"unknown answer format '{f}'{hint} Valid formats: {', '.join(FORMATS)}")
    names = [f for f in names if f != "auto"] if len(names) > 1 else names
    return () if names == ["auto"] else tuple(dict.fromkeys(names))


def think_well_formed(text: str) -> bool:
    """One `</think>`, at most one `<think>` opening the completion, non-empty reasoning inside,
    and no think tag after the closing one."""
    tags = _TAG.findall(text)
    if tags.count(_THINK_CLOSE) != 1 or tags.count(_THINK_OPEN) > 1 or tags[-1] != _THINK_CLOSE:
        return False
    close = text.index(_THINK_CLOSE)
    start = 0
    if _THINK_OPEN in tags:
        if tags[0] != _THINK_OPEN or text.lstrip().find(_THINK_OPEN) != 0:
            return False
        start = text.index(_THINK_OPEN) + len(_THINK_OPEN)
    return bool(text[start:close].strip())


def format_ok(completion: str, formats: Sequence[str] = ()) -> bool:
    """Does `completion` state one final answer in one of `formats` (parsed names; () = any)?"""
    if not isinstance(completion, str):
        return False
    fs = tuple(formats)
    if "think" in fs and not think_well_formed(completion):
        return False
    e = extract_final(completion, fs or "auto")
    return e is not None and bool(e.text.strip()) and not e.hedge


@register_reward("format", description="1.0 when the final answer is stated in the task's answer format "
                                        "(params: formats; think: also a well-formed <think> block)")
def format_reward(completions: Sequence[str], golds: Sequence[str], formats: object = None) -> list[float]:
    """1.0 / 0.0 per completion: is its final answer stated in the required format (gold unused)."""
    fs = parse_formats(formats)
    return [1.0 if format_ok(c, fs) else 0.0 for c in completions]


def _check_params(formats: object = None) -> None:
    parse_formats(formats)


format_reward.check_params = _check_params  # type: ignore[attr-defined]  (get_reward validates params)
