"""metrics.jsonl + TensorBoard + a console progress bar."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

PROGRESS_KEYS = (("reward/mean", "reward"), ("reward/accuracy", "acc"), ("entropy/mean", "H"),
                 ("eval/accuracy", "eval"), ("perf/step_seconds", "s/step"))


def _plain(v):
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (float("inf") if v > 0 else float("-inf"))
    return v


class MetricsLogger:
    def __init__(self, run_dir: Path, total_steps: int, start_step: int = 0, tensorboard: bool = True,
                 progress: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.dropped = 0   # lines removed on resume (past the checkpoint, or torn by a kill)
        if start_step > 0 and self.path.exists():  # resume: drop lines past the checkpoint
            self.dropped = truncate_metrics(self.path, start_step)
        elif start_step == 0 and self.path.exists():
            self.path.unlink()
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step + 1 if start_step else None)
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True,
                            file=sys.stderr, mininterval=1.0 if sys.stderr.isatty() else 30.0)
        self._last: dict = {}

    def log(self, step: int, metrics: dict, histograms: dict | None = None, texts: dict | None = None) -> None:
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and v is not None and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)
            for k, v in (histograms or {}).items():
                if v is not None and v.numel():
                    self.tb.add_histogram(k, v.float(), step)
            for k, v in (texts or {}).items():
                self.tb.add_text(k, v, step)
        self._last.update({k: v for k, v in row.items() if v is not None})

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            post = {short: f"{self._last[k]:.3f}" for k, short in PROGRESS_KEYS if isinstance(self._last.get(k), (int, float))}
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(n)

    def write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()


def _parse(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def truncate_metrics(path: Path, step: int) -> int:
    """Keep the rows of metrics.jsonl up to `step` (the checkpoint a run resumes from); drop later
    rows (written after that checkpoint by the run that was killed) and torn or unparseable lines
    (a write cut short by the kill). Rewritten atomically; returns how many lines were dropped."""
    from zoo.checkpoint import atomic_write_text

    text = Path(path).read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    keep = []
    for ln in lines:
        row = _parse(ln)
        if row is not None and isinstance(row.get("step", 0), (int, float)) and row.get("step", 0) <= step:
            keep.append(ln)
    if len(keep) != len(lines) or (text and not text.endswith("\n")):  # appends must start a new line
        atomic_write_text(Path(path), "".join(ln + "\n" for ln in keep))
    return len(lines) - len(keep)


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of run_dir/metrics.jsonl (a torn last line, from a killed run, is skipped)."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    return [r for r in (_parse(ln) for ln in p.read_text(errors="replace").splitlines() if ln.strip()) if r is not None]


class NullLogger:
    """Ranks other than 0 log nothing."""
    tb = None

    def log(self, *a, **k): pass
    def advance(self, *a, **k): pass
    def write(self, *a, **k): pass
    def close(self): pass
