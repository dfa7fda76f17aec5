"""Gymnasium and PettingZoo faces of any :class:`~bridge.backend.SimBackend`.

* :class:`XRAvatarEnv` -- a ``gymnasium.Env`` for one avatar (the others keep following their scripts).
* :class:`XRParallelEnv` -- a PettingZoo ``ParallelEnv`` with every device as an agent.

Observations are a ``Dict`` with one entry per modality the device's profile has (fixed layout, as gym spaces need)
plus ``present``: a ``MultiBinary`` over :data:`bridge.tasks.MODALITIES`. A modality dropped at a step is filled
with zeros **and** flagged absent in ``present`` -- the flag is authoritative (the frame itself carries ``None``).
Actions are the agent's predictions, one class index per task (``MultiDiscrete``); they are shown in the scene as
:class:`~bridge.backend.ShowPrediction` overlays, and the reward is the fraction of active tasks predicted
correctly -- interactive testing as an RL loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .arrays import frame_to_arrays
from .backend import ShowPrediction, SimBackend
from .devices import get_device
from .errors import UnknownNameError
from .frame import NUM_HAND_JOINTS, DeviceFrame
from .tasks import MODALITIES, TASKS

if TYPE_CHECKING:
    from gymnasium import spaces

__all__ = ["XRAvatarEnv", "XRParallelEnv", "observation_space_for", "TASK_ORDER"]

TASK_ORDER = tuple(TASKS)


def _make_backend(scenario: Any, backend: str | SimBackend, **kw: Any) -> SimBackend:
    if isinstance(backend, SimBackend):
        return backend
    from .registry import make_backend

    return make_backend(backend, scenario, **kw)


def observation_space_for(profile_name: str, image_hw: tuple[int, int],
                          audio_shape: tuple[int, int] | None) -> spaces.Dict:
    """The gymnasium ``Dict`` space of one device's observations."""
    from gymnasium import spaces

    prof = get_device(profile_name)
    h, w = image_hw
    s: dict[str, Any] = {}
    mods = prof.modalities
    if "rgb" in mods:
        s["rgb"] = spaces.Box(0, 255, (h, w, 3), np.uint8)
    if "depth" in mods:
        s["depth_m"] = spaces.Box(0.0, np.inf, (h, w), np.float32)
    if "gaze" in mods:
        s["gaze"] = spaces.Box(-np.inf, np.inf, (8,), np.float32)
    if "audio" in mods and audio_shape is not None:
        s["audio"] = spaces.Box(-np.inf, np.inf, audio_shape, np.float32)
    if "pose" in mods:
        s["pose"] = spaces.Box(-np.inf, np.inf, (7,), np.float32)
    if "imu" in mods:
        s["imu"] = spaces.Box(-np.inf, np.inf, (6,), np.float32)
    if "hands" in mods:
        s["hands"] = spaces.Box(-np.inf, np.inf, (2, NUM_HAND_JOINTS, 3), np.float32)
    s["present"] = spaces.MultiBinary(len(MODALITIES))
    return spaces.Dict(s)


def _action_space() -> spaces.MultiDiscrete:
    from gymnasium import spaces

    return spaces.MultiDiscrete([TASKS[t].num_classes for t in TASK_ORDER])


def _obs(frame: DeviceFrame, space: spaces.Dict) -> dict[str, np.ndarray]:
    arr = frame_to_arrays(frame)
    out: dict[str, np.ndarray] = {}
    for key, sub in space.spaces.items():
        if key == "present":
            continue
        shape, dtype = sub.shape, sub.dtype
        assert shape is not None and dtype is not None  # every modality's space is a Box (observation_space_for)
        if key in arr:
            out[key] = np.asarray(arr[key], dtype=dtype).reshape(shape)
        else:
            out[key] = np.zeros(shape, dtype=dtype)
    out["present"] = np.array([int(arr["present"][m]) for m in MODALITIES], dtype=np.int8)
    return out


def _reward(frame: DeviceFrame, action: np.ndarray) -> float:
    tasks = [t for t in frame.active_tasks if t in frame.labels] or [t for t in TASK_ORDER if t in frame.labels]
    if not tasks:
        return 0.0
    hits = sum(int(action[TASK_ORDER.index(t)]) == TASKS[t].index(frame.labels[t]) for t in tasks)
    return hits / len(tasks)


def _overlays(device_id: str, action: np.ndarray, frame: DeviceFrame | None) -> list[ShowPrediction]:
    return [ShowPrediction(device_id, t, TASKS[t].classes[int(action[i])], frame_step=frame.step if frame else None)
            for i, t in enumerate(TASK_ORDER)]


def _spaces_from_first(backend: SimBackend, frames: dict[str, DeviceFrame]) -> dict[str, spaces.Dict]:
    out = {}
    for dev in backend.devices:
        f = frames[dev.device_id]
        img = f.rgb.shape[:2] if f.rgb is not None else (f.depth_m.shape if f.depth_m is not None else (1, 1))
        audio = f.audio.samples.shape if f.audio is not None else None
        if audio is None:
            prof = get_device(dev.profile)
            if prof.microphones is not None and hasattr(backend, "scenario"):
                sc = backend.scenario
                audio = (prof.microphones.count, int(round(sc.audio_hz / sc.step_hz)))
        out[dev.device_id] = observation_space_for(dev.profile, tuple(img), audio)
    return out


class XRAvatarEnv:
    """One avatar's egocentric view as a ``gymnasium.Env`` (built lazily so gymnasium stays optional)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # a gymnasium.Env, not an XRAvatarEnv
        import gymnasium as gym

        class _Env(gym.Env):
            metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
            observation_space: spaces.Dict
            action_space: spaces.MultiDiscrete

            def __init__(self, scenario: Any = "default", *, device: str | None = None,
                         backend: str | SimBackend = "embedded", max_steps: int = 300,
                         render_mode: str | None = None, **backend_kw: Any):
                self.backend = _make_backend(scenario, backend, **backend_kw)
                ids = [d.device_id for d in self.backend.devices]
                if device is None:
                    device = ids[0]
                if device not in ids:
                    raise UnknownNameError("device", device, ids)
                self.device_id, self.max_steps, self.render_mode = device, max_steps, render_mode
                frames = self.backend.reset(seed=getattr(self.backend, "seed", 0))
                self.observation_space = _spaces_from_first(self.backend, frames)[device]
                self.action_space = _action_space()
                self._frame: DeviceFrame | None = frames[device]
                self._t = 0

            def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
                super().reset(seed=seed)
                frames = self.backend.reset(seed=seed, options=options)
                self._frame, self._t = frames[self.device_id], 0
                return _obs(self._frame, self.observation_space), {"labels": dict(self._frame.labels)}

            def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
                action = np.asarray(action)
                reward = _reward(self._frame, action) if self._frame is not None else 0.0
                frames = self.backend.step(_overlays(self.device_id, action, self._frame))
                self._frame = frames[self.device_id]
                self._t += 1
                info = {"labels": dict(self._frame.labels), "events": self._frame.events}
                return (_obs(self._frame, self.observation_space), float(reward), False, self._t >= self.max_steps,
                        info)

            def render(self) -> np.ndarray | None:
                return self._frame.rgb if self._frame is not None else None

            def close(self) -> None:
                self.backend.close()

        return _Env(*args, **kwargs)


class XRParallelEnv:
    """All devices of a scene as a PettingZoo ``ParallelEnv`` (agents = device ids)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # a pettingzoo.ParallelEnv, not an XRParallelEnv
        from pettingzoo import ParallelEnv

        class _PEnv(ParallelEnv):
            metadata = {"render_modes": [], "name": "xrfed_parallel_v0"}

            def __init__(self, scenario: Any = "default", *, backend: str | SimBackend = "embedded",
                         max_steps: int = 300, **backend_kw: Any):
                self.backend = _make_backend(scenario, backend, **backend_kw)
                self.possible_agents = [d.device_id for d in self.backend.devices]
                frames = self.backend.reset(seed=getattr(self.backend, "seed", 0))
                self._obs_spaces = _spaces_from_first(self.backend, frames)
                self._act = _action_space()
                self.max_steps = max_steps
                self.agents: list[str] = []
                self._frames: dict[str, DeviceFrame] = {}
                self._t = 0

            def observation_space(self, agent: str) -> spaces.Dict:
                return self._obs_spaces[agent]

            def action_space(self, agent: str) -> spaces.MultiDiscrete:
                return self._act

            def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
                self._frames = self.backend.reset(seed=seed, options=options)
                self.agents = list(self.possible_agents)
                self._t = 0
                obs = {a: _obs(self._frames[a], self._obs_spaces[a]) for a in self.agents}
                return obs, {a: {"labels": dict(self._frames[a].labels)} for a in self.agents}

            def step(self, actions: dict[str, Any]) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float],
                                                             dict[str, bool], dict[str, bool],
                                                             dict[str, dict[str, Any]]]:
                cmds = []
                rewards = {}
                for a in self.agents:
                    act = np.asarray(actions.get(a, np.zeros(len(TASK_ORDER), int)))
                    rewards[a] = _reward(self._frames[a], act)
                    if a in actions:
                        cmds += _overlays(a, act, self._frames[a])
                self._frames = self.backend.step(cmds)
                self._t += 1
                trunc = self._t >= self.max_steps
                obs = {a: _obs(self._frames[a], self._obs_spaces[a]) for a in self.agents}
                infos = {a: {"labels": dict(self._frames[a].labels)} for a in self.agents}
                terms = {a: False for a in self.agents}
                truncs = {a: trunc for a in self.agents}
                if trunc:
                    self.agents = []
                return obs, rewards, terms, truncs, infos

            def close(self) -> None:
                self.backend.close()

        return _PEnv(*args, **kwargs)
