"""Name -> object registries for strategies, presets, base objectives and tasks.

    STRATEGIES = Registry("strategy")
    @STRATEGIES.register("top_entropy")
    class TopEntropy(Strategy): ...
    STRATEGIES.get("top_entropy")   # -> TopEntropy
    STRATEGIES.get("top_entropi")   # KeyError: unknown strategy 'top_entropi'; did you mean 'top_entropy'? ...
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


def nearest(name: str, choices) -> str | None:
    """The closest valid name to `name`, or None when nothing is close."""
    hits = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return hits[0] if hits else None


def unknown_name_message(kind: str, name: str, choices) -> str:
    choices = sorted(choices)
    near = nearest(name, choices)
    hint = f"; did you mean '{near}'?" if near else ""
    return f"unknown {kind} '{name}'{hint} Valid {kind} names: {', '.join(choices) or '(none registered)'}"


class UnknownNameError(KeyError, ValueError):
    """An unknown registry name; the message lists the valid names and the nearest one."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._frozen = False

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj
        return deco

    def add(self, name: str, obj: T) -> None:
        if self._frozen:
            raise RuntimeError(f"{self.kind} registry is frozen; cannot register '{name}'")
        old = self._items.get(name)
        if old is not None and old is not obj and _qualname(old) != _qualname(obj):
            raise ValueError(f"{self.kind} '{name}' is already registered to {_qualname(old)}; "
                             f"refusing to replace it with {_qualname(obj)}")
        self._items[name] = obj

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(unknown_name_message(self.kind, name, self._items))
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._items.items()))

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def freeze(self) -> None:
        self._frozen = True

    def _clear(self) -> None:  # tests only
        self._items.clear()
        self._frozen = False


def _qualname(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


STRATEGIES: Registry = Registry("strategy")
BASES: Registry = Registry("base objective")
PRESETS: Registry = Registry("preset")
TASKS: Registry = Registry("task")
