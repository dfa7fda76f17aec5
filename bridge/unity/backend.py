"""The Unity backend: frames from a Unity Editor in Play mode or a built player, through mlagents-envs 1.1.0.

``UnityBackend()`` (no file name) listens on port 5004 and waits for the Editor's Play button;
``UnityBackend("builds/XRFed", worker_id=2)`` launches the build on port 5005 + 2. Either way the unmodified
``mlagents_envs.environment.UnityEnvironment`` does the talking; this class maps what it returns to the frame
contract, so agents and federation cannot tell a Unity frame from an embedded one:

* **agents -> devices**: the scene's xrfed ``hello`` message lists its devices; each agent's ``device``
  observation is the index into that list (agent ids and behavior names are free for the Unity user to choose);
* **observations -> modalities**: by observation *name* (see :mod:`bridge.unity.observations`); the ``present``
  vector says which modalities are real this step, absent ones become None;
* **non-tensor fields** (step, sim time, room, events, lighting, active tasks) come from the xrfed ``frames``
  message of the same exchange;
* **scene commands**: :class:`~bridge.backend.SetLighting` -> EnvironmentParametersChannel floats
  (``xrfed.lighting.*``); SetModality / ShowPrediction -> the xrfed side channel; the scene acknowledges each
  prediction overlay (``overlay_shown``), which gives the round-trip latency frame -> prediction -> scene.

mlagents-envs is imported only when the backend connects (the optional ``unity`` extra).

The gRPC server ``UnityEnvironment`` starts has no TLS and no authentication, and mlagents-envs binds it on every
interface (``[::]``). This backend binds ``host`` instead, 127.0.0.1 by default; any other address needs
``allow_remote=True`` and logs a warning. A scene that refuses a message answers with header status 500
(``STATUS_REJECTED``, see :mod:`bridge.unity.player`); the backend raises :class:`RejectedMessageError` with the
scene's one-line reason, and the next ``step()`` / ``reset()`` goes on.

Hostile scenes
--------------
Whatever answers on the port is outside input. Every ``UnityOutputProto`` is checked before mlagents-envs reads it
(which would otherwise fail with IndexError, RuntimeError, struct.error or allocate what a shape field claims):

* **rejected** -- ``step()`` / ``reset()`` raise one line, counted in :attr:`UnityStats.refused`, and the next
  ``step()`` goes on (as after mlagents-envs' own ``UnityObservationException``): anything that would feed a frame.
  Checked before mlagents-envs reads the output (a :class:`UnityProtocolError`; specs, steps and messages stay as
  before): a handshake with unreadable versions; more than :data:`MAX_BEHAVIORS` behaviors or :data:`MAX_AGENTS`
  agents; a behavior name that is not printable; action specs out of range; observations whose count, names,
  shape, type or dimension flags do not match the declared spec, shapes above :data:`MAX_OBSERVATION_VALUES` values
  or an exchange that would decode to more than :data:`MAX_DECODED_BYTES`; NaN in any observation, inf or
  ``|x| > MAX_ABS_OBSERVATION`` in a vector observation or a reward; ``rgb`` / ``depth_m`` not PNG-compressed with
  xrfed's channel mapping (docs/unity.md, "Compressed observations"); PNG observations of more bytes than their
  images uncompressed, whose IHDR is not an 8-bit RGB(A) image of the declared size (checked before Pillow
  allocates anything), too many images, bad channel mappings, or chunks Pillow's PNG reader cannot open (each image
  is opened here, before mlagents-envs opens it with every Pillow plugin; pixel data that then fails to decode in
  mlagents-envs is located by a full decode and named); side-channel framing that overruns or more than
  :data:`MAX_SIDE_CHANNEL_RECORDS` records; an xrfed message that is not ASCII JSON of version 1, and a ``hello``
  or ``frames`` message whose nested contents fail :func:`bridge.unity.codec.check_scene_message`. Checked while
  frames are built (the backend's own state -- last steps, terminations -- stays as before): an agent whose
  ``device``, ``labels``, observation layout or audio size does not fit the scene's devices and metadata
  (:class:`UnityProtocolError`), a frame the frame contract refuses (:class:`~bridge.errors.FrameValidationError`).
* **counted and skipped** (:attr:`UnityStats.rejected`, by reason; logged at the 1st, 2nd, 4th, 8th ... of each
  reason) -- what only informs and must not stop frames: a malformed ``overlay_shown`` or ``event``, an
  acknowledgement of a prediction this backend never sent, an xrfed message type this side does not know (a newer
  scene's), a stat that is malformed, non-finite or beyond :data:`MAX_SCENE_STATS` keys, records on channels Python
  only writes (environment parameters, engine configuration, training analytics) or on no registered channel. Side
  channels the caller registered get their records untouched.

Lists that a scene can grow (``events``, ``terminated``) keep the last :data:`MAX_KEPT` entries.
"""

from __future__ import annotations

import atexit
import logging
import math
import re
import struct
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..arrays import arrays_to_frame
from ..backend import DeviceInfo, SceneCommand, SetLighting, ShowPrediction, SimBackend
from ..cliargs import is_loopback
from ..errors import BackendError, XrfedError
from ..frame import DeviceFrame
from ..scenario import Scenario, load_scenario
from ..tasks import MODALITIES, TASKS
from . import codec
from .errors import RejectedMessageError, UnityConnectionError, UnityExtraMissingError, UnityProtocolError
from .observations import CHANNEL_MAPPINGS, IMAGE_CHANNELS, VECTOR_SIZES, observations_to_arrays
from .wire import COMPRESSION_PNG, STATUS_OK, STATUS_REJECTED

__all__ = ["UnityBackend", "UnityConfig", "UnityStats", "EDITOR_PORT", "BUILD_BASE_PORT", "MAX_BEHAVIORS",
           "MAX_AGENTS", "MAX_OBSERVATIONS", "MAX_OBSERVATION_VALUES", "MAX_DECODED_BYTES", "MAX_ABS_OBSERVATION",
           "MAX_ACTIONS", "MAX_SIDE_CHANNEL_RECORDS", "MAX_SCENE_STATS", "MAX_KEPT"]

log = logging.getLogger("xrfed.unity")

EDITOR_PORT = 5004
BUILD_BASE_PORT = 5005
#: behaviors (agent kinds) one scene may declare
MAX_BEHAVIORS = 64
#: agents of one behavior in one exchange
MAX_AGENTS = 1024
#: observations per agent
MAX_OBSERVATIONS = 32
#: values in one observation (a 2048 x 2048 x 4 image)
MAX_OBSERVATION_VALUES = 1 << 24
#: all observations of one exchange as mlagents-envs decodes them (float32; PNGs counted as 4 channels per image)
MAX_DECODED_BYTES = 256 << 20
#: largest magnitude of a vector observation or reward (mlagents-envs refuses a batch whose float32 mean overflows)
MAX_ABS_OBSERVATION = 1e30
#: continuous actions, and discrete actions summed over branches, of one behavior
MAX_ACTIONS = 1024
#: side-channel records in one exchange
MAX_SIDE_CHANNEL_RECORDS = 4096
#: distinct stat keys kept in :attr:`UnityStats.scene_stats`
MAX_SCENE_STATS = 256
#: entries kept in :attr:`UnityStats.events` and :attr:`UnityStats.terminated` (the oldest go first)
MAX_KEPT = 10_000
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_VERSION = re.compile(r"\d{1,6}\.\d{1,6}(\.\d{1,6})?([ab]\d{1,6})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class UnityConfig:
    """Where the scene runs and how to reach it (the arguments of ``UnityEnvironment``, validated)."""

    file_name: str | None = None  # None = the Unity Editor in Play mode
    worker_id: int = 0
    base_port: int | None = None  # default 5004 for the Editor, 5005 for a build
    timeout_wait_s: int = 60
    no_graphics: bool = False  # -nographics -batchmode: camera sensors then fail in real Unity (see docs/unity.md)
    no_graphics_monitor: bool = False
    additional_args: tuple[str, ...] = ()
    log_folder: str | None = None
    num_areas: int = 1
    time_scale: float | None = None  # EngineConfigurationChannel time scale (None = leave Unity's)
    scenario: str | None = None  # scenario name/path to send to the scene on the first reset (load_scenario)
    host: str = "127.0.0.1"  # address the gRPC server binds; not loopback only with allow_remote (no TLS)
    allow_remote: bool = False

    def __post_init__(self) -> None:
        from .player import check_host

        check_host(self.host, self.allow_remote, "UnityConfig.host")
        if self.worker_id < 0:
            raise BackendError(f"UnityConfig.worker_id must be >= 0, got {self.worker_id}")
        if self.file_name is None and self.worker_id != 0:
            raise BackendError("UnityConfig: the Unity Editor is worker 0 only; change the Editor's port in "
                               "Project Settings > ML-Agents and pass base_port instead")
        if self.timeout_wait_s < 1:
            raise BackendError(f"UnityConfig.timeout_wait_s must be >= 1, got {self.timeout_wait_s}")
        if self.base_port is not None and not 1 <= self.base_port <= 65535:
            raise BackendError(f"UnityConfig.base_port must be a TCP port, got {self.base_port}")

    @property
    def port(self) -> int:
        base = self.base_port if self.base_port is not None else (
            EDITOR_PORT if self.file_name is None else BUILD_BASE_PORT)
        return base + self.worker_id


@dataclass
class UnityStats:
    """What came back from the scene besides frames."""

    steps: int = 0
    #: ShowPrediction sent -> the scene's overlay_shown received (ms)
    prediction_rtt_ms: list[float] = field(default_factory=list)
    #: frame received by Python -> the overlay for that frame shown in the scene, acknowledged (ms)
    frame_to_scene_ms: list[float] = field(default_factory=list)
    scene_stats: dict[str, float] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    terminated: list[tuple[str, bool]] = field(default_factory=list)  # (device_id, interrupted)
    #: what the scene sent that was counted and skipped, by reason (see the module docstring)
    rejected: dict[str, int] = field(default_factory=dict)
    #: whole answers refused (``step()`` / ``reset()`` raised :class:`UnityProtocolError`), and the last reason
    refused: int = 0
    last_refusal: str = ""

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class UnityBackend(SimBackend):
    """Frames from Unity over ML-Agents (see the module docstring)."""

    name = "unity"

    def __init__(self, file_name: str | None = None, *, seed: int = 0, worker_id: int = 0,
                 base_port: int | None = None, timeout_wait_s: int = 60, no_graphics: bool = False,
                 no_graphics_monitor: bool = False, additional_args: Sequence[str] = (), log_folder: str | None = None,
                 num_areas: int = 1, time_scale: float | None = None, scenario: str | Scenario | None = None,
                 side_channels: Sequence[Any] = (), host: str = "127.0.0.1", allow_remote: bool = False,
                 communicator: Callable[[int, int, int], Any] | None = None):
        """``communicator(worker_id, base_port, timeout_wait_s)`` replaces the gRPC transport with another
        mlagents-envs ``Communicator`` (tests and :mod:`bridge.unity.fuzz` use an in-process one); the rest --
        handshake, checks, decoding -- is the same."""
        super().__init__()
        self._scenario = load_scenario(scenario) if scenario is not None else None
        self.config = UnityConfig(file_name=file_name, worker_id=worker_id, base_port=base_port,
                                  timeout_wait_s=timeout_wait_s, no_graphics=no_graphics,
                                  no_graphics_monitor=no_graphics_monitor, additional_args=tuple(additional_args),
                                  log_folder=log_folder, num_areas=num_areas, time_scale=time_scale,
                                  scenario=self._scenario.name if self._scenario else None, host=host,
                                  allow_remote=allow_remote)
        self.seed = seed
        self.stats = UnityStats()
        self._user_channels = tuple(side_channels)
        self._communicator = communicator
        self._screen = _SceneScreen(self.stats, frozenset(c.channel_id for c in self._user_channels))
        self._env: Any = None
        self._inbox: list[dict[str, Any]] = []
        self._devices: tuple[DeviceInfo, ...] = ()
        self._dt = self._scenario.step_dt_s if self._scenario else 0.1
        self._meta: dict[str, dict[str, Any]] = {}
        self._received_ns: dict[tuple[str, int], int] = {}
        self._last_step: dict[str, int] = {}
        self._sent_scenario = False

    # -- SimBackend -------------------------------------------------------------------------------------
    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        """The scene's devices (known after the first reset; empty before)."""
        return self._devices

    @property
    def step_dt_s(self) -> float:
        """The scene's step (its ``hello``; before the first reset the scenario's, else 0.1 s)."""
        return self._dt

    @property
    def env(self) -> Any:
        """The underlying ``UnityEnvironment`` (None before the first reset)."""
        return self._env

    def _reset(self, *, seed: int | None, options: dict[str, Any]) -> dict[str, DeviceFrame]:
        if seed is not None:
            self.seed = int(seed)
        if self._env is None:
            self._connect()
        self._xrfed.send(codec.make_message("reset", seed=self.seed))
        if self._scenario is not None and not self._sent_scenario:
            self._xrfed.send(codec.make_message("load_scenario", scenario=codec.scenario_to_dict(self._scenario)))
            self._sent_scenario = True
        self._guard(self._env.reset)
        return self._collect()

    def _step(self, commands: tuple[SceneCommand, ...]) -> dict[str, DeviceFrame]:
        for c in commands:
            if isinstance(c, SetLighting):
                for key, value in codec.lighting_to_parameters(c).items():
                    self._params.set_float_parameter(key, value)
                continue
            msg = codec.command_to_message(c)
            assert msg is not None
            if isinstance(c, ShowPrediction):
                msg["sent_ns"] = self._screen.sent(time.time_ns())
                if msg["frame_step"] is None:
                    msg["frame_step"] = self._last_step.get(c.device_id)
            self._xrfed.send(msg)
        self._guard(self._env.step)
        return self._collect()

    def _close(self) -> None:
        if self._env is not None:
            env, self._env = self._env, None
            try:
                env.close()
            except Exception as exc:  # mlagents raises its own bases; closing must not mask the original error
                log.warning("closing the Unity connection: %s", exc)

    # -- connection ---------------------------------------------------------------------------------------
    def _connect(self) -> None:
        from .protos import check

        check()  # mlagents-envs' messages in the form this protobuf runs, or one line naming the fix
        try:
            from mlagents_envs.environment import UnityEnvironment
            from mlagents_envs.exception import (
                UnityEnvironmentException,
                UnityTimeOutException,
                UnityWorkerInUseException,
            )
            from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel
            from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel
            from mlagents_envs.side_channel.stats_side_channel import StatsSideChannel
        except ImportError as exc:
            raise UnityExtraMissingError(exc.name or "mlagents_envs") from None
        from .channel import make_xrfed_channel

        cfg = self.config
        self._xrfed = make_xrfed_channel(self._inbox.append)  # receives nothing: _SceneScreen delivers to _inbox
        self._params = EnvironmentParametersChannel()
        self._stats_channel = StatsSideChannel()
        channels = [self._xrfed, self._params, self._stats_channel, *self._user_channels]
        if cfg.time_scale is not None:
            engine = EngineConfigurationChannel()
            engine.set_configuration_parameters(time_scale=cfg.time_scale)
            channels.append(engine)
        where = (f"the Unity Editor on port {cfg.port}: press Play in the Editor (Project Settings > ML-Agents > "
                 "Editor port must match)" if cfg.file_name is None else
                 f"the player {cfg.file_name!r} on port {cfg.port}: check that it starts, that Behavior Type is "
                 "Default and that the avatars request decisions; see its log")
        if cfg.allow_remote and not is_loopback(cfg.host):
            log.warning("the ML-Agents gRPC server listens on %s without TLS or authentication", cfg.host)
        try:
            env_class = _environment_class(UnityEnvironment, cfg.host, self._screen, self._inbox.extend,
                                           self._communicator)
            self._env = _construct_without_stray_atexit(
                env_class, file_name=cfg.file_name, worker_id=cfg.worker_id, base_port=cfg.base_port,
                seed=self.seed, no_graphics=cfg.no_graphics, no_graphics_monitor=cfg.no_graphics_monitor,
                timeout_wait=cfg.timeout_wait_s, additional_args=list(cfg.additional_args) or None,
                side_channels=channels, log_folder=cfg.log_folder, num_areas=cfg.num_areas)
        except UnityWorkerInUseException as exc:
            raise UnityConnectionError(f"port {cfg.port} is in use (another UnityEnvironment or Editor session?); "
                                       "use another worker_id/base_port") from exc
        except UnityTimeOutException as exc:
            raise UnityConnectionError(f"nothing answered within {cfg.timeout_wait_s} s from {where}") from exc
        except UnityEnvironmentException as exc:
            raise UnityConnectionError(f"could not connect to {where}: {exc}") from exc

    def _guard(self, fn: Any) -> None:
        from mlagents_envs.exception import (
            UnityCommunicatorStoppedException,
            UnityException,
            UnityTimeOutException,
        )

        try:
            fn()
        except UnityTimeOutException as exc:
            raise UnityConnectionError(f"the scene on port {self.config.port} did not answer within "
                                       f"{self.config.timeout_wait_s} s (paused Editor? no agent requesting "
                                       "decisions? a message over 4 MiB?)") from exc
        except UnityCommunicatorStoppedException as exc:
            raise UnityConnectionError(f"the scene on port {self.config.port} closed the connection (player quit "
                                       "or the Editor left Play mode)") from exc
        except UnityException as exc:
            raise BackendError(f"Unity backend: {exc}") from exc
        self.stats.steps += 1

    # -- frames -------------------------------------------------------------------------------------------
    def _drain_inbox(self) -> None:
        """Apply the scene's messages of the last exchange (all checked by :class:`_SceneScreen`)."""
        now = time.time_ns()
        msgs, self._inbox[:] = list(self._inbox), []
        for m in msgs:
            t = m["type"]
            if t == "hello":
                self._devices = tuple(DeviceInfo(d["device_id"], d["user_id"], d["profile"]) for d in m["devices"])
                self._dt = m["step_dt_s"]
            elif t == "frames":
                # A Unity scene may send one message per agent (each agent reports while collecting observations).
                self._meta.update({f["device_id"]: f for f in m["frames"]})
            elif t == "overlay_shown":
                if m["sent_ns"] is not None:
                    self.stats.prediction_rtt_ms.append((now - m["sent_ns"]) / 1e6)
                got = self._received_ns.pop((m["device_id"], m["frame_step"]), None)
                if got is not None:
                    self.stats.frame_to_scene_ms.append((now - got) / 1e6)
            elif t == "event":
                _keep(self.stats.events, m)
                log.warning("Unity scene event %s: %s", _one_line(m["name"], 80), _one_line(m["detail"]))
        known = {d.device_id for d in self._devices}
        for key in [k for k in self._meta if k not in known]:  # ids of a hostile scene cannot pile up
            del self._meta[key]
        for key, values in self._stats_channel.get_and_reset_stats().items():
            if not values:
                continue
            if key not in self.stats.scene_stats and len(self.stats.scene_stats) >= MAX_SCENE_STATS:
                self._screen.count("stat_keys", f"stat {key[:60]!r}: already {MAX_SCENE_STATS} stat keys")
                continue
            self.stats.scene_stats[key] = float(values[-1][0])

    def _collect(self) -> dict[str, DeviceFrame]:
        self._drain_inbox()
        if not self._devices:
            raise UnityProtocolError("the scene sent no xrfed 'hello' message: is the XRFed side channel in the "
                                     "scene (unity_project/Assets/XRFed/SideChannels)?")
        now = time.time_ns()
        rows: dict[str, tuple[dict[str, np.ndarray], bool]] = {}
        terminated: list[tuple[str, bool]] = []
        for behavior, spec in self._env.behavior_specs.items():
            decision, terminal = self._env.get_steps(behavior)
            if not len(decision) and not len(terminal):
                continue
            names = [o.name for o in spec.observation_specs]
            cf = _check_layout(behavior, spec)
            for steps, done in ((terminal, True), (decision, False)):
                for row in range(len(steps)):
                    obs = {n: steps.obs[j][row] for j, n in enumerate(names)}
                    idx = int(round(float(obs["device"][0]))) if "device" in obs else -1
                    if not 0 <= idx < len(self._devices):
                        raise UnityProtocolError(f"agent {steps.agent_id[row]} of {behavior}: device index {idx} "
                                                 f"not in the scene's {len(self._devices)} devices")
                    dev = self._devices[idx]
                    if done:
                        terminated.append((dev.device_id, bool(terminal.interrupted[row])))
                    rows[dev.device_id] = (obs, cf)  # a decision row (new episode) wins over the terminal one
        frames: dict[str, DeviceFrame] = {}
        for dev in self._devices:
            if dev.device_id not in rows:
                continue
            obs, cf = rows[dev.device_id]
            meta = self._meta.get(dev.device_id)
            if meta is None:
                raise UnityProtocolError(f"no frame metadata for {dev.device_id} in the scene's 'frames' message")
            _check_agent_values(dev.device_id, obs, meta)
            arr = observations_to_arrays(obs, audio_channels=meta.get("audio_channels"), audio_hz=meta.get("audio_hz"),
                                         channels_first=cf)
            if meta.get("lighting") is not None:
                arr["lighting"] = np.asarray(meta["lighting"], dtype=np.float64)
            frames[dev.device_id] = arrays_to_frame(
                arr, device_id=dev.device_id, user_id=dev.user_id, profile=dev.profile, step=int(meta["step"]),
                sim_time_s=float(meta["sim_time_s"]), wall_time_ns=int(meta.get("wall_time_ns") or 0),
                camera_fov_y_deg=meta.get("camera_fov_y_deg"), active_tasks=tuple(meta.get("active_tasks") or ()),
                room=meta.get("room"), events=tuple(meta.get("events") or ()))
        # every frame is valid: only now does this exchange change what the backend remembers
        for device_id, interrupted in terminated:
            _keep(self.stats.terminated, (device_id, interrupted))
        for device_id, f in frames.items():
            self._last_step[device_id] = f.step
            self._received_ns[(device_id, f.step)] = now
        if len(self._received_ns) > 4096:  # frames nobody predicted on: keep the map bounded
            for key in list(self._received_ns)[:-1024]:
                del self._received_ns[key]
        return frames


def _keep(items: list[Any], item: Any, limit: int = MAX_KEPT) -> None:
    items.append(item)
    if len(items) > limit:
        del items[: len(items) - limit]


def _one_line(text: Any, limit: int = 300) -> str:
    """Printable, one line, at most ``limit`` characters: what a hostile scene's text may become in logs/errors."""
    out = _CONTROL.sub("?", " ".join(str(text).split()))
    return out if len(out) <= limit else out[:limit - 3] + "..."


_AUDIO = MODALITIES.index("audio")
_TASK_CLASSES = tuple(len(t.classes) for t in TASKS.values())


def _check_layout(behavior: str, spec: Any) -> bool:
    """The behavior's xrfed observations have the sizes :mod:`bridge.unity.observations` defines; returns whether
    its visual observations are channels-first (all of them must agree)."""
    cf = _channels_first(spec)
    for o in spec.observation_specs:
        shape = tuple(o.shape)
        want: tuple[int, ...] | None = None
        if o.name in VECTOR_SIZES:
            want = (VECTOR_SIZES[o.name],)
        elif o.name in IMAGE_CHANNELS:
            c = IMAGE_CHANNELS[o.name]
            if len(shape) == 3:
                want = (c, *shape[1:]) if cf else (*shape[:2], c)
            else:
                want = (c, -1, -1) if cf else (-1, -1, c)
        elif o.name == "audio" and len(shape) != 1:
            want = (-1,)
        if want is not None and shape != want:
            raise UnityProtocolError(f"behavior {_one_line(behavior, 80)}: observation {o.name!r} has shape "
                                     f"{list(shape)}; xrfed expects {list(want)} (-1: any size)"
                                     + (" in the layout of the first visual observation" if len(shape) == 3 else ""))
    return cf


def _check_agent_values(device_id: str, obs: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Values that index something: label class indices, audio channels (shapes were checked per behavior)."""
    labels = np.asarray(obs.get("labels", np.zeros(0))).reshape(-1)
    for (task, n), x in zip(zip(TASKS, _TASK_CLASSES, strict=True), labels.tolist(), strict=False):
        if x >= 0 and not round(x) < n:
            raise UnityProtocolError(f"device {device_id}: label {x:g} of task {task!r}; allowed -1 (none) or a class "
                                     f"index 0 to {n - 1}")
    present = np.asarray(obs["present"]).reshape(-1) if "present" in obs else np.zeros(0)
    if "audio" in obs and len(present) > _AUDIO and present[_AUDIO] >= 0.5:
        channels, size = meta.get("audio_channels"), int(np.asarray(obs["audio"]).size)
        if channels is not None and (size < channels or size % channels):
            raise UnityProtocolError(f"device {device_id}: {size} audio values do not split into the {channels} "
                                     "channels of the frame metadata")


def _channels_first(spec: Any) -> bool:
    """Visual observations' layout from their DimensionProperty flags ([1,2,2] CHW, [2,2,1] HWC)."""
    for o in spec.observation_specs:
        if len(o.shape) == 3:
            return int(o.dimension_property[0]) == 1
    return True


def _scene_answer(output: Any, where: str) -> Any:
    """The ``unity_output`` of a scene's ``UnityMessageProto``; None if it closed (status other than 200 / 500),
    :class:`RejectedMessageError` with its one-line reason if it refused the last message (status 500)."""
    if output.header.status == STATUS_REJECTED:
        text = _one_line(output.header.message) or "no reason given"
        raise RejectedMessageError("scene", f"the scene {where}: {text}")
    if output.header.status != STATUS_OK:
        return None
    return output.unity_output


def _environment_class(base: Any, host: str, screen: _SceneScreen, deliver: Callable[[list[dict[str, Any]]], None],
                       communicator: Callable[[int, int, int], Any] | None = None) -> Any:
    """``UnityEnvironment`` whose gRPC server binds ``host`` only, reports a scene's rejection (status 500) and checks
    every output with ``screen`` before mlagents-envs reads it; the scene's xrfed messages go to ``deliver``.

    mlagents-envs' ``RpcCommunicator`` binds ``[::]`` and turns every status other than 200 into "Communicator has
    exited"; the two methods below are its own, with the address and that one status changed. ``communicator``
    (worker_id, base_port, timeout_wait) replaces the gRPC one.
    """
    import grpc
    from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
    from mlagents_envs.communicator_objects.unity_to_external_pb2_grpc import (
        add_UnityToExternalProtoServicer_to_server,
    )
    from mlagents_envs.exception import UnityWorkerInUseException
    from mlagents_envs.rpc_communicator import RpcCommunicator, UnityToExternalServicerImplementation

    from .player import grpc_target

    class Communicator(RpcCommunicator):
        def create_server(self) -> None:
            self.check_port(self.port)
            try:
                from concurrent.futures import ThreadPoolExecutor

                self.server = grpc.server(thread_pool=ThreadPoolExecutor(max_workers=10),
                                          options=(("grpc.so_reuseport", 1),))
                self.unity_to_external = UnityToExternalServicerImplementation()
                add_UnityToExternalProtoServicer_to_server(self.unity_to_external, self.server)
                if not self.server.add_insecure_port(grpc_target(host, self.port)):
                    raise OSError(f"cannot bind {grpc_target(host, self.port)}")
                self.server.start()
                self.is_open = True
            except Exception:
                raise UnityWorkerInUseException(self.worker_id) from None

        def exchange(self, inputs: Any, poll_callback: Any = None) -> Any:
            message = UnityMessageProto()
            message.header.status = STATUS_OK
            message.unity_input.CopyFrom(inputs)
            self.unity_to_external.parent_conn.send(message)
            self.poll_for_timeout(poll_callback)
            return _scene_answer(self.unity_to_external.parent_conn.recv(), f"on port {self.port}")

    class Environment(base):
        _xrfed_pending: list[dict[str, Any]] = []

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            try:
                super().__init__(*args, **kwargs)
            except XrfedError:  # the scene's handshake was refused: close the server and the process it started
                if getattr(self, "_loaded", False):
                    self._close(0)
                raise

        def _get_communicator(self, worker_id: int, base_port: int, timeout_wait: int) -> Any:
            if communicator is not None:
                return communicator(worker_id, base_port, timeout_wait)
            return Communicator(worker_id, base_port, timeout_wait)

        def _send_academy_parameters(self, init_parameters: Any) -> Any:
            output = super()._send_academy_parameters(init_parameters)
            screen.handshake(output.rl_initialization_output)
            return output

        def _update_behavior_specs(self, output: Any) -> None:
            # the first thing mlagents-envs does with every output (handshake, reset, step): check it all here
            try:
                self._xrfed_pending = screen.output(output, getattr(self, "_env_specs", {}))
            except UnityProtocolError as exc:
                screen.refuse(exc)
                raise
            super()._update_behavior_specs(output)

        def _update_state(self, output: Any) -> None:
            try:
                try:
                    super()._update_state(output)
                except XrfedError:
                    raise
                except (OSError, SyntaxError, ValueError, EOFError, struct.error, RuntimeError, zlib.error) as exc:
                    # Pillow decoding pixels the screen only opened: name the observation if a full decode finds it
                    _locate_bad_png(output)
                    raise UnityProtocolError(f"the scene's observations could not be decoded "
                                             f"({type(exc).__name__}: {_one_line(exc, 120)})") from None
            except UnityProtocolError as exc:
                screen.refuse(exc)
                raise
            pending, self._xrfed_pending = self._xrfed_pending, []
            deliver(pending)

    return Environment


class _SceneScreen:
    """Checks what a scene sends before mlagents-envs reads it (see the module docstring for what is rejected and
    what is counted and skipped); counts go to ``stats.rejected``."""

    def __init__(self, stats: UnityStats, passthrough: frozenset[uuid.UUID]):
        self.stats = stats
        self.passthrough = passthrough  # channels the caller registered: their records reach them untouched
        self._sent: OrderedDict[int, None] = OrderedDict()  # sent_ns of predictions not acknowledged yet

    def count(self, reason: str, detail: str) -> None:
        n = self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
        if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th ... of a reason: a flood of them does not flood the log
            log.warning("skipped from the Unity scene (%s, %d so far): %s", reason, n, _one_line(detail))

    def refuse(self, exc: UnityProtocolError) -> None:
        """Count an answer refused as a whole (:attr:`UnityStats.refused`)."""
        self.stats.refused += 1
        self.stats.last_refusal = _one_line(exc)

    def sent(self, sent_ns: int) -> int:
        """Remember a ShowPrediction's ``sent_ns``: only an acknowledgement of a sent one is timed."""
        self._sent[sent_ns] = None
        while len(self._sent) > 4096:
            self._sent.popitem(last=False)
        return sent_ns

    # -- the handshake --------------------------------------------------------------------------------------
    @staticmethod
    def handshake(init: Any) -> None:
        version = str(init.communication_version)
        if not _VERSION.fullmatch(version):
            raise UnityProtocolError(f"the scene's communication version {_one_line(version, 40)!r} is not "
                                     "'MAJOR.MINOR[.PATCH]'")
        package = str(init.package_version)
        if len(package) > 64 or not package.isprintable():
            raise UnityProtocolError(f"the scene's package version {_one_line(package, 40)!r} is not a printable "
                                     "string of at most 64 characters")

    # -- every output ---------------------------------------------------------------------------------------
    def output(self, output: Any, specs: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Raise :class:`UnityProtocolError` if ``output`` must be rejected; else drop what is skipped from its
        side channel (in place) and return the scene's xrfed messages, to be delivered once mlagents-envs has read
        the rest."""
        declared = self._specs(output, specs)
        self._agents(output.rl_output.agentInfos, declared)
        return self._side_channel(output.rl_output)

    def _specs(self, output: Any, specs: Mapping[str, Any]) -> dict[str, tuple[tuple[str, tuple[int, ...]], ...]]:
        init, infos = output.rl_initialization_output, output.rl_output.agentInfos
        if len(init.brain_parameters) > MAX_BEHAVIORS or len(infos) > MAX_BEHAVIORS:
            raise UnityProtocolError(f"the scene declared {max(len(init.brain_parameters), len(infos))} behaviors; "
                                     f"at most {MAX_BEHAVIORS} allowed")
        declared = {name: tuple((o.name, tuple(o.shape)) for o in spec.observation_specs)
                    for name, spec in specs.items()}
        for bp in init.brain_parameters:
            name = _proto_name("behavior name", bp.brain_name, 256)
            _check_actions(name, bp)
            if name in infos and len(infos[name].value):
                declared[name] = _declared_observations(name, infos[name].value[0])
        if len(declared) > MAX_BEHAVIORS:
            raise UnityProtocolError(f"the scene declared {len(declared)} behaviors; at most {MAX_BEHAVIORS} allowed")
        return declared

    @staticmethod
    def _agents(infos: Any, declared: Mapping[str, tuple[tuple[str, tuple[int, ...]], ...]]) -> None:
        budget = MAX_DECODED_BYTES // 4
        for behavior in infos:
            spec = declared.get(behavior)
            if spec is None:
                continue  # mlagents-envs ignores agents of undeclared behaviors
            agents = infos[behavior].value
            if len(agents) > MAX_AGENTS:
                raise UnityProtocolError(f"behavior {_one_line(behavior, 80)}: {len(agents)} agents in one step; at "
                                         f"most {MAX_AGENTS} allowed")
            for agent in agents:
                where = f"agent {agent.id} of {_one_line(behavior, 80)}"
                for what, value in (("reward", agent.reward), ("group reward", agent.group_reward)):
                    if not abs(value) <= MAX_ABS_OBSERVATION:
                        raise UnityProtocolError(f"{where}: {what} {value!r}; allowed a finite number within "
                                                 f"+-{MAX_ABS_OBSERVATION:g}")
                if len(agent.observations) != len(spec):
                    raise UnityProtocolError(f"{where}: {len(agent.observations)} observations; the behavior declared "
                                             f"{len(spec)}")
                for o, (name, shape) in zip(agent.observations, spec, strict=True):
                    if tuple(o.shape) != shape:
                        raise UnityProtocolError(f"{where}: observation {_one_line(name, 40)!r} has shape "
                                                 f"{list(o.shape)[:8]}; the behavior declared {list(shape)}")
                    if name in IMAGE_CHANNELS and len(shape) == 3:
                        _check_image_compression(f"{where}: observation {name!r}", name, o)
                    budget -= _observation_values(f"{where}: observation {_one_line(name, 40)!r}", o, shape)
                    if budget < 0:
                        raise UnityProtocolError(f"the scene's observations would decode to more than "
                                                 f"{MAX_DECODED_BYTES >> 20} MiB in one step")

    def _side_channel(self, rl: Any) -> list[dict[str, Any]]:
        data = bytes(rl.side_channel)
        if not data:
            return []
        records = codec.unpack_records(data, max_records=MAX_SIDE_CHANNEL_RECORDS)
        kept: list[tuple[uuid.UUID, bytes]] = []
        messages: list[dict[str, Any]] = []
        for cid, payload in records:
            if cid == codec.XRFED_CHANNEL_ID:
                msg = self._xrfed(payload)
                if msg is not None:
                    messages.append(msg)
            elif cid == codec.STATS_CHANNEL_ID:
                if self._stat(payload):
                    kept.append((cid, payload))
            elif cid in self.passthrough:
                kept.append((cid, payload))
            elif cid in (codec.ENV_PARAMS_CHANNEL_ID, codec.ENGINE_CHANNEL_ID, codec.ANALYTICS_CHANNEL_ID):
                self.count("python_only_channel", f"a record of {len(payload)} bytes on channel {cid}, which only "
                                                  "Python writes")
            else:
                self.count("unknown_channel", f"a record of {len(payload)} bytes on unregistered channel {cid}")
        rl.side_channel = codec.pack_records(kept)  # the xrfed records are delivered by the backend itself
        return messages

    def _xrfed(self, payload: bytes) -> dict[str, Any] | None:
        obj = codec.load_message(payload)  # not JSON, wrong version: this scene speaks another protocol -> reject
        mtype = obj.get("type")
        if mtype not in codec.SCENE_MESSAGE_TYPES:
            self.count("unknown_message", f"xrfed message type {_one_line(repr(mtype), 60)}; a scene sends "
                                          f"{', '.join(codec.SCENE_MESSAGE_TYPES)}")
            return None
        try:
            msg = codec.check_scene_message(obj)
        except UnityProtocolError as exc:
            if mtype in ("hello", "frames"):
                raise
            self.count(str(mtype), str(exc))
            return None
        if mtype == "overlay_shown" and msg["sent_ns"] is not None:
            if msg["sent_ns"] not in self._sent:
                self.count("overlay_shown", f"overlay_shown acknowledges sent_ns {msg['sent_ns']}, which this backend "
                                            "never sent (or already saw acknowledged)")
                return None
            del self._sent[msg["sent_ns"]]
        return msg

    def _stat(self, payload: bytes) -> bool:
        try:
            key, value, agg = codec.decode_stat(payload)
        except UnityProtocolError as exc:
            self.count("stat", str(exc))
            return False
        if not math.isfinite(value) or not 0 <= agg <= 3:
            self.count("stat", f"stat {key[:60]!r}: value {value!r}, aggregation {agg}; allowed a finite value and "
                               "aggregation 0 to 3")
            return False
        return True


def _proto_name(what: str, value: str, limit: int = 128) -> str:
    if not 0 < len(value) <= limit or not value.isprintable():
        raise UnityProtocolError(f"{what} {_one_line(repr(value), 60)}; allowed a printable string of 1 to {limit} "
                                 "characters")
    return value


def _check_actions(behavior: str, bp: Any) -> None:
    """The action spec mlagents-envs builds from brain parameters (the deprecated fields when both counts are 0)."""
    a = bp.action_spec
    if a.num_continuous_actions == 0 and a.num_discrete_actions == 0:
        sizes = list(bp.vector_action_size_deprecated)
        if bp.vector_action_space_type_deprecated == 1:
            if not sizes:
                raise UnityProtocolError(f"behavior {behavior!r}: a continuous action space without a size")
            continuous, branches = sizes[0], []
        else:
            continuous, branches = 0, sizes
    else:
        continuous, branches = a.num_continuous_actions, list(a.discrete_branch_sizes)
    if not 0 <= continuous <= MAX_ACTIONS or any(b < 1 for b in branches) or sum(branches) > MAX_ACTIONS:
        raise UnityProtocolError(f"behavior {behavior!r}: {continuous} continuous actions, discrete branches "
                                 f"{branches[:8]}; allowed 0 to {MAX_ACTIONS} continuous and branches of >= 1 summing "
                                 f"to at most {MAX_ACTIONS}")


_OBSERVATION_TYPES = frozenset((0, 1))  # ObservationType DEFAULT, GOAL_SIGNAL
_DIMENSION_FLAGS = frozenset((0, 1, 2, 4))  # DimensionProperty UNSPECIFIED, NONE, TRANSLATIONAL_EQUIVARIANCE, VARIABLE_SIZE


def _declared_observations(behavior: str, agent: Any) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(name, shape) of the observations mlagents-envs reads a new behavior's spec from (its first agent's)."""
    obs = agent.observations
    if not 1 <= len(obs) <= MAX_OBSERVATIONS:
        raise UnityProtocolError(f"behavior {behavior!r}: {len(obs)} observations; allowed 1 to {MAX_OBSERVATIONS}")
    out: list[tuple[str, tuple[int, ...]]] = []
    for j, o in enumerate(obs):
        name = str(o.name)
        where = f"behavior {behavior!r}: observation {j} ({_one_line(repr(name), 40)})"
        if len(name) > 128 or not name.isprintable() or name in (n for n, _ in out):
            raise UnityProtocolError(f"{where}: names must be printable, distinct and at most 128 characters")
        shape = tuple(int(d) for d in o.shape[:4])
        if not 1 <= len(o.shape) <= 3 or min(shape) < 1 or math.prod(shape) > MAX_OBSERVATION_VALUES:
            raise UnityProtocolError(f"{where}: shape {list(shape)}; allowed 1 to 3 dimensions of >= 1 with at most "
                                     f"{MAX_OBSERVATION_VALUES} values")
        if o.observation_type not in _OBSERVATION_TYPES:
            raise UnityProtocolError(f"{where}: observation type {o.observation_type}; known: 0 default, 1 goal signal")
        dims = list(o.dimension_properties)
        if dims and (len(dims) != len(shape) or any(d not in _DIMENSION_FLAGS for d in dims)):
            raise UnityProtocolError(f"{where}: dimension properties {dims[:8]}; allowed one of 0, 1, 2, 4 per "
                                     "dimension (or none)")
        out.append((name, shape))
    return tuple(out)


def _observation_values(where: str, o: Any, shape: tuple[int, ...]) -> int:
    """Check one agent's observation against its declared shape; returns the float32 values it decodes to."""
    n = math.prod(shape)
    if len(shape) == 3 and o.compression_type != 0:  # mlagents-envs decodes every compressed visual one as PNG
        return _png_values(where, bytes(o.compressed_data), shape, list(o.compressed_channel_mapping))
    data = o.float_data.data  # what mlagents-envs reads for vector observations whatever the compression says
    if len(data) != n:
        raise UnityProtocolError(f"{where}: {len(data)} values for shape {list(shape)} ({n} values)")
    values = np.asarray(data, dtype=np.float32)
    if len(shape) == 3:
        if np.isnan(values).any():  # visual: +inf is a depth "no hit"; NaN is never data
            raise UnityProtocolError(f"{where}: NaN values")
    elif not (np.abs(values) <= MAX_ABS_OBSERVATION).all():
        raise UnityProtocolError(f"{where}: NaN, inf or values beyond +-{MAX_ABS_OBSERVATION:g}")
    return n


def _check_image_compression(where: str, name: str, o: Any) -> None:
    """xrfed's images travel PNG-compressed (docs/unity.md, "Compressed observations"): ``rgb`` as an RGB PNG
    without a channel mapping (or the identity one), ``depth_m`` as an RGB PNG of millimetres mapped [0, 1, -1]."""
    mapping = tuple(o.compressed_channel_mapping)
    want = CHANNEL_MAPPINGS[name]
    if o.compression_type != COMPRESSION_PNG or (mapping != want and not (name == "rgb" and mapping == (0, 1, 2))):
        raise UnityProtocolError(f"{where}: compression type {o.compression_type}, channel mapping "
                                 f"{list(mapping)[:8]}; xrfed expects PNG (compression type {COMPRESSION_PNG}) with "
                                 f"channel mapping {list(want) or 'none'} (docs/unity.md, Compressed observations)")


def _decode_png(where: str, data: bytes, *, load: bool) -> None:
    """Open one PNG (its IHDR already checked) as mlagents-envs will, but with Pillow's PNG reader only; decode its
    pixels too with ``load``.

    mlagents-envs opens images with every Pillow plugin: when the PNG reader cannot even open corrupt bytes (a chunk
    cut short before the pixel data), Pillow tries the others, which fail with whatever they meet (AttributeError on
    mlagents' file object, among others). An image that opens here opens there (the PNG reader is tried first).
    Opening parses the chunks up to the pixel data only; pixel data that does not decode fails inside mlagents-envs
    with an OSError-like error, which the backend translates and then locates with ``load=True`` -- so the scene's
    pixels are decoded once, by mlagents-envs, in the normal case."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            if load:
                im.load()
    except Exception as exc:  # noqa: BLE001 -- Pillow raises many types on hostile bytes; translated here
        raise UnityProtocolError(f"{where} does not decode ({type(exc).__name__}: {_one_line(exc, 100)})") from None


def _locate_bad_png(rl_output: Any) -> None:
    """Decode every compressed observation of ``rl_output`` fully; raise a :class:`UnityProtocolError` naming the
    first one that fails (after mlagents-envs failed to decode one the screen had opened)."""
    for behavior in rl_output.agentInfos:
        for agent in rl_output.agentInfos[behavior].value:
            for o in agent.observations:
                if len(o.shape) == 3 and o.compression_type != 0:
                    where = f"agent {agent.id} of {_one_line(behavior, 80)}: observation {_one_line(o.name, 40)!r}"
                    _png_values(where, bytes(o.compressed_data), tuple(o.shape), list(o.compressed_channel_mapping),
                                load=True)


def _png_byte_cap(h: int, w: int) -> int:
    """Most bytes an 8-bit RGB(A) PNG of h x w can need: its rows stored uncompressed (zlib level 0 adds 5 bytes
    per 64 KiB block) plus a chunk header per 8 KiB and 64 KiB of ancillary chunks."""
    raw = h * (1 + 4 * w)
    return raw + 5 * (raw // 65535 + 1) + 12 * (raw // 8192 + 1) + 65536


def _png_values(where: str, data: bytes, shape: tuple[int, ...], mapping: list[int], *, load: bool = False) -> int:
    """PNG images of a compressed visual observation: at most as many bytes as uncompressed images, concatenated
    8-bit RGB(A) images of the declared size that open (and decode, with ``load``), as many as its channels need (3
    per image), channel mapping consistent. Returns the values they decode to. Nothing is allocated for the pixels
    before the size in every IHDR is checked."""
    c, h, w = shape
    images = -(-c // 3)
    if len(data) > images * _png_byte_cap(h, w):
        raise UnityProtocolError(f"{where}: {len(data)} bytes of PNG for {images} image(s) of {w} x {h}; at most "
                                 f"{images * _png_byte_cap(h, w)} (an uncompressed RGBA image and its chunks)")
    if not data.startswith(_PNG_SIGNATURE):
        raise UnityProtocolError(f"{where}: compressed data of {len(data)} bytes is not a PNG")
    channels: list[int] = []
    pos = 0
    while pos != -1:
        if len(channels) >= images:
            raise UnityProtocolError(f"{where}: more PNG images than its {c} channels need")
        head = data[pos + 8:pos + 8 + 21]
        if len(head) < 21 or head[:8] != b"\x00\x00\x00\rIHDR":
            raise UnityProtocolError(f"{where}: PNG image at byte {pos} has no IHDR header")
        width, height, depth, color = struct.unpack(">IIBB", head[8:18])
        if (height, width) != (h, w) or depth != 8 or color not in (2, 6):
            raise UnityProtocolError(f"{where}: PNG image at byte {pos} is {width} x {height}, {depth}-bit colour type "
                                     f"{color}; the observation declares {w} x {h}, 8-bit RGB or RGBA")
        _decode_png(f"{where}: PNG image at byte {pos}", data[pos:], load=load)
        channels.append(3 if color == 2 else 4)
        pos = data.find(_PNG_SIGNATURE, pos + 8)
    total = sum(channels)
    if mapping:
        used = {m for m in mapping if m >= 0}
        if len(mapping) != total or min(mapping) < -1 or used != set(range(c)):
            raise UnityProtocolError(f"{where}: channel mapping {mapping[:12]} does not map the {total} decoded "
                                     f"channels onto 0 to {c - 1}")
    elif total < c:
        raise UnityProtocolError(f"{where}: PNG images carry {total} channels; the observation declares {c}")
    return len(channels) * h * w * 4


def _construct_without_stray_atexit(cls: Any, **kwargs: Any) -> Any:
    """Build a ``UnityEnvironment``; if its constructor fails, drop the atexit hook it registered.

    mlagents-envs registers ``self._close`` with atexit before opening its communicator, so a failed connection
    (port in use, nothing answering) otherwise leaves a hook that raises AttributeError at interpreter exit.
    """
    registered: list[Any] = []
    real_register = atexit.register

    def capture(fn: Any, *a: Any, **k: Any) -> Any:
        registered.append(fn)
        return real_register(fn, *a, **k)

    atexit.register = capture  # type: ignore[assignment]
    try:
        return cls(**kwargs)
    except BaseException:
        for fn in registered:
            atexit.unregister(fn)
        raise
    finally:
        atexit.register = real_register
