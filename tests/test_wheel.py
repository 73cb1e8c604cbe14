"""The project as a user installs it: a wheel in a fresh venv, run from a directory outside the repo.

Builds the wheel from a copy of the sources (nothing is written into the checkout), installs it
(torch 2.13 first, as `make setup` does, so pip never pulls a CUDA build) into a new venv, and
from an empty temporary directory runs `zoo list`, a 2-step `zoo train` with a preset on a
copied config (the tiny base model is built under that directory's runs/), `zoo compare`, and
`zoo new-strategy`. Presets must come from inside the installed package, and nothing may be
read from or written to the source tree.

Slow-ish (a venv install, ~1-2 minutes with a warm pip cache): it runs in CI; locally,
ZOO_SKIP_WHEEL_TEST=1 skips it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"

pytestmark = pytest.mark.skipif(bool(os.environ.get("ZOO_SKIP_WHEEL_TEST")), reason="ZOO_SKIP_WHEEL_TEST is set")


def _run(cmd, cwd, env=None, timeout=900):
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin dir, a clean environment) with the wheel installed in a fresh venv."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / f, src / f)
    for pkg in ("zoo", "algorithms", "rewards"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", root / "dist", src], cwd=root)
    wheels = list((root / "dist").glob("entropy_zoo-*.whl"))
    assert len(wheels) == 1, wheels
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=root)
    bin_ = venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{bin_}{os.pathsep}{env.get('PATH', '')}", CI="true", TOKENIZERS_PARALLELISM="false")
    _run([bin_ / "python", "-m", "pip", "install", "-q", TORCH], cwd=root, env=env)
    _run([bin_ / "python", "-m", "pip", "install", "-q", wheels[0]], cwd=root, env=env)
    return bin_, env, root


def test_wheel_ships_the_presets_and_imports_from_site_packages(installed):
    bin_, env, root = installed
    work = root / "elsewhere"
    work.mkdir()
    out = _run([bin_ / "python", "-c",
                "import zoo, algorithms, rewards, zoo.config as c; print(zoo.__file__); "
                "print(algorithms.__file__); print(sorted(c.preset_files()))"], cwd=work, env=env)
    lines = out.splitlines()
    assert all("site-packages" in line for line in lines[:2]), lines
    assert str(REPO) not in out
    presets = yaml.safe_load(lines[2].replace("'", '"'))
    assert {"top20", "dapo", "grpo", "eapo", "fork_t12"} <= set(presets)


def test_wheel_list_train_compare_and_new_strategy_from_a_temporary_directory(installed):
    bin_, env, root = installed
    work = root / "user"
    work.mkdir()
    out = _run([bin_ / "zoo", "list"], cwd=work, env=env)
    assert "top20" in out and "top_entropy" in out and "eapo" in out

    # a copied config, with the tiny base model built under this directory's runs/
    cfg = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    cfg["pretrain"].update(steps=10, min_steps=10, eval_every=10, eval_n=8, train_size=500)
    cfg["task"].update(train_size=200, eval_size=8)
    cfg["eval"] = {"every": 0, "n": 8, "k": 1, "at_start": False}
    cfg["log"] = {"progress": False}
    (work / "my.yaml").write_text(yaml.safe_dump(cfg))
    _run([bin_ / "zoo", "train", "--config", "my.yaml", "--out", "runs/top20",
          "--set", "algorithm.preset=top20", "--set", "algorithm.dynamic_sampling=false",
          "--set", "train.steps=2"], cwd=work, env=env)   # (a 10-step base solves nothing: keep every group)
    assert (work / "runs" / "base" / "tiny-countdown-smoke" / "config.json").exists()
    metrics = [yaml.safe_load(line) for line in (work / "runs" / "top20" / "metrics.jsonl").read_text().splitlines()]
    assert max(m["step"] for m in metrics) == 2
    assert any("top_entropy/kept_share" in m for m in metrics)
    assert yaml.safe_load((work / "runs" / "top20" / "config.yaml").read_text())["algorithm"]["preset"] == "top20"

    comp = {k: v for k, v in cfg.items() if k != "algorithm"}
    comp.update(algorithms=["grpo", "top20"], seeds=[0], budget={"steps": 1})
    comp["checkpoint"] = {"every": 0}
    (work / "cmp.yaml").write_text(yaml.safe_dump(comp))
    _run([bin_ / "zoo", "compare", "--config", "cmp.yaml", "--out", "runs/cmp"], cwd=work, env=env)
    assert (work / "runs" / "cmp" / "results.json").exists() and (work / "runs" / "cmp" / "report.md").exists()

    _run([bin_ / "zoo", "new-strategy", "my_weights"], cwd=work, env=env)
    assert (work / "my_weights.py").exists() and (work / "test_my_weights.py").exists()
    site = Path(_run([bin_ / "python", "-c", "import algorithms; print(algorithms.__file__)"], cwd=root, env=env).strip())
    assert not (site.parent / "my_weights.py").exists()
