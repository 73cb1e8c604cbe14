# make setup       create .venv and install torch 2.13 (CPU wheel) first, then the project
# make quickstart  build the tiny base model if needed and run GRPO on it (~5-10 min on 2 cores)
# make test        the test suite (fast tests; `-m slow` for training-level ones)
# make crosscheck  Clip-Cov / KL-Cov against verl's implementation, and every zoo_<preset> verl loss
#                  (zoo.integrations.verl) against our trainer, in a separate venv
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup quickstart test test-slow crosscheck clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

quickstart: setup
	rm -rf runs/quickstart  # a fresh demo run each time; the base model in runs/base is reused
	$(VENV)/bin/zoo train --config configs/quickstart.yaml --out runs/quickstart

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

crosscheck:  # clip_cov / kl_cov vs verl 0.9.1, and zoo.integrations.verl vs our trainer, in its own venv (.venv-verl; verl pins older transformers)
	bash scripts/crosscheck_verl.sh

clean:
	rm -rf runs/smoke runs/train .pytest_cache
