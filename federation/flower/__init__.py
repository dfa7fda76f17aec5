"""xrfed on Flower (flwr 1.42, Message API): xrfed devices as ClientApps, xrfed aggregation as Flower strategies,
a ServerApp for an experiment's centralized paradigm, on Flower's simulation and deployment engines.

* :func:`make_client_app` (:mod:`.client_app`): one xrfed device per node (profile, tasks, data, tuning method);
  personal tensors stay on the node;
* :class:`XrfedStrategy`, :class:`XrfedDifferentialPrivacy` (:mod:`.strategy`): exact heterogeneous-rank LoRA,
  modality-/task-aware partial aggregation, the robust aggregators, client-level DP, xrfed's per-round figures;
* :func:`make_server_app`, :func:`run_simulation` (:mod:`.server_app`); :class:`LocalFederation` (:mod:`.deploy`):
  a SuperLink and SuperNodes as local processes for the deployment engine.

Flower is the optional ``flower`` extra: nothing here is imported by :mod:`federation`, and these names import
Flower only when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["make_client_app", "device_factories", "XrfedStrategy", "XrfedDifferentialPrivacy",
           "strategy_from_config", "make_server_app", "run_simulation", "LocalFederation", "FlowerError"]

_WHERE = {"make_client_app": "client_app", "device_factories": "client_app", "XrfedStrategy": "strategy",
          "XrfedDifferentialPrivacy": "strategy", "strategy_from_config": "strategy",
          "make_server_app": "server_app", "run_simulation": "server_app", "LocalFederation": "deploy",
          "FlowerError": "records"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
