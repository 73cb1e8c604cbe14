"""Atomic checkpoints and exact resume.

A checkpoint is a directory `ckpt-<step>/` holding `state.pt` (model, optimizer, scheduler, RNG
states, step, data position, strategy states) and `config.yaml`; it is written to a temporary
directory, fsynced, then renamed into place, and a `COMPLETE` marker with the payload's sha256
is written last. A checkpoint without a valid marker is ignored (and reported), and the previous
one is used.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], config_text: str, keep: int = 2) -> Path:
    run_dir = Path(run_dir)
    final = run_dir / f"ckpt-{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".ckpt-{step:07d}."))
    try:
        torch.save(state, tmp / "state.pt")
        (tmp / "config.yaml").write_text(config_text)
        with open(tmp / "state.pt", "rb") as f:
            os.fsync(f.fileno())
        marker = {"step": step, "sha256": _sha256(tmp / "state.pt")}
        (tmp / "COMPLETE").write_text(json.dumps(marker))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint dirs with a COMPLETE marker, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return []
    return sorted(p for p in run_dir.glob("ckpt-*") if p.is_dir() and (p / "COMPLETE").exists())


class CorruptCheckpoint(RuntimeError):
    pass


def verify_checkpoint(path: Path) -> dict:
    try:
        marker = json.loads((path / "COMPLETE").read_text())
    except (OSError, ValueError) as e:
        raise CorruptCheckpoint(f"{path}: unreadable COMPLETE marker ({e})") from e
    state_file = path / "state.pt"
    if not state_file.exists():
        raise CorruptCheckpoint(f"{path}: state.pt is missing")
    if _sha256(state_file) != marker.get("sha256"):
        raise CorruptCheckpoint(f"{path}: state.pt does not match its checksum (truncated or corrupt)")
    return marker


def load_latest(run_dir: Path, warn=print) -> tuple[Path, dict] | None:
    """Newest checkpoint that verifies; corrupt ones are reported and skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(path)
            state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
            return path, state
        except (CorruptCheckpoint, RuntimeError, EOFError, OSError) as e:
            warn(f"[zoo] skipping checkpoint {path.name}: {e}")
    return None


def rng_state() -> dict:
    import random

    import numpy as np

    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    import random

    import numpy as np

    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
