"""Experiment configuration: dataclasses validated on creation, round-trippable to YAML.

One YAML file describes a whole experiment (``xrfed run CONFIG.yaml``): the scenario, the devices (profile,
tasks, LoRA rank, modality dropout), the model preset and tuning method, the coordination paradigm, the
aggregator, the rounds, differential privacy, continual-learning mitigation, the executor, and the seed.

The file is hostile until it has passed here. It is read through :func:`bridge.yamlsafe.load_yaml` (a size
limit, :data:`MAX_CONFIG_BYTES`, and an alias budget, so a "billion laughs" file is refused before Python objects
are built), then every field is checked for its *type* and its *range*:

* booleans are YAML booleans (``'false'``, ``"no"``, ``0`` are refused, not read as truthy);
* integers are whole numbers and never booleans or floats (``rounds: true``, ``lora_rank: 4.0`` are refused);
* floats are finite numbers (an integer is accepted), never booleans or strings (YAML 1.1 reads ``1e7`` as one);
* every number has a range, declared beside its field (``ranges()`` lists them all) -- the main ones:

  ==========================================  ==========================  ============================================
  field                                       range                       why the bound
  ==========================================  ==========================  ============================================
  ``devices``                                 1 .. 256 devices            each is a simulated agent in one process
  ``rounds.rounds``                           1 .. 10 000                 a run writes a checkpoint per round
  ``rounds.local_steps``                      1 .. 100 000
  ``episode_steps``                           1 .. 100 000 per phase      recorded for every device (~2.8 h at 10 Hz)
  ``phases``                                  1 .. 64
  ``lora_rank``, ``devices[i].rank``          1 .. 256                    the largest preset is 256 wide
  ``lora_alpha``                              (0, 4096]
  ``seed``, ``seeds[i]``, ``foundation.seed``  0 .. 2**31-1                 seeds are offset per run and stream
  ``seeds``                                   1 .. 32 distinct seeds
  fractions and probabilities                 [0, 1] (``participation``, ``availability`` (0, 1]; ``test_fraction``
                                              and ``modality_dropout`` below 1)
  ``dp.clip_norm``                            (0, 1e6]
  ``dp.noise_multiplier``                     [0, 1e6]
  ``dp.delta``                                (0, 1)
  seconds (``guard_s``, ``deadline_s``)       [0, 3600], (0, 86 400]
  ``foundation.batch_size``                   1 .. 4096
  ``foundation.learning_rate``                (0, 1]
  ``ray.num_cpus_per_device``                 [0, 1024] (0: automatic)    CPUs an actor holds per device it hosts
  ``ray.devices_per_actor``                   0 .. 256 (0: automatic)     devices one actor process hosts
  ``ray.resources`` amounts                   (0, 1024]                   custom Ray resources per device actor
  ==========================================  ==========================  ============================================

* names that become file or dataset names (device ids, avatars) are 1-64 letters, digits, ``_ . -``; the
  experiment ``name`` up to 128; paths and scenario names have no control characters; lists are bounded;
* unknown keys are refused, naming the allowed ones; missing required keys are named.

Every error is ONE short line naming the field path, the value got (truncated) and what is allowed, e.g.::

    config field 'rounds.paradigm': unknown value (got 'star'); allowed: ['centralized', 'semi', 'decentralized']
    config field 'dp.enabled': must be true or false (a YAML boolean) (got 'false')
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.remote import RAY_ADDRESS_FORMS, ray_address_problem

from .errors import ConfigError

__all__ = [
    "PARADIGMS",
    "TUNING_METHODS",
    "EXECUTORS",
    "ATTACKS",
    "MAX_CONFIG_BYTES",
    "MAX_DEVICES",
    "MAX_SEED",
    "Limit",
    "EvalConfig",
    "AttackConfig",
    "FoundationConfig",
    "DeviceConfig",
    "AggregatorConfig",
    "DPConfig",
    "ContinualConfig",
    "RoundsConfig",
    "RayConfig",
    "ExperimentConfig",
    "RAY_AGGREGATOR_PLACES",
    "MAX_RAY_RESOURCE",
    "check_ray_address",
    "load_config",
    "ranges",
]

#: the paradigms ``xrfed demo`` compares (every registered one: ``federation.paradigms.paradigm_names()``)
PARADIGMS = ("local", "centralized", "semi", "decentralized")
TUNING_METHODS = ("lora", "adapter", "prompt")
EXECUTORS = ("local", "ray")
ATTACKS = ("none", "sign_flip", "scale", "label_flip")

#: the largest experiment file read (the shipped ones are 2-4 KiB)
MAX_CONFIG_BYTES = 1 << 20
#: YAML aliases (``*name``) a config may use, and nodes it may hold, before it is refused unbuilt
MAX_CONFIG_ALIASES = 64
MAX_CONFIG_NODES = 50_000
MAX_DEVICES = 256
#: the largest seed (seeds are offset per episode and run, and must stay below 2**32 for NumPy)
MAX_SEED = 2**31 - 1
MAX_ROUNDS = 10_000
MAX_STEPS = 100_000
MAX_LORA_RANK = 256
MAX_SEEDS = 32
MAX_SECONDS = 3600.0
#: the largest ``|number|`` in ``aggregator.options``
MAX_OPTION_MAGNITUDE = 1e6

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LONG_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_WORD_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_MODULE_RE = re.compile(r"[A-Za-z_]\w*(\.\w+)*")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MAX_PATH_CHARS = 4096
_MAX_TEXT_CHARS = 4096
_MAX_TARGET_CHARS = 128
_MAX_TARGET_QUANTIFIERS = 3

# -- one-line errors ------------------------------------------------------------------------------------------------
_repr = reprlib.Repr()
_repr.maxstring, _repr.maxother, _repr.maxlist, _repr.maxdict, _repr.maxtuple, _repr.maxlevel = 40, 40, 4, 4, 4, 2
_repr.maxlong = 24


class _Shown(str):
    """A value as the error shows it: a bounded repr (``repr()`` returns the text itself)."""

    def __repr__(self) -> str:
        return str(self)


def _show(v: Any) -> _Shown:
    """``repr(v)`` cut to at most ~80 characters, control characters escaped (hostile text cannot add lines)."""
    text = _repr.repr(v)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return _Shown(text if len(text) <= 80 else text[:77] + "...")


def _err(path: str, message: str, v: Any = None, *, allowed: Any = None) -> ConfigError:
    """A one-line :class:`ConfigError`: the value's repr bounded, a long list of allowed names written compactly."""
    shown = None if v is None else _show(v)
    if isinstance(allowed, (list, tuple)) and len(repr(allowed)) > 240:
        text = ", ".join(str(a) for a in allowed)
        allowed = _Shown(text if len(text) <= 300 else text[:297] + "...")
    return ConfigError(_show_path(path), message, value=shown, allowed=allowed)


def _show_path(path: str) -> str:
    path = "".join(c if c.isprintable() else "?" for c in path)
    return path if len(path) <= 120 else path[:117] + "..."


# -- declared ranges ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limit:
    """What one field (or one list item) may hold, beyond its type.

    Numbers: ``lo``/``hi`` bounds (``lo_open``/``hi_open`` exclude them). Strings: ``text`` is ``name`` (1-64
    letters, digits, ``_ . -``), ``long_name`` (the same, up to 128), ``word`` (a registry name: lower case,
    digits, ``_``), ``path`` (a name or path: 1-4096 characters, no control characters), ``prose`` (up to 4096
    characters, newlines allowed) or ``target`` (a module name or a small regular expression). Lists:
    ``min_items``/``max_items``, ``unique``, and ``item`` for their elements."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    text: str = "word"
    min_items: int = 0
    max_items: int | None = None
    unique: bool = False
    item: Limit | None = None

    def describe(self) -> str:
        """The range as an error shows it, e.g. ``in [1, 10000]`` or ``in (0, 1]``."""
        lo = "-inf" if self.lo is None else _num(self.lo)
        hi = "inf" if self.hi is None else _num(self.hi)
        return f"in {'(' if self.lo_open or self.lo is None else '['}{lo}, {hi}{')' if self.hi_open or self.hi is None else ']'}"

    def holds(self, v: float) -> bool:
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return not (self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)))


def _num(x: float) -> str:
    if isinstance(x, int) or float(x).is_integer() and abs(x) <= 1e6:
        return str(int(x))
    return f"{x:g}"


def _spec(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, help: str = "",
          **limit: Any) -> Any:
    """A dataclass field with its :class:`Limit` (and help text) in the metadata."""
    meta = {"limit": Limit(**limit), "help": help}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


_ID = Limit(text="name")
_SEED = Limit(lo=0, hi=MAX_SEED)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_text(v: str, where: str, kind: str) -> None:
    if kind in ("name", "long_name"):
        pattern, n = (_NAME_RE, 64) if kind == "name" else (_LONG_NAME_RE, 128)
        if not pattern.fullmatch(v):
            raise _err(where, f"must be 1-{n} letters, digits, '_', '.' or '-', starting with a letter or digit", v)
    elif kind == "word":
        if not _WORD_RE.fullmatch(v):
            raise _err(where, "must be a name of lower-case letters, digits and '_' (at most 64)", v)
    elif kind == "path":
        if not v or len(v) > _MAX_PATH_CHARS or _CONTROL_RE.search(v):
            raise _err(where, f"must be a name or path of 1-{_MAX_PATH_CHARS} characters without control "
                              "characters", v)
    elif kind == "prose":
        if len(v) > _MAX_TEXT_CHARS or _CONTROL_RE.search(v.replace("\n", " ").replace("\t", " ")):
            raise _err(where, f"must be text of at most {_MAX_TEXT_CHARS} characters (no control characters)", v)
    elif kind == "target":
        _check_target(v, where)
    else:  # pragma: no cover -- a typo in a declaration
        raise AssertionError(kind)


def _check_target(v: str, where: str) -> None:
    """A LoRA target: a module name or dotted suffix (``q_proj``, ``net.0``), or a small regular expression over
    full module names. The expression is bounded so matching stays linear-ish on module names: at most
    :data:`_MAX_TARGET_QUANTIFIERS` quantifiers and no quantified group (``(a+)+`` backtracks exponentially)."""
    if not v or len(v) > _MAX_TARGET_CHARS or _CONTROL_RE.search(v):
        raise _err(where, f"must be a module name or a regular expression of 1-{_MAX_TARGET_CHARS} characters", v)
    if _MODULE_RE.fullmatch(v):
        return
    plain = re.sub(r"\\.", "", v)  # escaped characters are literals
    quantifiers = len(re.findall(r"[*+{]|(?<!\()\?", plain))
    if quantifiers > _MAX_TARGET_QUANTIFIERS or re.search(r"\)\s*[*+?{]", plain):
        raise _err(where, f"regular expression too costly to match: at most {_MAX_TARGET_QUANTIFIERS} quantifiers "
                          "and none on a group", v)
    try:
        re.compile(v)
    except re.error as exc:
        raise _err(where, f"not a valid regular expression ({exc.msg})", v) from None


def _check_value(tp: Any, v: Any, where: str, limit: Limit) -> None:
    """``v`` has type ``tp`` and lies within ``limit``; raises a one-line :class:`ConfigError` naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None:
            return
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
        origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(v, tp):
            raise _err(where, f"must be a {tp.__name__} (a mapping in YAML)", v)
        return
    if origin is list:
        if not isinstance(v, list):
            raise _err(where, "must be a list", v)
        n_hi = limit.max_items
        if len(v) < limit.min_items or (n_hi is not None and len(v) > n_hi):
            raise _err(where, f"must hold {limit.min_items} to {n_hi} items (got {len(v)})")
        (item_tp,) = typing.get_args(tp)
        item = limit.item or Limit()
        for i, x in enumerate(v):
            _check_value(item_tp, x, f"{where}[{i}]", item)
        if limit.unique:
            seen: set[Any] = set()
            for x in v:
                key = tuple(x) if isinstance(x, list) else x
                if key in seen:
                    raise _err(where, "must not repeat an item", x)
                seen.add(key)
        return
    if origin is dict:
        if not isinstance(v, dict):
            raise _err(where, "must be a mapping", v)
        return
    if tp is bool:
        if not isinstance(v, bool):
            raise _err(where, "must be true or false (a YAML boolean, not a string or number)", v)
    elif tp is int:
        if not _is_int(v):
            raise _err(where, f"must be an integer {limit.describe()} (not a boolean, string or float)", v)
        if not limit.holds(v):
            raise _err(where, f"must be an integer {limit.describe()}", v)
    elif tp is float:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise _err(where, f"must be a number {limit.describe()} (not a boolean or string)", v)
        if (isinstance(v, float) and not math.isfinite(v)) or not limit.holds(v):
            raise _err(where, f"must be a finite number {limit.describe()}", v)
    elif tp is str:
        if not isinstance(v, str):
            raise _err(where, "must be a string", v)
        _check_text(v, where, limit.text)
    else:  # pragma: no cover -- a field type this checker does not know
        raise AssertionError(f"{where}: unchecked field type {tp!r}")


def _check_fields(obj: Any, where: str) -> None:
    """Every field of the dataclass ``obj``: type and declared :class:`Limit`, in declaration order."""
    hints = _hints(typing.cast(type, type(obj)))
    for f in dataclasses.fields(obj):
        _check_value(hints[f.name], getattr(obj, f.name), f"{where}{f.name}", f.metadata.get("limit", Limit()))


def _choice(path: str, v: str, allowed: tuple[str, ...]) -> None:
    if v not in allowed:
        raise _err(path, "unknown value", v, allowed=list(allowed))


def ranges(cls: type | None = None, prefix: str = "") -> dict[str, str]:
    """Every field path of the experiment schema with its type and declared range (documentation and tests)."""
    cls = cls or ExperimentConfig
    out: dict[str, str] = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp, limit = hints[f.name], f.metadata.get("limit", Limit())
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) else tp
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            out.update(ranges(inner, f"{prefix}{f.name}."))
        elif typing.get_origin(inner) is list:
            out[f"{prefix}{f.name}"] = f"list of {limit.min_items}..{limit.max_items}"
        elif inner in (int, float):
            out[f"{prefix}{f.name}"] = f"{inner.__name__} {limit.describe()}"
        else:
            out[f"{prefix}{f.name}"] = getattr(inner, "__name__", str(inner))
    if cls is ExperimentConfig:
        out.update({f"devices[].{k}": v for k, v in ranges(DeviceConfig).items()})
    return out


# -- the schema -----------------------------------------------------------------------------------------------------
@dataclass
class DeviceConfig:
    """One device in the experiment: its id, profile (``bridge/data/devices.yaml``), tasks and LoRA rank.

    ``avatar`` names the scenario avatar wearing it (default: the device id); the config's ``profile`` replaces
    the device the scenario gives that avatar, so one scene serves several hardware mixes.

    ``rank`` None = the experiment's default rank; a smaller rank for low-memory devices is the hardware
    heterogeneity switch. ``modality_dropout`` is the probability per step that each modality is absent (below 1:
    a device with every modality gone has nothing to learn from).
    """

    id: str = _spec(text="name", help="device id: 1-64 letters, digits, '_', '.', '-'")
    profile: str = _spec(help="device profile name (xrfed devices)")
    tasks: list[str] = _spec(factory=list, max_items=16, unique=True, item=Limit(), help="tasks the device runs")
    rank: int | None = _spec(None, lo=1, hi=MAX_LORA_RANK, help="LoRA rank (None: the experiment's lora_rank)")
    modality_dropout: float = _spec(0.0, lo=0.0, hi=1.0, hi_open=True, help="per-step modality drop probability")
    avatar: str | None = _spec(None, text="name", help="the scenario avatar wearing it (default: the id)")

    def validate(self, where: str) -> None:
        from bridge.devices import device_names, get_device
        from bridge.tasks import get_task, task_names

        _check_fields(self, f"{where}.")
        _choice(f"{where}.profile", self.profile, device_names())
        for i, t in enumerate(self.tasks):
            _choice(f"{where}.tasks[{i}]", t, task_names())
        mods = set(get_device(self.profile).modalities)
        for t in self.tasks:
            if not mods & set(get_task(t).modalities):
                raise _err(f"{where}.tasks", f"{self.profile} has none of the modalities that carry {t!r}", t,
                           allowed=sorted(get_task(t).modalities))


@dataclass
class AggregatorConfig:
    """Aggregation strategy by registry name, its options, and partial aggregation: ``modality_aware`` averages an
    encoder's tensors only among devices that have its modality, ``task_aware`` a task head's only among devices
    that run the task (off: every device's copy counts, untrained ones included).

    ``options`` are the strategy's own keyword arguments (``trim``, ``trim_fraction``, ``num_byzantine``,
    ``lora``...): at most 8, each a boolean, a finite number of magnitude <= 1e6, a short name, or null."""

    name: str = _spec("fedavg", help="strategy name (federation.strategies)")
    options: dict[str, Any] = _spec(factory=dict, help="the strategy's options")
    modality_aware: bool = _spec(True, help="average an encoder only among devices with its modality")
    task_aware: bool = _spec(True, help="average a task head only among devices running the task")

    def validate(self, where: str) -> None:
        from .strategies import strategy_names

        _check_fields(self, f"{where}.")
        _choice(f"{where}.name", self.name, strategy_names())
        self._check_options(f"{where}.options")
        self.make()

    def _check_options(self, where: str) -> None:
        if len(self.options) > 8:
            raise _err(where, f"at most 8 options (got {len(self.options)})")
        for k, v in self.options.items():
            if not isinstance(k, str) or not _WORD_RE.fullmatch(k):
                raise _err(where, "option names are lower-case words", k)
            if k in ("modality_aware", "task_aware"):
                raise _err(f"{where}.{k}", f"set it as aggregator.{k}, not as an option", v)
            if v is None or isinstance(v, bool):
                continue
            if isinstance(v, str):
                _check_text(v, f"{where}.{k}", "word")
            elif isinstance(v, (int, float)):
                if not (math.isfinite(v) and abs(v) <= MAX_OPTION_MAGNITUDE):
                    raise _err(f"{where}.{k}", "must be a finite number in [-1e6, 1e6]", v)
            else:
                raise _err(f"{where}.{k}", "must be a boolean, a number, a name or null", v)

    def make(self) -> Any:
        """The configured :class:`~federation.strategies.Strategy`."""
        from .strategies import make_strategy

        try:
            return make_strategy(self.name, modality_aware=self.modality_aware, task_aware=self.task_aware,
                                 **self.options)
        except TypeError as exc:  # an option the strategy's constructor takes but not in this form
            raise _err("aggregator.options", str(exc), self.options) from None


@dataclass
class DPConfig:
    """Client-level DP: each device clips its update to ``clip_norm`` before anything mixes it; Gaussian noise of
    standard deviation ``noise_multiplier * clip_norm`` is added on the server once per round (``mode: central``,
    DP-FedAvg) or by every device to its own release (``mode: local``: any aggregator, any paradigm)."""

    enabled: bool = _spec(False, help="clip and noise every release")
    clip_norm: float = _spec(1.0, lo=0.0, hi=1e6, lo_open=True, help="L2 bound of each device's update")
    noise_multiplier: float = _spec(1.0, lo=0.0, hi=1e6, help="noise std / clip_norm")
    delta: float = _spec(1e-5, lo=0.0, hi=1.0, lo_open=True, hi_open=True, help="the (epsilon, delta) delta")
    mode: str = _spec("central", help="central or local")

    def validate(self, where: str) -> None:
        from .strategies import DP_MODES

        _check_fields(self, f"{where}.")
        _choice(f"{where}.mode", self.mode, DP_MODES)


@dataclass
class ContinualConfig:
    """Forgetting mitigation in each device's local training across phases (``agents.continual``): none, EWC
    (``ewc_strength``) or replay (``replay_capacity`` earlier steps)."""

    method: str = _spec("none", help="none, ewc or replay")
    ewc_strength: float = _spec(100.0, lo=0.0, hi=1e9, help="EWC penalty weight")
    replay_capacity: int = _spec(64, lo=1, hi=MAX_STEPS, help="earlier steps kept for replay")

    def validate(self, where: str) -> None:
        from agents.continual import CONTINUAL_METHODS

        _check_fields(self, f"{where}.")
        _choice(f"{where}.method", self.method, CONTINUAL_METHODS)


@dataclass
class AttackConfig:
    """Poisoning as an experiment: a chosen set of devices misbehaves every round.

    * ``sign_flip``: the device sends its update negated (``-delta``);
    * ``scale``: the device sends its update multiplied by ``scale`` (a boosting attack);
    * ``label_flip``: the device trains on labels mapped through a fixed derangement of each task's classes.

    Attackers are ``devices`` (ids) if given, else ``round(fraction x devices)`` drawn from the seed. The attack
    acts on what the device computes, before its release (so DP clipping still applies to it)."""

    kind: str = _spec("none", help="none, sign_flip, scale or label_flip")
    fraction: float = _spec(0.0, lo=0.0, hi=1.0, help="share of the devices attacking")
    scale: float = _spec(10.0, lo=0.0, hi=1e6, lo_open=True, help="the scaling attack's factor")
    devices: list[str] | None = _spec(None, max_items=MAX_DEVICES, unique=True, item=_ID,
                                      help="the attackers' ids (instead of fraction)")

    def validate(self, where: str) -> None:
        _check_fields(self, f"{where}.")
        _choice(f"{where}.kind", self.kind, ATTACKS)


@dataclass
class FoundationConfig:
    """The pretraining recipe of the foundation checkpoint the devices start from (``agents.pretrain``; built once
    and cached under ``$XRFED_CACHE``). ``scenarios`` None = the experiment's scenario (recorded with another seed,
    so no device is evaluated on pretraining data), or a list of other scenes (a foundation model from elsewhere,
    adapted to the deployment by federated personalization); ``record_steps`` scene steps per avatar and scene.
    ``checkpoint`` (a directory written by ``xrfed pretrain``) uses that checkpoint instead of the recipe."""

    checkpoint: str | None = _spec(None, text="path", help="a pretrained checkpoint directory")
    scenarios: list[str] | None = _spec(None, min_items=1, max_items=16, item=Limit(text="path"),
                                        help="scenes recorded for pretraining")
    steps: int = _spec(600, lo=1, hi=1_000_000, help="optimiser steps")
    record_steps: int = _spec(400, lo=1, hi=MAX_STEPS, help="scene steps per avatar and scene")
    batch_size: int = _spec(32, lo=1, hi=4096, help="batch size")
    learning_rate: float = _spec(2e-3, lo=0.0, hi=1.0, lo_open=True, help="learning rate")
    seed: int = _spec(0, lo=0, hi=MAX_SEED, help="pretraining seed")
    guard_s: float = _spec(5.0, lo=0.0, hi=MAX_SECONDS, help="seconds between training and held-out steps")

    def validate(self, where: str) -> None:
        _check_fields(self, f"{where}.")


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

    test_fraction: float = _spec(0.25, lo=0.0, hi=1.0, lo_open=True, hi_open=True,
                                 help="held-out share of each phase (some steps must be left to train on)")
    guard_s: float = _spec(4.0, lo=0.0, hi=MAX_SECONDS, help="seconds between training and held-out steps")
    local_baseline: bool = _spec(True, help="also run local-only training as the baseline")

    def validate(self, where: str) -> None:
        _check_fields(self, f"{where}.")


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

    paradigm: str = _spec("centralized", help="local, centralized, semi or decentralized")
    rounds: int = _spec(5, lo=1, hi=MAX_ROUNDS, help="federated rounds")
    local_steps: int = _spec(10, lo=1, hi=MAX_STEPS, help="local training steps per round")
    participation: float = _spec(1.0, lo=0.0, hi=1.0, lo_open=True, help="share of online devices sampled")
    availability: float = _spec(1.0, lo=0.0, hi=1.0, lo_open=True, help="probability a device is online")
    min_battery_frac: float = _spec(0.05, lo=0.0, hi=1.0, help="battery share below which a device sits out")
    deadline_s: float | None = _spec(None, lo=0.0, hi=86_400.0, lo_open=True, help="simulated seconds per round")
    radio_range_m: float | None = _spec(None, lo=0.0, hi=10_000.0, lo_open=True, help="D2D range in metres")
    max_cluster_size: int | None = _spec(None, lo=1, hi=MAX_DEVICES, help="largest D2D cluster")
    clusters: list[list[str]] | None = _spec(None, max_items=MAX_DEVICES, unique=True,
                                             item=Limit(min_items=1, max_items=MAX_DEVICES, unique=True, item=_ID),
                                             help="explicit clusters of device ids")
    cluster_aggregation: str = _spec("tree", help="tree or consensus (semi)")
    d2d_rounds: int = _spec(3, lo=0, hi=1000, help="consensus steps in a cluster (semi)")
    gossip_steps: int = _spec(5, lo=0, hi=1000, help="gossip steps per round (decentralized)")
    executor: str = _spec("local", help="local or ray")

    def validate(self, where: str) -> None:
        from .paradigms import CLUSTER_AGGREGATIONS, paradigm_names

        _check_fields(self, f"{where}.")
        _choice(f"{where}.paradigm", self.paradigm, paradigm_names())
        _choice(f"{where}.executor", self.executor, EXECUTORS)
        _choice(f"{where}.cluster_aggregation", self.cluster_aggregation, CLUSTER_AGGREGATIONS)


#: where the aggregation runs under the Ray executor ("driver": the round engine in the ``xrfed run`` process
#: folds the updates in as the device actors return them)
RAY_AGGREGATOR_PLACES = ("driver",)
#: Ray's own resources, which a device's custom ``ray.resources`` may not name (CPUs are num_cpus_per_device)
_RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
_RAY_RESOURCE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
#: the largest CPU share or custom-resource amount one device actor may hold
MAX_RAY_RESOURCE = 1024.0
_MAX_RAY_PROFILES = 64
_MAX_RAY_RESOURCES = 8


def check_ray_address(v: str, where: str = "ray.address") -> None:
    """A Ray address: ``host:port`` (a ``ray start --head``), ``ray://host:port`` (Ray Client), ``auto`` (the
    cluster this machine belongs to) or ``local``; raises a one-line :class:`ConfigError` naming ``where``."""
    if ray_address_problem(v) is not None:
        raise _err(where, f"must be {RAY_ADDRESS_FORMS}", v)


@dataclass
class RayConfig:
    """Where and how the devices run under ``rounds.executor: ray`` (ignored by the local executor).

    * ``address``: the cluster to join -- ``host:port`` of the machine that ran ``ray start --head`` (the other
      machines ran ``ray start --address=host:port``), ``ray://host:port``, or ``auto``; None starts a local Ray
      on this machine (``xrfed run --ray-address`` sets it and the ray executor).
    * ``num_cpus_per_device``: the CPUs an actor holds while it lives, per device it hosts (0: every actor an
      equal share of the CPUs free in the cluster, at most 1 -- it runs one call at a time -- that packs node by
      node).
    * ``devices_per_actor``: how many devices one actor process hosts (an actor is a whole Python + torch
      process, ~370 MiB). 0 is automatic: one actor per free CPU of each node, no more than half the node's memory
      holds at ~512 MiB per actor, the devices dealt evenly over them (with an explicit
      ``num_cpus_per_device``, no more per actor than fit one node's CPUs); 1 is an actor per device. Calls to
      the devices of one actor run one after another; devices whose profiles ask for different ``resources``
      never share an actor.
    * ``resources``: per device profile, custom Ray resources its actors need, e.g. ``{meta_quest_3: {quest: 1}}``
      puts every Quest 3 device on the nodes started with ``ray start --resources='{"quest": 8}'``.
    * ``aggregator``: where aggregation runs; ``driver`` (the only place today) -- the round engine in the
      ``xrfed run`` process folds updates in as the actors return them.

    None of these change a learning figure: a run resumes under other executor settings (another cluster address
    after a restart), and the same config gives the same numbers on any of them.
    """

    address: str | None = _spec(None, text="path", help="Ray cluster address (None: a local Ray)")
    num_cpus_per_device: float = _spec(0.0, lo=0.0, hi=MAX_RAY_RESOURCE,
                                       help="CPUs each device actor holds (0: an equal share, at most 1)")
    resources: dict[str, dict[str, float]] = _spec(factory=dict, help="per device profile, custom Ray resources")
    aggregator: str = _spec("driver", help="where aggregation runs: driver")
    devices_per_actor: int = _spec(0, lo=0, hi=MAX_DEVICES,
                                   help="devices one actor process hosts (0: automatic -- an actor per free CPU "
                                        "within a memory budget; 1: an actor per device)")

    def validate(self, where: str) -> None:
        from bridge.devices import device_names

        _check_fields(self, f"{where}.")
        if self.address is not None:
            check_ray_address(self.address, f"{where}.address")
        _choice(f"{where}.aggregator", self.aggregator, RAY_AGGREGATOR_PLACES)
        if len(self.resources) > _MAX_RAY_PROFILES:
            raise _err(f"{where}.resources", f"at most {_MAX_RAY_PROFILES} profiles (got {len(self.resources)})")
        for prof, res in self.resources.items():
            if not isinstance(prof, str):
                raise _err(f"{where}.resources", "keys are device profile names", prof)
            _choice(f"{where}.resources", prof, device_names())
            path = f"{where}.resources.{prof}"
            if not isinstance(res, dict) or not 1 <= len(res) <= _MAX_RAY_RESOURCES:
                raise _err(path, f"must map 1-{_MAX_RAY_RESOURCES} Ray resource names to amounts", res)
            for k, v in res.items():
                if not isinstance(k, str) or not _RAY_RESOURCE_RE.fullmatch(k):
                    raise _err(path, "resource names are 1-64 letters, digits, '_', '.', '-', starting with a "
                                     "letter", k)
                if k in _RAY_BUILTIN_RESOURCES:
                    raise _err(f"{path}.{k}", "is a Ray built-in resource; set CPUs with "
                                              f"{where}.num_cpus_per_device")
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not (
                        math.isfinite(v) and 0 < v <= MAX_RAY_RESOURCE):
                    raise _err(f"{path}.{k}", f"must be a finite number in (0, {MAX_RAY_RESOURCE:g}]", v)

    def device_resources(self, devices: list[DeviceConfig]) -> dict[str, dict[str, float]]:
        """Per device id, the custom resources its profile asks for (devices of other profiles: none)."""
        return {d.id: {k: float(v) for k, v in self.resources[d.profile].items()}
                for d in devices if d.profile in self.resources}

    def executor_options(self, devices: list[DeviceConfig]) -> dict[str, Any]:
        """The keyword arguments of :class:`~federation.client.RayExecutor` for these devices."""
        return {"address": self.address, "num_cpus_per_device": self.num_cpus_per_device or None,
                "resources": self.device_resources(devices), "devices_per_actor": self.devices_per_actor or None}


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
    names: ``q_proj``/``v_proj`` in the shared backbone, ``fovea``/``net.0``/``proj`` in the modality encoders; or
    one small regular expression over full module names).

    ``seed`` derives every random stream of a run (recording, initialisation, batches, sampling, noise);
    ``seeds`` (a list) runs the experiment once per seed and reports mean and 95 % confidence intervals.
    """

    name: str = _spec(text="long_name", help="experiment name (run directories are named after it)")
    scenario: str = _spec("default", text="path", help="scenario name or YAML path")
    devices: list[DeviceConfig] = _spec(factory=list, min_items=1, max_items=MAX_DEVICES, help="the devices")
    model_preset: str = _spec("tiny", help="foundation model size preset")
    tuning: str = _spec("lora", help="lora, adapter or prompt")
    lora_rank: int = _spec(4, lo=1, hi=MAX_LORA_RANK, help="default LoRA rank")
    lora_alpha: float = _spec(8.0, lo=0.0, hi=4096.0, lo_open=True, help="LoRA alpha")
    lora_targets: list[str] = _spec(factory=lambda: ["q_proj", "v_proj"], min_items=1, max_items=16, unique=True,
                                    item=Limit(text="target"), help="the layers LoRA adapts")
    personal_adapters: bool = _spec(True, help="personal modules that never leave the device")
    personal_heads: bool = _spec(True, help="personal residual classifiers as well")
    share_all_heads: bool = _spec(False, help="every task head on every device")
    episode_steps: int = _spec(240, lo=1, hi=MAX_STEPS, help="scene steps recorded per device and phase")
    phases: int = _spec(2, lo=1, hi=64, help="consecutive segments the rounds are split into")
    eval: EvalConfig = _spec(factory=EvalConfig, help="training / held-out split")
    foundation: FoundationConfig = _spec(factory=FoundationConfig, help="the foundation checkpoint's recipe")
    aggregator: AggregatorConfig = _spec(factory=AggregatorConfig, help="the aggregation strategy")
    rounds: RoundsConfig = _spec(factory=RoundsConfig, help="how rounds run")
    dp: DPConfig = _spec(factory=DPConfig, help="differential privacy")
    continual: ContinualConfig = _spec(factory=ContinualConfig, help="forgetting mitigation")
    attack: AttackConfig = _spec(factory=AttackConfig, help="poisoning")
    ray: RayConfig = _spec(factory=RayConfig, help="the Ray executor: cluster address, placement")
    seed: int = _spec(0, lo=0, hi=MAX_SEED, help="the run's seed")
    seeds: list[int] | None = _spec(None, min_items=1, max_items=MAX_SEEDS, unique=True, item=_SEED,
                                    help="one run per seed")
    description: str = _spec("", text="prose", help="free text for the report")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check_fields(self, "")
        ids = [d.id for d in self.devices]
        for i, d in enumerate(self.devices):
            d.validate(f"devices[{i}]")
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise _err("devices", "device ids must be unique", dup)
        from agents.config import preset_names

        _choice("model_preset", self.model_preset, preset_names())
        _choice("tuning", self.tuning, TUNING_METHODS)
        self.eval.validate("eval")
        self.foundation.validate("foundation")
        self.aggregator.validate("aggregator")
        self.rounds.validate("rounds")
        self.dp.validate("dp")
        self.continual.validate("continual")
        self.attack.validate("attack")
        self.ray.validate("ray")
        if self.attack.devices is not None:
            unknown = sorted(set(self.attack.devices) - set(ids))
            if unknown:
                raise _err("attack.devices", "names devices that do not exist", unknown, allowed=ids)
        if self.rounds.clusters is not None:
            flat = [i for c in self.rounds.clusters for i in c]
            unknown = sorted(set(flat) - set(ids))
            if unknown:
                raise _err("rounds.clusters", "names devices that do not exist", unknown, allowed=ids)
            if len(flat) != len(set(flat)):
                raise _err("rounds.clusters", "a device may be in one cluster only", self.rounds.clusters)
        self._validate_combination()

    def _validate_combination(self) -> None:
        """Paradigm x aggregator x DP: what the registries say can work together."""
        from .paradigms import paradigm_class
        from .strategies import TrimmedMean, averaging_strategy_names

        paradigm = paradigm_class(self.rounds.paradigm)
        strategy = self.aggregator.make()
        if paradigm.needs_averaging and not strategy.averaging:
            raise _err("aggregator.name", f"the {paradigm.name} paradigm averages by D2D consensus",
                       self.aggregator.name, allowed=list(averaging_strategy_names()))
        if isinstance(strategy, TrimmedMean) and len(self.devices) >= 3 and strategy.trim_at(len(self.devices)) == 0:
            raise _err("aggregator.options", f"the trimmed mean trims nothing with {len(self.devices)} "
                       "devices; set trim >= 1 or a larger trim_fraction", self.aggregator.options)
        if not self.dp.enabled:
            return
        if not paradigm.communicates:
            raise _err("dp.enabled", f"nothing leaves a device in the {paradigm.name} paradigm, there is "
                       "nothing to privatize", True, allowed=[False])
        if self.dp.mode == "central":
            if not paradigm.uses_server:
                raise _err("dp.mode", f"central DP needs a server that adds the noise; the {paradigm.name} "
                           "paradigm has none", "central", allowed=["local"])
            if strategy.sensitivity(self.dp.clip_norm) is None:
                raise _err("dp.mode", f"central DP noises a sum, which {self.aggregator.name!r} does not "
                           "compute", "central",
                           allowed=["local"] + [f"central with {n}" for n in averaging_strategy_names()])
            if paradigm.name == "semi" and self.rounds.cluster_aggregation != "tree":
                raise _err("rounds.cluster_aggregation", "central DP needs each device's clipped update to "
                           "reach the server exactly once (consensus weights can amplify one device)",
                           self.rounds.cluster_aggregation, allowed=["tree"])

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

    def experiment_dict(self) -> dict[str, Any]:
        """The config as plain data without where it runs (``rounds.executor``, ``ray``), which changes no
        figure: what a resumed run must match."""
        d = self.to_dict()
        d["rounds"]["executor"] = "local"
        d.pop("ray", None)
        return d

    def with_executor(self, executor: str, *, address: str | None = None) -> ExperimentConfig:
        """This experiment under another executor (and, given, Ray cluster address)."""
        ray = self.ray if address is None else dataclasses.replace(self.ray, address=address)
        return dataclasses.replace(self, rounds=dataclasses.replace(self.rounds, executor=executor), ray=ray)

    def with_seed(self, seed: int) -> ExperimentConfig:
        """This experiment with one seed (``seeds`` cleared): one run of a multi-seed experiment."""
        return dataclasses.replace(self, seed=seed, seeds=None)

    # -- serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.dump(self.to_dict(), Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ExperimentConfig:
        return typing.cast(ExperimentConfig, _build(cls, raw, ""))

    @classmethod
    def from_yaml(cls, text: str) -> ExperimentConfig:
        """Parse and validate YAML text (bounded: :data:`MAX_CONFIG_BYTES`, alias, node and depth budgets)."""
        if not isinstance(text, str):
            raise _err("<file>", "must be YAML text", type(text).__name__)
        return _from_source(text, "experiment config")


def _from_source(source: str | Path, what: str) -> ExperimentConfig:
    """YAML text or file -> validated config; alias bombs, deep nesting and huge files are refused unbuilt."""
    from bridge.yamlsafe import YamlError, load_yaml

    try:
        raw = load_yaml(source, what=what, max_bytes=MAX_CONFIG_BYTES, max_aliases=MAX_CONFIG_ALIASES,
                        max_nodes=MAX_CONFIG_NODES)
    except YamlError as exc:
        raise _err("<file>", str(exc)) from None
    if not isinstance(raw, dict):
        raise _err("<file>", "must be a mapping at the top level", type(raw).__name__)
    return ExperimentConfig.from_dict(raw)


def _build(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses; unknown keys are errors, missing
    required keys are named. Types and ranges are checked by the classes' ``validate``."""
    if not isinstance(raw, dict):
        raise _err(where.rstrip(".") or "<root>", f"must be a mapping of {cls.__name__} fields", raw)
    hints = _hints(cls)
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    for k in raw:
        if not isinstance(k, str) or k not in names:
            shown = _show(k) if not isinstance(k, str) else k if len(k) <= 40 else k[:37] + "..."
            raise _err(f"{where}{shown}", "unknown field", allowed=names)
    missing = [f.name for f in fields if f.name not in raw and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise _err(f"{where}{missing[0]}", "missing (a required field)")
    kwargs = {k: _convert(hints[k], v, f"{where}{k}") for k, v in raw.items()}
    return cls(**kwargs)


def _convert(tp: Any, v: Any, where: str) -> Any:
    """YAML data -> field value: nested dataclasses built, integers given to float fields made floats."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, v, where + ".")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if v is None else _convert(inner, v, where)
    if origin is list and isinstance(v, list):
        (item,) = typing.get_args(tp)
        return [_convert(item, x, f"{where}[{i}]") for i, x in enumerate(v)]
    if tp is float and _is_int(v) and abs(v) <= 2**53:
        return float(v)
    return v  # anything else is checked, with its path, by validate()


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML file (a regular UTF-8 file of at most :data:`MAX_CONFIG_BYTES`)."""
    if not isinstance(path, (str, Path)) or not str(path) or _CONTROL_RE.search(str(path)):
        raise _err("<file>", "must be the path of a config file", path)
    return _from_source(Path(path), str(path))
