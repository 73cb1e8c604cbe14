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
        if start_step > 0 and self.path.exists():  # resume: drop lines past the checkpoint
            keep = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= start_step]
            self.path.write_text("".join(ln + "\n" for ln in keep))
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


def read_metrics(run_dir: Path) -> list[dict]:
    p = Path(run_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()] if p.exists() else []
