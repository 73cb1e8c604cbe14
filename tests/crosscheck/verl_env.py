"""Importing verl for the cross-checks: a stub `ray` when ray is absent (verl imports it at module
level; the CPU checks need none), and a module-level skip with the reason when verl cannot be imported
(the main environment: run scripts/crosscheck_verl.sh)."""
from __future__ import annotations

import importlib
import sys
import types

import pytest


def import_verl(*names: str) -> list[types.ModuleType]:
    """The named verl modules, in order; skips the calling test module when they cannot be imported."""
    stubbed = False
    try:
        import ray  # noqa: F401
    except ImportError:
        ray = types.ModuleType("ray")
        ray.ObjectRef = type("ObjectRef", (), {})
        ray.remote = lambda *a, **k: (a[0] if a and callable(a[0]) else (lambda f: f))
        sys.modules["ray"], stubbed = ray, True
    try:
        return [importlib.import_module(n) for n in names]
    except Exception as e:  # noqa: BLE001
        if stubbed:
            sys.modules.pop("ray", None)
        pytest.skip(f"verl not importable ({type(e).__name__}: {e}); run scripts/crosscheck_verl.sh",
                    allow_module_level=True)
