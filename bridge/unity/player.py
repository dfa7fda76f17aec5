"""A stand-in Unity player: serves any :class:`~bridge.backend.SimBackend` over the ML-Agents gRPC protocol.

The unmodified ``mlagents_envs.environment.UnityEnvironment`` is the gRPC *server*; this player is the *client*
that calls ``/communicator_objects.UnityToExternalProto/Exchange`` exactly as Unity's ``RpcCommunicator`` does:

1. call #1 carries ``rl_initialization_output`` (name ``AcademySingleton``, communication version 1.5.0, all seven
   capabilities); the reply carries the client's seed, versions and capabilities. A different communication major
   version is logged and left to the client to refuse (it closes with status 400); the observation layout (channels-first or -last) follows the client's
   ``package_version``.
2. call #2 is empty; its reply is the client's first ``reset()`` (command RESET + side channels).
3. every further call carries the agents' observations (one agent per device, one behavior per device profile,
   ``XRAvatar_<profile>?team=0``; ``rgb`` and ``depth_m`` PNG-compressed as Unity's camera sensors send them, see
   :mod:`bridge.unity.observations` and docs/unity.md "Compressed observations"), brain parameters the first time a behavior appears, and side-channel messages
   (the xrfed ``hello`` / ``frames`` / ``overlay_shown`` messages and stats). Its reply carries actions (recorded
   in :attr:`StandInPlayer.actions`), side channels (lighting parameters, xrfed commands) and the command.
4. a reply with status != 200 or command QUIT ends the session with exit code 0; :meth:`StandInPlayer.stop` sends
   status 400 once, as Unity does when the player quits.

Everything the client sends is hostile input. A reply the player cannot use -- bytes that are not a
``UnityMessageProto``, a malformed side-channel record (framing, EnvironmentParameters, EngineConfiguration or xrfed
message), an unknown command, actions that do not fit the action spec -- is refused as a whole before anything is
applied, counted in :attr:`StandInPlayer.stats` by reason, and answered with header status 500 (``STATUS_REJECTED``)
and a one-line ``header.message``. mlagents-envs raises ``UnityCommunicatorStoppedException`` for it at once (it reads
no message; :class:`~bridge.unity.backend.UnityBackend` raises a :class:`RejectedMessageError` with the text), and
the player serves the client's next message as usual. Every length is checked before anything is allocated, and
what the player records is bounded (:data:`RECORD_LIMIT` entries, :data:`RECORD_BYTES` of raw side-channel bytes).

The player connects to 127.0.0.1 by default: the ML-Agents link has no TLS and no authentication, so a
non-loopback ``host`` needs ``allow_remote=True`` (``xrfed player --allow-remote``) and logs a warning.

Every outgoing message is checked against the 4 MiB gRPC limit *before* it is sent: over the limit the player
closes the session with a clear log line instead of letting the client time out.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backend import SceneCommand, SetLighting, SimBackend
from ..cliargs import is_loopback
from ..devices import get_device
from ..errors import BackendError, XrfedError
from ..frame import DeviceFrame
from ..tasks import MODALITIES, TASKS
from . import codec
from .errors import (
    MessageTooLargeError,
    RejectedMessageError,
    UnityConnectionError,
    UnityExtraMissingError,
    UnityProtocolError,
)
from .observations import ObservationLayout, channels_first_for, frame_to_observations, layout_for
from .wire import (
    STATUS_CLOSE,
    STATUS_OK,
    STATUS_REJECTED,
    encode_agent_info,
    encode_observation,
    encode_output_message,
)

__all__ = ["PlayerConfig", "PlayerStats", "PlayerRecord", "StandInPlayer", "GRPC_LIMIT_BYTES", "COMMUNICATION_VERSION",
           "PLAYER_PACKAGE_VERSION", "EXCHANGE_METHOD", "MAX_RECORDS_PER_MESSAGE", "MAX_PARAMETERS", "MAX_SEED",
           "RECORD_LIMIT", "RECORD_BYTES", "behavior_name", "check_host", "grpc_target"]

log = logging.getLogger("xrfed.unity.player")

GRPC_LIMIT_BYTES = 4 * 1024 * 1024
COMMUNICATION_VERSION = "1.5.0"
PLAYER_PACKAGE_VERSION = "xrfed-sim/0.1.0"
EXCHANGE_METHOD = "/communicator_objects.UnityToExternalProto/Exchange"
_CMD_STEP, _CMD_RESET, _CMD_QUIT = 0, 1, 2
#: side-channel records in one client message (mlagents-envs sends a handful per step)
MAX_RECORDS_PER_MESSAGE = 1024
#: distinct environment-parameter keys over a session
MAX_PARAMETERS = 1024
#: largest seed, frame step or timestamp accepted in an xrfed message (numpy's SeedSequence takes any of them)
MAX_SEED = 2**63 - 1
#: entries kept per PlayerRecord list, and bytes of raw side-channel messages kept (oldest dropped first)
RECORD_LIMIT = 1000
RECORD_BYTES = 1024 * 1024
_IDLE = b""  # respond(): no decision requested, the session idles (never a real message: those have a header)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")
#: the reason a malformed record of each channel is counted under (other channels' records are not parsed)
_REASONS: dict[uuid.UUID, str] = {codec.ENGINE_CHANNEL_ID: "engine_config", codec.ENV_PARAMS_CHANNEL_ID: "env_parameter",
                                  codec.XRFED_CHANNEL_ID: "xrfed_message"}


def check_host(host: str, allow_remote: bool, what: str) -> None:
    """Refuse a malformed host, or a non-loopback one without ``allow_remote`` (the ML-Agents link has no TLS)."""
    if not isinstance(host, str) or not _HOST.match(host):
        raise BackendError(f"{what} {str(host)[:80]!r} is not a host name or IP address")
    if not is_loopback(host) and not allow_remote:
        raise BackendError(f"{what} {host!r} is not a loopback address and the ML-Agents gRPC link has no TLS or "
                           "authentication; pass allow_remote=True (--allow-remote) to use it anyway")


def grpc_target(host: str, port: int) -> str:
    """``host:port`` as gRPC wants it (an IPv6 literal in brackets)."""
    return f"[{host.strip('[]')}]:{port}" if ":" in host.strip("[]") else f"{host}:{port}"


def behavior_name(profile: str, team: int = 0) -> str:
    """The wire key of a device profile's behavior (Unity: ``{BehaviorName}?team={TeamId}``)."""
    return f"XRAvatar_{profile}?team={team}"


@dataclass(frozen=True)
class PlayerConfig:
    """How the stand-in behaves on the wire. Defaults act like a Unity Editor in Play mode on port 5004."""

    port: int = 5004
    #: where the UnityEnvironment listens; not loopback only with allow_remote (no TLS, no authentication)
    host: str = "127.0.0.1"
    allow_remote: bool = False
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
        check_host(self.host, self.allow_remote, "PlayerConfig.host")
        if self.connect_timeout_s is not None and not (math.isfinite(self.connect_timeout_s)
                                                       and self.connect_timeout_s > 0):
            raise BackendError(f"PlayerConfig.connect_timeout_s must be > 0 or None, got {self.connect_timeout_s}")
        if not 1 <= self.max_message_bytes <= 2**31 - 1:
            raise BackendError(f"PlayerConfig.max_message_bytes must be in [1, 2**31 - 1], got {self.max_message_bytes}")
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
class PlayerStats:
    """What the player received, counted (``StandInPlayer.stats``): the hostile-input counters live here."""

    #: client messages served (accepted)
    exchanges: int = 0
    #: refused client messages by reason: protobuf, command, actions, framing, env_parameter, engine_config,
    #: xrfed_message, record, limit (and handshake: fields replaced by defaults, the session went on)
    rejected: dict[str, int] = field(default_factory=dict)
    #: the one-line reason sent with the last rejection
    last_rejection: str = ""

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass
class _Inbound:
    """One client side-channel message, checked and not yet applied."""

    data: bytes
    engine: list[bytes] = field(default_factory=list)
    params: dict[str, float | None] = field(default_factory=dict)
    lighting: list[SetLighting] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    xrfed: bool = False


@dataclass
class PlayerRecord:
    """What the player saw, for tests and diagnostics (lists keep the last :data:`RECORD_LIMIT` entries)."""

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



_ENCODER_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_ENCODER_POOL_LOCK = threading.Lock()


def _encoder_pool() -> concurrent.futures.ThreadPoolExecutor:
    """One pool of image-encoding threads per process (as many as CPUs, at most 8), made on first use."""
    global _ENCODER_POOL
    with _ENCODER_POOL_LOCK:
        if _ENCODER_POOL is None:
            _ENCODER_POOL = concurrent.futures.ThreadPoolExecutor(
                max_workers=max(1, min(8, os.cpu_count() or 1)), thread_name_prefix="xrfed-png")
        return _ENCODER_POOL


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
        self.stats = PlayerStats()
        self._pb: Any = None
        self._warned_channels: set[str] = set()
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
        del UnityMessageProto
        cfg = self.config
        if not is_loopback(cfg.host):
            log.warning("connecting to %s without TLS or authentication (allow_remote=True)", cfg.host)
        self._channel = grpc.insecure_channel(
            grpc_target(cfg.host, cfg.port),
            options=[("grpc.max_receive_message_length", GRPC_LIMIT_BYTES), ("grpc.max_send_message_length", -1)])
        # Replies stay bytes here: respond() parses them, so an unreadable one is a counted rejection, not a crash.
        self._exchange = self._channel.unary_unary(EXCHANGE_METHOD, request_serializer=lambda b: b,
                                                   response_deserializer=lambda b: b)
        try:
            self.exit_code = self._session(grpc)
        finally:
            self._channel.close()
            self.backend.close()
        return self.exit_code

    def _call(self, grpc: Any, payload: bytes, *, first: bool = False) -> bytes | None:
        cfg = self.config
        if len(payload) > cfg.max_message_bytes and cfg.enforce_size_limit:
            # Refuse before sending: the client would only see a timeout. Close cleanly so it fails at once.
            err = MessageTooLargeError(len(payload), cfg.max_message_bytes, "observation message")
            log.error("%s; closing the session", err)
            self._quit(grpc)
            raise err
        _keep(self.record.sent_bytes, len(payload))
        try:
            return bytes(self._exchange(payload, wait_for_ready=True, timeout=cfg.connect_timeout_s if first else None))
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
        raw = self._call(grpc, encode_output_message(init_output=init.SerializeToString()), first=True)
        if not self.handshake(raw):
            return self._finish("closed by the client during the handshake")
        raw = self._call(grpc, encode_output_message())
        while True:
            out = self.respond(raw)
            if out is None:
                return self.exit_code if self.exit_code is not None else 0
            if out is _IDLE:
                # No agent requests decisions (no DecisionRequester): Unity never calls; the client times out.
                return self._idle(grpc)
            if self._stop.is_set():
                return self._quit(grpc)
            raw = self._call(grpc, out)

    def handshake(self, raw: bytes | None) -> bool:
        """Read the client's reply to call #1 (seed, versions); False if it closed. Unreadable fields are counted
        (reason ``handshake``) and replaced by defaults (seed 0, channels-first), so the session still starts."""
        cfg = self.config
        reply = None
        if raw is not None:
            try:
                reply = self._parse_reply(raw)
            except RejectedMessageError as exc:
                self._count(RejectedMessageError("handshake", str(exc)))
                reply = self._pb()
                reply.header.status = STATUS_OK
        if reply is None or reply.header.status != STATUS_OK:
            return False
        ini = reply.unity_input.rl_initialization_input
        self.record.init_input = ini
        if ini.communication_version.split(".")[0] != cfg.communication_version.split(".")[0]:
            # The client refuses a different major version and answers the next call with status 400.
            log.error("client speaks communication API %.40r, this player %s: the client will close",
                      ini.communication_version, cfg.communication_version)
        try:
            self.record.channels_first = channels_first_for(ini.package_version or "1.0.0")
        except UnityProtocolError as exc:
            self._count(RejectedMessageError("handshake", f"{exc}; assuming 1.x (channels-first)"))
            self.record.channels_first = True
        if self.seed is None:
            self.seed = int(ini.seed) % 2**32  # an int32 on the wire; a negative one as Unity's unchecked uint
        log.info("connected to mlagents-envs %.40r (communication %.40r), %s layout", ini.package_version,
                 ini.communication_version, "channels-first" if self.record.channels_first else "channels-last")
        return True

    def respond(self, raw: bytes | None) -> bytes | None:
        """Handle one client message (the reply to the player's last call) as the session does; returns the next
        message to send, or None when the session is over (:attr:`PlayerRecord.exit_reason` says why).

        A message the player refuses -- bytes that are not a ``UnityMessageProto``, a malformed side-channel record
        (framing, environment parameter, engine setting, xrfed message), an unknown command, STEP before RESET,
        actions that do not fit the action spec -- changes nothing: it is counted in :attr:`stats` and answered
        with header status 500 and a one-line ``header.message``; the client's next message is served as usual.
        """
        if raw is None:
            self._finish("the client closed (status None)")
            return None
        try:
            reply = self._parse_reply(raw)
            if reply.header.status != STATUS_OK:
                self._finish(f"the client closed (status {reply.header.status})")
                return None
            rl = reply.unity_input.rl_input
            command = self._check_command(int(rl.command))
            inbound = self._parse_side_channel(bytes(rl.side_channel))
            actions = self._parse_actions(rl) if command == _CMD_STEP else None
        except RejectedMessageError as exc:
            return self._reject(exc)
        self.stats.exchanges += 1
        _keep(self.record.commands, command)
        self._apply(inbound)
        if command == _CMD_QUIT:
            self._finish("QUIT command")
            return None
        cfg = self.config
        if cfg.decision_period == 0:
            if command == _CMD_RESET:
                self._reset_scene()
            return _IDLE
        if command == _CMD_RESET:
            frames = self._reset_scene()
            infos = self._agent_infos(frames)
        else:
            assert actions is not None
            _keep(self.record.actions, actions)
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
                frames = self._reset_scene((self.seed or 0) + self._episode, announce=False)
            infos = self._agent_infos(frames, terminal)
        return encode_output_message(agent_infos=infos, side_channel=self._drain_side_channel(),
                                     init_output=self._brain_parameters(infos))

    # -- hostile input -----------------------------------------------------------------------------------
    def _parse_reply(self, raw: bytes) -> Any:
        if self._pb is None:
            from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto

            self._pb = UnityMessageProto
        try:
            return self._pb.FromString(raw)
        except Exception as exc:  # noqa: BLE001 -- protobuf's errors, translated at the boundary
            raise RejectedMessageError("protobuf", f"the client's message of {len(raw)} bytes is not a "
                                                   f"UnityMessageProto ({type(exc).__name__}: {str(exc)[:80]})") from None

    def _check_command(self, command: int) -> int:
        if command not in (_CMD_STEP, _CMD_RESET, _CMD_QUIT):
            raise RejectedMessageError("command", f"command {command} is not STEP (0), RESET (1) or QUIT (2)")
        if command == _CMD_STEP and not self._devices:
            raise RejectedMessageError("command", "STEP before the first RESET (call reset() first)")
        return command

    def _parse_actions(self, rl: Any) -> dict[str, list[tuple[list[float], list[int], list[float]]]]:
        """The agents' actions, checked against the announced behaviors and the action spec before copying."""
        cfg = self.config
        n_cont, branches = cfg.continuous_actions, cfg.discrete_branches
        per_behavior: dict[str, int] = {}
        for d in self._devices:
            per_behavior[d.behavior] = per_behavior.get(d.behavior, 0) + 1
        step: dict[str, list[tuple[list[float], list[int], list[float]]]] = {}
        for behavior, lst in rl.agent_actions.items():
            if behavior not in self._announced:
                raise RejectedMessageError("actions", f"actions for unknown behavior {behavior[:80]!r}; known: "
                                                      f"{', '.join(sorted(self._announced))}")
            if len(lst.value) > per_behavior.get(behavior, 0):
                raise RejectedMessageError("actions", f"{len(lst.value)} actions for {behavior!r}, which has "
                                                      f"{per_behavior.get(behavior, 0)} agents")
            rows = []
            for i, a in enumerate(lst.value):
                nc, nd, nv = len(a.continuous_actions), len(a.discrete_actions), len(a.vector_actions_deprecated)
                if nc != n_cont or nd != len(branches) or nv not in (0, n_cont + len(branches)):
                    raise RejectedMessageError(
                        "actions", f"{behavior!r} agent {i}: got {nc} continuous, {nd} discrete, {nv} vector "
                                   f"actions; the action spec has {n_cont} continuous and {len(branches)} discrete")
                disc = list(a.discrete_actions)
                if any(not 0 <= v < b for v, b in zip(disc, branches, strict=True)):
                    raise RejectedMessageError("actions", f"{behavior!r} agent {i}: discrete actions {disc} outside "
                                                          f"the branch sizes {list(branches)}")
                rows.append((list(a.continuous_actions), disc, list(a.vector_actions_deprecated)))
            step[behavior] = rows
        return step

    def _parse_side_channel(self, data: bytes) -> _Inbound:
        """Check every record of one side-channel message without changing anything (see :meth:`respond`)."""
        inbound = _Inbound(data)
        if not data:
            return inbound
        try:
            records = codec.unpack_records(data, max_records=MAX_RECORDS_PER_MESSAGE)
        except UnityProtocolError as exc:
            raise RejectedMessageError("framing", str(exc)) from None
        for cid, payload in records:
            reason = _REASONS.get(cid)
            try:
                if cid == codec.ENGINE_CHANNEL_ID:
                    codec.decode_engine_setting(payload)
                    inbound.engine.append(payload)
                elif cid == codec.ENV_PARAMS_CHANNEL_ID:
                    key, value = codec.decode_env_parameter(payload)
                    inbound.params[key] = value
                elif cid == codec.XRFED_CHANNEL_ID:
                    inbound.xrfed = True
                    msg = codec.decode_message(payload)
                    self._check_xrfed(msg)
                    inbound.messages.append(msg)
                elif cid != codec.ANALYTICS_CHANNEL_ID:
                    inbound.unknown.append(str(cid))
            except XrfedError as exc:
                raise RejectedMessageError(reason or "record", str(exc)) from None
        new = len(inbound.params.keys() - self.record.parameters.keys())
        if len(self.record.parameters) + new > MAX_PARAMETERS:
            raise RejectedMessageError("limit", f"environment parameters: {len(self.record.parameters) + new} "
                                                f"distinct keys; at most {MAX_PARAMETERS}")
        lighting: dict[str, float] = {}
        for key, value in inbound.params.items():
            if key.startswith(codec.LIGHTING_PARAM_PREFIX):
                if value is None:
                    raise RejectedMessageError("env_parameter", f"lighting parameter {key[:80]!r} must be a float, "
                                                                "got a sampler")
                lighting[key] = value
        try:
            inbound.lighting = codec.parameters_to_lighting(lighting)
            scenario = getattr(self.backend, "scenario", None)
            for cmd in inbound.lighting:
                if cmd.room is not None and scenario is not None:
                    scenario.room(cmd.room)  # an unknown room raises, naming the known ones
        except XrfedError as exc:
            raise RejectedMessageError("env_parameter", str(exc)) from None
        return inbound

    def _check_xrfed(self, msg: dict[str, Any]) -> None:
        """What a valid xrfed message must also satisfy before the scene acts on it (ids, names, ranges)."""
        t = msg["type"]
        if t not in ("reset", "load_scenario", "set_script", "set_modality", "show_prediction"):
            raise UnityProtocolError(f"xrfed message {t!r} is scene-to-Python only; the player cannot receive it")
        if t == "reset" and not 0 <= msg["seed"] <= MAX_SEED:
            raise UnityProtocolError(f"xrfed message 'reset': seed {msg['seed']} outside 0 to {MAX_SEED}")
        if t in ("set_modality", "show_prediction"):
            known = [d.device_id for d in self.backend.devices]
            if msg["device_id"] not in known:
                raise UnityProtocolError(f"xrfed message {t!r}: unknown device {msg['device_id'][:80]!r}; known: "
                                         f"{', '.join(known)}")
        if t == "set_modality" and msg["modality"] not in MODALITIES:
            raise UnityProtocolError(f"xrfed message 'set_modality': unknown modality {msg['modality'][:80]!r}; "
                                     f"allowed: {', '.join(MODALITIES)}")
        if t == "show_prediction":
            if msg["task"] not in TASKS:
                raise UnityProtocolError(f"xrfed message 'show_prediction': unknown task {msg['task'][:80]!r}; "
                                         f"known: {', '.join(TASKS)}")
            if len(msg["label"]) > 256 or not 0.0 <= msg["confidence"] <= 1.0:
                raise UnityProtocolError("xrfed message 'show_prediction': label of at most 256 characters and "
                                         f"confidence in [0, 1] (got {msg['confidence']})")
            for name in ("latency_ms", "frame_step", "sent_ns"):
                if msg[name] is not None and not 0 <= msg[name] <= MAX_SEED:
                    raise UnityProtocolError(f"xrfed message 'show_prediction': {name} {msg[name]} outside 0 to "
                                             f"{MAX_SEED}")

    def _apply(self, inbound: _Inbound) -> None:
        """Act on a side-channel message that :meth:`_parse_side_channel` accepted."""
        if not inbound.data:
            return
        _keep_bytes(self.record.side_channel_bytes, inbound.data)
        for payload in inbound.engine:
            _keep(self.record.engine_settings, payload)
        self.record.parameters.update(inbound.params)
        for cid in inbound.unknown:
            _keep(self.record.unknown_channels, cid)
            if cid not in self._warned_channels and len(self._warned_channels) < 64:
                self._warned_channels.add(cid)
                log.warning("side channel %s is unknown to the stand-in player; ignored", cid)
        if inbound.xrfed:
            self._xrfed_client = True
        for msg in inbound.messages:
            self._on_xrfed(msg)
        for cmd in inbound.lighting:
            _keep(self.record.scene_commands, cmd)
        self._pending_cmds[:0] = inbound.lighting

    def _count(self, exc: RejectedMessageError) -> str:
        text = _one_line(f"xrfed player rejected the message: {exc}")
        self.stats.rejected[exc.reason] = self.stats.rejected.get(exc.reason, 0) + 1
        self.stats.last_rejection = text
        total = self.stats.rejected_total
        if total <= 10 or total % 100 == 0:  # a flood of bad messages must not flood the log too
            log.warning("%s (%d rejected so far)", text, total)
        return text

    def _reject(self, exc: RejectedMessageError) -> bytes:
        """Count a refused client message and answer it with status 500 (ML-Agents' header carries the reason)."""
        return encode_output_message(status=STATUS_REJECTED, message=self._count(exc))

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
        jobs: list[tuple[_Device, DeviceFrame, bool]] = []  # a terminal step goes before the next episode's first
        for d in self._devices:
            if terminal and d.device_id in terminal:
                jobs.append((d, terminal[d.device_id], True))
            jobs.append((d, frames[d.device_id], False))
        infos: dict[str, list[bytes]] = {}
        meta = []
        for (d, f, done), obs in zip(jobs, self._encode_observations(jobs), strict=True):
            if not done:
                d.last_frame = f
                meta.append(_frame_meta(f))
            infos.setdefault(d.behavior, []).append(self._agent_info(d, f, obs, done=done))
        self._queue(codec.XRFED_CHANNEL_ID, codec.make_message("frames", frames=meta))
        for key, value in (self._stats(frames) if self._stats else {}).items():
            self._pending_out.append((codec.STATS_CHANNEL_ID, codec.encode_stat(key, value)))
        return infos

    def _encode_observations(self, jobs: Sequence[tuple[_Device, DeviceFrame, bool]]) -> list[dict[str, Any]]:
        """Each job's observations (PNG images, float vectors), in job order. Several devices are encoded on a
        thread pool: zlib and numpy release the GIL, and a Unity build encodes its cameras in native code too."""
        level = self.config.png_level

        def one(job: tuple[_Device, DeviceFrame, bool]) -> dict[str, Any]:
            d, f, _ = job
            assert d.layout is not None
            return frame_to_observations(f, d.layout, d.index, png_level=level)

        if len(jobs) < 2:
            return [one(j) for j in jobs]
        return list(_encoder_pool().map(one, jobs))

    def _agent_info(self, d: _Device, f: DeviceFrame, obs: Mapping[str, Any], *, done: bool = False) -> bytes:
        assert d.layout is not None
        shapes, dims, maps = d.layout.shapes(), d.layout.dimension_properties, d.layout.channel_mappings
        encoded = [encode_observation(name, shapes[name], data, dims[name], channel_mapping=maps[name])
                   for name, data in obs.items()]
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

    # -- side channels -----------------------------------------------------------------------------------
    def _queue(self, channel_id: Any, msg: dict[str, Any]) -> None:
        # Only clients that registered the xrfed channel get its messages (they announce it by sending one);
        # plain UnityEnvironment users would otherwise see an "unknown side channel" warning every step.
        if self._xrfed_client:
            self._pending_out.append((channel_id, codec.encode_message(msg)))

    def _drain_side_channel(self) -> bytes:
        out, self._pending_out = codec.pack_records(self._pending_out), []
        return out

    def _on_xrfed(self, msg: dict[str, Any]) -> None:
        _keep(self.record.messages, msg)
        t = msg["type"]
        if t == "reset":
            self.seed = msg["seed"]
        elif t in ("set_modality", "show_prediction"):
            cmd = codec.message_to_command(msg)
            _keep(self.record.scene_commands, cmd)
            self._pending_cmds.append(cmd)
            if t == "show_prediction":
                self._queue(codec.XRFED_CHANNEL_ID, codec.make_message(
                    "overlay_shown", device_id=msg["device_id"], task=msg["task"], label=msg["label"],
                    frame_step=msg["frame_step"], sent_ns=msg["sent_ns"], scene_step=self._scene_step))
        elif t == "set_script" and hasattr(self.backend, "set_script"):
            try:
                self.backend.set_script(msg["avatar"], msg["script"])
            except XrfedError as exc:
                self._queue(codec.XRFED_CHANNEL_ID, codec.make_message("event", name="unsupported",
                                                                       detail=_one_line(str(exc))))
        elif t == "load_scenario" and msg["scenario"].get("name") == self.scene_name:
            pass  # the scene already runs this scenario
        else:  # set_script without task scripts, or another scenario (_check_xrfed let nothing else through)
            detail = (f"{t} is not supported by the stand-in player serving {self.scene_name!r} "
                      f"(a {self.backend.name} backend); restart `xrfed player` with the wanted scenario")
            self._queue(codec.XRFED_CHANNEL_ID, codec.make_message("event", name="unsupported", detail=detail))


def _keep(items: list[Any], item: Any, limit: int = RECORD_LIMIT) -> None:
    """Append to a :class:`PlayerRecord` list, dropping the oldest entry beyond ``limit`` (memory stays bounded)."""
    items.append(item)
    if len(items) > limit:
        del items[0]


def _keep_bytes(items: list[bytes], data: bytes, budget: int = RECORD_BYTES) -> None:
    """Append raw bytes, dropping the oldest until the list holds at most ``budget`` bytes (none if larger)."""
    if len(data) > budget:
        return
    items.append(data)
    total = sum(len(b) for b in items)
    while total > budget:
        total -= len(items.pop(0))


def _one_line(text: str, limit: int = 300) -> str:
    """One printable line of at most ``limit`` characters (what goes into ``header.message`` and logs)."""
    text = _CONTROL.sub("?", text).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit - 3] + "..."


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

