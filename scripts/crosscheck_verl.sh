#!/usr/bin/env bash
# Cross-check clip_cov / kl_cov against verl's compute_policy_loss_clip_cov / _kl_cov.
# verl pins an older transformers, so it gets its own venv (.venv-verl), never the main one:
#   torch==2.13.0 first (CPU), then verl --no-deps and the few small packages its import needs,
#   then this project --no-deps. A stub `ray` module is installed by the test itself.
# Usage: bash scripts/crosscheck_verl.sh        (re-runs reuse the venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV_VERL:-.venv-verl}
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
if [ ! -f "$VENV/.installed" ]; then
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q torch==2.13.0
  "$PY" -m pip install -q --no-deps "verl==0.9.1" || "$PY" -m pip install -q --no-deps verl
  "$PY" -m pip install -q omegaconf tensordict codetiming numpy packaging pyyaml pytest sympy "transformers<5.11" \
      hydra-core dill pybind11 orjson || true
  "$PY" -m pip install -q --no-deps -e .
  touch "$VENV/.installed"
fi
"$PY" -m pip list 2>/dev/null | grep -E "^(torch|verl|transformers) " || true
exec "$PY" -m pytest -q -p no:cacheprovider tests/crosscheck/test_verl_crosscheck.py -rs "$@"
