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
from ..tasks import MODALITIES, TASKS
from . import codec
from .errors import RejectedMessageError

__all__ = ["SURFACES", "make_player", "client_message"]

_PROFILES = ("meta_quest_pro", "ray_ban_meta")
_DEVICES = tuple(f"user{i}-{p}" for i, p in enumerate(_PROFILES))
_BRANCHES = (3,)
_ABSURD = (0, 1, -1, 7, 2**31 - 1, -(2**31), 2**31 - 21, 1 << 20, 65535)
_KEYS = ("xrfed.lighting.intensity", "xrfed.lighting.color_temperature_k", "xrfed.lighting.lights_on",
         "xrfed.lighting.intensity@lab", "xrfed.lighting.intensity@nowhere", "xrfed.lighting.glow", "gaze_noise", "")


def _st() -> Any:
    from hypothesis import strategies as st

    return st


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
    """The player logs each rejection; thousands of fuzzed ones would only bury the results."""
    logger = logging.getLogger("xrfed.unity.player")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
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
]
