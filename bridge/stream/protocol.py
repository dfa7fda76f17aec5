"""The xrfed stream wire format, version 1: a multipart ZeroMQ message = topic + JSON header + raw buffers.

This module is the one place that turns a :class:`~bridge.frame.DeviceFrame` into wire parts and back. It depends on
numpy, zlib and (for PNG/JPEG only) Pillow -- not on zmq -- so a Kit extension, a recorder or a test can use it
without sockets. The full, language-neutral description is ``docs/stream-protocol.md``; the short version:

``[topic, header, buffer_0, buffer_1, ...]``

* ``topic``: UTF-8 ``xrfed/<device_id>/<channel>`` for frames (``channel`` is ``frame`` for a whole DeviceFrame, or
  a name the publisher chose for a modality subset), ``xrfed-hb/<publisher>`` for heartbeats. Subscriptions are
  prefix matches, so ``xrfed/<device_id>/`` selects one device.
* ``header``: UTF-8 JSON object. ``proto`` = ``"xrfed-stream"``, ``v`` = 1, ``kind`` = ``"frame"`` | ``"heartbeat"``,
  the publisher's id and ``session`` (random per publisher start: a new value means the publisher restarted), the
  per-topic ``seq`` (0, 1, 2, ... within a session), times, the frame's metadata, and ``parts``: one descriptor per
  following buffer (``name``, ``dtype``, ``shape``, ``encoding``, ``units``, ``nbytes`` of the raw array).
* buffers: the arrays of :func:`bridge.arrays.frame_to_arrays`, C order, little-endian, each either ``raw`` or
  compressed as its descriptor's ``encoding`` says (``png``/``jpeg`` for uint8 images, ``zlib`` for anything).

Nothing is ever unpickled: a decoder needs ``json``, ``numpy.frombuffer`` and the declared codec. Every malformed or
oversized message raises :class:`StreamProtocolError` whose ``reason`` is a short code the subscriber counts.
"""

from __future__ import annotations

import functools
import io
import json
import math
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..arrays import (
    GAZE_FIELDS,
    IMU_FIELDS,
    LIGHTING_FIELDS,
    POSE_FIELDS,
    label_names,
    modality_arrays,
    records_from_arrays,
)
from ..errors import BridgeError, TransportError
from ..frame import NUM_HAND_JOINTS, DeviceFrame
from ..tasks import TASKS

__all__ = [
    "PROTOCOL",
    "VERSION",
    "FRAME_TOPIC_PREFIX",
    "HEARTBEAT_TOPIC_PREFIX",
    "PART_SPECS",
    "ENCODINGS",
    "StreamProtocolError",
    "Compression",
    "Limits",
    "StreamMessage",
    "frame_topic",
    "device_prefix",
    "encode_frame",
    "encode_arrays_message",
    "encode_heartbeat",
    "decode_message",
    "message_nbytes",
]

PROTOCOL = "xrfed-stream"
VERSION = 1
FRAME_TOPIC_PREFIX = "xrfed/"
HEARTBEAT_TOPIC_PREFIX = "xrfed-hb/"

#: dtypes allowed on the wire (little-endian; bool is one byte, 0 or 1)
_WIRE_DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float16", "float32",
                "float64")
#: encodings a publisher may choose; ``png``/``jpeg`` only for uint8 images [H, W] or [H, W, 3]
ENCODINGS = ("raw", "zlib", "png", "jpeg")


@dataclass(frozen=True)
class _PartSpec:
    dtype: str
    #: the frame contract's shape: an int is an exact size, None a free size of at least 1 (an image's H and W,
    #: audio's channels and samples)
    shape: tuple[int | None, ...]
    units: str

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def text(self) -> str:
        """``[2, 26, 3]``, or ``[N, N, 3] (N >= 1)`` with free sizes."""
        dims = "[" + ", ".join("N" if n is None else str(n) for n in self.shape) + "]"
        return dims + " (N >= 1)" if None in self.shape else dims


#: every array a frame message may carry: its wire dtype, shape (the frame contract's, see bridge/arrays.py) and units
PART_SPECS: dict[str, _PartSpec] = {
    "rgb": _PartSpec("uint8", (None, None, 3), "srgb [H, W, 3], row 0 at the top"),
    "depth_m": _PartSpec("float32", (None, None), "m along the optical axis, inf = no hit"),
    "segmentation": _PartSpec("int32", (None, None), "object id, -1 = structure/background"),
    "gaze": _PartSpec("float32", (len(GAZE_FIELDS),), "fields: " + ",".join(GAZE_FIELDS) + " (head frame)"),
    "gaze_valid": _PartSpec("bool", (), "flag"),
    "audio": _PartSpec("float32", (None, None), "full scale 1.0 [channels, samples] at audio_hz"),
    "pose": _PartSpec("float32", (len(POSE_FIELDS),), "fields: " + ",".join(POSE_FIELDS) + " (world frame, head -> world)"),
    "imu": _PartSpec("float32", (len(IMU_FIELDS),), "fields: " + ",".join(IMU_FIELDS) + " (head frame)"),
    "hands": _PartSpec("float32", (2, NUM_HAND_JOINTS, 3), "m, [2 (left, right), 26 OpenXR joints, 3] head frame"),
    "hands_valid": _PartSpec("bool", (2,), "flags [left, right]"),
    "lighting": _PartSpec("float32", (len(LIGHTING_FIELDS),), "fields: " + ",".join(LIGHTING_FIELDS)),
}
#: parts that share the camera's [H, W] (the frame contract holds them to one image size)
_IMAGE_PARTS = ("rgb", "depth_m", "segmentation")
_PART_ORDER = tuple(PART_SPECS)


class StreamProtocolError(TransportError, ValueError):
    """A message breaks the wire format (or a limit). ``reason`` is a short code the subscriber counts by."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        if len(detail) > _DETAIL_CHARS:  # hostile values can be 64 KiB of header: the error stays one short line
            detail = detail[:_DETAIL_CHARS] + f"... ({len(detail)} chars)"
        super().__init__(f"stream message rejected ({reason}): {' '.join(detail.split())}")


_DETAIL_CHARS = 240


@dataclass(frozen=True)
class Compression:
    """Which encoding the publisher uses per part; the choice is declared per part in the header.

    ``rgb``: ``raw`` | ``png`` (lossless) | ``jpeg`` (lossy, ``jpeg_quality``); ``depth_m``, ``segmentation`` and
    ``audio``: ``raw`` | ``zlib`` (lossless; depth and masks compress well, float noise does not). Small vectors
    (gaze, pose, ...) are always raw: compressing 32 bytes costs more than it saves.
    """

    rgb: str = "raw"
    depth_m: str = "raw"
    segmentation: str = "raw"
    audio: str = "raw"
    jpeg_quality: int = 90
    zlib_level: int = 1  # fastest: a stream favours latency over ratio
    # derived in __post_init__: name -> encoding of every part not sent raw (jpeg as ("jpeg", quality))
    _encodings: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        allowed = {"rgb": ("raw", "png", "jpeg"), "depth_m": ("raw", "zlib"), "segmentation": ("raw", "zlib"),
                   "audio": ("raw", "zlib")}
        for name, ok in allowed.items():
            if getattr(self, name) not in ok:
                raise BridgeError(f"Compression.{name}: expected one of {ok}, got {getattr(self, name)!r}")
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise BridgeError(f"Compression.jpeg_quality: expected 1..100, got {self.jpeg_quality}")
        if not 0 <= int(self.zlib_level) <= 9:
            raise BridgeError(f"Compression.zlib_level: expected 0..9, got {self.zlib_level}")
        # name -> encoding of the parts not sent raw; jpeg carries its quality (the descriptor cache's key)
        encodings: dict[str, Any] = {}
        for name in allowed:
            enc = getattr(self, name)
            if enc != "raw":
                encodings[name] = ("jpeg", int(self.jpeg_quality)) if enc == "jpeg" else enc
        object.__setattr__(self, "_encodings", encodings)

    @classmethod
    def parse(cls, text: str) -> Compression:
        """From ``"rgb=jpeg,depth_m=zlib"`` (the CLI's ``--compress``); ``""``/``"none"`` = all raw."""
        if text.strip() in ("", "none", "raw"):
            return cls()
        kw: dict[str, Any] = {}
        for item in text.split(","):
            key, sep, value = item.partition("=")
            key = {"depth": "depth_m", "seg": "segmentation"}.get(key.strip(), key.strip())
            if not sep or key not in {f for f in cls.__dataclass_fields__}:
                raise BridgeError(f"--compress item {item!r}: expected NAME=ENCODING with NAME in rgb, depth_m, "
                                  f"segmentation, audio, jpeg_quality, zlib_level")
            if key in ("jpeg_quality", "zlib_level"):
                try:
                    kw[key] = int(value, 10)
                except ValueError:
                    raise BridgeError(f"--compress item {item!r}: {key} must be a whole number") from None
            else:
                kw[key] = value.strip()
        return cls(**kw)

    def encoding_for(self, name: str) -> str:
        enc = self._encodings.get(name, "raw")
        return enc if isinstance(enc, str) else enc[0]


_DEFAULT_COMPRESSION = Compression()


_MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What a reader accepts and how much it may hold, in bytes. Anything larger is rejected (and counted) before it
    is decompressed or allocated.

    * ``max_message_bytes``: one message on the wire, all parts together. A subscriber also sets it as the socket's
      ``ZMQ_MAXMSGSIZE``, so ZeroMQ refuses a larger *part* while receiving it (it drops that connection; the
      subscriber counts ``stats.disconnects``) instead of buffering it whole.
    * ``max_header_bytes``: the JSON header.
    * ``max_part_bytes``: one decoded array (checked on the declared shape, before inflating or decoding pixels).
    * ``max_decoded_bytes``: all decoded arrays of one message together (a message of 32 small zlib parts that each
      inflate to ``max_part_bytes`` is refused before any is inflated).
    * ``max_parts``: buffers per message.
    * ``max_queue_bytes``: the byte budget of a subscriber's receive queue. ZeroMQ counts its queue in messages, so
      the subscriber's high-water mark is ``max_queue_bytes // max_message_bytes`` messages (:meth:`queue_messages`):
      the queue never holds more than ``max_queue_bytes``. When it is full, a ``lossless`` publisher waits
      (back-pressure, nothing lost) and a ``latest`` one drops whole messages (the subscriber counts them as
      sequence gaps). Size ``max_message_bytes`` to the stream's largest message to queue more of them.

    The defaults take a 1920x1080 frame with rgb, depth and segmentation raw (23 MB) with room to spare, and bound a
    subscriber to about ``(queue_messages() + 2) * max_message_bytes + max_decoded_bytes`` (:meth:`memory_cap_bytes`,
    1.2 GiB by default; the decoded arrays a caller keeps are its own).
    """

    max_message_bytes: int = 64 * _MiB  # on the wire, all parts together
    max_header_bytes: int = 64 * 1024
    max_part_bytes: int = 64 * _MiB  # one decoded array
    max_decoded_bytes: int = 128 * _MiB  # every decoded array of one message
    max_parts: int = 32
    max_queue_bytes: int = 1024 * _MiB  # a subscriber's receive queue

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "max_header_bytes", "max_part_bytes", "max_decoded_bytes", "max_parts",
                     "max_queue_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**62:
                raise BridgeError(f"Limits.{name}: expected a positive integer below 2**62, got {value!r}")
        if self.max_queue_bytes < self.max_message_bytes:
            raise BridgeError(f"Limits.max_queue_bytes: must hold at least one message of max_message_bytes "
                              f"({self.max_message_bytes}), got {self.max_queue_bytes}")

    def queue_messages(self) -> int:
        """How many messages of ``max_message_bytes`` fit in ``max_queue_bytes`` (a subscriber's high-water mark)."""
        return max(1, self.max_queue_bytes // self.max_message_bytes)

    def memory_cap_bytes(self, queue_messages: int | None = None) -> int:
        """The most a subscriber holds for received messages: a full queue of ``queue_messages`` (default
        :meth:`queue_messages`), plus the one ZeroMQ is receiving and the one being decoded, plus its decoded
        arrays."""
        n = self.queue_messages() if queue_messages is None else queue_messages
        return (n + 2) * self.max_message_bytes + self.max_decoded_bytes


_DEFAULT_LIMITS = Limits()


@dataclass
class StreamMessage:
    """One decoded message: its topic, header (a plain dict from JSON) and arrays (views of the received buffers for
    raw parts, fresh arrays for compressed ones)."""

    topic: str
    header: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    wire_bytes: int = 0

    @property
    def kind(self) -> str:
        return str(self.header["kind"])

    @property
    def seq(self) -> int:
        seq = self.header.get("seq", -1)
        return seq if type(seq) is int else -1

    @property
    def session(self) -> str:
        return str(self.header.get("session", ""))

    @property
    def device_id(self) -> str:
        return str(self.header.get("device_id", ""))

    def to_frame(self) -> DeviceFrame:
        """The :class:`DeviceFrame` this message carries, validated by the frame contract.

        Raises :class:`StreamProtocolError` (a header field of the wrong type or range, an array of the wrong
        shape) or :class:`~bridge.errors.FrameValidationError` (a value the contract refuses: NaN in a pose, a gaze
        angle beyond 90 degrees, an unknown label); never anything else.
        """
        h = self.header
        if h.get("kind") != "frame":
            raise StreamProtocolError("not_a_frame", f"a {str(h.get('kind'))[:40]!r} message has no DeviceFrame")
        arr = self.arrays
        for name, a in arr.items():  # decode_message checked these; a hand-built message may not have been
            want = _FIXED_SHAPES.get(name)
            if want is not None and getattr(a, "shape", None) != want:
                raise StreamProtocolError("bad_shape", f"part {name!r}: expected shape {list(want)}, "
                                                       f"got {getattr(a, 'shape', type(a).__name__)}")
        get = h.get
        device_id, user_id, profile, step = h.get("device_id"), get("user_id", ""), get("profile", ""), h.get("step")
        sim_time, wall_ns, fov, room = get("sim_time_s"), get("wall_time_ns", 0), get("camera_fov_y_deg"), get("room")
        labels, tasks, events = get("labels", {}), get("active_tasks", ()), get("events", ())
        # exact JSON types (bool is not an int here), so nothing below can raise anything but the contract's errors
        if not (type(device_id) is str and type(user_id) is str and type(profile) is str and type(step) is int
                and type(wall_ns) is int and (room is None or type(room) is str)):
            for key, value, ok in (("device_id", device_id, str), ("user_id", user_id, str),
                                   ("profile", profile, str), ("step", step, int), ("wall_time_ns", wall_ns, int)):
                if type(value) is not ok:
                    raise _bad_field(key, value)
            raise _bad_field("room", room)
        sim_time_s = _header_float("sim_time_s", sim_time)
        fov_deg = None if fov is None else _header_float("camera_fov_y_deg", fov)
        if fov_deg is not None and not 0.0 < fov_deg < 180.0:
            raise StreamProtocolError("bad_header", f"camera_fov_y_deg {fov_deg} outside (0, 180)")
        if type(tasks) is not list and type(tasks) is not tuple or not all(type(t) is str for t in tasks):
            raise _bad_field("active_tasks", tasks)
        if type(events) is not list and type(events) is not tuple or not all(type(e) is str for e in events):
            raise _bad_field("events", events)
        audio_hz = None
        if "audio" in arr:
            audio_hz = h.get("audio_hz")
            if type(audio_hz) is not int:
                raise _bad_field("audio_hz", audio_hz)
        gaze, audio, pose, imu, hands, lighting = records_from_arrays(arr, audio_hz)
        # positional, in DeviceFrame's field order (binding 20 keywords costs more than the rest of this call)
        return DeviceFrame(
            device_id, user_id, profile, step, sim_time_s, wall_ns, arr.get("rgb"), arr.get("depth_m"),
            arr.get("segmentation"), gaze, audio, pose, imu, hands, lighting, fov_deg, _label_names(labels),
            tuple(tasks), room, tuple(events),
        )


#: parts whose shape is the same in every frame (records_from_arrays indexes them by position)
_FIXED_SHAPES = {name: spec.shape for name, spec in PART_SPECS.items() if None not in spec.shape}


def _header_float(key: str, value: Any) -> float:
    """A JSON number as a finite float (a 400-digit integer does not fit one)."""
    if type(value) is float:
        return value
    if type(value) is int and -1e300 < value < 1e300:
        return float(value)
    raise _bad_field(key, value)


def _label_names(labels: Any) -> dict[str, str]:
    """``labels`` (task -> class name or class index) as task -> class name; an unknown task or a name outside the
    task's classes is left to the frame contract, an index outside them is refused here."""
    if type(labels) is not dict:
        raise _bad_field("labels", labels)
    for task, label in labels.items():
        if type(label) is str:
            continue
        classes = TASKS[task].classes if task in TASKS else ()
        if type(label) is not int or not 0 <= label < len(classes):
            raise StreamProtocolError("bad_header", f"labels[{task[:40]!r}]: expected a class name or an index in "
                                                    f"[0, {len(classes)}), got {str(label)[:40]}")
    return label_names(labels)


# ---------------------------------------------------------------------------------------------------------------
# topics
def _check_topic_name(what: str, name: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or any(c.isspace() for c in name):
        raise StreamProtocolError("bad_topic", f"{what} must be a non-empty string without '/' or spaces, "
                                               f"got {name!r}")
    return name


@functools.lru_cache(maxsize=4096)
def frame_topic(device_id: str, channel: str = "frame") -> bytes:
    """``xrfed/<device_id>/<channel>`` as bytes."""
    return f"{FRAME_TOPIC_PREFIX}{_check_topic_name('device_id', device_id)}/" \
           f"{_check_topic_name('channel', channel)}".encode()


def device_prefix(device_id: str) -> bytes:
    """The subscription prefix that selects every channel of one device (the trailing ``/`` keeps ``d1`` from
    matching ``d10``)."""
    return f"{FRAME_TOPIC_PREFIX}{_check_topic_name('device_id', device_id)}/".encode()


# ---------------------------------------------------------------------------------------------------------------
# encoding
def _le(arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr, order="C")  # not ascontiguousarray: it turns 0-d flags into shape (1,)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and not np.little_endian):
        a = a.astype(a.dtype.newbyteorder("<"))
    return a


# Descriptors depend only on (name, dtype, shape, encoding[, quality]), which stay the same frame after frame, so
# both sides keep them ready: the encoder their JSON text, the decoder their parsed and checked form (bounded caches;
# a publisher with ever-changing shapes just misses).
_CACHE_MAX = 256
_DESC_JSON: dict[tuple[Any, ...], bytes] = {}


def _wire_dtype(dt: np.dtype) -> str:
    return "bool" if dt == np.bool_ else dt.name


def _desc_json(name: str, a: np.ndarray, comp: Compression) -> bytes:
    """The JSON text of one part's descriptor, cached under ``(name, dtype, shape, encoding)`` -- for ``jpeg`` the
    encoding key is ``("jpeg", quality)`` (see :attr:`Compression._encodings`), so a quality change is a new key."""
    key = (name, a.dtype, a.shape, comp._encodings.get(name, "raw"))
    js = _DESC_JSON.get(key)
    if js is None:
        encoding = comp.encoding_for(name)
        dtype = _wire_dtype(a.dtype)
        if dtype not in _WIRE_DTYPES:
            raise StreamProtocolError("bad_dtype", f"part {name!r}: dtype {a.dtype} is not a wire dtype {_WIRE_DTYPES}")
        desc: dict[str, Any] = {"name": name, "dtype": dtype, "shape": list(a.shape), "encoding": encoding,
                                "nbytes": int(a.nbytes)}
        spec = PART_SPECS.get(name)
        if spec is not None:
            desc["units"] = spec.units
        if encoding == "jpeg":
            desc["quality"] = int(comp.jpeg_quality)
        js = _json(desc)
        if len(_DESC_JSON) >= _CACHE_MAX:
            _DESC_JSON.clear()
        _DESC_JSON[key] = js
    return js


def _wire_array(arr: Any) -> np.ndarray:
    """``arr`` as a C-ordered little-endian ndarray (itself when it already is one)."""
    if type(arr) is np.ndarray and arr.dtype.byteorder in _NATIVE_OK and arr.flags.c_contiguous:
        return arr
    return _le(np.asarray(arr))


_NATIVE_OK = "=|<" if np.little_endian else "|<"  # byte orders that are little-endian on this host


def _coded_payload(name: str, a: np.ndarray, encoding: str, comp: Compression) -> bytes:
    """The payload of one part compressed as ``encoding`` (not ``raw``)."""
    if encoding == "zlib":
        return zlib.compress(a.data, comp.zlib_level)
    if encoding in ("png", "jpeg"):
        if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
            raise StreamProtocolError("bad_encoding", f"part {name!r}: {encoding} needs uint8 [H, W] or [H, W, 3]")
        from PIL import Image

        buf = io.BytesIO()
        if encoding == "png":
            Image.fromarray(a).save(buf, format="PNG", compress_level=1)
        else:
            Image.fromarray(a).save(buf, format="JPEG", quality=int(comp.jpeg_quality))
        return buf.getvalue()
    raise StreamProtocolError("bad_encoding", f"part {name!r}: unknown encoding {encoding!r}, known {ENCODINGS}")


def _encode(topic: bytes, meta: bytes, names: Sequence[str], arrays: Mapping[str, Any], comp: Compression) -> list[Any]:
    """``[topic, header, buffers...]`` from the header's JSON text without ``parts`` and the arrays to send in
    ``names`` order. Raw buffers of 4 KiB or more are memoryviews of the arrays (zero-copy), smaller ones bytes."""
    descs: list[bytes] = []
    out: list[Any] = [topic, b""]
    encodings = comp._encodings
    for name in names:
        a = _wire_array(arrays[name])
        enc = encodings.get(name, "raw")
        desc = _DESC_JSON.get((name, a.dtype, a.shape, enc))
        if desc is None:
            desc = _desc_json(name, a, comp)
        descs.append(desc)
        if enc == "raw":  # a flat byte view (len() = bytes) of a large array, a copy of a small one
            out.append(a.data.cast("B") if a.nbytes >= 4096 else a.tobytes())
        else:
            out.append(_coded_payload(name, a, comp.encoding_for(name), comp))
    # "parts" goes last, spliced in as ready-made JSON text (see _DESC_JSON)
    out[1] = b"".join((meta[:-1], b',"parts":[' if len(meta) > 2 else b'{"parts":[', b",".join(descs), b"]}"))
    return out


# -- JSON: orjson when installed (a dependency of xrfed: 10x faster to write, 3x to read), the standard library
# otherwise (e.g. a Kit app's Python), with the same rules both ways: compact UTF-8 text, numpy scalars as numbers,
# NaN/inf rejected on both sides (they are not JSON; a header that needs them is a bug on the publishing side).
_orjson: Any
try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    _orjson = None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _check_finite(obj: Any, where: str = "header") -> None:
    """Raise ValueError at the first NaN/inf float in a JSON-bound structure (orjson would write ``null``)."""
    t = type(obj)
    if t is str or t is int or t is bool or obj is None:
        return
    if isinstance(obj, (float, np.floating)):
        if not math.isfinite(obj):
            raise ValueError(f"{where} = {obj}: NaN/inf are not JSON")
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_finite(v, f"{where}[{i}]")


def _json(obj: Any, *, finite_checked: bool = False) -> bytes:
    """Compact UTF-8 JSON. ``finite_checked``: the caller has already made sure no float is NaN/inf."""
    if _orjson is not None:
        if not finite_checked:
            _check_finite(obj)
        return _orjson.dumps(obj, default=_json_default, option=_orjson.OPT_NON_STR_KEYS)
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False,
                      default=_json_default).encode()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(text: bytes) -> Any:
    """Strict JSON from UTF-8 bytes: invalid UTF-8, NaN/Infinity and over-deep nesting raise ValueError."""
    if _orjson is not None:
        return _orjson.loads(text)
    text.decode()  # UTF-8 or nothing (json.loads would also take UTF-16/32 bytes); UnicodeDecodeError is a ValueError
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("header nests too deeply") from None


def encode_arrays_message(topic: bytes, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                          compression: Compression | None = None) -> list[Any]:
    """Low-level encoder: ``[topic, header + parts, buffers...]`` for any named arrays (Kit extension, tests).

    ``header`` must already hold ``proto``/``v``/``kind`` and the metadata; ``parts`` is filled in here. A NaN or
    inf anywhere in it raises ValueError (they are not JSON).
    """
    names = [n for n in _PART_ORDER if n in arrays]
    if len(names) != len(arrays):
        names += sorted(n for n in arrays if n not in PART_SPECS)
    meta = _json({k: v for k, v in header.items() if k != "parts"})
    return _encode(topic, meta, names, arrays, compression or _DEFAULT_COMPRESSION)


def encode_frame(frame: DeviceFrame, *, seq: int, session: str, publisher: str, channel: str = "frame",
                 compression: Compression | None = None, sent_ns: int | None = None) -> list[Any]:
    """Encode one DeviceFrame as the multipart message ``[topic, header, buffers...]`` (see module docstring).

    Raw parts of 4 KiB or more are flat byte views of the frame's own arrays (nothing is copied here), smaller ones
    bytes; :class:`~bridge.stream.publisher.Publisher` decides per part whether ZeroMQ copies or borrows them.
    """
    arrays = modality_arrays(frame)  # already in PART_SPECS order
    header: dict[str, Any] = {
        "proto": PROTOCOL, "v": VERSION, "kind": "frame", "publisher": publisher, "session": session,
        "seq": int(seq), "device_id": frame.device_id, "user_id": frame.user_id, "profile": frame.profile,
        "channel": channel, "step": frame.step, "sim_time_s": frame.sim_time_s, "wall_time_ns": int(frame.wall_time_ns),
        "sent_ns": int(time.time_ns() if sent_ns is None else sent_ns),
        "camera_fov_y_deg": frame.camera_fov_y_deg, "room": frame.room,
        "labels": frame.labels, "active_tasks": frame.active_tasks, "events": frame.events,  # tuples: JSON arrays
    }
    if frame.audio is not None:
        header["audio_hz"] = frame.audio.sample_rate_hz
    # The frame contract already holds sim_time_s finite and labels/active_tasks to known names; the fields it
    # leaves free are checked here, so the JSON writer need not walk the whole header.
    for key in ("user_id", "profile", "camera_fov_y_deg", "room", "events"):
        _check_finite(header[key], key)
    return _encode(frame_topic(frame.device_id, channel), _json(header, finite_checked=True), tuple(arrays), arrays,
                   compression or _DEFAULT_COMPRESSION)


def encode_heartbeat(*, publisher: str, session: str, seqs: Mapping[str, int], devices: Sequence[Mapping[str, str]],
                     step_dt_s: float | None, sent_ns: int | None = None, hb_seq: int = 0) -> list[bytes]:
    """A heartbeat: ``[xrfed-hb/<publisher>, header]``; ``seqs`` maps each frame topic to its last sent ``seq``
    (so a subscriber sees losses at the tail of a stream), ``devices`` lists ``device_id``/``user_id``/``profile``."""
    header = {
        "proto": PROTOCOL, "v": VERSION, "kind": "heartbeat", "publisher": _check_topic_name("publisher", publisher),
        "session": session, "seq": int(hb_seq), "sent_ns": int(time.time_ns() if sent_ns is None else sent_ns),
        "last_seq": {str(k): int(v) for k, v in seqs.items()}, "devices": [dict(d) for d in devices],
        "step_dt_s": step_dt_s, "parts": [],
    }
    return [f"{HEARTBEAT_TOPIC_PREFIX}{publisher}".encode(), _json(header)]


# ---------------------------------------------------------------------------------------------------------------
# decoding
def _buffer(part: Any) -> memoryview:
    """A memoryview of bytes of one received part (bytes, memoryview or a zmq.Frame's ``buffer``)."""
    buf = getattr(part, "buffer", part)
    if type(buf) is memoryview and buf.format == "B" and buf.ndim == 1:
        return buf
    return memoryview(buf).cast("B")


#: part types whose len() is their size in bytes and that export their bytes as a buffer -- passed through as they
#: are (bytes, bytearray and zmq.Frame, looked up once per type); anything else becomes a byte memoryview
_BYTE_BUFFER_TYPES: dict[type, bool] = {bytes: True, bytearray: True}


def _byte_buffer_type(t: type) -> bool:
    ok = _BYTE_BUFFER_TYPES.get(t)
    if ok is None:
        ok = _BYTE_BUFFER_TYPES[t] = t.__name__ == "Frame" and t.__module__.partition(".")[0] == "zmq"
    return ok


def _buffers(parts: Sequence[Any]) -> Sequence[Any]:
    types = set(map(type, parts))
    if len(types) == 1 and _byte_buffer_type(types.pop()):  # the usual case: all zmq.Frame, or all bytes
        return parts
    return [p if _byte_buffer_type(type(p)) else _buffer(p) for p in parts]


def message_nbytes(parts: Sequence[Any]) -> int:
    return sum(map(len, _buffers(parts)))


def _require(cond: bool, reason: str, detail: str) -> None:
    if not cond:
        raise StreamProtocolError(reason, detail)


@dataclass(frozen=True)
class _Part:
    """A checked buffer descriptor: everything decoding needs but the limits (checked per message)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    count: int
    nbytes: int
    encoding: str


def _check_desc(desc: Any) -> _Part:
    """Check one buffer descriptor against the wire format (not the limits)."""
    _require(isinstance(desc, dict), "bad_header", f"part descriptor must be an object, got {type(desc).__name__}")
    name, dtype, shape, enc = desc.get("name"), desc.get("dtype"), desc.get("shape"), desc.get("encoding", "raw")
    _require(isinstance(name, str) and bool(name), "bad_header", f"part name must be a string, got {name!r}")
    _require(dtype in _WIRE_DTYPES, "bad_dtype", f"part {name!r}: dtype {dtype!r} not in {_WIRE_DTYPES}")
    _require(isinstance(shape, list) and len(shape) <= 8
             and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape),
             "bad_shape", f"part {name!r}: shape must be a list of <= 8 non-negative ints, got {shape!r}")
    spec = PART_SPECS.get(name)
    if spec is not None:  # a part of the frame contract: its dtype and shape are fixed (names outside are free)
        _require(dtype == spec.dtype, "bad_dtype", f"part {name!r}: expected dtype {spec.dtype}, got {dtype}")
        _require(len(shape) == len(spec.shape)
                 and all(s >= 1 if n is None else s == n for s, n in zip(shape, spec.shape, strict=True)),
                 "bad_shape", f"part {name!r}: expected shape {spec.text()}, got {shape}")
    _require(enc in ENCODINGS, "bad_encoding", f"part {name!r}: unknown encoding {enc!r}, known {ENCODINGS}")
    if enc in ("png", "jpeg"):
        _require(dtype == "uint8" and (len(shape) == 2 or (len(shape) == 3 and shape[2] == 3)), "bad_encoding",
                 f"part {name!r}: {enc} carries uint8 [H, W] or [H, W, 3], header says {dtype} {shape}")
    np_dtype = np.dtype(np.bool_) if dtype == "bool" else np.dtype(dtype).newbyteorder("<")
    count = math.prod(shape)
    return _Part(name, np_dtype, tuple(shape), count, count * np_dtype.itemsize, enc)


@dataclass(frozen=True)
class _Plan:
    """A header's ``parts`` array checked once: the descriptors as parsed, their checked form, and the first name
    that appears twice (a message carrying it is rejected once its buffers are asked for)."""

    descs: tuple[dict[str, Any], ...]
    parts: tuple[_Part, ...]
    duplicate: str | None
    # when every part is raw: (name, shape, dtype, nbytes) per part and the largest nbytes, for the fast loop
    raw: tuple[tuple[str, tuple[int, ...], np.dtype, int], ...] | None
    max_nbytes: int
    total_nbytes: int  # decoded bytes of all parts
    bools: tuple[str, ...]  # names of bool parts: their bytes must be 0 or 1

    @classmethod
    def of(cls, descs: list[Any]) -> _Plan:
        parts = tuple(_check_desc(d) for d in descs)  # raises on the first malformed descriptor
        seen: set[str] = set()
        dup = None
        for p in parts:
            if p.name in seen:
                dup = p.name
                break
            seen.add(p.name)
        # the frame contract holds rgb, depth_m and segmentation to one image size
        sizes = {p.name: p.shape[:2] for p in parts if p.name in _IMAGE_PARTS}
        if len(set(sizes.values())) > 1:
            raise StreamProtocolError("bad_shape", "image parts differ in [H, W]: " + ", ".join(
                f"{n} {list(hw)}" for n, hw in sizes.items()))
        raw = tuple((p.name, p.shape, p.dtype, p.nbytes) for p in parts) \
            if all(p.encoding == "raw" for p in parts) else None
        return cls(tuple(descs), parts, dup, raw, max((p.nbytes for p in parts), default=0),
                   sum(p.nbytes for p in parts), tuple(p.name for p in parts if p.dtype == np.bool_))


_PARTS_SEP = b',"parts":'
_PARTS_CACHE: dict[bytes, _Plan] = {}


def _parse_header(raw: bytes) -> tuple[Any, _Plan | None]:
    """``_loads(raw)``, with the descriptors of a ``"parts"`` array that ends the header parsed and checked once
    per distinct array text (frame after frame it is the same text). Equivalent to a full parse: the cache is used
    only when the text before ``,"parts":`` closed with ``}`` is itself a non-empty JSON object, so the whole is
    that object plus the key ``parts``."""
    cut = raw.rfind(_PARTS_SEP)
    if cut > 1 and raw.endswith(b"]}"):
        tail = raw[cut + len(_PARTS_SEP):-1]
        hit = _PARTS_CACHE.get(tail)
        if hit is not None:
            try:
                head = _loads(raw[:cut] + b"}")
            except ValueError:
                head = None
            if type(head) is dict and head:
                head["parts"] = [d.copy() for d in hit.descs]
                return head, hit
    header = _loads(raw)
    if isinstance(header, dict) and cut > 1 and raw.endswith(b"]}") and isinstance(header.get("parts"), list):
        # remember this descriptor array if it is well-formed (a malformed one raises on use, never cached)
        tail = raw[cut + len(_PARTS_SEP):-1]
        try:
            own = _loads(tail)  # the cache's own objects, never the caller's
            if own == header["parts"]:
                plan = _Plan.of(own)
                if len(_PARTS_CACHE) >= _CACHE_MAX:
                    _PARTS_CACHE.clear()
                _PARTS_CACHE[tail] = plan
        except (ValueError, TypeError, StreamProtocolError):
            pass
    return header, None


def _decode_part(part: _Part, payload: Any, limits: Limits) -> np.ndarray:
    """One buffer as an array of its checked descriptor's dtype and shape."""
    name, nbytes, enc = part.name, part.nbytes, part.encoding
    if nbytes > limits.max_part_bytes:
        raise StreamProtocolError("oversized", f"part {name!r}: {nbytes} decoded bytes > limit {limits.max_part_bytes}")
    if enc == "raw":
        if len(payload) != nbytes:
            raise StreamProtocolError("size_mismatch", f"part {name!r}: shape {list(part.shape)} {part.dtype.name} "
                                                       f"needs {nbytes} bytes, buffer has {len(payload)}")
        return np.ndarray(part.shape, part.dtype, payload)  # a view: exactly nbytes, checked above
    if enc == "zlib":
        d = zlib.decompressobj()
        try:
            raw = d.decompress(payload, nbytes + 1)  # bounded: a zip bomb cannot inflate past the declared size
        except zlib.error as exc:
            raise StreamProtocolError("bad_payload", f"part {name!r}: zlib: {exc}") from None
        if len(raw) != nbytes or not d.eof:
            raise StreamProtocolError("size_mismatch", f"part {name!r}: zlib payload does not inflate to exactly "
                                                       f"{nbytes} bytes")
        return np.frombuffer(raw, dtype=part.dtype, count=part.count).reshape(part.shape)
    # png / jpeg (checked: uint8 [H, W] or [H, W, 3])
    from PIL import Image

    shape = part.shape
    try:
        with Image.open(io.BytesIO(payload)) as im:
            # Check the declared size before decoding pixels, so a lying header cannot allocate more.
            if im.size != (shape[1], shape[0]):
                raise StreamProtocolError("size_mismatch", f"part {name!r}: image is {im.size[0]}x{im.size[1]}, "
                                                           f"header says {shape[1]}x{shape[0]}")
            a = np.asarray(im.convert("RGB" if len(shape) == 3 else "L"))
    except StreamProtocolError:
        raise
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise StreamProtocolError("bad_payload", f"part {name!r}: {enc}: {exc}") from None
    return a.reshape(shape)


#: the largest ``seq`` a reader accepts (an int64 on every platform; C# uses long)
MAX_SEQ = 2**63 - 1


def _check_last_seq(last: Any) -> None:
    """A heartbeat's ``last_seq``: an object of frame topic -> seq in [0, MAX_SEQ]."""
    if type(last) is not dict:
        raise _bad_field("last_seq", last)
    for topic, seq in last.items():
        if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            raise StreamProtocolError("bad_seq", f"heartbeat last_seq[{topic[:80]!r}] = {str(seq)[:40]} is not an "
                                                 f"integer in [0, {MAX_SEQ}]")


def _bad_field(key: str, value: Any) -> StreamProtocolError:
    text = repr(value)
    return StreamProtocolError("bad_header", f"header field {key!r} missing or of the wrong type: "
                                             f"{text[:80] + '...' if len(text) > 80 else text}")


def decode_message(parts: Sequence[Any], limits: Limits | None = None, *, arrays: bool = True) -> StreamMessage:
    """Decode ``[topic, header, buffers...]``; raise :class:`StreamProtocolError` on anything malformed.

    Raw arrays are views of the received buffers (no copy); compressed ones are fresh arrays.
    ``arrays=False`` checks the header only (what a latest-only drain needs for messages it will skip).
    """
    lim = limits or _DEFAULT_LIMITS
    n_buf = len(parts) - 2
    if n_buf < 0:
        raise StreamProtocolError("too_few_parts", f"expected [topic, header, buffers...], got {len(parts)} part(s)")
    if n_buf > lim.max_parts:
        raise StreamProtocolError("oversized", f"{n_buf} buffers > limit {lim.max_parts}")
    views = _buffers(parts)  # each: len() = bytes, buffer protocol
    total = sum(map(len, views))
    if total > lim.max_message_bytes:
        raise StreamProtocolError("oversized", f"{total} bytes > limit {lim.max_message_bytes}")
    if len(views[1]) > lim.max_header_bytes:
        raise StreamProtocolError("oversized", f"header of {len(views[1])} bytes > limit {lim.max_header_bytes}")
    try:
        topic = bytes(views[0]).decode()
        header, plan = _parse_header(bytes(views[1]))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StreamProtocolError("bad_header", f"topic/header is not UTF-8 JSON: {exc}") from None
    if type(header) is not dict:
        raise StreamProtocolError("bad_header", f"header must be a JSON object, got {type(header).__name__}")
    get = header.get
    if get("proto") != PROTOCOL:
        raise StreamProtocolError("bad_proto", f"proto must be {PROTOCOL!r}, got {get('proto')!r}")
    if get("v") != VERSION:
        raise StreamProtocolError("bad_version", f"protocol version {get('v')!r}; this reader speaks {VERSION}")
    kind = get("kind")
    if kind != "frame" and kind != "heartbeat":
        raise StreamProtocolError("bad_header", f"kind must be 'frame' or 'heartbeat', got {kind!r}")
    descs = get("parts", [])
    if not (type(descs) is list and len(descs) == n_buf):
        raise StreamProtocolError("part_count", f"header lists {len(descs) if isinstance(descs, list) else descs!r} "
                                                f"parts, message has {n_buf} buffers")
    seq = get("seq")
    if type(seq) is not int:  # exact types: JSON gives str/int/float/bool, and bool must not pass as int
        raise _bad_field("seq", seq)
    if not 0 <= seq <= MAX_SEQ:
        raise StreamProtocolError("bad_seq", f"seq {seq} outside [0, {MAX_SEQ}]")
    if kind == "frame":
        device_id, step, sim_time = get("device_id"), get("step"), get("sim_time_s")
        if type(device_id) is not str:
            raise _bad_field("device_id", device_id)
        if type(step) is not int:
            raise _bad_field("step", step)
        if type(sim_time) is not float and type(sim_time) is not int:
            raise _bad_field("sim_time_s", sim_time)
        if not topic.startswith(FRAME_TOPIC_PREFIX + device_id + "/"):
            raise StreamProtocolError("topic_mismatch", f"topic {topic!r} does not belong to device {device_id!r}")
    else:
        if not topic.startswith(HEARTBEAT_TOPIC_PREFIX):
            raise StreamProtocolError("topic_mismatch", f"heartbeat on topic {topic!r}")
        _check_last_seq(get("last_seq", {}))
    out: dict[str, np.ndarray] = {}
    if arrays and n_buf:
        if plan is None:
            plan = _Plan.of(descs)
        if plan.duplicate is not None:
            raise StreamProtocolError("bad_header", f"part {plan.duplicate!r} appears twice")
        if plan.total_nbytes > lim.max_decoded_bytes:
            raise StreamProtocolError("oversized", f"parts decode to {plan.total_nbytes} bytes > limit "
                                                   f"{lim.max_decoded_bytes}")
        raw = plan.raw if plan.max_nbytes <= lim.max_part_bytes else None
        if raw is not None:  # all raw and within the limits: views of the buffers, no copies
            for (name, shape, dtype, nbytes), payload in zip(raw, views[2:], strict=True):  # lengths checked above
                if len(payload) != nbytes:
                    break
                out[name] = np.ndarray(shape, dtype, payload)
            else:
                raw = ()
        if raw != ():  # compressed parts, a limit or a size mismatch: part by part, with the reasons
            out.clear()
            for part, payload in zip(plan.parts, views[2:], strict=True):
                out[part.name] = _decode_part(part, payload, lim)
        for name in plan.bools:  # numpy would read any non-zero byte as True; the wire allows 0 and 1 only
            if out[name].tobytes().translate(None, b"\x00\x01"):
                raise StreamProtocolError("bad_value", f"part {name!r}: bool bytes must be 0 or 1")
        if "audio" in out and type(get("audio_hz")) is not int:
            raise StreamProtocolError("bad_header", "an audio part needs an integer audio_hz")
    return StreamMessage(topic=topic, header=header, arrays=out, wire_bytes=total)
