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
    "EvalConfig",
    "AttackConfig",
    "ATTACKS",
    "FoundationConfig",
    "DeviceConfig",
    "AggregatorConfig",
    "DPConfig",
    "ContinualConfig",
    "RoundsConfig",
    "ExperimentConfig",
    "load_config",
]

#: the paradigms ``xrfed demo`` compares (every registered one: ``federation.paradigms.paradigm_names()``)
PARADIGMS = ("local", "centralized", "semi", "decentralized")
TUNING_METHODS = ("lora", "adapter", "prompt")
EXECUTORS = ("local", "ray")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bool(path: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise ConfigError(path, "must be true or false (a YAML boolean, not a string or number)", value=v)


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
    """Aggregation strategy by registry name, its options, and partial aggregation: ``modality_aware`` averages an
    encoder's tensors only among devices that have its modality, ``task_aware`` a task head's only among devices
    that run the task (off: every device's copy counts, untrained ones included)."""

    name: str = "fedavg"
    options: dict[str, Any] = field(default_factory=dict)
    modality_aware: bool = True
    task_aware: bool = True

    def validate(self, where: str) -> None:
        from .strategies import strategy_names

        _choice(f"{where}.name", self.name, strategy_names())
        _bool(f"{where}.modality_aware", self.modality_aware)
        _bool(f"{where}.task_aware", self.task_aware)
        if not isinstance(self.options, dict):
            raise ConfigError(f"{where}.options", "must be a mapping", value=self.options)
        self.make()

    def make(self) -> Any:
        """The configured :class:`~federation.strategies.Strategy`."""
        from .strategies import make_strategy

        return make_strategy(self.name, modality_aware=self.modality_aware, task_aware=self.task_aware,
                             **self.options)


@dataclass
class DPConfig:
    """Client-level DP: each device clips its update to ``clip_norm`` before anything mixes it; Gaussian noise of
    standard deviation ``noise_multiplier * clip_norm`` is added on the server once per round (``mode: central``,
    DP-FedAvg) or by every device to its own release (``mode: local``: any aggregator, any paradigm)."""

    enabled: bool = False
    clip_norm: float = 1.0
    noise_multiplier: float = 1.0
    delta: float = 1e-5
    mode: str = "central"

    def validate(self, where: str) -> None:
        from .strategies import DP_MODES

        _bool(f"{where}.enabled", self.enabled)
        _choice(f"{where}.mode", self.mode, DP_MODES)
        _positive(f"{where}.clip_norm", self.clip_norm)
        _positive(f"{where}.noise_multiplier", self.noise_multiplier, allow_zero=True)
        if not 0 < self.delta < 1:
            raise ConfigError(f"{where}.delta", "must be in (0, 1)", value=self.delta)


@dataclass
class ContinualConfig:
    """Forgetting mitigation in each device's local training across phases (``agents.continual``): none, EWC
    (``ewc_strength``) or replay (``replay_capacity`` earlier steps)."""

    method: str = "none"
    ewc_strength: float = 100.0
    replay_capacity: int = 64

    def validate(self, where: str) -> None:
        from agents.continual import CONTINUAL_METHODS

        _choice(f"{where}.method", self.method, CONTINUAL_METHODS)
        _positive(f"{where}.ewc_strength", self.ewc_strength, allow_zero=True)
        if not _is_int(self.replay_capacity) or self.replay_capacity < 1:
            raise ConfigError(f"{where}.replay_capacity", "must be an integer >= 1", value=self.replay_capacity)


ATTACKS = ("none", "sign_flip", "scale", "label_flip")


@dataclass
class AttackConfig:
    """Poisoning as an experiment: a chosen set of devices misbehaves every round.

    * ``sign_flip``: the device sends its update negated (``-delta``);
    * ``scale``: the device sends its update multiplied by ``scale`` (a boosting attack);
    * ``label_flip``: the device trains on labels mapped through a fixed derangement of each task's classes.

    Attackers are ``devices`` (ids) if given, else ``round(fraction x devices)`` drawn from the seed. The attack
    acts on what the device computes, before its release (so DP clipping still applies to it)."""

    kind: str = "none"
    fraction: float = 0.0
    scale: float = 10.0
    devices: list[str] | None = None

    def validate(self, where: str) -> None:
        _choice(f"{where}.kind", self.kind, ATTACKS)
        _fraction(f"{where}.fraction", self.fraction, allow_zero=True)
        _positive(f"{where}.scale", self.scale)


@dataclass
class FoundationConfig:
    """The pretraining recipe of the foundation checkpoint the devices start from (``agents.pretrain``; built once
    and cached under ``$XRFED_CACHE``). ``scenarios`` None = the experiment's scenario (recorded with another seed,
    so no device is evaluated on pretraining data), or a list of other scenes (a foundation model from elsewhere,
    adapted to the deployment by federated personalization); ``record_steps`` scene steps per avatar and scene.
    ``checkpoint`` (a directory written by ``xrfed pretrain``) uses that checkpoint instead of the recipe."""

    checkpoint: str | None = None
    scenarios: list[str] | None = None
    steps: int = 600
    record_steps: int = 400
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0
    guard_s: float = 5.0

    def validate(self, where: str) -> None:
        _positive(f"{where}.guard_s", self.guard_s, allow_zero=True)
        for name in ("steps", "record_steps", "batch_size"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ConfigError(f"{where}.{name}", "must be an integer >= 1", value=v)
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"{where}.seed", "must be an integer >= 0", value=self.seed)
        _positive(f"{where}.learning_rate", self.learning_rate)
        if self.scenarios is not None and (not self.scenarios or not all(isinstance(x, str) and x
                                                                         for x in self.scenarios)):
            raise ConfigError(f"{where}.scenarios", "must be a non-empty list of scenario names or paths",
                              value=self.scenarios)


@dataclass
class EvalConfig:
    """How each device's recorded steps are split, per phase, into training and held-out data.

    Every phase (a consecutive segment of the device's episode) keeps its first part for training and its last
    ``test_fraction`` for evaluation, with ``guard_s`` seconds between them that belong to neither: labels
    persist for seconds (an activity, a room, a gaze dwell), so a test step right after a training step would be
    a copy of it. The run report states the split and the labels' measured persistence next to the guard.
    ``local_baseline``: also run the same experiment with local-only training (``rounds.paradigm: local``, into
    ``RUN/local-only``) and report it next to this run, with the paired difference; turn it off for studies that
    bring their own controls (``xrfed shift``, ``xrfed bench poison``) or a local-only run itself.
    """

    test_fraction: float = 0.25
    guard_s: float = 4.0
    local_baseline: bool = True

    def validate(self, where: str) -> None:
        _fraction(f"{where}.test_fraction", self.test_fraction)
        if self.test_fraction >= 1:
            raise ConfigError(f"{where}.test_fraction", "must be below 1 (some steps must be left to train on)",
                              value=self.test_fraction)
        _positive(f"{where}.guard_s", self.guard_s, allow_zero=True)
        _bool(f"{where}.local_baseline", self.local_baseline)


@dataclass
class RoundsConfig:
    """How rounds run: paradigm, participation, deadlines, D2D, executor.

    * ``availability``: probability a device is online in a round; ``participation``: fraction of the online,
      charged devices sampled to train; ``min_battery_frac``: devices below this battery fraction sit out.
    * ``deadline_s``: simulated seconds a device may take (compute from its profile's GFLOP/s plus uplink);
      later updates are dropped and counted as missed. None = wait for everyone.
    * ``radio_range_m``: D2D link range between avatars (None = the scenario's); ``max_cluster_size`` splits
      large components; ``clusters`` gives clusters explicitly (lists of device ids) instead.
    * ``cluster_aggregation`` (semi): ``tree`` sums the members' updates exactly along a spanning tree to the
      cluster's representative; ``consensus`` runs ``d2d_rounds`` steps of D2D averaging instead (approximate).
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
    cluster_aggregation: str = "tree"
    d2d_rounds: int = 3
    gossip_steps: int = 5
    executor: str = "local"

    def validate(self, where: str) -> None:
        from .paradigms import CLUSTER_AGGREGATIONS, paradigm_names

        _choice(f"{where}.paradigm", self.paradigm, paradigm_names())
        _choice(f"{where}.executor", self.executor, EXECUTORS)
        _choice(f"{where}.cluster_aggregation", self.cluster_aggregation, CLUSTER_AGGREGATIONS)
        for name in ("rounds", "local_steps"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ConfigError(f"{where}.{name}", "must be an integer >= 1", value=v)
        for name in ("d2d_rounds", "gossip_steps"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
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
    ``eval`` how each phase is split in time into training and held-out steps; ``personal_adapters`` gives
    every device personal modules that never leave it (the personalization switch): a personal prompt and, with
    ``personal_heads``, personal residual classifiers (they learn the device's label priors); ``share_all_heads`` puts every
    task head on every device (each trains its own tasks' heads; see ``aggregator.task_aware``); ``lora_rank`` is the
    default rank, overridden per device by ``devices[i].rank``; ``lora_targets`` the layers LoRA adapts (peft
    names: ``q_proj``/``v_proj`` in the shared backbone, ``fovea``/``net.0``/``proj`` in the modality encoders).

    ``seed`` derives every random stream of a run (recording, initialisation, batches, sampling, noise);
    ``seeds`` (a list) runs the experiment once per seed and reports mean and 95 % confidence intervals.
    """

    name: str
    scenario: str = "default"
    devices: list[DeviceConfig] = field(default_factory=list)
    model_preset: str = "tiny"
    tuning: str = "lora"
    lora_rank: int = 4
    lora_alpha: float = 8.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    personal_adapters: bool = True
    personal_heads: bool = True
    share_all_heads: bool = False
    episode_steps: int = 240
    phases: int = 2
    eval: EvalConfig = field(default_factory=EvalConfig)
    foundation: FoundationConfig = field(default_factory=FoundationConfig)
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    rounds: RoundsConfig = field(default_factory=RoundsConfig)
    dp: DPConfig = field(default_factory=DPConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    seed: int = 0
    seeds: list[int] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError("name", "must be a non-empty string", value=self.name)
        if not isinstance(self.devices, list) or len(self.devices) < 1:
            raise ConfigError("devices", "at least one device is required")
        ids = [d.id for d in self.devices]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ConfigError("devices", "device ids must be unique", value=dup)
        for i, d in enumerate(self.devices):
            d.validate(f"devices[{i}]")
        _choice("tuning", self.tuning, TUNING_METHODS)
        if not _is_int(self.lora_rank) or self.lora_rank < 1:
            raise ConfigError("lora_rank", "must be an integer >= 1", value=self.lora_rank)
        _positive("lora_alpha", self.lora_alpha)
        if not self.lora_targets or not all(isinstance(t, str) and t for t in self.lora_targets):
            raise ConfigError("lora_targets", "must be a non-empty list of layer names", value=self.lora_targets)
        _bool("personal_adapters", self.personal_adapters)
        _bool("personal_heads", self.personal_heads)
        _bool("share_all_heads", self.share_all_heads)
        for name in ("episode_steps", "phases"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ConfigError(name, "must be an integer >= 1", value=v)
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError("seed", "must be an integer >= 0", value=self.seed)
        if self.seeds is not None:
            if not self.seeds or not all(_is_int(x) and x >= 0 for x in self.seeds):
                raise ConfigError("seeds", "must be a non-empty list of integers >= 0", value=self.seeds)
            if len(set(self.seeds)) != len(self.seeds):
                raise ConfigError("seeds", "must not repeat a seed", value=self.seeds)
        self.eval.validate("eval")
        self.foundation.validate("foundation")
        self.aggregator.validate("aggregator")
        self.rounds.validate("rounds")
        self.dp.validate("dp")
        self.continual.validate("continual")
        self.attack.validate("attack")
        if self.attack.devices is not None:
            unknown = sorted(set(self.attack.devices) - set(ids))
            if unknown:
                raise ConfigError("attack.devices", "names devices that do not exist", value=unknown, allowed=ids)
        if self.rounds.clusters is not None:
            flat = [i for c in self.rounds.clusters for i in c]
            unknown = sorted(set(flat) - set(ids))
            if unknown:
                raise ConfigError("rounds.clusters", "names devices that do not exist", value=unknown, allowed=ids)
            if len(flat) != len(set(flat)):
                raise ConfigError("rounds.clusters", "a device may be in one cluster only", value=self.rounds.clusters)
        self._validate_combination()

    def _validate_combination(self) -> None:
        """Paradigm x aggregator x DP: what the registries say can work together."""
        from .paradigms import paradigm_class
        from .strategies import TrimmedMean, averaging_strategy_names

        paradigm = paradigm_class(self.rounds.paradigm)
        strategy = self.aggregator.make()
        if paradigm.needs_averaging and not strategy.averaging:
            raise ConfigError("aggregator.name", f"the {paradigm.name} paradigm averages by D2D consensus",
                              value=self.aggregator.name, allowed=list(averaging_strategy_names()))
        if isinstance(strategy, TrimmedMean) and len(self.devices) >= 3 and strategy.trim_at(len(self.devices)) == 0:
            raise ConfigError("aggregator.options", f"the trimmed mean trims nothing with {len(self.devices)} "
                              "devices; set trim >= 1 or a larger trim_fraction", value=self.aggregator.options)
        if not self.dp.enabled:
            return
        if not paradigm.communicates:
            raise ConfigError("dp.enabled", f"nothing leaves a device in the {paradigm.name} paradigm, there is "
                              "nothing to privatize", value=True, allowed=[False])
        if self.dp.mode == "central":
            if not paradigm.uses_server:
                raise ConfigError("dp.mode", f"central DP needs a server that adds the noise; the {paradigm.name} "
                                  "paradigm has none", value="central", allowed=["local"])
            if strategy.sensitivity(self.dp.clip_norm) is None:
                raise ConfigError("dp.mode", f"central DP noises a sum, which {self.aggregator.name!r} does not "
                                  "compute", value="central",
                                  allowed=["local"] + [f"central with {n}" for n in averaging_strategy_names()])
            if paradigm.name == "semi" and self.rounds.cluster_aggregation != "tree":
                raise ConfigError("rounds.cluster_aggregation", "central DP needs each device's clipped update to "
                                  "reach the server exactly once (consensus weights can amplify one device)",
                                  value=self.rounds.cluster_aggregation, allowed=["tree"])

    def attackers(self) -> list[str]:
        """The devices that misbehave (empty without an attack): listed, or drawn from the seed."""
        if self.attack.kind == "none":
            return []
        if self.attack.devices is not None:
            return list(self.attack.devices)
        import numpy as np

        from bridge.seeding import derive_seed

        k = int(round(self.attack.fraction * len(self.devices)))
        order = np.random.default_rng(derive_seed(self.seed, "attackers")).permutation(len(self.devices))
        return [self.devices[i].id for i in sorted(order[:k])]

    def with_seed(self, seed: int) -> ExperimentConfig:
        """This experiment with one seed (``seeds`` cleared): one run of a multi-seed experiment."""
        return dataclasses.replace(self, seed=seed, seeds=None)

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
    if tp is float and not isinstance(v, float):
        raise ConfigError(where, "must be a number", value=v)
    if tp is int and not _is_int(v):
        raise ConfigError(where, "must be an integer", value=v)
    if tp is bool and not isinstance(v, bool):
        raise ConfigError(where, "must be true or false (a YAML boolean, not a string or number)", value=v)
    if tp is str and not isinstance(v, str):
        raise ConfigError(where, "must be a string", value=v)
    return v


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("<file>", "no such config file", value=str(p))
    return ExperimentConfig.from_yaml(p.read_text())
