"""Gymnasium and PettingZoo faces of any :class:`~bridge.backend.SimBackend` -- one contract for every backend.

* :class:`XRAvatarEnv` -- a ``gymnasium.Env`` for one avatar (the others keep following their scripts).
* :class:`XRParallelEnv` -- a PettingZoo ``ParallelEnv`` with every device as an agent.

Both are plain module-level classes (``isinstance(env, gymnasium.Env)`` and ``isinstance(penv,
pettingzoo.ParallelEnv)`` hold) and behave the same over the embedded scene, a Unity build (or the stand-in player)
through ``mlagents_envs`` and a ZeroMQ stream: ``tests/bridge/test_env_contract.py`` runs Gymnasium's ``check_env``
and PettingZoo's ``parallel_api_test`` over all three.

Observations are a ``Dict`` with one entry per modality the device's profile has (fixed layout, as gym spaces need;
image sizes and audio samples per step come from the first frames) plus ``present``: a ``MultiBinary`` over
:data:`bridge.tasks.MODALITIES`. ``present[m]`` is 1 exactly when ``obs[OBS_KEYS[m]]`` holds this step's data; a
modality dropped at a step is filled with zeros and flagged 0 (the frame itself carries ``None``).

Actions are the agent's predictions, one class index per predicted task (``MultiDiscrete`` over ``tasks``, default
every task in :data:`TASK_ORDER`). They are shown in the scene as :class:`~bridge.backend.ShowPrediction` overlays.
The reward is a registered reward function (:func:`register_reward`); the default ``"labels"`` is the fraction of
the frame's active tasks (those of ``tasks``; all of ``tasks`` when none is active) predicted correctly --
interactive testing as an RL loop. Rewards are paid for the frame the action was taken on.

Seeding: ``reset(seed=s)`` resets the scene with seed ``s`` (so the env's episode equals ``backend.reset(seed=s)``);
``reset()`` without a seed draws the next scene seed from the env's ``np_random``, so a seeded env yields a
deterministic sequence of different episodes. A ZeroMQ stream cannot restart its remote scene: an env over it says so
in ``spec.nondeterministic``.

Episode behaviours are Gymnasium wrappers, not flags: episode length is ``gymnasium.wrappers.TimeLimit`` (or
``gymnasium.make(ENV_ID, max_episode_steps=...)``), modality dropout and lighting randomization are in
:mod:`bridge.wrappers`. :class:`XRParallelEnv` keeps ``max_steps`` (PettingZoo has no time-limit wrapper).

Registered Gymnasium ids: :data:`ENV_ID` (``XRAvatarEnv``, 300 steps) and :data:`ROOM_FROM_POSE_ID`, the RL task of
``xrfed bench rl`` (see :func:`make_room_from_pose`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec
from pettingzoo import ParallelEnv

from .arrays import modality_arrays
from .backend import SceneCommand, ShowPrediction, SimBackend
from .devices import get_device
from .errors import BridgeError, UnknownNameError
from .frame import NUM_HAND_JOINTS, DeviceFrame
from .tasks import MODALITIES, TASKS

__all__ = [
    "ENV_ID",
    "ROOM_FROM_POSE_ID",
    "OBS_KEYS",
    "TASK_ORDER",
    "EnvError",
    "RewardFn",
    "XRAvatarEnv",
    "XRParallelEnv",
    "make_reward",
    "make_room_from_pose",
    "observation_space_for",
    "register_reward",
    "reward_names",
]

TASK_ORDER = tuple(TASKS)

#: Gymnasium id of :class:`XRAvatarEnv` (``gymnasium.make(ENV_ID, scenario=..., backend=...)``; 300 steps)
ENV_ID = "xrfed/XRAvatar-v0"
#: Gymnasium id of the "room from head pose" RL task (:func:`make_room_from_pose`; 600 steps = 60 s)
ROOM_FROM_POSE_ID = "xrfed/RoomFromPose-v0"

#: observation key of each modality (``present`` follows :data:`bridge.tasks.MODALITIES` order)
OBS_KEYS: dict[str, str] = {"rgb": "rgb", "depth": "depth_m", "gaze": "gaze", "audio": "audio", "pose": "pose",
                            "imu": "imu", "hands": "hands"}


class EnvError(BridgeError, ValueError):
    """An env was given a bad argument or action, or a backend's frame no longer fits the env's spaces."""


# -- rewards -------------------------------------------------------------------------------------------------------
#: ``reward(frame, predicted)``: ``frame`` is the frame the agent acted on, ``predicted`` maps each predicted task to
#: the class index the agent chose; returns a float reward
RewardFn = Callable[[DeviceFrame, Mapping[str, int]], float]


def _labels_reward(frame: DeviceFrame, predicted: Mapping[str, int]) -> float:
    """Fraction of the frame's active predicted tasks (all predicted tasks when none is active) predicted right; 0.0
    when none of them has a label this step."""
    tasks = ([t for t in frame.active_tasks if t in predicted and t in frame.labels]
             or [t for t in predicted if t in frame.labels])
    if not tasks:
        return 0.0
    hits = sum(predicted[t] == TASKS[t].index(frame.labels[t]) for t in tasks)
    return hits / len(tasks)


_REWARDS: dict[str, RewardFn] = {"labels": _labels_reward}


def register_reward(name: str, fn: RewardFn, *, overwrite: bool = False) -> None:
    """Register a reward function under ``name`` (see :data:`RewardFn`)."""
    if name in _REWARDS and not overwrite:
        raise EnvError(f"reward {name!r} already registered; pass overwrite=True")
    _REWARDS[name] = fn


def make_reward(name: str) -> RewardFn:
    """The reward function registered as ``name``; an unknown name lists the known ones."""
    try:
        return _REWARDS[name]
    except KeyError:
        raise UnknownNameError("reward", name, tuple(_REWARDS)) from None


def reward_names() -> tuple[str, ...]:
    return tuple(_REWARDS)


# -- spaces and observations ---------------------------------------------------------------------------------------
def observation_space_for(profile_name: str, image_hw: tuple[int, int],
                          audio_shape: tuple[int, int] | None) -> spaces.Dict:
    """The gymnasium ``Dict`` space of one device's observations (``image_hw`` in pixels, ``audio_shape`` =
    (channels, samples per step); no ``audio`` entry when None)."""
    prof = get_device(profile_name)
    h, w = image_hw
    s: dict[str, spaces.Space[Any]] = {}
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


def _obs(frame: DeviceFrame, space: spaces.Dict) -> dict[str, np.ndarray]:
    """The observation of ``frame`` in ``space`` (the array layout of :func:`bridge.arrays.modality_arrays`): fresh
    arrays, never the frame's own; zeros where absent."""
    arrays = modality_arrays(frame)
    out: dict[str, np.ndarray] = {}
    present = np.zeros(len(MODALITIES), dtype=np.int8)
    for i, m in enumerate(MODALITIES):
        key = OBS_KEYS[m]
        sub = space.spaces.get(key)
        if sub is None:
            continue
        shape, dtype = sub.shape, sub.dtype
        assert shape is not None and dtype is not None  # every modality's space is a Box (observation_space_for)
        value = arrays.get(key)
        if value is None:
            out[key] = np.zeros(shape, dtype=dtype)
            continue
        arr = np.array(value, dtype=dtype)  # a copy: users keep observations
        if arr.shape != shape:
            raise EnvError(f"device {frame.device_id!r} step {frame.step}: observation {key!r} expected shape "
                           f"{shape} (the env's observation space, fixed by the first frames), got {arr.shape}")
        out[key] = arr
        present[i] = 1
    out["present"] = present
    return out


def _check_action(action: Any, space: spaces.MultiDiscrete, who: str) -> np.ndarray:
    a = np.asarray(action)
    if a.shape != space.shape or not np.issubdtype(a.dtype, np.integer) or np.any(a < 0) or np.any(a >= space.nvec):
        raise EnvError(f"{who} action: expected integers of shape {space.shape} with 0 <= a < {space.nvec.tolist()}, "
                       f"got {a.tolist()!r} (dtype {a.dtype})")
    return a.astype(np.int64)


def _check_tasks(tasks: Sequence[str] | None) -> tuple[str, ...]:
    if tasks is None:
        return TASK_ORDER
    out = tuple(tasks)
    if not out:
        raise EnvError("tasks: expected at least one task name, got an empty list")
    for t in out:
        if t not in TASKS:
            raise UnknownNameError("task", t, TASK_ORDER)
    if len(set(out)) != len(out):
        raise EnvError(f"tasks: expected distinct task names, got {list(out)}")
    return out


def _spaces_from_first(backend: SimBackend, frames: Mapping[str, DeviceFrame]) -> dict[str, spaces.Dict]:
    out = {}
    for dev in backend.devices:
        f = frames.get(dev.device_id)
        if f is None:
            raise EnvError(f"{backend.name} backend: expected a first frame of device {dev.device_id!r}, got frames "
                           f"of {sorted(frames)}")
        img = f.rgb.shape[:2] if f.rgb is not None else (f.depth_m.shape if f.depth_m is not None else (1, 1))
        audio = f.audio.samples.shape if f.audio is not None else None
        # a stream backend told the device ids but not their profiles (no heartbeat yet) reports profile "": the
        # frame names its own profile
        profile = dev.profile or f.profile
        if audio is None:
            prof = get_device(profile)
            sc = getattr(backend, "scenario", None)
            if prof.microphones is not None and sc is not None:
                audio = (prof.microphones.count, int(round(sc.audio_hz / sc.step_hz)))
        out[dev.device_id] = observation_space_for(profile, (int(img[0]), int(img[1])), audio)
    return out


def _make_backend(scenario: Any, backend: str | SimBackend, backend_kw: dict[str, Any]) -> SimBackend:
    """The env's backend: an instance as given, or ``make_backend(name, scenario, **kw)``; ``scenario`` None means
    the shipped ``default`` scene for the embedded backend and no positional argument for the others (whose first
    positional is their own: a player's file name, a stream's endpoint)."""
    if isinstance(backend, SimBackend):
        if backend_kw or scenario is not None:
            raise EnvError(f"scenario/backend keywords {sorted(backend_kw) or ['scenario']}: expected none with a "
                           f"backend instance (it is built already)")
        return backend
    from .registry import make_backend

    if scenario is None:
        return make_backend(backend, "default", **backend_kw) if backend == "embedded" else make_backend(
            backend, **backend_kw)
    return make_backend(backend, scenario, **backend_kw)


def _replayable(backend: SimBackend, deterministic: bool | None) -> bool:
    if deterministic is not None:
        return bool(deterministic)
    return bool(backend.deterministic)


def _episode_seed(seed: int | None, rng: np.random.Generator) -> int:
    """The scene seed of an episode: ``seed`` itself, else the next draw of the env's ``np_random``."""
    return int(seed) if seed is not None else int(rng.integers(0, 2**31 - 1))


# -- the single-avatar env -----------------------------------------------------------------------------------------
class XRAvatarEnv(gym.Env[dict[str, Any], np.ndarray]):
    """One avatar's egocentric view as a ``gymnasium.Env`` (see the module docstring for spaces and reward).

    ``scenario``: a scenario name, path or :class:`~bridge.scenario.Scenario` (default: ``default``) for the
    embedded backend, the first positional argument of any other registered backend (none by default);
    ``backend``: a registry name (``"embedded"``, ``"unity"``, ``"zmq"``) or a :class:`SimBackend` instance, which
    the env then owns and closes; ``device``: the avatar's device id (default: the first); ``tasks``: the predicted
    tasks; ``reward``: a registered reward name or a :data:`RewardFn`; ``deterministic``: override whether seeded
    resets replay the scene (default: from the backend). Further keywords go to the backend's constructor.
    The episode never ends by itself: wrap it in ``gymnasium.wrappers.TimeLimit`` (``gymnasium.make`` does).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    observation_space: spaces.Dict
    action_space: spaces.MultiDiscrete

    def __init__(self, scenario: Any = None, *, device: str | None = None,
                 backend: str | SimBackend = "embedded", tasks: Sequence[str] | None = None,
                 reward: str | RewardFn = "labels", render_mode: str | None = None,
                 deterministic: bool | None = None, **backend_kw: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise EnvError(f"render_mode: expected None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.tasks = _check_tasks(tasks)
        self._reward = make_reward(reward) if isinstance(reward, str) else reward
        self.backend = _make_backend(scenario, backend, dict(backend_kw))
        try:
            frames = self.backend.reset(seed=getattr(self.backend, "seed", 0))
            ids = [d.device_id for d in self.backend.devices]  # remote backends learn their devices in reset
            if device is None:
                device = ids[0]
            if device not in ids:
                raise UnknownNameError("device", device, ids)
            self.device_id, self.render_mode = device, render_mode
            self.observation_space = _spaces_from_first(self.backend, frames)[device]
        except BaseException:
            self.backend.close()
            raise
        self.action_space = spaces.MultiDiscrete([TASKS[t].num_classes for t in self.tasks])
        self._frame: DeviceFrame = frames[device]
        self._queued: list[SceneCommand] = []
        self.deterministic = _replayable(self.backend, deterministic)
        self._spec: EnvSpec | None = EnvSpec(
            id=ENV_ID, entry_point=None if isinstance(backend, SimBackend) else f"{__name__}:XRAvatarEnv",
            nondeterministic=not self.deterministic,
            kwargs=dict(scenario=scenario, device=device, backend=backend, tasks=tasks, reward=reward,
                        deterministic=deterministic, **backend_kw))

    # ``gymnasium.make`` sets ``env.unwrapped.spec`` from the registration after __init__; a backend that cannot replay
    # its scene keeps the spec saying so, whatever the registration says.
    @property
    def spec(self) -> EnvSpec | None:
        return self._spec

    @spec.setter
    def spec(self, value: EnvSpec | None) -> None:
        if value is not None and not self.deterministic and not value.nondeterministic:
            value = dataclasses.replace(value, nondeterministic=True)
        self._spec = value

    @property
    def frame(self) -> DeviceFrame:
        """The latest :class:`~bridge.frame.DeviceFrame` of this avatar (what the observation was made from)."""
        return self._frame

    def queue(self, commands: Iterable[SceneCommand]) -> None:
        """Scene commands to send with the next ``step`` (after this env's prediction overlays); wrappers use it."""
        self._queued.extend(commands)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        frames = self.backend.reset(seed=_episode_seed(seed, self.np_random), options=options)
        self._frame, self._queued = frames[self.device_id], []
        return _obs(self._frame, self.observation_space), self._info()

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        a = _check_action(action, self.action_space, f"device {self.device_id!r}")
        predicted = {t: int(a[i]) for i, t in enumerate(self.tasks)}
        reward = float(self._reward(self._frame, predicted))
        cmds: list[SceneCommand] = [*_overlays(self.device_id, predicted, self._frame), *self._queued]
        self._queued = []
        frames = self.backend.step(cmds)
        self._frame = frames[self.device_id]
        return _obs(self._frame, self.observation_space), reward, False, False, self._info()

    def _info(self) -> dict[str, Any]:
        f = self._frame
        return {"labels": dict(f.labels), "events": list(f.events), "step": f.step, "sim_time_s": f.sim_time_s}

    def render(self) -> np.ndarray | None:
        """The latest RGB image (uint8 H x W x 3, a copy), or None when the device has no camera this step."""
        return None if self._frame.rgb is None else np.array(self._frame.rgb)

    def close(self) -> None:
        self.backend.close()


def _overlays(device_id: str, predicted: Mapping[str, int], frame: DeviceFrame) -> list[ShowPrediction]:
    return [ShowPrediction(device_id, t, TASKS[t].classes[k], frame_step=frame.step) for t, k in predicted.items()]


# -- every avatar --------------------------------------------------------------------------------------------------
class XRParallelEnv(ParallelEnv[str, dict[str, np.ndarray], np.ndarray]):
    """All devices of a scene as a PettingZoo ``ParallelEnv`` (agents = device ids); same spaces, reward and
    seeding as :class:`XRAvatarEnv`. Every agent is truncated after ``max_steps`` steps."""

    metadata = {"render_modes": [], "name": "xrfed_parallel_v0"}

    def __init__(self, scenario: Any = None, *, backend: str | SimBackend = "embedded", max_steps: int = 300,
                 tasks: Sequence[str] | None = None, reward: str | RewardFn = "labels", **backend_kw: Any):
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise EnvError(f"max_steps: expected an integer >= 1, got {max_steps!r}")
        self.tasks = _check_tasks(tasks)
        self._reward = make_reward(reward) if isinstance(reward, str) else reward
        self.backend = _make_backend(scenario, backend, dict(backend_kw))
        try:
            frames = self.backend.reset(seed=getattr(self.backend, "seed", 0))
            self.possible_agents = [d.device_id for d in self.backend.devices]
            self._obs_spaces = _spaces_from_first(self.backend, frames)
        except BaseException:
            self.backend.close()
            raise
        nvec = [TASKS[t].num_classes for t in self.tasks]
        self._act_spaces = {a: spaces.MultiDiscrete(nvec) for a in self.possible_agents}
        self.observation_spaces = dict(self._obs_spaces)
        self.action_spaces = dict(self._act_spaces)
        self.max_steps = max_steps
        self.deterministic = _replayable(self.backend, None)
        self.agents: list[str] = []
        self._frames: dict[str, DeviceFrame] = dict(frames)
        self._rng = np.random.default_rng()
        self._t = 0

    def observation_space(self, agent: str) -> spaces.Dict:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.MultiDiscrete:
        return self._act_spaces[agent]

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[
            dict[str, dict[str, np.ndarray]], dict[str, dict[str, Any]]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._frames = self.backend.reset(seed=_episode_seed(seed, self._rng), options=options)
        self.agents = list(self.possible_agents)
        self._t = 0
        obs = {a: _obs(self._frames[a], self._obs_spaces[a]) for a in self.agents}
        return obs, {a: self._info(a) for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float],
                                                     dict[str, bool], dict[str, bool], dict[str, dict[str, Any]]]:
        unknown = set(actions) - set(self.agents)
        if unknown:
            raise EnvError(f"actions: expected agents among the live agents {self.agents}, got {sorted(unknown)}")
        cmds: list[SceneCommand] = []
        rewards = {}
        for a in self.agents:
            if a in actions:
                act = _check_action(actions[a], self._act_spaces[a], f"agent {a!r}")
                predicted = {t: int(act[i]) for i, t in enumerate(self.tasks)}
                rewards[a] = float(self._reward(self._frames[a], predicted))
                cmds += _overlays(a, predicted, self._frames[a])
            else:
                rewards[a] = 0.0  # no prediction, no reward
        self._frames = self.backend.step(cmds)
        self._t += 1
        trunc = self._t >= self.max_steps
        obs = {a: _obs(self._frames[a], self._obs_spaces[a]) for a in self.agents}
        infos = {a: self._info(a) for a in self.agents}
        terms = {a: False for a in self.agents}
        truncs = {a: trunc for a in self.agents}
        if trunc:
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def _info(self, agent: str) -> dict[str, Any]:
        f = self._frames[agent]
        return {"labels": dict(f.labels), "events": list(f.events), "step": f.step, "sim_time_s": f.sim_time_s}

    def close(self) -> None:
        self.backend.close()


# -- registered RL tasks -------------------------------------------------------------------------------------------
def make_room_from_pose(scenario: Any = "default", *, avatar: str = "dev", render_px: int = 16,
                        seed: int = 0) -> gym.Env[np.ndarray, np.ndarray]:
    """The "room from head pose" task of ``xrfed bench rl``: one avatar of ``scenario`` (the others removed, so only
    its views are rendered) predicts the type of the room it stands in (``scene_classification``, 8 classes) from
    its head pose alone (world position in metres and orientation quaternion, 7 floats); reward 1 per step when
    right. A random policy earns 1/8 on average. The default avatar ``dev`` wanders through the living room,
    kitchen and office, differently per seed: over 60 s episodes no single room holds much more than 40 % of the
    steps, so a policy must read the pose to beat a constant guess (20 s episodes mostly stay in one room).

    Built from the plain :class:`XRAvatarEnv` with Gymnasium's own wrappers (``FilterObservation`` to the pose,
    ``FlattenObservation``); audio is off and images are ``render_px`` square (rendered, unused by this task).
    """
    import dataclasses as dc

    from .scenario import load_scenario

    sc = load_scenario(scenario)
    keep = [a for a in sc.avatars if a.name == avatar]
    if not keep:
        raise UnknownNameError("avatar", avatar, [a.name for a in sc.avatars])
    sc = dc.replace(sc, avatars=tuple(keep))
    env: gym.Env[Any, Any] = XRAvatarEnv(sc, tasks=("scene_classification",), audio=False,
                                         render_size=(render_px, render_px), seed=seed)
    if "pose" not in env.observation_space.spaces:  # type: ignore[attr-defined]
        env.close()
        raise EnvError(f"avatar {avatar!r}: expected a device that tracks head pose, got profile "
                       f"{keep[0].device!r}")
    env = gym.wrappers.FilterObservation(env, ["pose"])
    return gym.wrappers.FlattenObservation(env)


def _register_gym_ids() -> None:
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point=f"{__name__}:XRAvatarEnv", max_episode_steps=300)
    if ROOM_FROM_POSE_ID not in gym.registry:
        gym.register(id=ROOM_FROM_POSE_ID, entry_point=f"{__name__}:make_room_from_pose", max_episode_steps=600)


_register_gym_ids()
