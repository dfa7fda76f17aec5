"""Experiment configuration: dataclasses validated on creation, round-trippable to YAML.

One YAML file describes a whole experiment (``xrfed run CONFIG.yaml``): the scenario, the devices (profile,
tasks, LoRA rank, modality dropout), the model preset and tuning method, the coordination paradigm, the
aggregator, the rounds, differential privacy, continual-learning mitigation, the executor, and the seed.
Every error names the field path, the value and what is allowed, e.g.::

    config field 'rounds.paradigm': unknown value (got 'star'); allowed: ['centralized', 'semi', 'decentralized']
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = [
    "PARADIGMS",
    "TUNING_METHODS",
    "DeviceConfig",
    "AggregatorConfig",
    "DPConfig",
    "ContinualConfig",
    "RoundsConfig",
    "ExperimentConfig",
    "load_config",
]

PARADIGMS = ("centralized", "semi", "decentralized")
TUNING_METHODS = ("lora", "adapter", "prompt")
CONTINUAL_METHODS = ("none", "ewc", "replay")
EXECUTORS = ("local", "ray")


def _positive(path: str, v: float, *, allow_zero: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v >= 0 if allow_zero
                                                                                           else v > 0)
    if not ok:
        raise ConfigError(path, "must be a number >= 0" if allow_zero else "must be a positive number", value=v)


def _fraction(path: str, v: float, *, allow_zero: bool = False) -> None:
    _positive(path, v, allow_zero=True)
    if v > 1 or (v == 0 and not allow_zero):
        raise ConfigError(path, "must be in (0, 1]" if not allow_zero else "must be in [0, 1]", value=v)


def _choice(path: str, v: str, allowed: tuple[str, ...]) -> None:
    if v not in allowed:
        raise ConfigError(path, "unknown value", value=v, allowed=list(allowed))


@dataclass
class DeviceConfig:
    """One device in the experiment: its id, profile (``bridge/data/devices.yaml``), tasks and LoRA rank.

    ``avatar`` names the scenario avatar wearing it (default: the device id); the config's ``profile`` replaces
    the device the scenario gives that avatar, so one scene serves several hardware mixes.

    ``rank`` None = the experiment's default rank; a smaller rank for low-memory devices is the hardware
    heterogeneity switch. ``modality_dropout`` is the probability per step that each modality is absent.
    """

    id: str
    profile: str
    tasks: list[str] = field(default_factory=list)
    rank: int | None = None
    modality_dropout: float = 0.0
    avatar: str | None = None

    def validate(self, where: str) -> None:
        from bridge.devices import device_names
        from bridge.tasks import task_names

        if not self.id or not isinstance(self.id, str):
            raise ConfigError(f"{where}.id", "must be a non-empty string", value=self.id)
        _choice(f"{where}.profile", self.profile, device_names())
        for t in self.tasks:
            _choice(f"{where}.tasks", t, task_names())
        from bridge.devices import get_device
        from bridge.tasks import get_task

        mods = set(get_device(self.profile).modalities)
        for t in self.tasks:
            if not mods & set(get_task(t).modalities):
                raise ConfigError(f"{where}.tasks", f"{self.profile} has none of the modalities that carry {t!r}",
                                  value=t, allowed=sorted(get_task(t).modalities))
        if self.rank is not None and (not isinstance(self.rank, int) or self.rank < 1):
            raise ConfigError(f"{where}.rank", "must be an integer >= 1", value=self.rank)
        _fraction(f"{where}.modality_dropout", self.modality_dropout, allow_zero=True)


@dataclass
class AggregatorConfig:
    """Aggregation strategy by registry name, its options, and modality-/task-aware partial aggregation."""

    name: str = "fedavg"
    options: dict[str, Any] = field(default_factory=dict)
    partial: bool = True

    def validate(self, where: str) -> None:
        from .strategies import make_strategy, strategy_names

        _choice(f"{where}.name", self.name, strategy_names())
        make_strategy(self.name, partial=self.partial, **self.options)


@dataclass
class DPConfig:
    """Client-level DP: clip each update to ``clip_norm``, Gaussian noise ``noise_multiplier * clip_norm``."""

    enabled: bool = False
    clip_norm: float = 1.0
    noise_multiplier: float = 1.0
    delta: float = 1e-5

    def validate(self, where: str) -> None:
        _positive(f"{where}.clip_norm", self.clip_norm)
        _positive(f"{where}.noise_multiplier", self.noise_multiplier, allow_zero=True)
        if not 0 < self.delta < 1:
            raise ConfigError(f"{where}.delta", "must be in (0, 1)", value=self.delta)


@dataclass
class ContinualConfig:
    """Forgetting mitigation during local training across phases: none, EWC (strength) or replay (capacity)."""

    method: str = "none"
    ewc_strength: float = 100.0
    replay_capacity: int = 64

    def validate(self, where: str) -> None:
        _choice(f"{where}.method", self.method, CONTINUAL_METHODS)
        _positive(f"{where}.ewc_strength", self.ewc_strength, allow_zero=True)
        if not isinstance(self.replay_capacity, int) or self.replay_capacity < 1:
            raise ConfigError(f"{where}.replay_capacity", "must be an integer >= 1", value=self.replay_capacity)


@dataclass
class RoundsConfig:
    """How rounds run: paradigm, participation, deadlines, D2D, executor.

    * ``availability``: probability a device is online in a round; ``participation``: fraction of the online,
      charged devices sampled to train; ``min_battery_frac``: devices below this battery fraction sit out.
    * ``deadline_s``: simulated seconds a device may take (compute from its profile's GFLOP/s plus uplink);
      later updates are dropped and counted as missed. None = wait for everyone.
    * ``radio_range_m``: D2D link range between avatars (None = the scenario's); ``max_cluster_size`` splits
      large components; ``clusters`` gives clusters explicitly (lists of device ids) instead.
    * ``d2d_rounds``: consensus steps inside a cluster (semi); ``gossip_steps``: steps per round (decentralized).
    """

    paradigm: str = "centralized"
    rounds: int = 5
    local_steps: int = 10
    participation: float = 1.0
    availability: float = 1.0
    min_battery_frac: float = 0.05
    deadline_s: float | None = None
    radio_range_m: float | None = None
    max_cluster_size: int | None = None
    clusters: list[list[str]] | None = None
    d2d_rounds: int = 3
    gossip_steps: int = 5
    executor: str = "local"

    def validate(self, where: str) -> None:
        _choice(f"{where}.paradigm", self.paradigm, PARADIGMS)
        _choice(f"{where}.executor", self.executor, EXECUTORS)
        for name in ("rounds", "local_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{where}.{name}", "must be an integer >= 1", value=v)
        for name in ("d2d_rounds", "gossip_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ConfigError(f"{where}.{name}", "must be an integer >= 0", value=v)
        _fraction(f"{where}.participation", self.participation)
        _fraction(f"{where}.availability", self.availability)
        _fraction(f"{where}.min_battery_frac", self.min_battery_frac, allow_zero=True)
        if self.deadline_s is not None:
            _positive(f"{where}.deadline_s", self.deadline_s)
        if self.radio_range_m is not None:
            _positive(f"{where}.radio_range_m", self.radio_range_m)
        if self.max_cluster_size is not None and (not isinstance(self.max_cluster_size, int)
                                                  or self.max_cluster_size < 1):
            raise ConfigError(f"{where}.max_cluster_size", "must be an integer >= 1", value=self.max_cluster_size)


@dataclass
class ExperimentConfig:
    """A whole experiment.

    ``scenario`` is a scenario name or YAML path (``bridge.scenario.load_scenario``); ``episode_steps`` how many
    scene steps are recorded per device per phase; ``phases`` how many consecutive segments the rounds are split
    into (lighting phases of the scenario's schedule and task-script segments: the temporal dimension);
    ``personal_adapters`` gives every device a local adapter that never leaves it (the personalization switch);
    ``lora_rank`` is the default rank, overridden per device by ``devices[i].rank``.
    """

    name: str
    scenario: str = "default"
    devices: list[DeviceConfig] = field(default_factory=list)
    model_preset: str = "tiny"
    tuning: str = "lora"
    lora_rank: int = 4
    lora_alpha: float = 8.0
    personal_adapters: bool = True
    episode_steps: int = 240
    phases: int = 2
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    rounds: RoundsConfig = field(default_factory=RoundsConfig)
    dp: DPConfig = field(default_factory=DPConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    seed: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError("name", "must be a non-empty string", value=self.name)
        if len(self.devices) < 1:
            raise ConfigError("devices", "at least one device is required")
        ids = [d.id for d in self.devices]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ConfigError("devices", "device ids must be unique", value=dup)
        for i, d in enumerate(self.devices):
            d.validate(f"devices[{i}]")
        _choice("tuning", self.tuning, TUNING_METHODS)
        if not isinstance(self.lora_rank, int) or self.lora_rank < 1:
            raise ConfigError("lora_rank", "must be an integer >= 1", value=self.lora_rank)
        _positive("lora_alpha", self.lora_alpha)
        for name in ("episode_steps", "phases"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(name, "must be an integer >= 1", value=v)
        self.aggregator.validate("aggregator")
        self.rounds.validate("rounds")
        self.dp.validate("dp")
        self.continual.validate("continual")
        if self.rounds.clusters is not None:
            flat = [i for c in self.rounds.clusters for i in c]
            unknown = sorted(set(flat) - set(ids))
            if unknown:
                raise ConfigError("rounds.clusters", "names devices that do not exist", value=unknown, allowed=ids)
            if len(flat) != len(set(flat)):
                raise ConfigError("rounds.clusters", "a device may be in one cluster only", value=self.rounds.clusters)
        if self.dp.enabled and self.aggregator.name not in ("fedavg", "fedit"):
            raise ConfigError("aggregator.name", "differential privacy sums clipped updates, so it needs an "
                              "averaging aggregator", value=self.aggregator.name, allowed=["fedavg", "fedit"])
        if self.dp.enabled and self.rounds.paradigm == "decentralized":
            raise ConfigError("dp.enabled", "client-level DP needs a server that adds the noise; the decentralized "
                              "paradigm has none", value=True, allowed=["centralized", "semi"])
        if self.rounds.paradigm == "decentralized" and self.aggregator.name not in ("fedavg", "fedit"):
            raise ConfigError("aggregator.name", "the decentralized paradigm averages by D2D consensus",
                              value=self.aggregator.name, allowed=["fedavg", "fedit"])

    # -- serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ExperimentConfig:
        return _build(cls, raw, "")

    @classmethod
    def from_yaml(cls, text: str) -> ExperimentConfig:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError("<file>", f"not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError("<file>", "must be a mapping at the top level", value=type(raw).__name__)
        return cls.from_dict(raw)


def _build(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses; unknown keys are errors."""
    if not isinstance(raw, dict):
        raise ConfigError(where or "<root>", "must be a mapping", value=raw)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        raise ConfigError(f"{where}{unknown[0]}", "unknown field", allowed=names)
    kwargs: dict[str, Any] = {}
    for k, v in raw.items():
        kwargs[k] = _convert(hints[k], v, f"{where}{k}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(where.rstrip(".") or "<root>", str(exc)) from None


def _convert(tp: Any, v: Any, where: str) -> Any:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, v, where + ".")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if v is None else _convert(args[0], v, where)
    if origin is list:
        if not isinstance(v, list):
            raise ConfigError(where, "must be a list", value=v)
        (item,) = typing.get_args(tp)
        return [_convert(item, x, f"{where}[{i}]") for i, x in enumerate(v)]
    if tp is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    return v


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("<file>", "no such config file", value=str(p))
    return ExperimentConfig.from_yaml(p.read_text())
