"""Device profiles (the seed paper's Table 1): which modalities an XR device has and what its hardware costs.

Profiles ship in ``bridge/data/devices.yaml``; users add their own with :func:`register_device` or by passing a
YAML mapping to :meth:`DeviceProfile.from_dict`. ``relative_compute`` is relative to Meta Quest 3 (= 1.0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import yaml

from .errors import ScenarioError, UnknownNameError
from .tasks import MODALITIES

__all__ = ["CameraSpec", "EyeTrackerSpec", "MicrophoneSpec", "DeviceProfile", "get_device", "device_names",
           "register_device"]


@dataclass(frozen=True)
class CameraSpec:
    width_px: int
    height_px: int
    fov_h_deg: float
    fov_v_deg: float
    rate_hz: float


@dataclass(frozen=True)
class EyeTrackerSpec:
    rate_hz: float
    accuracy_deg: float  # systematic per-user error (calibration offset)
    precision_deg: float  # per-sample noise (RMS)


@dataclass(frozen=True)
class MicrophoneSpec:
    count: int
    sample_rate_hz: int
    array_width_m: float

    def positions_head_m(self) -> np.ndarray:
        """Microphone positions [count, 3] in the head frame (+x right, +y up, -z forward).

        A frame-mounted array: mics spread left-to-right across ``array_width_m`` on the temples/brow,
        slightly above and in front of the eyes. Channel 0 is the leftmost mic.
        """
        if self.count == 1:
            return np.array([[0.0, 0.03, -0.06]])
        xs = np.linspace(-self.array_width_m / 2, self.array_width_m / 2, self.count)
        # Inner mics sit further forward on the brow, outer ones on the temples.
        zs = -(0.06 - 0.5 * np.abs(xs))
        return np.stack([xs, np.full_like(xs, 0.03), zs], axis=1)


@dataclass(frozen=True)
class DeviceProfile:
    """One device's capabilities and costs. Units are in the field names."""

    name: str
    display_name: str
    type: str
    modalities: tuple[str, ...]
    camera: CameraSpec | None
    eye_tracker: EyeTrackerSpec | None
    microphones: MicrophoneSpec | None
    imu_rate_hz: float
    relative_compute: float
    gflops_sustained: float
    joules_per_gflop: float
    memory_gb: float
    battery_wh: float | None  # None = mains powered / tethered
    uplink_mbps: float
    d2d_mbps: float
    uplink_uj_per_bit: float
    d2d_uj_per_bit: float
    estimated: tuple[str, ...] = ()
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_eye_tracking(self) -> bool:
        return "gaze" in self.modalities

    @property
    def tethered(self) -> bool:
        return self.battery_wh is None

    def uplink_joules(self, nbytes: int) -> float:
        return nbytes * 8 * self.uplink_uj_per_bit * 1e-6

    def d2d_joules(self, nbytes: int) -> float:
        return nbytes * 8 * self.d2d_uj_per_bit * 1e-6

    def compute_joules(self, flops: float) -> float:
        return flops / 1e9 * self.joules_per_gflop

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        d["estimated"] = list(self.estimated)
        return d

    @classmethod
    def from_dict(cls, name: str, raw: dict[str, Any]) -> DeviceProfile:
        where = f"devices.{name}"
        if not isinstance(raw, dict):
            raise ScenarioError(where, "must be a mapping", value=raw)
        mods = tuple(raw.get("modalities", ()))
        bad = [m for m in mods if m not in MODALITIES]
        if bad:
            raise ScenarioError(f"{where}.modalities", "unknown modality", value=bad, allowed=list(MODALITIES))

        def sub(key: str, kind: type) -> Any:
            v = raw.get(key)
            if v is None:
                return None
            try:
                return kind(**v)
            except TypeError as exc:
                raise ScenarioError(f"{where}.{key}", str(exc), value=v) from None

        cam, et, mic = sub("camera", CameraSpec), sub("eye_tracker", EyeTrackerSpec), sub("microphones", MicrophoneSpec)
        for mod, spec, key in (("rgb", cam, "camera"), ("gaze", et, "eye_tracker"), ("audio", mic, "microphones")):
            if mod in mods and spec is None:
                raise ScenarioError(f"{where}.{key}", f"required because modalities include {mod!r}")
        known = {f for f in cls.__dataclass_fields__} - {"name", "camera", "eye_tracker", "microphones", "extra"}
        kwargs: dict[str, Any] = {}
        for k in known:
            if k in raw:
                kwargs[k] = raw[k]
        extra = {k: v for k, v in raw.items() if k not in known and k not in ("camera", "eye_tracker", "microphones")}
        try:
            prof = cls(name=name, camera=cam, eye_tracker=et, microphones=mic, extra=extra,
                       **{**kwargs, "modalities": mods, "estimated": tuple(raw.get("estimated", ()))})
        except TypeError as exc:
            raise ScenarioError(where, str(exc)) from None
        for k in ("relative_compute", "gflops_sustained", "joules_per_gflop", "memory_gb", "uplink_mbps",
                  "d2d_mbps", "uplink_uj_per_bit", "d2d_uj_per_bit"):
            v = getattr(prof, k)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ScenarioError(f"{where}.{k}", "must be a positive number", value=v)
        return prof


_REGISTRY: dict[str, DeviceProfile] = {}


@lru_cache(maxsize=1)
def _load_builtin() -> None:
    text = resources.files("bridge").joinpath("data/devices.yaml").read_text()
    for name, raw in yaml.safe_load(text).items():
        _REGISTRY.setdefault(name, DeviceProfile.from_dict(name, raw))


def register_device(profile: DeviceProfile, *, overwrite: bool = False) -> None:
    """Add a device profile to the registry (``overwrite`` to replace a built-in)."""
    _load_builtin()
    if profile.name in _REGISTRY and not overwrite:
        raise ValueError(f"device profile {profile.name!r} already registered; pass overwrite=True")
    _REGISTRY[profile.name] = profile


def get_device(name: str) -> DeviceProfile:
    """Look a device profile up by name; an unknown name lists the known ones."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("device profile", name, tuple(_REGISTRY)) from None


def device_names() -> tuple[str, ...]:
    _load_builtin()
    return tuple(_REGISTRY)
