"""Hostile-input surfaces of the ZeroMQ stream (``xrfed bench fuzz``; see :mod:`bridge.fuzzing`).

Every surface feeds the real decoder; the last two feed a real :class:`~bridge.stream.subscriber.Subscriber` over
real ZeroMQ sockets on 127.0.0.1:

* ``stream.frame``: frame messages -- valid ones (raw, png/zlib, jpeg, modality subsets) under header-field,
  descriptor, bit-flip, truncation and part-count mutations -- through ``decode_message`` and ``to_frame``.
* ``stream.part``: one part of a valid frame replaced by a hostile array, for every part kind of the frame contract
  (and an unknown one): wrong shape, dtype, NaN/inf/absurd values, non-0/1 bools, every encoding, zlib bombs,
  corrupt or lying images.
* ``stream.heartbeat``: sequences of frames and heartbeats with absurd ``seq``/``last_seq`` (negative, 10**15,
  2**64), devices and step times, through the subscriber's accounting; the ``missing`` counter must stay sane.
* ``stream.envelope``: arbitrary multipart envelopes (0-40 parts: topics, JSON or garbage headers, buffers).
* ``stream.subscriber``: everything above sent as raw multipart messages to a live subscriber, which must deliver a
  good frame (a sentinel) after each one.
* ``stream.flood``: floods (kind x count x size) of max-size messages, oversized parts (refused by ZeroMQ's
  ``MAXMSGSIZE``), oversized messages, too many parts and zlib bombs into a live subscriber with small
  :data:`FLOOD_LIMITS`; its resident memory must stay within the limits' documented cap, and a sentinel frame must
  still arrive after each flood.

A feed returns when every message was accepted, raises an :class:`~bridge.errors.XrfedError` when one was rejected
(the subscriber surfaces raise one naming the reasons it counted), and anything else -- including an
``AssertionError`` from a broken invariant or a subscriber that stopped delivering -- is a crash.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import BridgeError
from ..frame import DeviceFrame
from ..fuzzing import Surface, peak_rss_bytes, stateless
from ..fuzzing import index as _index
from ..fuzzing import ints as _ints
from ..fuzzing import pick as _pick
from ..fuzzing import strategies as _st
from .protocol import (
    ENCODINGS,
    PART_SPECS,
    Compression,
    Limits,
    decode_message,
    encode_frame,
)
from .synthetic import synthetic_frame

__all__ = ["SURFACES", "MEMORY_PROBES", "FLOOD_LIMITS", "FLOOD_MEMORY_LIMITS", "rss_bytes", "flood_memory"]

Message = list[Any]  # bytes, or memoryviews of shared payloads

_WIRE_DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float16", "float32",
                "float64")
_ABSURD_INTS = (0, 1, -1, 7, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63), 10**15, 10**30)
_FRAME_KEYS = ("proto", "v", "kind", "publisher", "session", "seq", "device_id", "user_id", "profile", "channel",
               "step", "sim_time_s", "wall_time_ns", "sent_ns", "camera_fov_y_deg", "room", "labels",
               "active_tasks", "events", "audio_hz", "parts")
_SENTINEL = "fuzz-sentinel"

#: the limits of the ``stream.flood`` subscriber: small, so a flood of maximum-size messages is cheap to send
FLOOD_LIMITS = Limits(max_message_bytes=1024 * 1024, max_header_bytes=16 * 1024, max_part_bytes=512 * 1024,
                      max_decoded_bytes=1024 * 1024, max_parts=32, max_queue_bytes=8 * 1024 * 1024)


# ---------------------------------------------------------------------------------------------------------------
# building blocks


@functools.cache
def _bases() -> tuple[tuple[bytes, ...], ...]:
    """Valid frame messages: three devices with different modality sets, each raw, lossless-compressed and jpeg."""
    frames = [synthetic_frame("quest_0", height_px=8, width_px=6),
              synthetic_frame("d1", height_px=4, width_px=4, step=3, audio_samples=16).without("rgb"),
              synthetic_frame("hl2", height_px=6, width_px=5, segmentation=False).without("audio", "hands")]
    comps = [Compression(), Compression(rgb="png", depth_m="zlib", segmentation="zlib", audio="zlib"),
             Compression(rgb="jpeg", jpeg_quality=50)]
    return tuple(tuple(bytes(memoryview(p)) for p in encode_frame(f, seq=i, session="s", publisher="fuzz",
                                                                  compression=c))
                 for i, f in enumerate(frames) for c in comps)


@functools.cache
def _zlib_bomb(inflated_bytes: int) -> bytes:
    """A zlib stream of ``inflated_bytes`` zeros (about a thousandth of that on the wire), built in 1 MiB chunks."""
    c = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    out = [c.compress(chunk) for _ in range(inflated_bytes >> 20)]
    out.append(c.compress(bytes(inflated_bytes & ((1 << 20) - 1))))
    out.append(c.flush())
    return b"".join(out)


def _dumps(obj: Any) -> bytes:
    """JSON as a hostile publisher writes it: big integers, NaN and Infinity included."""
    return json.dumps(obj, allow_nan=True).encode()


@functools.cache
def _json_values() -> Any:
    st = _st()
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(_ABSURD_INTS), st.floats(),
                        st.sampled_from([1e308, -1e308, 5e-324, -0.0, 0.5]), st.text(max_size=12))
    return st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                     st.dictionaries(st.text(max_size=8), c, max_size=4)),
                        max_leaves=8)


@functools.cache
def _seqs() -> Any:
    st = _st()
    return st.one_of(st.integers(0, 40), st.sampled_from(_ABSURD_INTS), st.integers(), st.floats(), st.text(max_size=4))


# ---------------------------------------------------------------------------------------------------------------
# frame messages: valid ones, mutated
@functools.cache
def _header_keys() -> Any:
    st = _st()
    return st.one_of(_pick(_FRAME_KEYS), st.text(max_size=6))


@functools.cache
def _binary(max_size: int) -> Any:
    return _st().binary(max_size=max_size)


@functools.cache
def _topics() -> Any:
    return _st().one_of(_pick((b"xrfed/other/frame", b"xrfed/", b"xrfed-hb/p", b"\xff\xfe")), _binary(24))


@functools.cache
def _desc_values() -> dict[str, Any]:
    st = _st()
    return {
        "name": st.one_of(_pick((*PART_SPECS, "extra", "")), _json_values()),
        "dtype": st.one_of(_pick((*_WIRE_DTYPES, "object", "<f4", "complex128")), _json_values()),
        "shape": st.one_of(st.lists(st.one_of(st.integers(-2, 40), _pick(_ABSURD_INTS)), max_size=9), _json_values()),
        "encoding": st.one_of(_pick((*ENCODINGS, "gzip")), _json_values()),
    }


@functools.cache
def _float_lists(width: int) -> Any:
    st = _st()
    return st.lists(st.floats(width=width), max_size=64)


@functools.cache
def _random_shapes() -> Any:
    st = _st()
    return st.lists(st.integers(0, 9), max_size=4)


@functools.cache
def _audio_hz() -> Any:
    return _st().one_of(_pick((16000, 0, -1, 999, 192001, 2**63)), _json_values())


def _mutate(draw: Any, parts: Message) -> Message:
    op = draw(_pick(("set", "del", "desc", "flip", "truncate", "drop", "dup", "append", "topic", "text")))
    if op in ("set", "del", "desc"):
        try:
            header = json.loads(parts[1]) if len(parts) > 1 else None
        except (ValueError, RecursionError):
            header = None
        if not isinstance(header, dict):
            return parts
        if op == "set":
            header[draw(_header_keys())] = draw(_json_values())
        elif op == "del":
            header.pop(draw(_pick(_FRAME_KEYS)), None)
        else:
            descs = header.get("parts")
            if isinstance(descs, list) and descs and isinstance(descs[0], dict):
                d = descs[_index(draw, len(descs))]
                if isinstance(d, dict):
                    key = draw(_pick(("name", "dtype", "shape", "encoding", "nbytes", "quality")))
                    d[key] = draw(_desc_values().get(key, _json_values()))
        return [parts[0], _dumps(header), *parts[2:]]
    if op == "topic":
        return [draw(_topics()), *parts[1:]]
    if op == "text" and len(parts) > 1:  # JSON that json.dumps cannot write: constants, deep nesting, bad UTF-8
        junk = draw(_pick((b"NaN", b"-Infinity", b"[" * 3000 + b"]" * 3000, b'"\xff"', b"1e999",
                           b"123456789012345678901234567890")))
        return [parts[0], parts[1][:-1] + b',"junk":' + junk + b"}", *parts[2:]]
    if not parts:
        return parts
    i = _index(draw, len(parts))
    if op == "flip" and parts[i]:
        b = bytearray(parts[i])
        pos = _index(draw, len(b))
        b[pos] ^= 1 << draw(_ints(0, 7))
        return [*parts[:i], bytes(b), *parts[i + 1:]]
    if op == "truncate":
        return [*parts[:i], parts[i][:_index(draw, len(parts[i]) + 1)], *parts[i + 1:]]
    if op == "drop":
        return [*parts[:i], *parts[i + 1:]]
    if op == "dup":
        return [*parts[:i + 1], parts[i], *parts[i + 1:]]
    return [*parts, draw(_binary(64))]


def _frame_messages() -> Any:
    st = _st()

    @st.composite
    def build(draw: Any) -> Message:
        parts = list(draw(_pick(_bases())))
        for _ in range(draw(_ints(0, 3))):
            parts = _mutate(draw, parts)
        return parts

    return build()


# ---------------------------------------------------------------------------------------------------------------
# one hostile part in a valid frame
def _hostile_array(draw: Any, dtype: str, shape: list[int]) -> np.ndarray:
    np_dtype: np.dtype[Any] = np.dtype(np.bool_) if dtype == "bool" else np.dtype(dtype)
    n = int(np.prod(shape)) if shape else 1
    kind = draw(_pick(("zeros", "ones", "nan", "inf", "huge", "negative", "random", "max")))
    if np_dtype == np.bool_:
        raw = np.full(n, {"max": 255, "huge": 2, "random": draw(_ints(0, 255))}.get(kind, kind == "ones"),
                      np.uint8)
        return raw.view(np.bool_).reshape(shape)
    if np_dtype.kind == "f":
        value = {"zeros": 0.0, "ones": 1.0, "nan": np.nan, "inf": np.inf, "huge": 1e30, "negative": -5.0,
                 "max": np.finfo(np_dtype).max}.get(kind)
        if value is None:
            drawn = draw(_float_lists(16 if np_dtype.itemsize == 2 else 32))
            a = np.resize(np.asarray(drawn or [0.0], dtype=np_dtype), n)
        else:
            with np.errstate(over="ignore"):
                a = np.full(n, value, dtype=np_dtype)
        return a.reshape(shape)
    info = np.iinfo(np_dtype)
    value = {"zeros": 0, "ones": 1, "huge": info.max, "max": info.max, "negative": info.min}.get(kind, 3)
    return np.full(n, value, dtype=np_dtype).reshape(shape)


def _part_messages() -> Any:
    st = _st()

    @st.composite
    def build(draw: Any) -> Message:
        parts = list(draw(_pick(_bases())))
        header = json.loads(parts[1])
        name = draw(_pick((*PART_SPECS, "extra")))
        spec = PART_SPECS.get(name)
        want = [draw(_ints(1, 6)) if n is None else n for n in spec.shape] if spec else [3]
        how = draw(_pick(("contract", "contract", "one_dim_off", "ndim_off", "random")))
        shape = list(want)
        if how == "one_dim_off" and shape:
            i = _index(draw, len(shape))
            shape[i] = max(0, shape[i] + draw(_pick((-1, 1, -shape[i], 5))))
        elif how == "ndim_off":
            shape = shape[:-1] if shape and draw(_ints(0, 1)) else [*shape, draw(_ints(1, 3))]
        elif how == "random":
            shape = draw(_random_shapes())
        dtype = (spec.dtype if spec else "float32") if draw(_ints(0, 1)) else draw(_pick(_WIRE_DTYPES))
        arr = _hostile_array(draw, dtype, shape)
        raw = np.ascontiguousarray(arr).tobytes()
        encoding = draw(_pick(("raw", "raw", "zlib", "png", "jpeg", "raw_short", "raw_long", "zlib_bomb",
                                         "zlib_garbage", "image_garbage", "image_wrong_size")))
        wire_enc, payload = encoding, raw
        if encoding == "raw_short":
            wire_enc, payload = "raw", raw[:-1]
        elif encoding == "raw_long":
            wire_enc, payload = "raw", raw + b"\0"
        elif encoding == "zlib":
            payload = zlib.compress(raw, 1)
        elif encoding == "zlib_bomb":
            wire_enc, payload = "zlib", _zlib_bomb(8 << 20)
        elif encoding == "zlib_garbage":
            wire_enc, payload = "zlib", draw(_binary(32))
        elif encoding in ("png", "jpeg", "image_garbage", "image_wrong_size"):
            wire_enc = draw(_pick(("png", "jpeg")))
            if encoding == "image_garbage":
                payload = draw(_binary(64))
            else:
                from PIL import Image

                h, w = (shape[0], shape[1]) if len(shape) >= 2 and shape[0] and shape[1] else (2, 3)
                if encoding == "image_wrong_size":
                    h, w = h + 1, w + 7
                buf = io.BytesIO()
                mode = "RGB" if len(shape) == 3 else "L"
                Image.new(mode, (w, h)).save(buf, format="PNG" if wire_enc == "png" else "JPEG")
                payload = buf.getvalue()
        desc = {"name": name, "dtype": dtype, "shape": shape, "encoding": wire_enc, "nbytes": len(raw)}
        names = [d["name"] for d in header["parts"]]
        if name in names:
            i = names.index(name)
            header["parts"][i] = desc
            parts[2 + i] = payload
        else:
            header["parts"].append(desc)
            parts.append(payload)
        if name == "audio" and draw(_ints(0, 1)):
            header["audio_hz"] = draw(_audio_hz())
        parts[1] = _dumps(header)
        return parts

    return build()


def _decode_and_build(parts: Message) -> None:
    """The consumer's path: decode, then build the DeviceFrame (which must keep the part contract)."""
    msg = decode_message(parts)
    if msg.kind == "frame":
        frame = msg.to_frame()
        if frame.hands is not None:
            assert frame.hands.joints_m.shape == (2, 26, 3) and frame.hands.valid.shape == (2,)
        if frame.gaze is not None:
            assert frame.gaze.origin_m.shape == (3,)


# ---------------------------------------------------------------------------------------------------------------
# heartbeats and sequence accounting
@functools.cache
def _heartbeat_parts() -> dict[str, Any]:
    st = _st()
    return {
        "last_seq": st.one_of(st.dictionaries(_pick(("xrfed/d0/frame", "xrfed/d1/frame", "xrfed/quest_0/frame",
                                                     "other")), _seqs(), max_size=3), _json_values()),
        "devices": st.one_of(st.lists(st.fixed_dictionaries(
            {"device_id": st.one_of(_pick(("d0", "a/b", "", " ")), _json_values())},
            optional={"user_id": _json_values(), "profile": _json_values()}), max_size=3), _json_values()),
        "step_dt_s": st.one_of(_pick((0.1, 0.0, -1.0, 1e308, None)), _json_values()),
    }


def _heartbeat_sequences() -> Any:
    st = _st()

    @st.composite
    def build(draw: Any) -> list[Message]:
        session = draw(_pick(("s0", "s1")))
        hb = _heartbeat_parts()
        out: list[Message] = []
        for _ in range(draw(_ints(1, 8))):
            if draw(_ints(0, 1)):
                dev = draw(_pick(("d0", "d1", "quest_0")))
                header: dict[str, Any] = {"proto": "xrfed-stream", "v": 1, "kind": "frame", "publisher": "fz",
                                          "session": session, "seq": draw(_seqs()), "device_id": dev, "step": 0,
                                          "sim_time_s": 0.0, "parts": []}
                out.append([f"xrfed/{dev}/frame".encode(), _dumps(header)])
                continue
            header = {"proto": "xrfed-stream", "v": 1, "kind": "heartbeat", "publisher": "fz", "session": session,
                      "seq": draw(_seqs()), "last_seq": draw(hb["last_seq"]), "devices": draw(hb["devices"]),
                      "step_dt_s": draw(hb["step_dt_s"]), "parts": []}
            out.append([b"xrfed-hb/fz", _dumps(header)])
        return out

    return build()


def _account_all(messages: list[Message]) -> None:
    """Hand every message to a subscriber's accounting (no socket) and check its counters stay sane."""
    from .subscriber import Subscriber, SubscriberConfig

    sub = Subscriber(SubscriberConfig(connect=("tcp://127.0.0.1:9",), seq_window=1000))
    for parts in messages:
        before = sub.stats.missing
        sub._account(parts, arrays=True)
        assert 0 <= sub.stats.missing - before <= sub.config.seq_window, \
            f"missing grew by {sub.stats.missing - before} from one message"
    assert len(sub._last_seq) <= sub.config.max_topics
    for d in sub.known_devices():
        assert set(d) == {"device_id", "user_id", "profile"} and all(type(v) is str for v in d.values())
    if sub.stats.rejected:
        raise BridgeError(f"rejected: {dict(sub.stats.rejected)}")


# ---------------------------------------------------------------------------------------------------------------
# envelopes: anything at all
@functools.cache
def _envelopes() -> Any:
    st = _st()
    good_header = st.builds(lambda kind, seq: _dumps({"proto": "xrfed-stream", "v": 1, "kind": kind, "seq": seq,
                                                      "device_id": "d", "step": 0, "sim_time_s": 0.0, "parts": []}),
                            _pick(("frame", "heartbeat", "other")), _seqs())
    part = st.one_of(st.binary(max_size=48), _pick((b"xrfed/d/frame", b"xrfed-hb/p", b"", b"{}", b"[]")),
                     good_header, _json_values().map(_dumps))
    shaped = st.builds(lambda topic, head, rest: [topic, head, *rest],
                       _pick((b"xrfed/d/frame", b"xrfed-hb/p", b"xrfed/e/frame")), good_header,
                       st.lists(st.binary(max_size=16), max_size=3))
    return st.one_of(st.lists(part, max_size=40), shaped)


def _decode_envelope(parts: Message) -> None:
    msg = decode_message(parts)
    if msg.kind == "frame":
        msg.to_frame()


# ---------------------------------------------------------------------------------------------------------------
# a live subscriber over loopback
def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    except (OSError, ValueError, IndexError):
        return 0


class _Loopback:
    """A bare XPUB socket (the hostile publisher) on 127.0.0.1 and a real :class:`Subscriber` connected to it."""

    def __init__(self, limits: Limits, *, sndhwm: int = 1000):
        import zmq

        from .subscriber import Subscriber, SubscriberConfig

        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.linger = 0
        self.pub.sndhwm = sndhwm
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.sub = Subscriber(SubscriberConfig(connect=(f"tcp://127.0.0.1:{port}",), limits=limits,
                                               reconnect_ivl_s=0.01, reconnect_after_s=None))
        self.sub.open()
        self.sentinels = 0
        deadline = time.monotonic() + 10.0
        while not self.pub.poll(10, zmq.POLLIN):  # the subscription: from now on nothing is filtered away
            self.sub.recv(0.0)
            if time.monotonic() > deadline:
                raise AssertionError("fuzz subscriber never subscribed")

    def close(self) -> None:
        self.sub.close()
        self.pub.close(0)
        self.ctx.term()

    def send(self, parts: Message) -> None:
        import zmq

        if parts:  # a message of no parts does not exist on the wire
            try:
                self.pub.send_multipart(parts, copy=len(parts) > 4 or max(map(len, parts)) < 65536)
            except zmq.Again:
                pass

    def sentinel(self, timeout_s: float = 20.0) -> None:
        """Send a good frame until the subscriber delivers it: it must still be alive and delivering."""
        import zmq

        k = self.sentinels = self.sentinels + 1
        msg = [bytes(memoryview(p)) for p in encode_frame(DeviceFrame(_SENTINEL, "", "", k, 0.0), seq=k,
                                                           session="sentinel", publisher=_SENTINEL)]
        end = time.monotonic() + timeout_s
        try:
            while time.monotonic() < end:
                while self.pub.poll(0, zmq.POLLIN):
                    self.pub.recv()  # subscriptions (again after a reconnect): not needed, only drained
                self.pub.send_multipart(msg)
                resend = time.monotonic() + 0.05
                while time.monotonic() < resend:
                    frame = self.sub.recv_frame(0.02)
                    if frame is not None and frame.device_id == _SENTINEL and frame.step == k:
                        return
        except Exception as exc:  # noqa: BLE001 -- a subscriber that raises is a dead subscriber: a crash
            raise AssertionError(f"subscriber died: {type(exc).__name__}: {exc}") from exc
        raise AssertionError(f"subscriber stopped delivering frames (stats {self.sub.stats.to_dict()})")

    def check(self, before: dict[str, int]) -> None:
        """After a sentinel: no defect of ours showed, and what the subscriber refused is reported as a rejection."""
        stats = self.sub.stats
        if stats.rejected["bad_frame_unexpected"]:
            raise AssertionError(f"to_frame raised an unexpected exception type: {dict(stats.rejected)}")
        grew = {k: v - before.get(k, 0) for k, v in stats.rejected.items() if v > before.get(k, 0)}
        if stats.disconnects > before.get("_disconnects", 0):
            grew["disconnected (MAXMSGSIZE)"] = stats.disconnects - before.get("_disconnects", 0)
        if grew:
            raise BridgeError(f"subscriber rejected: {grew}")

    def snapshot(self) -> dict[str, int]:
        return {**self.sub.stats.rejected, "_disconnects": self.sub.stats.disconnects}


def _subscriber_messages() -> Any:
    st = _st()
    one = st.one_of(_frame_messages(), _part_messages(), _envelopes())
    return st.one_of(one.map(lambda m: [m]), _heartbeat_sequences())


@contextlib.contextmanager
def _subscriber_session() -> Iterator[Callable[[Any], None]]:
    loop = _Loopback(Limits())

    def feed(messages: list[Message]) -> None:
        before = loop.snapshot()
        for parts in messages:
            loop.send(parts)
        loop.sentinel()
        loop.check(before)

    try:
        yield feed
    finally:
        loop.close()


# ---------------------------------------------------------------------------------------------------------------
# floods
_FLOOD_KINDS = ("max_size", "max_size", "max_size", "oversized_message", "zlib_bomb", "zlib_bomb", "decoded_bomb",
                "many_parts", "huge_header", "oversized_part")


def _flood_message(kind: str, size_frac: float, i: int) -> Message:
    """One message of a flood against :data:`FLOOD_LIMITS`."""
    lim = FLOOD_LIMITS
    topic = b"xrfed/flood/frame"
    header: dict[str, Any] = {"proto": "xrfed-stream", "v": 1, "kind": "frame", "publisher": "flood",
                              "session": "f", "seq": i, "device_id": "flood", "step": i, "sim_time_s": 0.0}
    if kind == "max_size":  # accepted: one raw part filling the message up to the limit
        n = int((lim.max_part_bytes - 64) * size_frac)
        header["parts"] = [{"name": "extra", "dtype": "uint8", "shape": [n], "encoding": "raw", "nbytes": n}]
        return [topic, _dumps(header), _zeros(n)]
    if kind == "oversized_message":  # every part within limits, the message over them
        n = lim.max_part_bytes - 1
        header["parts"] = [{"name": f"x{j}", "dtype": "uint8", "shape": [n], "encoding": "raw"} for j in range(3)]
        return [topic, _dumps(header), *[_zeros(n)] * 3]
    if kind == "oversized_part":  # one part over max_message_bytes: ZeroMQ drops the connection while receiving it
        n = lim.max_message_bytes + 1 + int(lim.max_message_bytes * size_frac)
        header["parts"] = [{"name": "extra", "dtype": "uint8", "shape": [n], "encoding": "raw"}]
        return [topic, _dumps(header), _zeros(n)]
    if kind == "zlib_bomb":  # declares at most max_part_bytes, inflates to 64 MiB
        n = max(1, int(lim.max_part_bytes * size_frac))
        header["parts"] = [{"name": "depth_m", "dtype": "float32", "shape": [1, n // 4 or 1], "encoding": "zlib"}]
        return [topic, _dumps(header), _zlib_bomb(64 << 20)]
    if kind == "decoded_bomb":  # max_parts small zlib parts that would decode to max_part_bytes each
        n = lim.max_part_bytes
        header["parts"] = [{"name": f"x{j}", "dtype": "uint8", "shape": [n], "encoding": "zlib"}
                           for j in range(lim.max_parts)]
        return [topic, _dumps(header), *[_zlib_bomb(n)] * lim.max_parts]
    if kind == "many_parts":  # more parts than any message may have
        return [topic, _dumps(header), *[b"\0"] * (lim.max_parts + 1 + int(64 * size_frac))]
    # huge_header: a header over max_header_bytes (still under MAXMSGSIZE)
    header["pad"] = "x" * int(lim.max_header_bytes * (1 + size_frac))
    header["parts"] = []
    return [topic, _dumps(header)]


_ZERO_BYTES = bytes(2 * FLOOD_LIMITS.max_message_bytes + 1)  # every flood payload is a view of this one buffer


def _zeros(n: int) -> memoryview:
    """``n`` zero bytes, a view of one shared buffer (a cache per size would hold every size a fuzzer draws)."""
    if n > len(_ZERO_BYTES):
        raise ValueError(f"flood payload of {n} bytes > {len(_ZERO_BYTES)}")
    return memoryview(_ZERO_BYTES)[:n]


def _floods() -> Any:
    st = _st()
    return st.tuples(st.sampled_from(_FLOOD_KINDS), st.integers(1, 12), st.floats(0.5, 1.0))


@contextlib.contextmanager
def _flood_session() -> Iterator[Callable[[Any], None]]:
    # A small send queue: the hostile side drops what the subscriber's bounded queue does not take, so this
    # process's memory is the subscriber's (plus a few messages in flight).
    loop = _Loopback(FLOOD_LIMITS, sndhwm=2)
    for kind in _FLOOD_KINDS:  # build every payload once before the baseline
        _flood_message(kind, 1.0, 0)
    loop.sentinel()
    baseline = rss_bytes()
    cap = loop.sub.config.memory_cap_bytes
    seq = [0]

    def feed(example: tuple[str, int, float]) -> None:
        kind, count, size_frac = example
        before = loop.snapshot()
        for _ in range(count):
            seq[0] += 1
            loop.send(_flood_message(kind, size_frac, seq[0]))
        loop.sentinel()
        grew = rss_bytes() - baseline
        # glibc keeps some freed memory: twice the cap plus room for the interpreter is still a bound in bytes
        assert grew <= 2 * cap + (64 << 20), f"resident memory grew {grew >> 20} MiB, cap {cap >> 20} MiB"
        loop.check(before)

    try:
        yield feed
    finally:
        loop.close()


def flood_memory(limits_kwargs: dict[str, int], messages: int, bombs: int) -> dict[str, Any]:
    """Measure a subscriber under a flood (run it in a fresh process: RSS is per process).

    A publisher that waits instead of dropping (``XPUB_NODROP``, send queue of 1) sends ``messages`` messages of
    ``max_message_bytes`` while the subscriber does not read, until back-pressure stops it; then the subscriber reads
    them, and ``bombs`` zlib bombs (one part declaring ``max_part_bytes`` that inflates to 256 MiB, and messages of
    ``max_parts`` parts that would decode past ``max_decoded_bytes``) follow. Returns RSS growth while the queue was
    full and at the peak, the documented cap, and the counters.
    """
    import zmq

    from .subscriber import Subscriber, SubscriberConfig

    limits = Limits(**limits_kwargs)
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.linger, pub.sndhwm, pub.sndtimeo = 0, 1, 300
    pub.setsockopt(zmq.XPUB_NODROP, 1)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    topic = b"xrfed/flood/frame"
    n = limits.max_message_bytes - 512
    big = bytes(n)
    bomb = _zlib_bomb(256 << 20)
    decoded = _zlib_bomb(limits.max_part_bytes)
    cfg = SubscriberConfig(connect=(f"tcp://127.0.0.1:{port}",), limits=limits, reconnect_after_s=None)

    def header(i: int, parts: list[dict[str, Any]]) -> bytes:
        return _dumps({"proto": "xrfed-stream", "v": 1, "kind": "frame", "publisher": "flood", "session": "f",
                       "seq": i, "device_id": "flood", "step": i, "sim_time_s": 0.0, "parts": parts})

    with Subscriber(cfg) as sub:
        while not pub.poll(10, zmq.POLLIN):
            sub.recv(0.0)
        pub.recv()
        time.sleep(0.1)
        baseline = rss_bytes()
        sent = 0
        for i in range(messages):
            try:
                pub.send_multipart([topic, header(i, [{"name": "extra", "dtype": "uint8", "shape": [n],
                                                       "encoding": "raw"}]), big], copy=False)
            except zmq.Again:
                break  # back-pressure: the subscriber's queue is full
            sent += 1
        time.sleep(0.5)  # let ZeroMQ's I/O thread queue whatever it will
        full = rss_bytes() - baseline
        accepted = 0
        while sub.recv(0.5) is not None:
            accepted += 1
        for i in range(bombs):
            one = [{"name": "depth_m", "dtype": "float32", "shape": [1, limits.max_part_bytes // 4],
                    "encoding": "zlib"}]
            many = [{"name": f"x{j}", "dtype": "uint8", "shape": [limits.max_part_bytes], "encoding": "zlib"}
                    for j in range(limits.max_parts)]
            pub.send_multipart([topic, header(sent + 2 * i, one), bomb])
            pub.send_multipart([topic, header(sent + 2 * i + 1, many), *[decoded] * limits.max_parts])
        while sub.recv(0.5) is not None:
            accepted += 1
        peak = peak_rss_bytes() - baseline  # VmHWM: ru_maxrss would include a forked parent's peak
        stats = sub.stats.to_dict()
        cap = cfg.memory_cap_bytes
    pub.close(0)
    ctx.term()
    return {"sent": sent, "accepted": accepted, "queue_full_growth_bytes": full, "peak_growth_bytes": peak,
            "cap_bytes": cap, "queue_messages": cfg.queue_messages, "stats": stats}


# ---------------------------------------------------------------------------------------------------------------
SURFACES: list[Surface] = [
    Surface("stream.frame", "stream frame messages (valid, mutated headers/descriptors/bytes) -> decode + to_frame",
            _frame_messages, stateless(_decode_and_build)),
    Surface("stream.part", "one hostile part (every part kind: shape, dtype, values, encodings, bombs) in a frame",
            _part_messages, stateless(_decode_and_build)),
    Surface("stream.heartbeat", "frames and heartbeats with absurd seq/last_seq/devices -> subscriber accounting",
            _heartbeat_sequences, stateless(_account_all)),
    Surface("stream.envelope", "arbitrary multipart envelopes (0-40 parts of garbage, JSON, topics) -> decode",
            _envelopes, stateless(_decode_envelope)),
    Surface("stream.subscriber", "all of the above as raw ZeroMQ messages to a live subscriber on loopback "
                                 "(a sentinel frame must arrive after each)", _subscriber_messages,
            _subscriber_session),
    Surface("stream.flood", "floods of max-size/oversized messages, zlib bombs, too many parts into a live "
                            "subscriber with FLOOD_LIMITS (RSS within the cap, sentinel after each)", _floods,
            _flood_session),
]

_MiB = 1 << 20
#: the limits of the memory probe (``xrfed bench fuzz``; tests/bridge/test_stream_hostile.py uses the same):
#: 4 MiB messages, a 32 MiB queue, so the documented cap is (8 + 2) x 4 MiB + 8 MiB = 48 MiB
FLOOD_MEMORY_LIMITS = {"max_message_bytes": 4 * _MiB, "max_part_bytes": 4 * _MiB, "max_decoded_bytes": 8 * _MiB,
                       "max_queue_bytes": 32 * _MiB}

#: memory tests run by ``xrfed bench fuzz`` in a fresh process each (see :func:`bridge.fuzzing.memory_probes`)
MEMORY_PROBES: dict[str, Callable[[], dict[str, Any]]] = {
    "stream.flood_memory": functools.partial(flood_memory, FLOOD_MEMORY_LIMITS, 200, 8),
}
