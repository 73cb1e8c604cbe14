#!/usr/bin/env bash
# Cross-check clip_cov / kl_cov against verl's compute_policy_loss_clip_cov / _kl_cov, and
# zoo.integrations.verl (every zoo_<preset> policy loss through verl's registry and the actor extension)
# against our own trainer's optimizer step.
# verl pins an older transformers, so it gets its own venv (.venv-verl), never the main one:
#   torch==2.13.0 first (CPU), then verl --no-deps and the few small packages its import needs,
#   then this project --no-deps. Without ray the tests install a stub `ray` module themselves.
# Usage: bash scripts/crosscheck_verl.sh        (re-runs reuse the venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV_VERL:-.venv-verl}
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
STAMP="$VENV/.installed-2"   # bump when the package list changes: an older venv gets the new packages
if [ ! -f "$STAMP" ]; then
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q torch==2.13.0
  "$PY" -m pip install -q --no-deps "verl==0.9.1" || "$PY" -m pip install -q --no-deps verl
  "$PY" -m pip install -q omegaconf tensordict codetiming numpy packaging pyyaml pytest sympy "transformers<5.11" \
      hydra-core dill pybind11 orjson || true
  # what verl's actor loss (verl.workers.utils.losses) and its engine workers import
  "$PY" -m pip install -q datasets pillow psutil fastapi uvicorn || true
  "$PY" -m pip install -q ray || true   # optional: only the install() test needs the real engine workers
  "$PY" -m pip install -q --no-deps -e .
  touch "$STAMP"
fi
"$PY" -m pip list 2>/dev/null | grep -E "^(torch|verl|transformers) " || true
exec "$PY" -m pytest -q -p no:cacheprovider tests/crosscheck/test_verl_crosscheck.py \
    tests/crosscheck/test_verl_integration.py -rs "$@"
