"""Hostile-input surfaces of the stand-in ML-Agents player (``xrfed bench fuzz``; see :mod:`bridge.fuzzing`).

Every surface feeds :meth:`StandInPlayer.respond <bridge.unity.player.StandInPlayer.respond>`, the player's real
path for a client message: parse, check, apply, step the scene, encode the answer. The last one goes through real
gRPC into a running player.

* ``unity.sidechannel``: side-channel messages as a client sends them with STEP -- valid records of every channel
  the player reads (EngineConfiguration, EnvironmentParameters, the xrfed channel, training analytics, unknown
  channels) under bit flips, truncation, absurd length fields (2**31 - 1, -1), garbage, thousands of records and
  deeply nested JSON.
* ``unity.envparams``: EnvironmentParametersChannel payloads -- floats (lighting keys with values in and out of
  range, NaN, inf), samplers of every type with lying list counts, unknown types, non-ASCII or lying key lengths.
* ``unity.server``: whole client messages -- bytes that are not protobuf, hostile commands, actions that do not
  fit the action spec, everything above -- sent through a raw gRPC server (the Python side of ML-Agents reduced to
  bytes) to a live player, which must answer each one (status 200 or 500) and keep serving.

* ``unity.scene_messages``: the other direction -- what a hostile scene answers :class:`UnityBackend
  <bridge.unity.backend.UnityBackend>`: the stand-in player's real answers, rewritten (xrfed ``hello`` / ``frames``
  with values replaced or keys deleted anywhere, ``overlay_shown`` / ``event`` / unknown types, hand-made JSON that
  ``json.dumps`` cannot write, stats and other channels' records; observations with wrong shapes, NaN, lying PNG
  headers and zlib bombs, dropped or extra observations, absurd rewards, 1025 agents, brain parameters with bad action
  specs; status 500 / 400 headers; answers that are not protobuf), fed through the real mlagents-envs
  ``UnityEnvironment`` and the backend's checks by an :class:`InProcessCommunicator`. After each one the next,
  unmodified answer must give every device's frame.

A feed returns when the player accepted the message and raises :class:`~bridge.unity.errors.RejectedMessageError`
when it answered status 500; anything else (an exception out of the player, a malformed answer, a rejection that
was not counted, a player that stopped answering) is a crash.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import queue
import struct
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from ..fuzzing import Surface
from ..fuzzing import strategies as _st
from ..tasks import MODALITIES, TASKS
from . import codec
from .errors import RejectedMessageError

__all__ = ["SURFACES", "make_player", "client_message", "InProcessCommunicator"]

_PROFILES = ("meta_quest_pro", "ray_ban_meta")
_DEVICES = tuple(f"user{i}-{p}" for i, p in enumerate(_PROFILES))
_BRANCHES = (3,)
_ABSURD = (0, 1, -1, 7, 2**31 - 1, -(2**31), 2**31 - 21, 1 << 20, 65535)
_KEYS = ("xrfed.lighting.intensity", "xrfed.lighting.color_temperature_k", "xrfed.lighting.lights_on",
         "xrfed.lighting.intensity@lab", "xrfed.lighting.intensity@nowhere", "xrfed.lighting.glow", "gaze_noise", "")


def _pb() -> Any:
    from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto

    return UnityMessageProto


def client_message(side_channel: bytes = b"", *, command: int = 0, status: int = 200,
                   actions: dict[str, list[tuple[list[float], list[int]]]] | None = None) -> bytes:
    """A serialized ``UnityMessageProto`` as mlagents-envs sends it (header, rl_input with command, actions and
    side channel)."""
    msg = _pb()()
    msg.header.status = status
    rl = msg.unity_input.rl_input
    rl.command = command
    rl.side_channel = side_channel
    for behavior, rows in (actions or {}).items():
        lst = rl.agent_actions[behavior]
        for cont, disc in rows:
            a = lst.value.add()
            a.continuous_actions.extend(cont)
            a.discrete_actions.extend(disc)
            a.vector_actions_deprecated.extend([*cont, *map(float, disc)])
    return bytes(msg.SerializeToString())


def make_player(**config: Any) -> Any:
    """A :class:`StandInPlayer` over a tiny synthetic scene (two devices, 2 continuous + one 3-way discrete action),
    reset by a first RESET message, ready for :meth:`respond` without a connection."""
    from .player import PlayerConfig, StandInPlayer
    from .synthetic import SyntheticBackend, SyntheticConfig

    cfg = {"continuous_actions": 2, "discrete_branches": _BRANCHES, **config}
    player = StandInPlayer(SyntheticBackend(SyntheticConfig(profiles=_PROFILES, render_size=(4, 3))),
                           PlayerConfig(**cfg), seed=0)
    player.record.channels_first = True
    out = player.respond(client_message(command=1))
    assert out and _pb().FromString(out).header.status == 200
    return player


def _check_answer(player: Any, out: bytes | None, rejected_before: int) -> None:
    """Raise RejectedMessageError for a counted status-500 answer; anything inconsistent is an AssertionError."""
    from .player import RECORD_BYTES, RECORD_LIMIT

    assert out, "the player ended the session or idled on a fuzzed message"
    answer = _pb().FromString(out)
    counted = player.stats.rejected_total - rejected_before
    assert sum(len(b) for b in player.record.side_channel_bytes) <= RECORD_BYTES
    assert all(len(getattr(player.record, f)) <= RECORD_LIMIT for f in ("commands", "actions", "messages"))
    if answer.header.status == 500:
        assert counted == 1, f"a rejection was counted {counted} times"
        text = answer.header.message
        assert text and "\n" not in text and len(text) <= 300, f"rejection message not one short line: {text!r}"
        raise RejectedMessageError("fuzz", text)
    assert answer.header.status == 200 and counted == 0, (answer.header.status, counted)
    assert answer.unity_output.rl_output.agentInfos, "an accepted step carried no agents"


# ---------------------------------------------------------------------------------------------------------------
# building blocks
@functools.cache
def _floats32() -> Any:
    st = _st()
    return st.one_of(st.floats(width=32), st.sampled_from([0.0, 0.5, 1.0, 2700.0, 10.0, 1e9, -1.0]))


def _f32(x: float) -> bytes:
    return struct.pack("<f", x)


def _i32(n: int) -> bytes:
    return struct.pack("<i", n)


def _key_bytes(key: bytes, lie: int | None) -> bytes:
    return _i32(len(key) if lie is None else lie) + key


@functools.cache
def _env_payloads() -> Any:
    """EnvironmentParametersChannel payloads: valid floats and samplers, and every way to lie about them."""
    st = _st()
    keys = st.one_of(st.sampled_from(_KEYS).map(str.encode), st.text("abc.@_", max_size=12).map(str.encode),
                     st.binary(max_size=12))
    lie = st.one_of(st.none(), st.none(), st.none(), st.none(), st.sampled_from(_ABSURD))
    f = _floats32()
    float_param = st.builds(lambda k, lie_n, v: _key_bytes(k, lie_n) + _i32(0) + _f32(v), keys, lie, f)
    uniform = st.builds(lambda a, b: _i32(0) + _f32(a) + _f32(b), f, f)
    gaussian = st.builds(lambda a, b: _i32(1) + _f32(a) + _f32(b), f, f)
    multi = st.builds(lambda vs, n: _i32(2) + _i32(len(vs) if n is None else n) + b"".join(map(_f32, vs)),
                      st.lists(f, max_size=6), lie)
    other = st.builds(lambda t, rest: _i32(t) + rest, st.integers(-5, 5), st.binary(max_size=12))
    sampler = st.builds(lambda k, lie_n, seed, body: _key_bytes(k, lie_n) + _i32(1) + _i32(seed) + body, keys, lie,
                        st.integers(-(2**31), 2**31 - 1), st.one_of(uniform, gaussian, multi, other))
    odd_type = st.builds(lambda k, t, rest: _key_bytes(k, None) + _i32(t) + rest, keys, st.integers(-(2**31), 2**31 - 1),
                         st.binary(max_size=8))
    base = st.one_of(float_param, float_param, sampler, odd_type, st.binary(max_size=40))
    return st.builds(_mutate_bytes, base, _mutations())


@functools.cache
def _mutations() -> Any:
    """(kind, where, value): applied by :func:`_mutate_bytes`; "none" most often."""
    st = _st()
    kinds = st.sampled_from(("none", "none", "none", "flip", "truncate", "length", "insert", "append"))
    return st.tuples(kinds, st.integers(0, 1 << 16), st.one_of(st.sampled_from(_ABSURD), st.integers(0, 255)))


def _mutate_bytes(data: bytes, mutation: tuple[str, int, int]) -> bytes:
    kind, where, value = mutation
    if kind == "none" or not data and kind in ("flip", "truncate", "length"):
        return data
    i = where % max(len(data), 1)
    if kind == "flip":
        return data[:i] + bytes([data[i] ^ (1 << (value % 8))]) + data[i + 1:]
    if kind == "truncate":
        return data[:i]
    if kind == "length":  # overwrite 4 bytes with an absurd int32 (a length or count field, often)
        return data[:i] + struct.pack("<i", value if -(2**31) <= value < 2**31 else 2**31 - 1) + data[i + 4:]
    if kind == "insert":
        return data[:i] + bytes([value % 256]) * (1 + value % 7) + data[i:]
    return data + bytes([value % 256]) * (1 + value % 33)


def _engine_payloads() -> Any:
    st = _st()
    ints = st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(0, 2000))
    return st.one_of(
        st.builds(lambda w, h: _i32(0) + _i32(w) + _i32(h), ints, ints),
        st.builds(lambda t, n: _i32(t) + _i32(n), st.sampled_from([1, 3, 4]), ints),
        st.builds(lambda v: _i32(2) + _f32(v), _floats32()),
        st.builds(lambda t, rest: _i32(t) + rest, st.integers(-3, 9), st.binary(max_size=12)))


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "open":
        return b"[" * depth
    return b'{"v":1,"type":"load_scenario","scenario":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"


def _xrfed_payloads() -> Any:
    """xrfed-channel messages: every type the player receives (ids known and not, values in and out of range),
    scene-to-Python types it must refuse, nesting bombs and random JSON."""
    st = _st()
    dev = st.sampled_from((*_DEVICES, "nope", "", "user0-meta_quest_pro/../x"))
    ints = st.one_of(st.integers(-5, 50), st.sampled_from((2**31, 2**63 - 1, 2**63, 2**70, -(2**63))))
    nums = st.one_of(st.floats(), ints, st.sampled_from((0.5, 1.0, -0.0)))
    msgs = st.one_of(
        st.builds(lambda s: {"v": 1, "type": "reset", "seed": s}, ints),
        st.builds(lambda d, m, e: {"v": 1, "type": "set_modality", "device_id": d, "modality": m, "enabled": e},
                  dev, st.sampled_from((*MODALITIES, "smell")), st.one_of(st.booleans(), st.integers(0, 1))),
        st.builds(lambda d, t, lab, c, lat, fs, ns: {"v": 1, "type": "show_prediction", "device_id": d, "task": t,
                                                     "label": lab, "confidence": c, "latency_ms": lat,
                                                     "frame_step": fs, "sent_ns": ns},
                  dev, st.sampled_from((*TASKS, "astrology")), st.text(max_size=300), nums,
                  st.one_of(st.none(), nums), st.one_of(st.none(), ints), st.one_of(st.none(), ints)),
        st.builds(lambda a, s: {"v": 1, "type": "set_script", "avatar": a, "script": s}, st.text(max_size=8),
                  st.text(max_size=8)),
        st.builds(lambda n: {"v": 1, "type": "load_scenario", "scenario": {"name": n}},
                  st.sampled_from(("synthetic", "home", ""))),
        st.builds(lambda t: {"v": 1, "type": t, "name": "x", "detail": "y", "frames": [], "scene": "s",
                             "player": "p", "step_dt_s": 0.1, "devices": []},
                  st.sampled_from(("hello", "frames", "event", "overlay_shown", "teleport"))),
        st.dictionaries(st.text(max_size=6), st.one_of(st.none(), nums, st.text(max_size=6)), max_size=4),
    )
    as_json = msgs.map(lambda m: json.dumps(m, allow_nan=True).encode("utf-8"))
    bombs = st.builds(_nested, st.sampled_from((20, 33, 40, 5000, 100_000)), st.sampled_from(("list", "open", "obj")))
    return st.one_of(as_json, as_json, as_json, bombs, st.binary(max_size=64))


@functools.cache
def _records() -> Any:
    """One side-channel record (GUID, payload) of any channel."""
    st = _st()
    unknown = st.builds(lambda b: uuid.UUID(bytes=b), st.binary(min_size=16, max_size=16))
    return st.one_of(
        st.tuples(st.just(codec.ENGINE_CHANNEL_ID), _engine_payloads()),
        st.tuples(st.just(codec.ENV_PARAMS_CHANNEL_ID), _env_payloads()),
        st.tuples(st.just(codec.XRFED_CHANNEL_ID), _xrfed_payloads()),
        st.tuples(st.just(codec.XRFED_CHANNEL_ID), _xrfed_payloads()),
        st.tuples(st.just(codec.ANALYTICS_CHANNEL_ID), st.binary(max_size=120)),
        st.tuples(unknown, st.binary(max_size=32)),
    )


@functools.cache
def _side_channels() -> Any:
    """Whole side-channel messages: 0-5 records, then mutated; sometimes thousands of empty records or garbage."""
    st = _st()
    packed = st.builds(lambda recs, m: _mutate_bytes(codec.pack_records(recs), m), st.lists(_records(), max_size=5),
                       _mutations())
    many = st.builds(lambda n: codec.pack_records([(codec.ANALYTICS_CHANNEL_ID, b"")] * n),
                     st.sampled_from((1024, 1025, 5000)))
    return st.one_of(packed, packed, packed, packed, many, st.binary(max_size=200))


@functools.cache
def _env_side_channels() -> Any:
    return _env_payloads().map(lambda p: codec.pack_records([(codec.ENV_PARAMS_CHANNEL_ID, p)]))


# ---------------------------------------------------------------------------------------------------------------
# in-process surfaces
def _player_session(make: Callable[[], Any]) -> Callable[[], contextlib.AbstractContextManager[Callable[[Any], None]]]:
    @contextlib.contextmanager
    def session() -> Iterator[Callable[[Any], None]]:
        player = make()

        def feed(side_channel: bytes) -> None:
            before = player.stats.rejected_total
            _check_answer(player, player.respond(client_message(side_channel, command=0)), before)

        try:
            with _quiet():
                yield feed
        finally:
            player.backend.close()

    return session


# ---------------------------------------------------------------------------------------------------------------
# a live player over gRPC
class _RawClient:
    """The Python side of ML-Agents reduced to bytes: a gRPC server on 127.0.0.1 whose Exchange hands each call
    from the player to :meth:`next_call` and answers it with the bytes given to :meth:`answer`."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import grpc

        self._calls: queue.Queue[bytes] = queue.Queue()
        self._answers: queue.Queue[bytes] = queue.Queue()
        handler = grpc.method_handlers_generic_handler(
            "communicator_objects.UnityToExternalProto",
            {"Exchange": grpc.unary_unary_rpc_method_handler(self._exchange)})
        self.server = grpc.server(ThreadPoolExecutor(max_workers=2), handlers=[handler],
                                  options=[("grpc.max_receive_message_length", 8 << 20)])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _exchange(self, request: bytes, context: Any) -> bytes:
        self._calls.put(request)
        return self._answers.get()

    def next_call(self, timeout_s: float = 20.0) -> Any:
        try:
            return _pb().FromString(self._calls.get(timeout=timeout_s))
        except queue.Empty:
            raise AssertionError(f"the player sent nothing for {timeout_s} s") from None

    def answer(self, data: bytes) -> None:
        self._answers.put(data)

    def close(self) -> None:
        self.answer(client_message(status=400))
        self.server.stop(0.5)


def _not_closing(data: bytes) -> bytes:
    """Closing is not an error: a fuzzed message that would close the session (status != 200, QUIT) is made a
    STEP with status 200 instead, so each example tests a session that goes on."""
    try:
        msg = _pb().FromString(data)
    except Exception:  # noqa: BLE001 -- not protobuf: sent as it is
        return data
    if msg.header.status == 200 and msg.unity_input.rl_input.command != 2:
        return data
    msg.header.status = 200
    if msg.unity_input.rl_input.command == 2:
        msg.unity_input.rl_input.command = 0
    return bytes(msg.SerializeToString())


@functools.cache
def _server_messages() -> Any:
    st = _st()
    behaviors = st.sampled_from(("XRAvatar_meta_quest_pro?team=0", "XRAvatar_ray_ban_meta?team=0", "XRAvatar_x?team=0"))
    row = st.tuples(st.lists(st.floats(width=32), max_size=3), st.lists(st.integers(-2, 4), max_size=2))
    actions = st.dictionaries(behaviors, st.lists(row, max_size=3), max_size=3)
    well_formed = st.builds(lambda sc, cmd, acts: client_message(sc, command=cmd, actions=acts),
                            st.one_of(st.just(b""), _side_channels()), st.sampled_from((0, 0, 0, 1, 7, -1)),
                            st.one_of(st.none(), actions))
    mutated = st.builds(_mutate_bytes, well_formed, _mutations())
    return st.one_of(well_formed, well_formed, mutated, st.binary(max_size=300)).map(_not_closing)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The player and the backend log each rejection; thousands of fuzzed ones would only bury the results."""
    loggers = [logging.getLogger(name) for name in ("xrfed.unity.player", "xrfed.unity")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def _server_session() -> Iterator[Callable[[Any], None]]:
    from mlagents_envs.communicator_objects.unity_input_pb2 import UnityInputProto

    from .player import PlayerConfig, StandInPlayer
    from .synthetic import SyntheticBackend, SyntheticConfig

    client = _RawClient()
    player = StandInPlayer(SyntheticBackend(SyntheticConfig(profiles=_PROFILES, render_size=(4, 3))),
                           PlayerConfig(port=client.port, connect_timeout_s=20, continuous_actions=2,
                                        discrete_branches=_BRANCHES)).start()
    try:
        client.next_call()  # call #1: the initialization output
        init = _pb()()
        init.header.status = 200
        ini = UnityInputProto()
        ini.rl_initialization_input.seed = 0
        ini.rl_initialization_input.communication_version = "1.5.0"
        ini.rl_initialization_input.package_version = "1.1.0"
        init.unity_input.CopyFrom(ini)
        client.answer(bytes(init.SerializeToString()))
        client.next_call()  # call #2: empty; its answer is the first RESET
        client.answer(client_message(command=1))
        assert client.next_call().header.status == 200  # the first observations

        def feed(data: bytes) -> None:
            before = player.stats.rejected_total
            client.answer(data)
            call = client.next_call()
            assert player.alive, f"the player stopped: {player.error!r}"
            _check_answer(player, bytes(call.SerializeToString()), before)

        with _quiet():
            yield feed
    finally:
        client.close()
        player.stop(2.0)


# ---------------------------------------------------------------------------------------------------------------
# a hostile scene: what UnityBackend reads
_CAPABILITIES = ("baseRLCapabilities", "concatenatedPngObservations", "compressedChannelMapping", "hybridActions",
                 "trainingAnalytics", "variableLengthObservation", "multiAgentGroups")


class InProcessCommunicator:
    """An mlagents-envs ``Communicator`` that hands UnityEnvironment's messages to a :class:`StandInPlayer`'s
    ``respond()`` in this process, without gRPC (``UnityBackend(communicator=lambda *_: comm)``).

    ``tamper`` (answer bytes -> bytes), when set, rewrites each of the player's answers before the backend reads
    it: a hostile scene. An answer that is not a ``UnityMessageProto`` never reaches the Python side through real
    gRPC either (its deserializer fails the call), so the client times out: UnityTimeOutException here.
    """

    def __init__(self, player: Any, worker_id: int = 0, base_port: int = 0):
        self.player = player
        self.port = base_port + worker_id
        self.tamper: Callable[[bytes], bytes] | None = None

    @staticmethod
    def _message(inputs: Any, status: int = 200) -> bytes:
        msg = _pb()()
        msg.header.status = status
        if inputs is not None:
            msg.unity_input.CopyFrom(inputs)
        return bytes(msg.SerializeToString())

    def _read(self, raw: bytes) -> Any:
        from mlagents_envs.exception import UnityTimeOutException

        if self.tamper is not None:
            raw = self.tamper(raw)
        try:
            return _pb().FromString(raw)
        except Exception:  # noqa: BLE001 -- protobuf's DecodeError and friends: what gRPC's deserializer would meet
            raise UnityTimeOutException(f"the scene's answer of {len(raw)} bytes is not a UnityMessageProto") from None

    def initialize(self, inputs: Any, poll_callback: Any = None) -> Any:
        from mlagents_envs.communicator_objects.unity_rl_initialization_output_pb2 import (
            UnityRLInitializationOutputProto,
        )

        from .errors import UnityConnectionError
        from .wire import encode_output_message

        cfg = self.player.config
        init = UnityRLInitializationOutputProto(name="AcademySingleton", communication_version=cfg.communication_version,
                                                package_version=cfg.package_version)
        for flag in _CAPABILITIES:
            setattr(init.capabilities, flag, True)
        out = self._read(encode_output_message(init_output=init.SerializeToString()))
        if not self.player.handshake(self._message(inputs)):
            raise UnityConnectionError("the in-process player refused the handshake")
        return out.unity_output

    def exchange(self, inputs: Any, poll_callback: Any = None) -> Any:
        from .backend import _scene_answer

        raw = self.player.respond(self._message(inputs))
        if raw is None or not isinstance(raw, bytes):
            return None
        return _scene_answer(self._read(raw), "in process")

    def close(self) -> None:
        self.player.respond(self._message(None, status=400))


_DELETE = "<delete>"
_OVERLAY = {"v": 1, "type": "overlay_shown", "device_id": _DEVICES[0], "task": "speech_command", "label": "stop",
            "frame_step": 1, "sent_ns": 123, "scene_step": 1}
_EVENT = {"v": 1, "type": "event", "name": "unsupported", "detail": "set_script needs task scripts"}
#: hand-made payloads that json.dumps cannot produce
_NASTY_JSON = (
    b'{"v":1,"type":"hello","scene":"s","player":"p","step_dt_s":0.1,"devices":[' + b"1" * 5000 + b"]}",
    b'{"v":1,"type":"frames","frames":[{"device_id":"user0-meta_quest_pro","step":1,"sim_time_s":1e400}]}',
    b'{"v":1,"type":"frames","frames":[{"device_id":"user0-meta_quest_pro","step":1,"sim_time_s":NaN}]}',
    b'{"v":1,"type":"overlay_shown","device_id":"a","task":"t","label":"l","frame_step":null,"sent_ns":'
    + b"9" * 400 + b',"scene_step":1}',
    b'{"v":1,"type":"hello","scene":"s","player":"p","step_dt_s":0.1,"devices":[' + b"[" * 40 + b"]" * 40 + b"]}",
    b'{"v":1,"type":"event","name":"\\u001b[2J","detail":"line\\nbreak\\u0000"}',
    b'{"v":2,"type":"hello"}', b'{"v":true,"type":"hello"}', b"null", b"[]", b'"hello"',
)


@functools.cache
def _json_values() -> Any:
    """Values a hostile scene may put anywhere in a message."""
    st = _st()
    names = st.one_of(st.sampled_from((*_DEVICES, "", "a/b", "x" * 200, "tab\there", "\u00e9", "nope")),
                      st.text(max_size=8))
    return st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                     st.sampled_from((0, -1, 1, 2, 5, 7, 64, 65, 2**31, 2**63 - 1, 2**63, 10**20)),
                     st.floats(), st.sampled_from((0.0, -0.0, 0.1, 1e-9, 61.0, 1e308, 179.9999)), names,
                     st.lists(st.one_of(st.integers(-3, 3), st.floats(), names), max_size=5),
                     st.dictionaries(st.sampled_from(("device_id", "user_id", "profile", "step", "x")),
                                     st.one_of(st.integers(-2, 2), names), max_size=3),
                     st.just(_DELETE))


@functools.cache
def _scene_json() -> Any:
    """(base, edits) or raw bytes: the scene's own hello / frames (taken from the session), an overlay_shown or an
    event, with values replaced or keys deleted anywhere; hand-made payloads json.dumps cannot write; garbage."""
    st = _st()
    edits = st.lists(st.tuples(st.lists(st.integers(0, 64), max_size=4), _json_values()), max_size=3)
    mutated = st.tuples(st.sampled_from(("hello", "frames", "frames", "overlay_shown", "event")), edits)
    unknown = st.builds(lambda t: {"v": 1, "type": t}, st.sampled_from(("teleport", "reset", "show_prediction", "")))
    return st.one_of(mutated, mutated, mutated, mutated, st.tuples(st.just("object"), unknown),
                     st.tuples(st.just("raw"), st.sampled_from(_NASTY_JSON)),
                     st.tuples(st.just("raw"), st.binary(max_size=40)))


def _edit_json(obj: Any, path: list[int], value: Any) -> Any:
    """Replace (or delete) the node that ``path`` (child choices, modulo each node's size) leads to."""
    if not path or not isinstance(obj, (dict, list)) or not obj:
        return obj if value == _DELETE else value
    node: Any = obj
    for depth, choice in enumerate(path):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = keys[choice % len(keys)]
        child = node[key]
        if depth == len(path) - 1 or not isinstance(child, (dict, list)) or not child:
            if value == _DELETE:
                del node[key]
            else:
                node[key] = value
            return obj
        node = child
    return obj


def _xrfed_messages(side_channel: bytes) -> dict[str, bytes]:
    out = {}
    for cid, payload in codec.unpack_records(side_channel):
        if cid == codec.XRFED_CHANNEL_ID:
            out[json.loads(payload)["type"]] = payload
    return out


def _scene_payload(spec: Any, bases: dict[str, bytes]) -> bytes:
    kind = spec[0]
    if kind == "raw":
        return bytes(spec[1])
    if kind == "object":
        return json.dumps(spec[1]).encode()
    base = {"overlay_shown": _OVERLAY, "event": _EVENT}.get(kind) or json.loads(bases[kind])
    obj = json.loads(json.dumps(base))
    for path, value in spec[1]:
        obj = _edit_json(obj, path, value)
    try:
        return json.dumps(obj, allow_nan=True).encode("utf-8")
    except ValueError:  # an integer json.dumps refuses to write (over 4300 digits)
        return b"{}"


@functools.cache
def _observation_edits() -> Any:
    st = _st()
    dims = st.sampled_from((0, -1, 1, 2, 3, 4, 7, 156, 1 << 12, 1 << 20, 2**31 - 1))
    f = st.one_of(st.floats(width=32), st.sampled_from((float("nan"), float("inf"), 3e38, -3e38, 7.0, 99.0, -2.0)))
    png = st.sampled_from(("garbage", "size", "grey", "two", "truncate", "bomb", "sixteen"))
    return st.one_of(
        st.tuples(st.just("shape"), st.lists(dims, max_size=4)),
        st.tuples(st.just("set"), st.integers(0, 1 << 10), f),
        st.tuples(st.just("floats"), st.lists(f, max_size=12)),
        st.tuples(st.just("drop")), st.tuples(st.just("duplicate")),
        st.tuples(st.just("compression"), st.integers(-1, 3)),
        st.tuples(st.just("png"), png),
        st.tuples(st.just("png_bytes"), _mutations()),  # the scene's own PNG corrupted after its header
        st.tuples(st.just("mapping"), st.lists(st.integers(-2, 4), max_size=8)),
        st.tuples(st.just("name"), st.sampled_from(("", "rgb", "device", "present", "x" * 200, "\x00", "pose"))),
        st.tuples(st.just("dims"), st.lists(st.integers(-1, 9), max_size=4)),
        st.tuples(st.just("type"), st.integers(-1, 3)),
    )


def _png(width: int, height: int, *, color: int = 2, depth: int = 8, data: bytes | None = None) -> bytes:
    """A PNG whose header says width x height (the pixel data need not match)."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = data if data is not None else zlib.compress(b"\x00" * (height * (width * 3 + 1)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def _edit_observation(o: Any, edit: tuple[Any, ...]) -> None:
    kind = edit[0]
    if kind == "shape":
        del o.shape[:]
        o.shape.extend(edit[1])
    elif kind == "set":
        data = o.float_data.data
        if len(data):
            data[edit[1] % len(data)] = edit[2]
    elif kind == "floats":
        o.float_data.data[:] = edit[1]
    elif kind == "compression":
        o.compression_type = edit[1]
    elif kind == "png":
        h, w = (list(o.shape)[1:3] + [4, 4])[:2] if len(o.shape) == 3 else (4, 4)
        o.compression_type = 1
        o.compressed_data = {
            "garbage": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "size": _png(65535, 65535, data=b"x"),
            "grey": _png(w, h, color=0), "two": _png(w, h) * 3, "truncate": _png(w, h)[:30],
            "bomb": _png(w, h, data=_zlib_bomb()), "sixteen": _png(w, h, depth=16),
        }[edit[1]]
    elif kind == "png_bytes":
        data = bytes(o.compressed_data)
        o.compressed_data = data[:33] + _mutate_bytes(data[33:], edit[1])
    elif kind == "mapping":
        o.compressed_channel_mapping[:] = edit[1]
    elif kind == "name":
        o.name = edit[1]
    elif kind == "dims":
        o.dimension_properties[:] = edit[1]
    elif kind == "type":
        o.observation_type = edit[1]


@functools.cache
def _zlib_bomb() -> bytes:
    """16 MiB of zeros in about 16 KiB (an IDAT that decompresses far beyond its image)."""
    import zlib

    return zlib.compress(b"\x00" * (16 << 20), 9)


@functools.cache
def _scene_examples() -> Any:
    """How a hostile scene's answer is rewritten (see :func:`_tamper_answer`)."""
    st = _st()
    floats = st.one_of(st.floats(), st.sampled_from((1e31, 3e38, -0.0, 1.0)))
    agent_edit = st.one_of(st.tuples(st.sampled_from(("reward", "group_reward")), floats),
                           st.tuples(st.just("id"), st.integers(-(2**31), 2**31 - 1)),
                           st.tuples(st.sampled_from(("clear", "done", "duplicate"))),
                           st.tuples(st.just("many"), st.sampled_from((2, 1025))))
    brain = st.tuples(st.one_of(st.sampled_from(("XRAvatar_meta_quest_pro?team=0", "XRAvatar_ray_ban_meta?team=0")),
                                st.text(max_size=6)),
                      st.integers(-2, 2000), st.lists(st.integers(-1, 2000), max_size=3), st.integers(0, 2),
                      st.lists(st.integers(-2, 5), max_size=2), st.booleans())
    records = st.lists(st.tuples(st.sampled_from((codec.STATS_CHANNEL_ID, codec.ENV_PARAMS_CHANNEL_ID,
                                                  codec.ENGINE_CHANNEL_ID, codec.ANALYTICS_CHANNEL_ID,
                                                  uuid.UUID(int=7))),
                                 st.one_of(st.binary(max_size=24),
                                           st.builds(codec.encode_stat, st.text("ab.", max_size=6), st.floats(width=32),
                                                     st.integers(-2, 5)))), max_size=4)
    return st.one_of(
        st.tuples(st.just("xrfed"), st.sampled_from(("append", "append", "replace")), _scene_json()),
        st.tuples(st.just("xrfed"), st.sampled_from(("append", "replace")), _scene_json()),
        st.tuples(st.just("observation"), st.integers(0, 64), st.integers(0, 64), _observation_edits()),
        st.tuples(st.just("observation"), st.integers(0, 64), st.integers(0, 64), _observation_edits()),
        st.tuples(st.just("agent"), st.integers(0, 64), agent_edit),
        st.tuples(st.just("brain"), brain),
        st.tuples(st.just("records"), records, _mutations()),
        st.tuples(st.just("header"), st.integers(-1, 600), st.text(max_size=400)),
        st.tuples(st.just("bytes"), _mutations()),
        st.tuples(st.just("garbage"), st.binary(max_size=200)),
    )


def _tamper_answer(example: tuple[Any, ...], bases: dict[str, bytes], raw: bytes) -> bytes:
    """The player's answer ``raw`` as a hostile scene would send it instead."""
    kind = example[0]
    if kind == "bytes":
        return _mutate_bytes(raw, example[1])
    if kind == "garbage":
        return bytes(example[1])
    msg = _pb().FromString(raw)
    rl = msg.unity_output.rl_output
    if kind == "header":
        msg.header.status, msg.header.message = example[1], example[2]
    elif kind == "xrfed":
        payload = _scene_payload(example[2], {**bases, **_xrfed_messages(rl.side_channel)})
        records = [] if example[1] == "replace" else codec.unpack_records(rl.side_channel)
        rl.side_channel = codec.pack_records([*records, (codec.XRFED_CHANNEL_ID, payload)])
    elif kind == "records":
        rl.side_channel = _mutate_bytes(bytes(rl.side_channel) + codec.pack_records(example[1]), example[2])
    else:
        agents = [a for name in sorted(rl.agentInfos) for a in rl.agentInfos[name].value]
        if kind == "observation" and agents:
            agent = agents[example[1] % len(agents)]
            obs = agent.observations
            if example[3][0] == "drop":
                del obs[example[2] % len(obs)]
            elif example[3][0] == "duplicate":
                obs.add().CopyFrom(obs[example[2] % len(obs)])
            else:
                _edit_observation(obs[example[2] % len(obs)], example[3])
        elif kind == "agent" and agents:
            agent, edit = agents[example[1] % len(agents)], example[2]
            if edit[0] in ("reward", "group_reward", "id"):
                setattr(agent, edit[0], edit[1])
            elif edit[0] == "clear":
                del agent.observations[:]
            elif edit[0] == "done":
                agent.done = True
            else:
                for lst in rl.agentInfos.values():
                    if agent in lst.value:
                        if edit[0] == "duplicate":
                            lst.value.add().CopyFrom(agent)
                        else:  # many agents without observations (copies would make the example slow, not harder)
                            for i in range(edit[1]):
                                lst.value.add(id=1000 + i)
                        break
        elif kind == "brain":
            name, continuous, branches, old_type, old_sizes, with_agents = example[1]
            bp = msg.unity_output.rl_initialization_output.brain_parameters.add(brain_name=name)
            bp.action_spec.num_continuous_actions = continuous
            bp.action_spec.num_discrete_actions = len(branches)
            bp.action_spec.discrete_branch_sizes.extend(branches)
            bp.vector_action_space_type_deprecated = old_type
            bp.vector_action_size_deprecated.extend(old_sizes)
            if with_agents and agents and name not in rl.agentInfos:
                rl.agentInfos[name].value.add().CopyFrom(agents[0])
    return bytes(msg.SerializeToString())


def _restore_answer(bases: dict[str, bytes], brains: bytes, raw: bytes) -> bytes:
    """The player's answer with its hello and every behavior's brain parameters again: whatever the hostile answer
    before changed (devices, specs), the scene is back to what it announced first."""
    from mlagents_envs.communicator_objects.unity_rl_initialization_output_pb2 import (
        UnityRLInitializationOutputProto,
    )

    msg = _pb().FromString(raw)
    rl = msg.unity_output.rl_output
    rl.side_channel = codec.pack_records([(codec.XRFED_CHANNEL_ID, bases["hello"]), *codec.unpack_records(rl.side_channel)])
    msg.unity_output.rl_initialization_output.brain_parameters.extend(
        UnityRLInitializationOutputProto.FromString(brains).brain_parameters)
    return bytes(msg.SerializeToString())


@contextlib.contextmanager
def _scene_session() -> Iterator[Callable[[Any], None]]:
    from .backend import UnityBackend
    from .player import PlayerConfig, StandInPlayer
    from .synthetic import SyntheticBackend, SyntheticConfig

    # 1 kHz audio: 100 samples a step keep pure-Python protobuf parsing (the cost of each example) small
    player = StandInPlayer(SyntheticBackend(SyntheticConfig(profiles=_PROFILES, render_size=(4, 3), audio_hz=1000)),
                           PlayerConfig(continuous_actions=2, discrete_branches=_BRANCHES), seed=0)
    comm = InProcessCommunicator(player)
    backend = UnityBackend(communicator=lambda *_: comm, seed=0)
    first: list[bytes] = []

    def capture(raw: bytes) -> bytes:
        first.append(raw)
        return raw

    with _quiet():
        comm.tamper = capture
        backend.reset()
        comm.tamper = None
        answer = _pb().FromString(first[-1])
        bases = _xrfed_messages(answer.unity_output.rl_output.side_channel)
        brains = answer.unity_output.rl_initialization_output.SerializeToString()
        restore = functools.partial(_restore_answer, bases, brains)

        def feed(example: tuple[Any, ...]) -> None:
            from ..errors import XrfedError

            comm.tamper = functools.partial(_tamper_answer, example, bases)
            error: XrfedError | None = None
            try:
                backend.step()
            except XrfedError as exc:
                error = exc
            comm.tamper = restore
            try:
                try:
                    frames = backend.step()
                except RejectedMessageError:
                    # the hostile answer announced other actions, which the player refuses: a RESET carries none
                    frames = backend.reset()
            except XrfedError as exc:
                raise AssertionError(f"the backend did not recover from {example!r:.200}: {exc}") from exc
            finally:
                comm.tamper = None
            assert sorted(frames) == sorted(_DEVICES), sorted(frames)
            assert len(backend.stats.events) <= 10_000 and len(backend._meta) <= len(_DEVICES)
            if error is not None:
                text = str(error)
                assert text and "\n" not in text and len(text) <= 600, f"error not one short line: {text!r:.300}"
                raise error

        try:
            yield feed
        finally:
            backend.close()


SURFACES: list[Surface] = [
    Surface("unity.sidechannel", "side-channel messages (engine config, env params, xrfed JSON, analytics, unknown "
                                 "channels; mutated, truncated, lying lengths, nesting bombs) -> player.respond",
            _side_channels, _player_session(make_player)),
    Surface("unity.envparams", "EnvironmentParametersChannel payloads (floats, samplers, lying keys/counts, NaN, "
                               "out-of-range lighting) -> player.respond", _env_side_channels,
            _player_session(make_player)),
    Surface("unity.server", "whole client messages (protobuf garbage, bad commands/actions, hostile side channels) "
                            "over gRPC to a live player, which must answer each and keep serving",
            _server_messages, _server_session),
    Surface("unity.scene_messages", "what a hostile scene answers UnityBackend (xrfed hello/frames/overlay/event "
                                    "messages mutated or garbage, stats and other channels' records, observations with "
                                    "wrong shapes, NaN, lying PNG headers, bad specs, agents, headers) -> the real "
                                    "UnityEnvironment + UnityBackend over an in-process player; each step must be "
                                    "accepted or rejected in one line, and the next one served",
            _scene_examples, _scene_session),
]
