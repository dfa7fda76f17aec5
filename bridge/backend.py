"""The simulator-backend interface every scene source implements, and the scene commands it accepts.

A backend is Gymnasium-shaped but multi-device: ``reset(seed=..., options=...)`` returns the first
:class:`~bridge.frame.DeviceFrame` of every device, ``step(commands)`` advances the scene by ``step_dt_s`` and
returns the next frame of every device. Scene commands (lighting, modality switches, prediction overlays) are
plain dataclasses, so every backend -- embedded, Unity over ML-Agents, ZeroMQ -- takes the same ones.

Lifecycle is explicit: a backend is ``unopened`` until the first ``reset``, ``open`` after it, ``closed`` after
``close``; using a closed backend raises :class:`~bridge.errors.BackendError`. Backends are context managers.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BackendError
from .frame import DeviceFrame

__all__ = [
    "BackendState",
    "DeviceInfo",
    "SetLighting",
    "SetModality",
    "ShowPrediction",
    "SceneCommand",
    "SimBackend",
]


class BackendState(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class DeviceInfo:
    """A device in the scene: which avatar (user) wears which device profile."""

    device_id: str
    user_id: str
    profile: str


@dataclass(frozen=True)
class SetLighting:
    """Override the lighting (None = leave as the schedule says). ``room`` None = every room."""

    intensity: float | None = None
    color_temperature_k: float | None = None
    lights_on: bool | None = None
    room: str | None = None
    kind: str = "set_lighting"


@dataclass(frozen=True)
class SetModality:
    """Switch one device's modality off (dropped: absent from frames) or back on."""

    device_id: str
    modality: str
    enabled: bool
    kind: str = "set_modality"


@dataclass(frozen=True)
class ShowPrediction:
    """An agent's prediction to show in the scene (overlay) for one device, with its measured latency."""

    device_id: str
    task: str
    label: str
    confidence: float = 1.0
    latency_ms: float | None = None
    frame_step: int | None = None
    kind: str = "show_prediction"


SceneCommand = SetLighting | SetModality | ShowPrediction


class SimBackend(abc.ABC):
    """Base class of every scene source. Subclasses implement ``_reset``, ``_step`` and ``_close``."""

    #: registry name of the backend ("embedded", "unity", "zmq", ...)
    name: str = "abstract"
    #: whether ``reset(seed=s)`` replays the same episode for the same ``s`` (a one-way stream cannot)
    deterministic: bool = True

    def __init__(self) -> None:
        self._state = BackendState.UNOPENED

    # -- public API ---------------------------------------------------------------------------------
    @property
    def state(self) -> BackendState:
        return self._state

    @property
    @abc.abstractmethod
    def devices(self) -> tuple[DeviceInfo, ...]:
        """The devices this backend produces frames for, in a stable order."""

    @property
    @abc.abstractmethod
    def step_dt_s(self) -> float:
        """Simulated seconds per step."""

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None) -> dict[str, DeviceFrame]:
        """Start (or restart) the episode; returns the first frame of every device."""
        self._check_not_closed("reset")
        frames = self._reset(seed=seed, options=dict(options or {}))
        self._state = BackendState.OPEN
        return frames

    def step(self, commands: Iterable[SceneCommand] = ()) -> dict[str, DeviceFrame]:
        """Apply ``commands`` and advance one step; returns every device's new frame."""
        self._check_not_closed("step")
        if self._state is BackendState.UNOPENED:
            raise BackendError(f"{self.name} backend: call reset() before step()")
        return self._step(tuple(commands))

    def close(self) -> None:
        """Release the scene (renderers, sockets, processes). Idempotent."""
        if self._state is not BackendState.CLOSED:
            try:
                self._close()
            finally:
                self._state = BackendState.CLOSED

    def __enter__(self) -> SimBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- for subclasses -----------------------------------------------------------------------------
    @abc.abstractmethod
    def _reset(self, *, seed: int | None, options: dict[str, Any]) -> dict[str, DeviceFrame]: ...

    @abc.abstractmethod
    def _step(self, commands: tuple[SceneCommand, ...]) -> dict[str, DeviceFrame]: ...

    @abc.abstractmethod
    def _close(self) -> None: ...

    def _check_not_closed(self, what: str) -> None:
        if self._state is BackendState.CLOSED:
            raise BackendError(f"{self.name} backend: {what}() after close()")
