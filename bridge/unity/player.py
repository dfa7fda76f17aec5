"""A stand-in Unity player: serves any :class:`~bridge.backend.SimBackend` over the ML-Agents gRPC protocol.

The unmodified ``mlagents_envs.environment.UnityEnvironment`` is the gRPC *server*; this player is the *client*
that calls ``/communicator_objects.UnityToExternalProto/Exchange`` exactly as Unity's ``RpcCommunicator`` does:

1. call #1 carries ``rl_initialization_output`` (name ``AcademySingleton``, communication version 1.5.0, all seven
   capabilities); the reply carries the client's seed, versions and capabilities. A different communication major
   version is logged and left to the client to refuse (it closes with status 400); the observation layout (channels-first or -last) follows the client's
   ``package_version``.
2. call #2 is empty; its reply is the client's first ``reset()`` (command RESET + side channels).
3. every further call carries the agents' observations (one agent per device, one behavior per device profile,
   ``XRAvatar_<profile>?team=0``), brain parameters the first time a behavior appears, and side-channel messages
   (the xrfed ``hello`` / ``frames`` / ``overlay_shown`` messages and stats). Its reply carries actions (recorded
   in :attr:`StandInPlayer.actions`), side channels (lighting parameters, xrfed commands) and the command.
4. a reply with status != 200 or command QUIT ends the session with exit code 0; :meth:`StandInPlayer.stop` sends
   status 400 once, as Unity does when the player quits.

Every outgoing message is checked against the 4 MiB gRPC limit *before* it is sent: over the limit the player
closes the session with a clear log line instead of letting the client time out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backend import SceneCommand, SimBackend
from ..devices import get_device
from ..errors import BackendError
from ..frame import DeviceFrame
from . import codec
from .errors import MessageTooLargeError, UnityConnectionError, UnityExtraMissingError, UnityProtocolError
from .observations import ObservationLayout, channels_first_for, frame_to_observations, layout_for
from .wire import STATUS_CLOSE, STATUS_OK, encode_agent_info, encode_observation, encode_output_message

__all__ = ["PlayerConfig", "StandInPlayer", "GRPC_LIMIT_BYTES", "COMMUNICATION_VERSION", "PLAYER_PACKAGE_VERSION",
           "EXCHANGE_METHOD", "behavior_name"]

log = logging.getLogger("xrfed.unity.player")

GRPC_LIMIT_BYTES = 4 * 1024 * 1024
COMMUNICATION_VERSION = "1.5.0"
PLAYER_PACKAGE_VERSION = "xrfed-sim/0.1.0"
EXCHANGE_METHOD = "/communicator_objects.UnityToExternalProto/Exchange"
_CMD_STEP, _CMD_RESET, _CMD_QUIT = 0, 1, 2


def behavior_name(profile: str, team: int = 0) -> str:
    """The wire key of a device profile's behavior (Unity: ``{BehaviorName}?team={TeamId}``)."""
    return f"XRAvatar_{profile}?team={team}"


@dataclass(frozen=True)
class PlayerConfig:
    """How the stand-in behaves on the wire. Defaults act like a Unity Editor in Play mode on port 5004."""

    port: int = 5004
    host: str = "localhost"
    #: ActionSpec of every behavior (xrfed agents act through scene commands; actions exist for protocol users)
    continuous_actions: int = 0
    discrete_branches: tuple[int, ...] = ()
    #: backend steps per decision (Unity's DecisionRequester.DecisionPeriod); 0 = never request a decision
    decision_period: int = 1
    #: interrupt every agent after this many decisions (Unity's Agent.MaxStep) and reset the scene; 0 = never
    max_episode_steps: int = 0
    #: how long to wait for the Python side to listen (None = forever, as the Editor waits in Play mode)
    connect_timeout_s: float | None = 60.0
    png_level: int = 1
    max_message_bytes: int = GRPC_LIMIT_BYTES
    #: False sends oversized messages anyway (only to document the client's failure mode in a test)
    enforce_size_limit: bool = True
    communication_version: str = COMMUNICATION_VERSION
    package_version: str = PLAYER_PACKAGE_VERSION
    #: override the image size / audio samples per step (default: from the first frames or the backend)
    image_hw: tuple[int, int] | None = None
    audio_samples: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise BackendError(f"PlayerConfig.port must be in [1, 65535], got {self.port}")
        if self.continuous_actions < 0 or any(b < 1 for b in self.discrete_branches):
            raise BackendError("PlayerConfig: continuous_actions >= 0 and every discrete branch size >= 1")
        if self.decision_period < 0 or self.max_episode_steps < 0:
            raise BackendError("PlayerConfig: decision_period and max_episode_steps must be >= 0")
        if not 0 <= self.png_level <= 9:
            raise BackendError(f"PlayerConfig.png_level must be in [0, 9], got {self.png_level}")


@dataclass
class _Device:
    index: int
    device_id: str
    user_id: str
    profile: str
    behavior: str
    layout: ObservationLayout | None = None
    last_frame: DeviceFrame | None = None


@dataclass
class PlayerRecord:
    """What the player saw, for tests and diagnostics."""

    init_input: Any = None
    channels_first: bool | None = None
    commands: list[int] = field(default_factory=list)
    side_channel_bytes: list[bytes] = field(default_factory=list)
    unknown_channels: list[str] = field(default_factory=list)
    engine_settings: list[bytes] = field(default_factory=list)
    parameters: dict[str, float | None] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    scene_commands: list[SceneCommand] = field(default_factory=list)
    actions: list[dict[str, list[tuple[list[float], list[int], list[float]]]]] = field(default_factory=list)
    sent_bytes: list[int] = field(default_factory=list)
    exit_reason: str = ""


class StandInPlayer:
    """Serve ``backend`` to a ``UnityEnvironment`` listening on ``config.port`` (see the module docstring).

    ``action_mask(device_id, step) -> list[bool]`` (True = action disabled, one per discrete action) and
    ``reward(frame) -> float`` are optional hooks; ``stats(frames) -> {key: value}`` adds StatsSideChannel values.
    """

    def __init__(self, backend: SimBackend, config: PlayerConfig | None = None, *, seed: int | None = None,
                 scene_name: str | None = None,
                 action_mask: Callable[[str, int], Sequence[bool]] | None = None,
                 reward: Callable[[DeviceFrame], float] | None = None,
                 stats: Callable[[Mapping[str, DeviceFrame]], Mapping[str, float]] | None = None):
        self.backend = backend
        self.config = config or PlayerConfig()
        self.seed = seed
        self.scene_name = scene_name or getattr(getattr(backend, "scenario", None), "name", backend.name)
        self._action_mask, self._reward, self._stats = action_mask, reward, stats
        self.record = PlayerRecord()
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._channel: Any = None
        self._devices: list[_Device] = []
        self._announced: set[str] = set()
        self._pending_out: list[tuple[Any, bytes]] = []
        self._pending_cmds: list[SceneCommand] = []
        self._episode_steps = 0
        self._episode = 0
        self._scene_step = 0
        self._xrfed_client = False

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> StandInPlayer:
        """Run the session in a daemon thread (for in-process use and tests)."""
        self._thread = threading.Thread(target=self._run_safely, name=f"xrfed-player-{self.config.port}", daemon=True)
        self._thread.start()
        return self

    def _run_safely(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # the thread must record, not swallow, what ended it
            self.error = exc
            self.exit_code = 1
            log.error("stand-in player stopped: %s", exc)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Quit as a Unity player does (status 400 on the next exchange); cancel the call if the peer is silent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive() and self._channel is not None:
                self._channel.close()  # cancels the in-flight call: the peer never answered
                self._thread.join(timeout_s)

    def join(self, timeout_s: float | None = None) -> int | None:
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.exit_code

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the session -------------------------------------------------------------------------------------
    def run(self) -> int:
        """Connect, serve until either side closes; returns the exit code (0 = clean shutdown)."""
        try:
            import grpc
            from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
        except ImportError as exc:
            raise UnityExtraMissingError(exc.name or "grpcio/mlagents-envs") from None
        self._pb = UnityMessageProto
        cfg = self.config
        self._channel = grpc.insecure_channel(
            f"{cfg.host}:{cfg.port}",
            options=[("grpc.max_receive_message_length", GRPC_LIMIT_BYTES), ("grpc.max_send_message_length", -1)])
        self._exchange = self._channel.unary_unary(EXCHANGE_METHOD, request_serializer=lambda b: b,
                                                   response_deserializer=UnityMessageProto.FromString)
        try:
            self.exit_code = self._session(grpc)
        finally:
            self._channel.close()
            self.backend.close()
        return self.exit_code

    def _call(self, grpc: Any, payload: bytes, *, first: bool = False) -> Any:
        cfg = self.config
        if len(payload) > cfg.max_message_bytes and cfg.enforce_size_limit:
            # Refuse before sending: the client would only see a timeout. Close cleanly so it fails at once.
            err = MessageTooLargeError(len(payload), cfg.max_message_bytes, "observation message")
            log.error("%s; closing the session", err)
            self._quit(grpc)
            raise err
        self.record.sent_bytes.append(len(payload))
        try:
            return self._exchange(payload, wait_for_ready=True, timeout=cfg.connect_timeout_s if first else None)
        except grpc.RpcError as exc:
            if self._stop.is_set():
                return None
            code = exc.code() if hasattr(exc, "code") else None
            if not first and code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE):
                # The client stopped its server right after its last reply (UnityEnvironment.close() does
                # server.stop() at once), so the status-400 answer can be lost: the session is over either way.
                log.info("the client went away (%s)", code)
                return None
            if first and code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise UnityConnectionError(f"no UnityEnvironment listened on {cfg.host}:{cfg.port} within "
                                           f"{cfg.connect_timeout_s} s (start the Python side first)") from exc
            raise UnityConnectionError(f"gRPC exchange with {cfg.host}:{cfg.port} failed: {code}") from exc

    def _session(self, grpc: Any) -> int:
        from mlagents_envs.communicator_objects.unity_rl_initialization_output_pb2 import (
            UnityRLInitializationOutputProto,
        )

        cfg = self.config
        init = UnityRLInitializationOutputProto(name="AcademySingleton", communication_version=cfg.communication_version,
                                                package_version=cfg.package_version)
        for flag in ("baseRLCapabilities", "concatenatedPngObservations", "compressedChannelMapping", "hybridActions",
                     "trainingAnalytics", "variableLengthObservation", "multiAgentGroups"):
            setattr(init.capabilities, flag, True)
        reply = self._call(grpc, encode_output_message(init_output=init.SerializeToString()), first=True)
        if reply is None or reply.header.status != STATUS_OK:
            return self._finish("closed by the client during the handshake")
        ini = reply.unity_input.rl_initialization_input
        self.record.init_input = ini
        if ini.communication_version.split(".")[0] != cfg.communication_version.split(".")[0]:
            # The client refuses a different major version and answers the next call with status 400.
            log.error("client speaks communication API %s, this player %s: the client will close",
                      ini.communication_version, cfg.communication_version)
        self.record.channels_first = channels_first_for(ini.package_version or "1.0.0")
        if self.seed is None:
            self.seed = int(ini.seed)
        log.info("connected to mlagents-envs %s (communication %s), %s layout", ini.package_version,
                 ini.communication_version, "channels-first" if self.record.channels_first else "channels-last")
        reply = self._call(grpc, encode_output_message())
        while True:
            if reply is None or reply.header.status != STATUS_OK:
                return self._finish("the client closed (status %s)" % (None if reply is None else reply.header.status))
            rl = reply.unity_input.rl_input
            self.record.commands.append(int(rl.command))
            self._read_side_channel(bytes(rl.side_channel))
            if rl.command == _CMD_QUIT:
                return self._finish("QUIT command")
            if cfg.decision_period == 0:
                # No agent requests decisions (no DecisionRequester): Unity never calls; the client times out.
                if rl.command == _CMD_RESET:
                    self._reset_scene()
                return self._idle(grpc)
            if rl.command == _CMD_RESET:
                frames = self._reset_scene()
                infos = self._agent_infos(frames)
            else:
                self._record_actions(rl)
                terminal: dict[str, DeviceFrame] = {}
                frames = {}
                for k in range(cfg.decision_period):
                    cmds, self._pending_cmds = (self._pending_cmds, []) if k == 0 else ([], [])
                    frames = self.backend.step(cmds)
                    self._scene_step += 1
                self._episode_steps += 1
                if cfg.max_episode_steps and self._episode_steps >= cfg.max_episode_steps:
                    terminal = frames
                    self._episode += 1
                    frames = self._reset_scene(self.seed + self._episode, announce=False)
                infos = self._agent_infos(frames, terminal)
            if self._stop.is_set():
                return self._quit(grpc)
            reply = self._call(grpc, encode_output_message(agent_infos=infos, side_channel=self._drain_side_channel(),
                                                           init_output=self._brain_parameters(infos)))

    def _idle(self, grpc: Any) -> int:
        while not self._stop.wait(0.02):
            self.backend.step(())
        return self._quit(grpc)

    def _quit(self, grpc: Any) -> int:
        """Unity's ``RpcCommunicator.Dispose``: one status-400 exchange, not waiting long for its answer."""
        fut = self._exchange.future(encode_output_message(status=STATUS_CLOSE), wait_for_ready=False)
        try:
            fut.result(timeout=2.0)
        except Exception:  # the client may already be gone or never answer: quitting anyway
            fut.cancel()
        return self._finish("the player quit")

    def _finish(self, reason: str, code: int = 0) -> int:
        self.record.exit_reason = reason
        log.info("session over: %s", reason)
        return code

    # -- scene -------------------------------------------------------------------------------------------
    def _reset_scene(self, seed: int | None = None, *, announce: bool = True) -> dict[str, DeviceFrame]:
        frames = self.backend.reset(seed=self.seed if seed is None else seed)
        self._episode_steps = 0
        if announce:
            self._episode = 0
        if not self._devices:
            self._devices = self._make_devices(frames)
        if self._pending_cmds:
            cmds, self._pending_cmds = self._pending_cmds, []
            frames = self.backend.step(cmds)
        if announce:
            self._queue(codec.XRFED_CHANNEL_ID, codec.make_message(
                "hello", scene=self.scene_name, player=self.config.package_version, step_dt_s=self.backend.step_dt_s,
                devices=[{"device_id": d.device_id, "user_id": d.user_id, "profile": d.profile,
                          "behavior": d.behavior} for d in self._devices]))
        return frames

    def _make_devices(self, frames: Mapping[str, DeviceFrame]) -> list[_Device]:
        cfg = self.config
        out = []
        sc = getattr(self.backend, "scenario", None)
        for i, info in enumerate(self.backend.devices):
            prof = get_device(info.profile)
            audio_samples = cfg.audio_samples
            if audio_samples is None and sc is not None:
                audio_samples = int(round(sc.audio_hz / sc.step_hz))
            image_hw = cfg.image_hw
            if image_hw is None and sc is not None:
                image_hw = (sc.render.height_px, sc.render.width_px)
            same = [f for f in frames.values() if f.profile == info.profile]
            layout = layout_for(prof.modalities, same, channels_first=bool(self.record.channels_first),
                                image_hw=image_hw, audio_channels=prof.microphones.count if prof.microphones else None,
                                audio_samples=audio_samples)
            out.append(_Device(i, info.device_id, info.user_id, info.profile, behavior_name(info.profile), layout))
        return out

    def _agent_infos(self, frames: Mapping[str, DeviceFrame],
                     terminal: Mapping[str, DeviceFrame] | None = None) -> dict[str, list[bytes]]:
        infos: dict[str, list[bytes]] = {}
        meta = []
        for d in self._devices:
            if terminal and d.device_id in terminal:
                infos.setdefault(d.behavior, []).append(self._agent_info(d, terminal[d.device_id], done=True))
            f = frames[d.device_id]
            d.last_frame = f
            infos.setdefault(d.behavior, []).append(self._agent_info(d, f))
            meta.append(_frame_meta(f))
        self._queue(codec.XRFED_CHANNEL_ID, codec.make_message("frames", frames=meta))
        for key, value in (self._stats(frames) if self._stats else {}).items():
            self._pending_out.append((codec.STATS_CHANNEL_ID, codec.encode_stat(key, value)))
        return infos

    def _agent_info(self, d: _Device, f: DeviceFrame, *, done: bool = False) -> bytes:
        assert d.layout is not None
        obs = frame_to_observations(f, d.layout, d.index, png_level=self.config.png_level)
        shapes, dims = d.layout.shapes(), d.layout.dimension_properties
        encoded = [encode_observation(name, shapes[name], data, dims[name]) for name, data in obs.items()]
        mask = self._action_mask(d.device_id, f.step) if self._action_mask else ()
        reward = float(self._reward(f)) if self._reward else 0.0
        return encode_agent_info(d.index, encoded, reward=reward, done=done, max_step_reached=done,
                                 action_mask=mask)

    def _brain_parameters(self, infos: Mapping[str, list[bytes]]) -> bytes | None:
        """Brain parameters of behaviors not announced yet (once per behavior, with its first agents)."""
        from mlagents_envs.communicator_objects.unity_rl_initialization_output_pb2 import (
            UnityRLInitializationOutputProto,
        )

        new = [b for b in infos if b not in self._announced and infos[b]]
        if not new:
            return None
        msg = UnityRLInitializationOutputProto()
        for b in new:
            bp = msg.brain_parameters.add(brain_name=b, is_training=True)
            bp.action_spec.num_continuous_actions = self.config.continuous_actions
            bp.action_spec.num_discrete_actions = len(self.config.discrete_branches)
            bp.action_spec.discrete_branch_sizes.extend(self.config.discrete_branches)
            self._announced.add(b)
        return msg.SerializeToString()

    def _record_actions(self, rl: Any) -> None:
        step: dict[str, list[tuple[list[float], list[int], list[float]]]] = {}
        for behavior, lst in rl.agent_actions.items():
            step[behavior] = [(list(a.continuous_actions), list(a.discrete_actions),
                               list(a.vector_actions_deprecated)) for a in lst.value]
        self.record.actions.append(step)

    # -- side channels -----------------------------------------------------------------------------------
    def _queue(self, channel_id: Any, msg: dict[str, Any]) -> None:
        # Only clients that registered the xrfed channel get its messages (they announce it by sending one);
        # plain UnityEnvironment users would otherwise see an "unknown side channel" warning every step.
        if self._xrfed_client:
            self._pending_out.append((channel_id, codec.encode_message(msg)))

    def _drain_side_channel(self) -> bytes:
        out, self._pending_out = codec.pack_records(self._pending_out), []
        return out

    def _read_side_channel(self, data: bytes) -> None:
        if not data:
            return
        self.record.side_channel_bytes.append(data)
        lighting: dict[str, float] = {}
        for cid, payload in codec.unpack_records(data):
            if cid == codec.ENGINE_CHANNEL_ID:
                self.record.engine_settings.append(payload)
            elif cid == codec.ENV_PARAMS_CHANNEL_ID:
                key, value = codec.decode_env_parameter(payload)
                self.record.parameters[key] = value
                if value is not None and key.startswith(codec.LIGHTING_PARAM_PREFIX):
                    lighting[key] = value
            elif cid == codec.ANALYTICS_CHANNEL_ID:
                continue
            elif cid == codec.XRFED_CHANNEL_ID:
                self._on_xrfed(codec.decode_message(payload))
            else:
                self.record.unknown_channels.append(str(cid))
                log.warning("side channel %s is unknown to the stand-in player; ignored", cid)
        cmds = codec.parameters_to_lighting(lighting)
        self.record.scene_commands.extend(cmds)
        self._pending_cmds[:0] = cmds

    def _on_xrfed(self, msg: dict[str, Any]) -> None:
        self.record.messages.append(msg)
        self._xrfed_client = True
        t = msg["type"]
        if t == "reset":
            self.seed = msg["seed"]
        elif t in ("set_modality", "show_prediction"):
            cmd = codec.message_to_command(msg)
            self.record.scene_commands.append(cmd)
            self._pending_cmds.append(cmd)
            if t == "show_prediction":
                self._queue(codec.XRFED_CHANNEL_ID, codec.make_message(
                    "overlay_shown", device_id=msg["device_id"], task=msg["task"], label=msg["label"],
                    frame_step=msg["frame_step"], sent_ns=msg["sent_ns"], scene_step=self._scene_step))
        elif t == "set_script" and hasattr(self.backend, "set_script"):
            self.backend.set_script(msg["avatar"], msg["script"])
        elif t == "load_scenario" and msg["scenario"].get("name") == self.scene_name:
            pass  # the scene already runs this scenario
        elif t in ("set_script", "load_scenario"):
            detail = (f"{t} is not supported by the stand-in player serving {self.scene_name!r} "
                      f"(a {self.backend.name} backend); restart `xrfed player` with the wanted scenario")
            self._queue(codec.XRFED_CHANNEL_ID, codec.make_message("event", name="unsupported", detail=detail))
        else:
            raise UnityProtocolError(f"xrfed message {t!r} is scene-to-Python only; the player cannot receive it")


def _frame_meta(f: DeviceFrame) -> dict[str, Any]:
    """The non-tensor fields of a frame, carried by the xrfed ``frames`` message."""
    li = f.lighting
    return {
        "device_id": f.device_id, "step": f.step, "sim_time_s": f.sim_time_s, "wall_time_ns": int(f.wall_time_ns),
        "room": f.room, "events": list(f.events), "active_tasks": list(f.active_tasks),
        "lighting": None if li is None else [li.intensity, li.illuminance_lux, li.color_temperature_k,
                                             float(li.lights_on)],
        "camera_fov_y_deg": f.camera_fov_y_deg,
        "audio_hz": None if f.audio is None else f.audio.sample_rate_hz,
        "audio_channels": None if f.audio is None else int(f.audio.samples.shape[0]),
    }

