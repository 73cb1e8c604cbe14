"""Run state of the loop: what a checkpoint holds and how a run resumes from one.

`RunState` is mixed into `zoo.trainer.Trainer`. Rank 0 picks (and verifies) the checkpoint,
every rank loads that one; a checkpoint written with a different config or number of processes
is refused, naming the differing keys.
"""
from __future__ import annotations

import json
from pathlib import Path

from zoo.checkpoint import (begin_checkpoint, dump_plain, finish_checkpoint, load_latest, load_state, rng_state,
                            set_rng_state)
from zoo.config import ConfigError, config_diff


class RunState:
    """Mixin: `state_dict`, `save` and `_resume` for the trainer."""

    def state_dict(self) -> dict:
        """Everything a resume needs; the random states of every rank (a collective call). Tensors
        and plain data only (a safe load never builds objects); strategy states travel as JSON."""
        ranks = self.reduce.gather_objects({"rng": rng_state()})   # sampling draws are keyed by (step, row)
        weights = ({"sharded": "fsdp"} if self.sharded else            # FSDP: model/optimizer shards via DCP
                   {"model": self.model.state_dict(), "opt": self.opt.state_dict()})
        return {**weights, "sched": self.sched.state_dict(),
                "rng": ranks[0]["rng"], "ranks": ranks, "world": self.world,
                "data": self.data.state_dict(),
                "step": self.step_idx, "opt_steps": self.opt_steps, "bad_steps": self.bad_steps,
                "budget": dict(self.budget),
                "strategies": dump_plain([s.state_dict() for s in self.strategies], "strategy state_dict()"),
                "config": self.cfg.to_dict()}

    def save(self) -> None:
        import yaml

        st = self.state_dict()
        tmp = begin_checkpoint(self.out, self.step_idx) if self.is_main else None
        if self.sharded:                       # every rank writes its shards into rank 0's temporary dir
            from zoo.sharding import save_shards

            tmp = Path(self.reduce.broadcast_object(str(tmp) if tmp else None))
            save_shards(self.train_forward, self.opt, tmp / "shards")
        if self.is_main:
            finish_checkpoint(self.out, self.step_idx, tmp, st, yaml.safe_dump(self.cfg.to_dict(), sort_keys=False),
                              keep=self.cfg.checkpoint.keep)
        self.reduce.barrier()

    def _resume(self) -> None:
        # rank 0 picks the checkpoint (verifying it) and every rank loads that one
        found, err = None, None
        if self.is_main:
            try:
                found = load_latest(self.out, warn=self.print)
            except FileNotFoundError as e:
                err = e
        picked = self.reduce.broadcast_object(("error", str(err)) if err else ("path", found and str(found[0])))
        if picked[0] == "error":
            raise err if err is not None else FileNotFoundError(picked[1])
        if picked[1] is None:
            raise FileNotFoundError(f"--resume: no usable checkpoint in {self.out}")
        path, st = found if found else (Path(picked[1]), load_state(Path(picked[1]), mmap=True))
        diff = config_diff(st["config"], self.cfg.to_dict(), ignore=("train.steps", "eval", "log", "checkpoint"))
        if diff:
            raise ConfigError(f"--resume: {path} was written with a different config; differing keys: "
                              + ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in diff))
        if st.get("world", 1) != self.world:
            raise ConfigError(f"--resume: {path} was written by {st.get('world', 1)} process(es), this launch has "
                              f"{self.world}; resume with the same number (each rank's random state is saved)")
        if st.get("sharded") != ("fsdp" if self.sharded else None):
            raise ConfigError(f"--resume: {path} was written with train.sharding "
                              f"{st.get('sharded') or 'none'}, this launch uses {'fsdp' if self.sharded else 'none'}")
        if self.sharded:
            from zoo.sharding import load_shards

            load_shards(self.train_forward, self.opt, path / "shards")
        else:
            self.model.load_state_dict(st["model"])
            self.opt.load_state_dict(st["opt"])
        self.sched.load_state_dict(st["sched"])
        set_rng_state(st["ranks"][self.rank]["rng"] if "ranks" in st else st["rng"])
        self.data.load_state_dict(st["data"])
        self.step_idx, self.opt_steps, self.bad_steps = st["step"], st["opt_steps"], st["bad_steps"]
        self.budget = dict(st["budget"])
        for s, ss in zip(self.strategies, json.loads(st["strategies"])):
            s.load_state_dict(ss)
        self.print(f"[zoo] resumed {self.out} from {path.name} (step {self.step_idx})")
