"""A tiny deterministic scene: synthetic frames for every modality, no renderer.

Why it exists: the stand-in player and the Unity backend are protocol code; testing and benchmarking them should
not wait for MuJoCo. ``xrfed player --synthetic`` also lets a user check a ``UnityEnvironment`` set-up (ports,
versions) in a second. It honours the scene commands (lighting overrides change the frames' lighting, modality
switches drop modalities) so command paths can be checked end to end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import DeviceInfo, SceneCommand, SetLighting, SetModality, ShowPrediction, SimBackend
from ..devices import get_device
from ..errors import BackendError
from ..frame import NUM_HAND_JOINTS, Audio, DeviceFrame, Gaze, Hands, Imu, LightingState, Pose
from ..tasks import MODALITIES, TASKS

__all__ = ["SyntheticBackend", "SyntheticConfig"]


@dataclass(frozen=True)
class SyntheticConfig:
    """``profiles``: one device per entry; ``render_size`` (H, W); audio at ``audio_hz`` with ``step_hz`` steps."""

    profiles: tuple[str, ...] = ("meta_quest_pro",)
    render_size: tuple[int, int] = (8, 6)
    audio_hz: int = 16000
    step_hz: float = 10.0

    def __post_init__(self) -> None:
        if not self.profiles:
            raise BackendError("SyntheticConfig.profiles: at least one device profile")
        for p in self.profiles:
            get_device(p)  # unknown names list the known ones
        if min(self.render_size) < 1:
            raise BackendError(f"SyntheticConfig.render_size must be positive, got {self.render_size}")
        if self.audio_hz % self.step_hz:
            raise BackendError("SyntheticConfig.audio_hz must be a whole multiple of step_hz")


class SyntheticBackend(SimBackend):
    """Deterministic frames: same seed -> same frames, each device and step different."""

    name = "synthetic"

    def __init__(self, config: SyntheticConfig | None = None, *, seed: int = 0):
        super().__init__()
        self.config = config or SyntheticConfig()
        self.seed = seed
        self._devices = tuple(DeviceInfo(f"user{i}-{p}", f"user{i}", p) for i, p in enumerate(self.config.profiles))
        self._k = 0
        self._disabled: dict[str, set[str]] = {}
        self._light: dict[str, Any] = {}
        self.overlays: dict[str, ShowPrediction] = {}
        self.commands: list[SceneCommand] = []

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        return self._devices

    @property
    def step_dt_s(self) -> float:
        return 1.0 / self.config.step_hz

    def _reset(self, *, seed: int | None, options: dict[str, Any]) -> dict[str, DeviceFrame]:
        if seed is not None:
            self.seed = int(seed)
        self._k = 0
        self._disabled = {d.device_id: set() for d in self._devices}
        self._light = {}
        self.overlays = {}
        return self._frames()

    def _step(self, commands: tuple[SceneCommand, ...]) -> dict[str, DeviceFrame]:
        for c in commands:
            self.commands.append(c)
            if len(self.commands) > 1000:  # a record for tests; a long session must not grow it forever
                del self.commands[0]
            if isinstance(c, SetLighting):
                self._light.update({k: v for k, v in (("intensity", c.intensity), ("cct", c.color_temperature_k),
                                                      ("on", c.lights_on)) if v is not None})
            elif isinstance(c, SetModality):
                if c.device_id not in self._disabled:
                    raise BackendError(f"SetModality: unknown device {c.device_id!r}")
                (self._disabled[c.device_id].discard if c.enabled else self._disabled[c.device_id].add)(c.modality)
            elif isinstance(c, ShowPrediction):
                self.overlays[c.device_id] = c
        self._k += 1
        return self._frames()

    def _close(self) -> None:
        pass

    def _frames(self) -> dict[str, DeviceFrame]:
        return {d.device_id: self._frame(i, d) for i, d in enumerate(self._devices)}

    def _frame(self, i: int, dev: DeviceInfo) -> DeviceFrame:
        cfg, k = self.config, self._k
        rng = np.random.default_rng([self.seed, i, k])
        prof = get_device(dev.profile)
        has = set(prof.modalities) - self._disabled.get(dev.device_id, set())
        h, w = cfg.render_size
        yy, xx = np.mgrid[0:h, 0:w]
        rgb = np.stack([(xx * 37 + k * 11 + i * 50) % 256, (yy * 53 + self.seed) % 256,
                        rng.integers(0, 256, (h, w))], axis=-1).astype(np.uint8)
        depth = (0.5 + 0.25 * yy + 0.125 * xx + 0.001 * k).astype(np.float32)
        depth[0, 0] = np.inf
        n_audio = int(cfg.audio_hz / cfg.step_hz)
        mics = prof.microphones.count if prof.microphones else 1
        audio = Audio((0.01 * rng.standard_normal((mics, n_audio))).astype(np.float32), cfg.audio_hz)
        yaw = 0.1 * math.sin(0.3 * k + i)
        gaze = Gaze(yaw, -0.05, np.array([0.0, 0.0, 0.01]), 0.75 + 0.01 * k, 3.5, k % 7 != 3, 0.9)
        pose = Pose(np.array([1.0 + 0.1 * k, 2.0 + i, 1.58]), np.array([math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]))
        imu = Imu(np.array([0.0, 9.81, 0.0]) + 0.01 * rng.standard_normal(3), 0.001 * rng.standard_normal(3))
        hands = Hands((0.01 * rng.standard_normal((2, NUM_HAND_JOINTS, 3)) + [0.0, -0.3, -0.4]).astype(np.float32),
                      np.array([True, k % 2 == 0]))
        lit = LightingState(float(self._light.get("intensity", 1.0)), 200.0 * float(self._light.get("intensity", 1.0)),
                            float(self._light.get("cct", 4000.0)), bool(self._light.get("on", True)))
        labels = {t: spec.classes[(k + i + j) % spec.num_classes] for j, (t, spec) in enumerate(TASKS.items())}
        mods = {m: m in has for m in MODALITIES}
        return DeviceFrame(
            device_id=dev.device_id, user_id=dev.user_id, profile=dev.profile, step=k, sim_time_s=k / cfg.step_hz,
            wall_time_ns=0, rgb=rgb if mods["rgb"] else None, depth_m=depth if mods["depth"] else None,
            gaze=gaze if mods["gaze"] else None, audio=audio if mods["audio"] else None,
            head_pose=pose if mods["pose"] else None, imu=imu if mods["imu"] else None,
            hands=hands if mods["hands"] else None, lighting=lit, camera_fov_y_deg=90.0, labels=labels,
            active_tasks=tuple(TASKS)[: 1 + (k + i) % len(TASKS)], room="lab", events=(),
        )
