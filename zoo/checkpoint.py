"""Atomic checkpoints and exact resume, loaded without running code.

A checkpoint is a directory `ckpt-<step>/` holding `state.pt` (model, optimizer, scheduler, RNG
states, step, data position, strategy states) and `config.yaml`; it is written to a temporary
directory, fsynced, then renamed into place, and a `COMPLETE` marker with the payload's sha256
is written last. On resume, a checkpoint whose marker is missing or unreadable, or whose
state.pt no longer matches the marker's sha256 (truncated, bytes flipped) or cannot be loaded,
is reported by name and skipped, and the previous one is used; when checkpoints exist but none
verifies, `NoUsableCheckpoint` lists each with its fault. Nothing found corrupt is deleted.
Temporary directories left by a save that was killed are removed by the next save.

Safety: `state.pt` holds only tensors and plain containers of numbers and strings (format 2):
the numpy RNG state is stored as a tensor and each strategy's state as a JSON string. It is read
with `torch.load(weights_only=True)`, which refuses any pickle that names a Python object to
build, so loading a run directory someone else could write never executes their code (the sha256
marker proves integrity, not authorship). A file the safe loader refuses (a tampered file, or a
checkpoint written before format 2, whose numpy RNG state was pickled) is reported and skipped
like a corrupt one. `python -m zoo.checkpoint upgrade CKPT_DIR --trust` converts an old checkpoint
you wrote yourself; it is the one place that unpickles, and only when asked.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = 2      # 1: pickled numpy RNG state and strategy dicts (loads only with weights_only=False)


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


def _step_of(path: Path) -> int:
    try:
        return int(path.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def begin_checkpoint(run_dir: Path, step: int) -> Path:
    """A fresh temporary dir for checkpoint `step` (stale ones of killed saves removed)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".ckpt-*"):  # a save killed half-way (never renamed into place)
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=run_dir, prefix=f".ckpt-{step:07d}."))


def finish_checkpoint(run_dir: Path, step: int, tmp: Path, state: dict[str, Any], config_text: str,
                      keep: int = 2) -> Path:
    """Write state.pt and config.yaml into `tmp` (which may already hold other files, e.g. sharded
    model and optimizer state), fsync, checksum every file into the COMPLETE marker, rename into place."""
    run_dir, tmp = Path(run_dir), Path(tmp)
    final = run_dir / f"ckpt-{step:07d}"
    try:
        torch.save(dict(state, format=FORMAT), tmp / "state.pt")
        (tmp / "config.yaml").write_text(config_text)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        for f in files:
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        marker = {"step": step, "sha256": _sha256(tmp / "state.pt"), "format": FORMAT,
                  "files": {str(f.relative_to(tmp)): _sha256(f) for f in files if f.name != "state.pt"}}
        (tmp / "COMPLETE").write_text(json.dumps(marker))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # keep the newest `keep` up to this step; a newer one is a corrupt leftover of a run that was
    # resumed from an earlier checkpoint: it is left alone and replaced when the run reaches its step
    upto = [p for p in list_checkpoints(run_dir) if _step_of(p) <= step]
    for old in upto[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], config_text: str, keep: int = 2) -> Path:
    return finish_checkpoint(run_dir, step, begin_checkpoint(run_dir, step), state, config_text, keep)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint dirs with a COMPLETE marker, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return []
    return sorted((p for p in run_dir.glob("ckpt-*") if p.is_dir() and (p / "COMPLETE").exists()), key=_step_of)


class CorruptCheckpoint(RuntimeError):
    pass


class NoUsableCheckpoint(FileNotFoundError):
    """Checkpoints exist but none verifies (the message lists each one and its fault)."""


def verify_checkpoint(path: Path) -> dict:
    """The COMPLETE marker of checkpoint dir `path`; CorruptCheckpoint naming the bad file otherwise."""
    path = Path(path)
    marker_file, state_file = path / "COMPLETE", path / "state.pt"
    try:
        marker = json.loads(marker_file.read_text())
        if not isinstance(marker, dict) or not isinstance(marker.get("sha256"), str):
            raise ValueError("no sha256 in it")
    except (OSError, ValueError) as e:
        raise CorruptCheckpoint(f"{marker_file}: unreadable COMPLETE marker ({e})") from e
    if not state_file.exists():
        raise CorruptCheckpoint(f"{state_file} is missing")
    if _sha256(state_file) != marker["sha256"]:
        raise CorruptCheckpoint(f"{state_file} does not match the checksum in its COMPLETE marker "
                                f"(truncated or corrupt; {state_file.stat().st_size} bytes)")
    for rel, digest in (marker.get("files") or {}).items():   # config.yaml, sharded model/optimizer files
        f = path / rel
        if not f.is_file():
            raise CorruptCheckpoint(f"{f} is missing")
        if _sha256(f) != digest:
            raise CorruptCheckpoint(f"{f} does not match the checksum in its COMPLETE marker "
                                    f"(truncated or corrupt; {f.stat().st_size} bytes)")
    return marker


class UnsafeCheckpoint(CorruptCheckpoint):
    """state.pt names Python objects to build: refused by the safe (weights_only) loader."""


def load_state(path: Path, mmap: bool = False) -> dict:
    """The training state in checkpoint dir `path` (on CPU), read with torch.load(weights_only=True):
    tensors and plain containers only, never code. CorruptCheckpoint if it cannot be read,
    UnsafeCheckpoint if its pickle names anything else. mmap=True maps the file instead of reading
    it (ranks other than 0 of a multi-process resume)."""
    f = Path(path) / "state.pt"
    try:
        state = torch.load(f, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        why = next((ln.strip() for ln in first if "GLOBAL" in ln or "Unsupported" in ln), first[0] if first else "")
        raise UnsafeCheckpoint(
            f"{f} was refused: it asks the unpickler to build Python objects ({why[:200]}), and checkpoints are "
            "only loaded as tensors and plain data, so loading it cannot run code. A checkpoint written by "
            "entropy-zoo before checkpoint format 2 looks like this too: if you wrote it yourself, convert it "
            f"once with `python -m zoo.checkpoint upgrade {Path(path)} --trust`; otherwise start a new run "
            "in another --out") from None
    except Exception as e:  # noqa: BLE001 - any other failure means a bad file
        raise CorruptCheckpoint(f"{f} cannot be loaded ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or "step" not in state:
        raise CorruptCheckpoint(f"{f} holds no training state")
    if state.get("format") != FORMAT:
        raise CorruptCheckpoint(f"{f} has checkpoint format {state.get('format', 1)!r}, this version reads "
                                f"{FORMAT}; convert it with `python -m zoo.checkpoint upgrade {Path(path)} --trust`")
    return state


def load_latest(run_dir: Path, warn=print) -> tuple[Path, dict] | None:
    """(path, state) of the newest checkpoint that verifies; each bad one is reported through `warn`
    and skipped. None when there is no checkpoint at all; NoUsableCheckpoint when none verifies."""
    run_dir = Path(run_dir)
    bad: list[str] = []
    if run_dir.exists():
        for p in sorted(run_dir.glob("ckpt-*"), key=_step_of):
            if p.is_dir() and not (p / "COMPLETE").exists():
                msg = f"{p / 'COMPLETE'} is missing (an incomplete checkpoint)"
                warn(f"[zoo] skipping checkpoint {p.name}: {msg}")
                bad.append(msg)
    for path in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(path)
            return path, load_state(path)
        except (CorruptCheckpoint, OSError) as e:
            warn(f"[zoo] skipping checkpoint {path.name}: {e}; trying the previous one")
            bad.append(str(e))
    if bad:
        raise NoUsableCheckpoint(f"no usable checkpoint in {run_dir}: every checkpoint failed verification:\n  "
                                 + "\n  ".join(bad) + "\nNothing was modified; restore a good checkpoint or start "
                                 "a new run in another --out.")
    return None


def _numpy_state_plain(st: tuple) -> dict:
    """numpy's legacy RNG state ('MT19937', keys uint32[624], pos, has_gauss, cached) as plain data."""
    name, keys, pos, has_gauss, cached = st
    return {"name": str(name), "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _numpy_state_tuple(d: dict) -> tuple:
    import numpy as np

    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached_gaussian"])


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) RNG states as tensors and plain data (safe to load)."""
    import random

    import numpy as np

    st = {"python": random.getstate(), "numpy": _numpy_state_plain(np.random.get_state()),
          "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    import random

    import numpy as np

    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(_numpy_state_tuple(st["numpy"]))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def dump_plain(obj: Any, what: str) -> str:
    """JSON text of plain state (numbers, strings, bools, None, lists, dicts); a clear error otherwise."""
    try:
        return json.dumps(obj, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be plain data (numbers, strings, lists, dicts) to be checkpointed "
                        f"safely: {e}") from None


# ----------------------------------------------------------------------------------------------
# Explicit, trusted conversion of a format-1 checkpoint (the only unpickling load)
# ----------------------------------------------------------------------------------------------
def upgrade(path: Path) -> Path:
    """Rewrite checkpoint dir `path` from format 1 to format 2, in place and atomically.
    It unpickles the old file (weights_only=False): run it only on checkpoints you wrote."""
    path = Path(path)
    verify_checkpoint(path)
    old = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    if old.get("format") == FORMAT:
        return path
    new = dict(old, format=FORMAT)
    for key in ("rng",):
        if key in new and not isinstance(new[key]["numpy"], dict):
            new[key] = dict(new[key], numpy=_numpy_state_plain(new[key]["numpy"]))
    if "ranks" in new:
        new["ranks"] = [dict(r, rng=dict(r["rng"], numpy=_numpy_state_plain(r["rng"]["numpy"]))
                             if not isinstance(r["rng"]["numpy"], dict) else r["rng"]) for r in new["ranks"]]
    if "strategies" in new:
        new["strategies"] = dump_plain(new["strategies"], "strategy state")
    step = int(new["step"])
    save_checkpoint(path.parent, step, new, (path / "config.yaml").read_text(), keep=0)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zoo.checkpoint")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("upgrade", help="convert a format-1 checkpoint dir (ckpt-<step>/) to the safe format")
    up.add_argument("path", help="a ckpt-<step> directory")
    up.add_argument("--trust", action="store_true",
                    help="required: the old file is unpickled, which runs any code it names")
    args = ap.parse_args(argv)
    if not args.trust:
        print("refusing: upgrading unpickles the old state.pt, which can run code; pass --trust only for a "
              "checkpoint you wrote yourself", file=sys.stderr)
        return 2
    print(f"upgraded {upgrade(Path(args.path))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
