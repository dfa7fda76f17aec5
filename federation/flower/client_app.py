"""An xrfed device as a Flower ``ClientApp`` (Message API: ``@app.query``, ``@app.train``, ``@app.evaluate``).

One SuperNode (or one simulated node) hosts one xrfed device: its profile, tasks, data partition and tuning method,
built by a factory -- the real ``agents.agent.DeviceAgent`` on the experiment's recorded scene data
(``devices = "agents"``, :func:`federation.agent_client.build_client_factories`) or the synthetic workload of
:mod:`federation.synthetic` (``devices = "synthetic"``: tiny LoRA model, Gaussian-class data, for tests and
benchmarks). Which device a node hosts comes from its node config: ``device-id`` (``flower-supernode --node-config
"device-id='ava'"``) or, on the simulation engine, ``partition-id`` (the index into the config's device list).

* ``query``: the device's static facts (id, profile, modalities, tasks, LoRA scale, personal modules) and its
  starting *shared* tensors, from which the strategy forms the common starting state (as
  :meth:`federation.rounds.RoundEngine.initial_sync` does).
* ``train``: installs the received cut of the global model (unless told the device still runs what it trained),
  switches to the round's phase, trains ``xrfed.local-steps`` steps with the round's seed and replies with its
  shared tensors -- or, under client-level DP, with its clipped (and, in local mode, noised) common-space delta --
  and the Table-6 training figures (samples, loss, FLOPs, wall time, storage).
* ``evaluate``: installs the broadcast and evaluates the model the device runs (global shared tensors + personal
  modules) and the global model alone, on its held-out data of the phase.

Personal tensors never leave the device: replies carry ``shared_state()`` only (never ``personal.*``, never the
frozen base), and the device's whole state between messages stays in the node's ``Context.state``, which Flower
keeps on the node. A live copy of the device is cached per process (validated by a version counter kept in the
context), so a node that is served by several simulation workers always resumes from its own last state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..client import Client
from ..config import ExperimentConfig, load_config
from ..errors import ConfigError
from .records import ARRAYS, CONFIG, DEVICE, from_array_record, spec_of, to_array_record

__all__ = ["make_client_app", "device_factories", "experiment_config", "DEVICE_KINDS"]

#: how a ClientApp builds its device: the real agents on recorded scene data, or the synthetic workload
DEVICE_KINDS = ("agents", "synthetic")

Factories = Mapping[str, Callable[[], Client]]

_STATE, _RECEIVED, _META = "xrfed.state", "xrfed.received", "xrfed.meta"
_LIVE: dict[tuple[int, int], tuple[int, Any]] = {}  # (run id, node id) -> (version, device)
_LIVE_LOCK = threading.Lock()
_FACTORY_CACHE: dict[tuple[str, int | None, str], dict[str, Callable[[], Client]]] = {}


def device_factories(cfg: ExperimentConfig, kind: str = "agents") -> dict[str, Callable[[], Client]]:
    """Per device id, a factory building the config's device: ``agents`` (the experiment's DeviceAgents on its
    recorded data, as ``xrfed run`` builds them) or ``synthetic`` (:class:`~federation.synthetic.SyntheticClient`
    with the device's profile, tasks, rank and alpha; modalities = the profile's that carry its tasks)."""
    if kind == "agents":
        from ..agent_client import build_client_factories

        return build_client_factories(cfg)
    if kind != "synthetic":
        raise ConfigError("devices", "unknown device kind", value=kind, allowed=list(DEVICE_KINDS))
    from bridge.devices import get_device
    from bridge.tasks import get_task

    from ..synthetic import SyntheticClient

    out: dict[str, Callable[[], Client]] = {}
    for i, dev in enumerate(cfg.devices):
        tasks = tuple(dev.tasks) or ("object_recognition",)
        carried = {m for t in tasks for m in get_task(t).modalities}
        mods = tuple(m for m in get_device(dev.profile).modalities if m in carried)
        rank = dev.rank or cfg.lora_rank

        def make(dev_id: str = dev.id, profile: str = dev.profile, mods: tuple[str, ...] = mods,
                 tasks: tuple[str, ...] = tasks, rank: int = rank, seed: int = i) -> Client:
            return SyntheticClient(dev_id, profile, modalities=mods, tasks=tasks, rank=rank, alpha=cfg.lora_alpha,
                                   seed=seed)

        out[dev.id] = make
    return out


def experiment_config(path: str | Path, seed: int | None = None) -> ExperimentConfig:
    """The experiment of a run config: a YAML path (a relative one not found from the working directory is looked
    up in xrfed's ``configs/``); a multi-seed config runs ``seed`` (default: its first seed)."""
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists():
        shipped = Path(__file__).resolve().parents[2] / "configs" / p
        if shipped.exists():
            p = shipped
    cfg = load_config(p)
    if cfg.seeds is not None:
        cfg = cfg.with_seed(cfg.seeds[0] if seed is None else int(seed))
    elif seed is not None and int(seed) != cfg.seed:
        cfg = cfg.with_seed(int(seed))
    return cfg


def _factories_from_run_config(run_config: Mapping[str, Any]) -> dict[str, Callable[[], Client]]:
    """The devices of the run config's experiment (``config`` = a YAML path, ``devices`` = agents | synthetic,
    optional ``seed``)."""
    path = run_config.get("config")
    if not isinstance(path, str) or not path:
        raise ConfigError("run_config.config", "must name the experiment's YAML file", value=path)
    kind = str(run_config.get("devices", "agents"))
    raw = run_config.get("seed")
    seed = None if raw is None or raw == -1 else _int(run_config, "seed")
    key = (str(path), seed, kind)
    if key not in _FACTORY_CACHE:
        _FACTORY_CACHE[key] = device_factories(experiment_config(path, seed), kind)
    return _FACTORY_CACHE[key]


def _device_id(context: Any, ids: list[str]) -> str:
    """The device this node hosts: node config ``device-id``, else ``partition-id`` as an index into ``ids``."""
    nc = context.node_config
    if "device-id" in nc:
        d = str(nc["device-id"])
        if d not in ids:
            raise ConfigError("node_config.device-id", "not a device of the experiment", value=d, allowed=ids)
        return d
    if "partition-id" in nc:
        i = int(nc["partition-id"])
        if not 0 <= i < len(ids):
            raise ConfigError("node_config.partition-id", f"expected 0..{len(ids) - 1} (the experiment's devices)",
                              value=i)
        return ids[i]
    raise ConfigError("node_config", "give the node 'device-id' (or 'partition-id' on the simulation engine)",
                      value=dict(nc))


def _local_state_record(tensors: Mapping[str, torch.Tensor]) -> Any:
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(t.detach().cpu().contiguous().numpy()) for k, t in tensors.items()})


def _local_state(record: Any) -> dict[str, torch.Tensor]:
    """The node's own saved tensors (written by this module on this node: trusted)."""
    import numpy as np

    return {k: torch.from_numpy(np.array(record[k].numpy(), copy=True)) for k in record.keys()}


class _Host:
    """The device behind one node: built or restored from the node's context, saved back after every message."""

    def __init__(self, factories: Factories | None, torch_threads: int | None):
        self.factories, self.torch_threads = factories, torch_threads

    def _factories(self, context: Any) -> Factories:
        return self.factories if self.factories is not None else _factories_from_run_config(context.run_config)

    def open(self, context: Any) -> tuple[str, Any]:
        if self.torch_threads is not None:
            torch.set_num_threads(self.torch_threads)
        facts = self._factories(context)
        dev_id = _device_id(context, list(facts))
        meta = context.state.config_records.get(_META)
        version = int(meta["version"]) if meta is not None else 0
        key = (int(context.run_id), int(context.node_id))
        with _LIVE_LOCK:
            live = _LIVE.get(key)
        if live is not None and live[0] == version and getattr(live[1], "device_id", dev_id) == dev_id:
            return dev_id, live[1]
        device = facts[dev_id]()
        if meta is not None:  # restore: the last installed shared state (the device's global model), then all
            if _RECEIVED in context.state.array_records:
                device.load_shared_state(_local_state(context.state.array_records[_RECEIVED]))
            device.load_state_dict(_local_state(context.state.array_records[_STATE]))
            if "phase" in meta:
                device.set_phase(int(meta["phase"]))
        return dev_id, device

    def save(self, context: Any, dev_id: str, device: Any, received: Mapping[str, torch.Tensor] | None,
             phase: int | None) -> None:
        from flwr.app import ConfigRecord

        meta = context.state.config_records.get(_META)
        version = (int(meta["version"]) if meta is not None else 0) + 1
        old_phase = meta.get("phase") if meta is not None else None
        context.state[_STATE] = _local_state_record(device.state_dict())
        if received is not None:
            context.state[_RECEIVED] = _local_state_record(received)
        new_meta: dict[str, Any] = {"version": version, "device-id": dev_id}
        if phase is not None:
            new_meta["phase"] = int(phase)
        elif isinstance(old_phase, int):
            new_meta["phase"] = old_phase
        context.state[_META] = ConfigRecord(new_meta)
        with _LIVE_LOCK:
            _LIVE[(int(context.run_id), int(context.node_id))] = (version, device)


def _int(record: Any, key: str, default: int | None = None) -> int:
    """An integer entry of a config record; a missing or non-integer one is named."""
    v = record.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"message.config.{key}", "expected an integer", value=v)
    return int(v)


def _train(host: _Host, msg: Any, context: Any) -> Any:
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

    dev_id, device = host.open(context)
    cfg: ConfigRecord = msg.content.config_records[CONFIG]
    own = device.shared_state()
    received = from_array_record(msg.content.array_records[ARRAYS], spec_of(own), who=f"device {dev_id!r}",
                                 exact=False)
    if bool(cfg.get("xrfed.install", True)) and received:
        device.load_shared_state(received)
    phase = _int(cfg, "xrfed.phase", 0)
    device.set_phase(phase)
    steps = _int(cfg, "xrfed.local-steps", 1)
    if not 1 <= steps <= 1_000_000:
        raise ConfigError("message.config.xrfed.local-steps", "expected 1..1000000", value=steps)
    seed = _int(cfg, "xrfed.seed") if "xrfed.seed" in cfg else None
    rep = device.local_train(steps=steps, seed=seed)
    upd = device.shared_state()
    metrics: dict[str, Any] = {"num-examples": int(rep.num_samples), "train-loss": float(rep.loss),
                               "flops": float(rep.flops), "compute-gflop": float(rep.compute_gflop),
                               "train-wall-s": float(rep.wall_time_s),
                               "payload-bytes": int(sum(t.numel() * t.element_size() for t in upd.values()))}
    if rep.storage_bytes is not None:
        metrics["storage-bytes"] = int(rep.storage_bytes)
    out = upd
    if "xrfed.dp-clip-norm" in cfg:  # client-level DP: the clipped (noised) common-space delta leaves, not factors
        out, norm = _dp_release(device, upd, {k: received.get(k, own[k]) for k in upd}, cfg)
        metrics["update-norm"] = norm
    host.save(context, dev_id, device, received if received else None, phase)
    reply = RecordDict({ARRAYS: to_array_record(out), "metrics": MetricRecord(metrics)})
    return Message(content=reply, reply_to=msg)


def _dp_release(device: Any, upd: Mapping[str, torch.Tensor], received: Mapping[str, torch.Tensor],
                cfg: Any) -> tuple[dict[str, torch.Tensor], float]:
    """The device's release under client-level DP (:meth:`federation.strategies.DifferentialPrivacy.device_release`)."""
    from ..strategies import DifferentialPrivacy, make_strategy

    dp = DifferentialPrivacy(make_strategy("fedavg", lora=str(cfg.get("xrfed.lora-space", "product"))),
                             clip_norm=float(cfg["xrfed.dp-clip-norm"]),
                             noise_multiplier=float(cfg["xrfed.dp-noise-multiplier"]),
                             mode=str(cfg.get("xrfed.dp-mode", "central")))
    scale = float(device.lora_scale)
    new, old = dp.encode(upd, scale), dp.encode(received, scale)
    gen = torch.Generator().manual_seed(_int(cfg, "xrfed.dp-seed", 0))
    return dp.device_release({k: v - old[k] for k, v in new.items()}, gen)


def _evaluate(host: _Host, msg: Any, context: Any) -> Any:
    from flwr.app import Message, MetricRecord, RecordDict

    dev_id, device = host.open(context)
    cfg = msg.content.config_records.get(CONFIG, {})
    received = None
    if ARRAYS in msg.content.array_records and len(msg.content.array_records[ARRAYS]):
        received = from_array_record(msg.content.array_records[ARRAYS], spec_of(device.shared_state()),
                                     who=f"device {dev_id!r}", exact=False)
        device.load_shared_state(received)
    phase = _int(cfg, "xrfed.phase") if "xrfed.phase" in cfg else None
    if phase is not None:
        device.set_phase(phase)
    ev = device.evaluate()
    gev = device.evaluate_global() if getattr(device, "has_personal", True) else ev
    m: dict[str, Any] = {"num-examples": int(ev.num_samples), "accuracy": float(ev.mean_accuracy),
                         "balanced-accuracy": float(ev.macro_balanced_accuracy),
                         "global-accuracy": float(gev.mean_accuracy),
                         "global-balanced-accuracy": float(gev.macro_balanced_accuracy),
                         "latency-ms": float(ev.latency_ms), "loss": float(ev.loss)}
    for t, v in ev.accuracy.items():
        m[f"accuracy.{t}"] = float(v)
    for t, v in ev.balanced_accuracy.items():
        m[f"balanced-accuracy.{t}"] = float(v)
    host.save(context, dev_id, device, received, phase)
    return Message(content=RecordDict({"metrics": MetricRecord(m)}), reply_to=msg)


def _query(host: _Host, msg: Any, context: Any) -> Any:
    from flwr.app import ConfigRecord, Message, RecordDict

    dev_id, device = host.open(context)
    facts = ConfigRecord({"device-id": dev_id, "profile": device.profile.name,
                          "modalities": list(device.modalities), "tasks": list(device.tasks),
                          "lora-scale": float(device.lora_scale),
                          "personal": bool(getattr(device, "has_personal", True))})
    shared = device.shared_state()
    host.save(context, dev_id, device, None, None)
    return Message(content=RecordDict({DEVICE: facts, ARRAYS: to_array_record(shared)}), reply_to=msg)


def make_client_app(factories: Factories | None = None, *, config: ExperimentConfig | str | Path | None = None,
                    devices: str = "agents", torch_threads: int | None = 1) -> Any:
    """A Flower ``ClientApp`` hosting one xrfed device per node.

    The devices come from ``factories`` (device id -> factory), else from ``config`` (an
    :class:`~federation.config.ExperimentConfig` or YAML path) built as ``devices`` (agents | synthetic), else --
    at message time -- from the run config's ``config`` and ``devices`` keys (``flwr run``). A config that names an
    unknown device profile, task or device kind is refused here, with the field. ``torch_threads`` (default 1, as
    ``xrfed run``) caps torch's threads where the device trains: one thread makes every float reduction run in the
    same order everywhere, so Flower and xrfed's runner compute identical figures.
    """
    from flwr.clientapp import ClientApp

    if factories is None and config is not None:
        cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
        factories = device_factories(cfg, devices)
    host = _Host(factories, torch_threads)
    app = ClientApp()

    @app.query()
    def query(msg: Any, context: Any) -> Any:
        return _query(host, msg, context)

    @app.train()
    def train(msg: Any, context: Any) -> Any:
        return _train(host, msg, context)

    @app.evaluate()
    def evaluate(msg: Any, context: Any) -> Any:
        return _evaluate(host, msg, context)

    return app

