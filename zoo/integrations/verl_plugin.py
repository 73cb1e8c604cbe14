"""Imported by verl through `actor_rollout_ref.model.external_lib: zoo.integrations.verl_plugin`: registers
every `zoo_<preset>` policy loss and the actor extension (`zoo.integrations.verl.install`) in each verl
process that builds a model config (the actor workers among them). Without verl installed it does nothing."""
from __future__ import annotations

import importlib.util

from zoo.integrations.verl import install

if importlib.util.find_spec("verl") is not None:
    install()
