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
"""

from __future__ import annotations

import atexit
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..arrays import arrays_to_frame
from ..backend import DeviceInfo, SceneCommand, SetLighting, ShowPrediction, SimBackend
from ..cliargs import is_loopback
from ..errors import BackendError
from ..frame import DeviceFrame
from ..scenario import Scenario, load_scenario
from . import codec
from .errors import RejectedMessageError, UnityConnectionError, UnityExtraMissingError, UnityProtocolError
from .observations import observations_to_arrays
from .wire import STATUS_OK, STATUS_REJECTED

__all__ = ["UnityBackend", "UnityConfig", "UnityStats", "EDITOR_PORT", "BUILD_BASE_PORT"]

log = logging.getLogger("xrfed.unity")

EDITOR_PORT = 5004
BUILD_BASE_PORT = 5005


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


class UnityBackend(SimBackend):
    """Frames from Unity over ML-Agents (see the module docstring)."""

    name = "unity"

    def __init__(self, file_name: str | None = None, *, seed: int = 0, worker_id: int = 0,
                 base_port: int | None = None, timeout_wait_s: int = 60, no_graphics: bool = False,
                 no_graphics_monitor: bool = False, additional_args: Sequence[str] = (), log_folder: str | None = None,
                 num_areas: int = 1, time_scale: float | None = None, scenario: str | Scenario | None = None,
                 side_channels: Sequence[Any] = (), host: str = "127.0.0.1", allow_remote: bool = False):
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
                msg["sent_ns"] = time.time_ns()
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
        self._xrfed = make_xrfed_channel(self._inbox.append)
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
            self._env = _construct_without_stray_atexit(
                _environment_class(UnityEnvironment, cfg.host), file_name=cfg.file_name, worker_id=cfg.worker_id, base_port=cfg.base_port,
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
                self.stats.events.append(m)
                log.warning("Unity scene event %s: %s", m["name"], m["detail"])
        for key, values in self._stats_channel.get_and_reset_stats().items():
            if values:
                self.stats.scene_stats[key] = float(values[-1][0])

    def _collect(self) -> dict[str, DeviceFrame]:
        self._drain_inbox()
        if not self._devices:
            raise UnityProtocolError("the scene sent no xrfed 'hello' message: is the XRFed side channel in the "
                                     "scene (unity_project/Assets/XRFed/SideChannels)?")
        now = time.time_ns()
        rows: dict[str, tuple[dict[str, np.ndarray], bool]] = {}
        for behavior, spec in self._env.behavior_specs.items():
            decision, terminal = self._env.get_steps(behavior)
            names = [o.name for o in spec.observation_specs]
            cf = _channels_first(spec)
            for steps, done in ((terminal, True), (decision, False)):
                for row in range(len(steps)):
                    obs = {n: steps.obs[j][row] for j, n in enumerate(names)}
                    idx = int(round(float(obs["device"][0]))) if "device" in obs else -1
                    if not 0 <= idx < len(self._devices):
                        raise UnityProtocolError(f"agent {steps.agent_id[row]} of {behavior}: device index {idx} "
                                                 f"not in the scene's {len(self._devices)} devices")
                    dev = self._devices[idx]
                    if done:
                        self.stats.terminated.append((dev.device_id, bool(terminal.interrupted[row])))
                    rows[dev.device_id] = (obs, cf)  # a decision row (new episode) wins over the terminal one
        frames: dict[str, DeviceFrame] = {}
        for dev in self._devices:
            if dev.device_id not in rows:
                continue
            obs, cf = rows[dev.device_id]
            meta = self._meta.get(dev.device_id)
            if meta is None:
                raise UnityProtocolError(f"no frame metadata for {dev.device_id} in the scene's 'frames' message")
            arr = observations_to_arrays(obs, audio_channels=meta.get("audio_channels"), audio_hz=meta.get("audio_hz"),
                                         channels_first=cf)
            if meta.get("lighting") is not None:
                arr["lighting"] = np.asarray(meta["lighting"], dtype=np.float64)
            frames[dev.device_id] = arrays_to_frame(
                arr, device_id=dev.device_id, user_id=dev.user_id, profile=dev.profile, step=int(meta["step"]),
                sim_time_s=float(meta["sim_time_s"]), wall_time_ns=int(meta.get("wall_time_ns") or 0),
                camera_fov_y_deg=meta.get("camera_fov_y_deg"), active_tasks=tuple(meta.get("active_tasks", ())),
                room=meta.get("room"), events=tuple(meta.get("events", ())))
            self._last_step[dev.device_id] = int(meta["step"])
            self._received_ns[(dev.device_id, int(meta["step"]))] = now
        if len(self._received_ns) > 4096:  # frames nobody predicted on: keep the map bounded
            for key in list(self._received_ns)[:-1024]:
                del self._received_ns[key]
        return frames


def _channels_first(spec: Any) -> bool:
    """Visual observations' layout from their DimensionProperty flags ([1,2,2] CHW, [2,2,1] HWC)."""
    for o in spec.observation_specs:
        if len(o.shape) == 3:
            return int(o.dimension_property[0]) == 1
    return True


def _environment_class(base: Any, host: str) -> Any:
    """``UnityEnvironment`` whose gRPC server binds ``host`` only and reports a scene's rejection (status 500).

    mlagents-envs' ``RpcCommunicator`` binds ``[::]`` and turns every status other than 200 into "Communicator has
    exited"; the two methods below are its own, with the address and that one status changed.
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
            output = self.unity_to_external.parent_conn.recv()
            if output.header.status == STATUS_REJECTED:
                text = " ".join(str(output.header.message).split())[:300] or "no reason given"
                raise RejectedMessageError("scene", f"the scene on port {self.port}: {text}")
            if output.header.status != STATUS_OK:
                return None
            return output.unity_output

    class Environment(base):
        def _get_communicator(self, worker_id: int, base_port: int, timeout_wait: int) -> Any:
            return Communicator(worker_id, base_port, timeout_wait)

    return Environment


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
