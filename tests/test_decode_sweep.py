"""`zoo decode-sweep`: the 80/20 decoding experiment as a command (hooks hand-checked, a tiny real sweep)."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from zoo.decode_sweep import sweep_hook, table


def test_hooks_set_the_temperature_of_one_token_class_only():
    H = torch.tensor([0.1, 0.9, 0.5, 2.0])
    # h_fork 0.5: forking = H > 0.5 strictly -> rows 1, 3
    assert sweep_hook("fork", 2.5, 0.5)(H, 1.0).tolist() == [1.0, 2.5, 1.0, 2.5]
    assert sweep_hook("rest", 0.3, 0.5)(H, 1.0).tolist() == pytest.approx([0.3, 1.0, 0.3, 1.0])
    assert sweep_hook("all", 2.0, 0.5) is None                       # plain temperature T
    with pytest.raises(ValueError, match="unknown mode"):
        sweep_hook("hot", 2.0, 0.5)


def test_table_marks_the_baseline():
    res = {"k": 2, "rows": [
        {"mode": "fork", "temperature": 1.0, "accuracy": {"mean": 0.5, "lo": 0.4, "hi": 0.6}},
        {"mode": "fork", "temperature": 2.0, "accuracy": {"mean": 0.6, "lo": 0.5, "hi": 0.7},
         "vs_baseline": {"diff": 0.1, "lo": 0.0, "hi": 0.2}}]}
    t = table(res)
    assert "(baseline)" in t and "| 2 | 60.0 [50.0, 70.0] | +10.0 [+0.0, +20.0] |" in t


def test_decode_sweep_command_on_the_tiny_model(tiny_model_dir, tmp_path, capsys):
    from zoo.cli import main

    raw = {"model": {"name_or_path": str(tiny_model_dir)}, "task": {"name": "countdown", "train_size": 50, "eval_size": 6},
           "rollout": {"max_new_tokens": 6}, "train": {"threads": 1}, "eval": {"n": 6}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "sweep"
    rc = main(["decode-sweep", "--model", str(tiny_model_dir), "--config", str(tmp_path / "c.yaml"), "--k", "2",
               "--temperatures", "0.5,1,2", "--modes", "fork,rest,all", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["n_problems"] == 6 and res["k"] == 2 and res["h_fork_source"] == "measured p80"
    assert res["h_fork"] == pytest.approx(res["h_fork_measured"])
    assert [(r["mode"], r["temperature"]) for r in res["rows"]] == [
        (m, t) for m in ("fork", "rest", "all") for t in (0.5, 1.0, 2.0)]
    base = [r for r in res["rows"] if r["temperature"] == 1.0]
    assert all(r["accuracy"]["mean"] == res["baseline"]["mean"] and "vs_baseline" not in r for r in base)
    assert all("vs_baseline" in r for r in res["rows"] if r["temperature"] != 1.0)
    assert (out / "table.md").exists()
    pytest.importorskip("matplotlib")
    assert (out / "decoding_sweep.png").stat().st_size > 0
    assert main(["decode-sweep", "--model", str(tiny_model_dir), "--config", str(tmp_path / "c.yaml"),
                 "--modes", "hot"]) == 2
    assert "unknown hot" in capsys.readouterr().err
