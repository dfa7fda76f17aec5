"""The ServerApp running an xrfed experiment's centralized paradigm, and the simulation-engine entry point.

:func:`make_server_app` builds a Flower ``ServerApp`` whose main runs :func:`~federation.flower.strategy.
strategy_from_config` over the grid for the config's rounds: the experiment comes from the ``config`` argument or,
under ``flwr run``, from the run config (``config`` = the experiment YAML; ``out`` = a JSON file the round records
are written to; ``node-wait-s`` = how long to wait for the devices' nodes). :func:`run_simulation` runs an
experiment on Flower's simulation engine (Ray) in this process and returns the round records -- the same
:class:`~federation.rounds.RoundRecord` lines ``xrfed run`` writes to ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bridge.remote import RAY_LOOPBACK_ENV

from ..client import Client
from ..config import ExperimentConfig, load_config
from ..errors import ConfigError
from ..rounds import RoundRecord
from .records import FlowerError

__all__ = ["make_server_app", "run_simulation", "write_records", "SimulationResult"]

#: Ray's switch between multi-node clusters and a loopback-only node (see federation.client): "0" keeps Flower's
#: simulation engine on 127.0.0.1


def write_records(path: str | Path, records: list[RoundRecord], strategy: Any = None) -> None:
    """The round records as JSON (``{"rounds": [...], "devices": [...], "uplink_keys": {...}}``), written to a
    temporary name and renamed into place."""
    p = Path(path)
    doc: dict[str, Any] = {"rounds": [r.to_json() for r in records]}
    if strategy is not None:
        inner = getattr(strategy, "strategy", strategy)
        doc["devices"] = list(inner.ids)
        doc["uplink_keys"] = {d: sorted(k) for d, k in inner.uplink_keys.items()}
    tmp = p.with_name(p.name + ".partial")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, p)


def _config_from_run(run_config: Mapping[str, Any]) -> ExperimentConfig:
    from .client_app import experiment_config

    path = run_config.get("config")
    if not isinstance(path, str) or not path:
        raise ConfigError("run_config.config", "must name the experiment's YAML file", value=path)
    seed = run_config.get("seed")
    return experiment_config(path, None if seed is None or seed == -1 else int(seed))


def make_server_app(config: ExperimentConfig | str | Path | None = None, *,
                    sink: Callable[[Any], None] | None = None, node_wait_s: float | None = None) -> Any:
    """A Flower ``ServerApp`` running ``config``'s centralized rounds with xrfed's strategy.

    ``sink(strategy)`` is called with the finished strategy (its ``records``) when the app runs in this process
    (the simulation engine); under ``flwr run`` set the run config's ``out`` to get the records as a file."""
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.serverapp import ServerApp

    from .strategy import strategy_from_config

    fixed = None
    if config is not None:
        fixed = config if isinstance(config, ExperimentConfig) else load_config(config)
    app = ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        cfg = fixed if fixed is not None else _config_from_run(context.run_config)
        wait = node_wait_s if node_wait_s is not None else float(context.run_config.get("node-wait-s", 120.0))
        strategy = strategy_from_config(cfg, node_wait_s=wait)
        out = context.run_config.get("out")
        strategy.start(grid=grid, initial_arrays=ArrayRecord(), num_rounds=cfg.rounds.rounds,
                       timeout=float(context.run_config.get("round-timeout-s", 600.0)),
                       train_config=ConfigRecord(), evaluate_config=ConfigRecord())
        if isinstance(out, str) and out:
            write_records(out, strategy.records, strategy)
        if sink is not None:
            sink(strategy)

    return app


class SimulationResult:
    """What :func:`run_simulation` hands back: the strategy (with ``records``, ``global_state``, ``uplink_keys``)
    and the wall time of the whole simulation (s), Ray's start included."""

    def __init__(self, strategy: Any, wall_s: float):
        self.strategy, self.wall_s = strategy, wall_s

    @property
    def records(self) -> list[RoundRecord]:
        return list(self.strategy.records)

    @property
    def inner(self) -> Any:
        return getattr(self.strategy, "strategy", self.strategy)


def run_simulation(config: ExperimentConfig | str | Path, *, devices: str = "agents",
                   factories: Mapping[str, Callable[[], Client]] | None = None, num_cpus: int = 2,
                   client_cpus: float = 1.0, verbose: bool = False) -> SimulationResult:
    """Run ``config``'s centralized paradigm on Flower's simulation engine (one simulated node per device, Ray
    actors with ``client_cpus`` each out of ``num_cpus``) in this process; returns the finished strategy.

    Devices are built by ``factories`` or as ``devices`` (agents | synthetic). Ray is started for the simulation
    and shut down after it (Flower's engine does both), bound to loopback."""
    import logging
    import time
    import warnings

    from flwr.simulation import run_simulation as flwr_run_simulation

    from .client_app import make_client_app

    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    if cfg.seeds is not None:
        raise ConfigError("seeds", "the Flower simulation runs one seed; pick one with ExperimentConfig.with_seed",
                          value=cfg.seeds)
    try:
        import ray
    except ImportError as exc:
        raise FlowerError("Flower's simulation engine needs Ray: pip install 'xrfed[flower]'") from exc
    if ray.is_initialized():
        raise FlowerError("Ray is already running in this process; Flower's simulation engine starts (and stops) "
                          "its own: shut the other one down first")
    os.environ.setdefault(RAY_LOOPBACK_ENV, "0")
    done: list[Any] = []
    server = make_server_app(cfg, sink=done.append, node_wait_s=60.0)
    client = make_client_app(factories, config=cfg if factories is None else None, devices=devices)
    # address "local": a Ray of its own, never a cluster another process started on this machine (ray.init()
    # without an address joins the one recorded in /tmp/ray and then refuses num_cpus)
    backend = {"init_args": {"address": "local", "num_cpus": int(num_cpus), "log_to_driver": verbose,
                             "logging_level": logging.INFO if verbose else logging.ERROR},
               "client_resources": {"num_cpus": float(client_cpus), "num_gpus": 0.0}}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flwr_run_simulation(server_app=server, client_app=client, num_supernodes=len(cfg.devices),
                            backend_config=backend, verbose_logging=verbose)  # type: ignore[arg-type]
    wall = time.perf_counter() - t0
    if not done:
        raise FlowerError("the Flower simulation ended without finishing its rounds (see Flower's log above)")
    return SimulationResult(done[0], wall)
