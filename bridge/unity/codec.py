"""The xrfed side channel and the ML-Agents side-channel framing, as pure Python (no mlagents-envs, no gRPC).

Why a codec module of its own: the same bytes are produced and read by three parties -- :class:`UnityBackend`
(through mlagents-envs), the stand-in player (no mlagents classes on its side of the wire) and the C# scene
(``unity_project/Assets/XRFed/SideChannels``). Keeping the byte format here, free of transport code, lets the C# test
program compare its re-encoding with golden messages written by :func:`write_golden`.

Wire format
-----------
* **Side-channel records** (both directions): ``[16-byte GUID, .NET/bytes_le order][int32 LE length][payload]``.
* **xrfed channel** (GUID :data:`XRFED_CHANNEL_ID`): the payload is one ASCII JSON object in canonical form --
  keys sorted by code point, no whitespace, non-ASCII escaped as ``\\u`` and four hex digits, floats as Python's
  shortest round-trip ``repr``, integers without a fraction, every field of the message type present (absent =
  ``null``).
  Every message has ``"v": 1`` and a ``"type"`` from :data:`MESSAGE_FIELDS`. Integers are int64, numbers finite
  (``NaN``, ``Infinity`` and ``1e400`` are refused when read, as they can never be written).
* **Scene -> Python messages** (:data:`SCENE_MESSAGE_TYPES`) are checked down to their nested contents by
  :func:`check_scene_message`: ``hello`` device entries are objects with printable ids, ``frames`` entries carry a
  device id, a step, a finite sim time and optional metadata of the right types and ranges (:data:`FRAME_FIELDS`).
  Unknown keys inside them are ignored (a newer scene may send more).
* **Lighting scalars** go over the standard EnvironmentParametersChannel as FLOAT parameters named
  ``xrfed.lighting.<field>`` (every room) or ``xrfed.lighting.<field>@<room>``; ``lights_on`` is 1.0 / 0.0.
"""

from __future__ import annotations

import json
import math
import struct
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..backend import SceneCommand, SetLighting, SetModality, ShowPrediction
from ..scenario import Scenario
from .errors import UnityProtocolError

__all__ = [
    "PROTOCOL_VERSION", "XRFED_CHANNEL_ID", "ENGINE_CHANNEL_ID", "ENV_PARAMS_CHANNEL_ID", "STATS_CHANNEL_ID",
    "ANALYTICS_CHANNEL_ID", "MESSAGE_FIELDS", "LIGHTING_PARAM_PREFIX", "canonical_json", "encode_message",
    "decode_message", "make_message", "command_to_message", "message_to_command", "pack_records", "unpack_records",
    "encode_float_parameter", "decode_env_parameter", "lighting_to_parameters", "parameters_to_lighting",
    "encode_stat", "decode_stat", "scenario_to_dict", "scene_export", "golden_messages", "write_golden", "lighting_samples",
    "decode_engine_setting", "LIGHTING_RANGES", "MAX_MESSAGE_BYTES", "MAX_JSON_DEPTH", "MAX_KEY_BYTES",
    "SCENE_MESSAGE_TYPES", "FRAME_FIELDS", "MAX_DEVICES", "MAX_NAME_CHARS", "MAX_LIST_ITEMS", "MAX_STEP_DT_S",
    "load_message", "check_scene_message",
]

PROTOCOL_VERSION = 1
#: the xrfed channel's GUID (= uuid5(NAMESPACE_URL, "https://xrfed.dev/side-channel/v1")); C# uses the same string
XRFED_CHANNEL_ID = uuid.UUID("aa13cc98-c31f-55ee-a263-bfb51520e394")
ENGINE_CHANNEL_ID = uuid.UUID("e951342c-4f7e-11ea-b238-784f4387d1f7")
ENV_PARAMS_CHANNEL_ID = uuid.UUID("534c891e-810f-11ea-a9d0-822485860400")
STATS_CHANNEL_ID = uuid.UUID("a1d8f7b7-cec8-50f9-b78b-d3e165a78520")
ANALYTICS_CHANNEL_ID = uuid.UUID("b664a4a9-d86f-5a5f-95cb-e8353a7e8356")
LIGHTING_PARAM_PREFIX = "xrfed.lighting."
#: the allowed value of each ``xrfed.lighting.*`` parameter (the scenario loader's ranges; lights_on is 0 or 1)
LIGHTING_RANGES: dict[str, tuple[float, float]] = {"intensity": (0.0, 10.0), "color_temperature_k": (1500.0, 12000.0),
                                                   "lights_on": (0.0, 1.0)}
#: an xrfed-channel payload above this is refused before parsing (load_scenario of a shipped scenario is ~10 KiB)
MAX_MESSAGE_BYTES = 1024 * 1024
#: JSON nesting deeper than this is refused (json.loads itself gives up with RecursionError near 1000)
MAX_JSON_DEPTH = 32
#: longest side-channel string (a parameter or stat key) read; ML-Agents writes keys of a few dozen bytes
MAX_KEY_BYTES = 1024
#: most devices a scene may announce in ``hello`` (and frame entries in one ``frames`` message)
MAX_DEVICES = 256
#: longest device / user / profile id, room, event or task name a scene may send (printable, no '/')
MAX_NAME_CHARS = 128
#: most entries in a frame's ``events`` / ``active_tasks`` list
MAX_LIST_ITEMS = 64
#: longest scene step a ``hello`` may announce
MAX_STEP_DT_S = 60.0
_INT64 = 2**63

#: message type -> field -> kind. Kinds: int, float, str, bool, list, dict; a trailing "?" allows null.
#: Python -> scene: reset, load_scenario, set_script, set_modality, show_prediction.
#: Scene -> Python: hello, frames, overlay_shown, event.
MESSAGE_FIELDS: dict[str, dict[str, str]] = {
    "reset": {"seed": "int"},
    "load_scenario": {"scenario": "dict"},
    "set_script": {"avatar": "str", "script": "str"},
    "set_modality": {"device_id": "str", "modality": "str", "enabled": "bool"},
    "show_prediction": {"device_id": "str", "task": "str", "label": "str", "confidence": "float",
                        "latency_ms": "float?", "frame_step": "int?", "sent_ns": "int?"},
    "hello": {"scene": "str", "player": "str", "step_dt_s": "float", "devices": "list"},
    "frames": {"frames": "list"},
    "overlay_shown": {"device_id": "str", "task": "str", "label": "str", "frame_step": "int?", "sent_ns": "int?",
                      "scene_step": "int"},
    "event": {"name": "str", "detail": "str"},
}
#: the message types a scene sends (the others go from Python to the scene)
SCENE_MESSAGE_TYPES = ("hello", "frames", "overlay_shown", "event")
#: ``frames`` entry field -> (kind, required); kinds as :data:`MESSAGE_FIELDS` plus the ranges in
#: :func:`check_scene_message` (names: printable, no '/'; lighting: 4 finite numbers, :data:`bridge.arrays.LIGHTING_FIELDS`)
FRAME_FIELDS: dict[str, tuple[str, bool]] = {
    "device_id": ("name", True), "step": ("int", True), "sim_time_s": ("float", True),
    "wall_time_ns": ("int", False), "room": ("name", False), "events": ("names", False),
    "active_tasks": ("names", False), "lighting": ("lighting", False), "camera_fov_y_deg": ("float", False),
    "audio_hz": ("int", False), "audio_channels": ("int", False),
}
#: allowed range of the numeric ``frames`` entry fields (the frame contract's, :mod:`bridge.frame`)
_FRAME_RANGES: dict[str, tuple[float, float]] = {
    "step": (0, _INT64 - 1), "sim_time_s": (0.0, math.inf), "wall_time_ns": (0, _INT64 - 1),
    "camera_fov_y_deg": (1e-9, 179.999), "audio_hz": (1000, 192_000), "audio_channels": (1, 64),
}
_KIND_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (float, int), "str": (str,), "bool": (bool,),
                                            "list": (list, tuple), "dict": (dict,)}


def canonical_json(obj: Any) -> str:
    """The canonical text both Python and C# produce for the same value (see the module docstring)."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except ValueError as exc:
        raise UnityProtocolError(f"xrfed message: {exc} (NaN/inf cannot be sent)") from None


def _coerce(mtype: str, field: str, kind: str, value: Any) -> Any:
    nullable = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None:
        if nullable:
            return None
        raise UnityProtocolError(f"xrfed message {mtype!r}: field {field!r} is required")
    if isinstance(value, bool) and kind in ("int", "float"):
        raise UnityProtocolError(f"xrfed message {mtype!r}: field {field!r} must be {kind}, got bool")
    if not isinstance(value, _KIND_TYPES[kind]):
        raise UnityProtocolError(f"xrfed message {mtype!r}: field {field!r} must be {kind}, "
                                 f"got {type(value).__name__}")
    if kind == "int" and isinstance(value, int) and not -_INT64 <= value < _INT64:
        raise UnityProtocolError(f"xrfed message {mtype!r}: field {field!r} must be an int64, got {_short(value)}")
    if kind == "float" and isinstance(value, (int, float)):
        if isinstance(value, int) and abs(value) > 1e308:
            raise UnityProtocolError(f"xrfed message {mtype!r}: field {field!r} must be finite, got {_short(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise UnityProtocolError(f"xrfed message {mtype!r}: field {field!r} must be finite, got {value}")
    if kind == "list":
        value = list(value)
    return value


def make_message(mtype: str, **fields: Any) -> dict[str, Any]:
    """A complete, validated message: every field of ``mtype`` present (missing nullable ones as None)."""
    try:
        schema = MESSAGE_FIELDS[mtype]
    except KeyError:
        raise UnityProtocolError(f"unknown xrfed message type {mtype!r}; known: {', '.join(MESSAGE_FIELDS)}") from None
    unknown = sorted(set(fields) - set(schema))
    if unknown:
        raise UnityProtocolError(f"xrfed message {mtype!r}: unknown field {_short(unknown[0])}; "
                                 f"fields: {', '.join(schema)}")
    msg: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": mtype}
    for name, kind in schema.items():
        msg[name] = _coerce(mtype, name, kind, fields.get(name))
    return msg


def encode_message(msg: Mapping[str, Any]) -> bytes:
    """Validate and serialise one message (``{"v": 1, "type": ..., ...}``) to its canonical ASCII bytes."""
    body = {k: v for k, v in msg.items() if k not in ("v", "type")}
    if msg.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
        raise UnityProtocolError(f"xrfed message version {msg.get('v')!r}; this side speaks {PROTOCOL_VERSION}")
    return canonical_json(make_message(str(msg.get("type")), **body)).encode("ascii")


def _refuse_constant(name: str) -> Any:
    raise UnityProtocolError(f"xrfed message contains {name}; numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnityProtocolError(f"xrfed message contains the number {text[:40]}, beyond float range")
    return value


def load_message(payload: bytes) -> dict[str, Any]:
    """Parse one xrfed-channel payload into its JSON object, checking only the envelope (size, ASCII JSON, nesting,
    finite numbers, an object, ``"v": 1``); :func:`decode_message` and :func:`check_scene_message` check the rest.

    Hostile payloads are refused before they cost anything: above :data:`MAX_MESSAGE_BYTES`, nested deeper than
    :data:`MAX_JSON_DEPTH` (``[[[[...`` would otherwise end in a RecursionError), not ASCII JSON, an integer of more
    than 4300 digits (Python refuses to convert it), ``NaN`` / ``Infinity`` / ``1e400``.
    """
    if len(payload) > MAX_MESSAGE_BYTES:
        raise UnityProtocolError(f"xrfed message of {len(payload)} bytes; at most {MAX_MESSAGE_BYTES} allowed")
    try:
        obj = json.loads(payload.decode("ascii"), parse_constant=_refuse_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnityProtocolError(f"xrfed message is not ASCII JSON: {exc}") from None
    except RecursionError:
        raise UnityProtocolError(f"xrfed message nested deeper than {MAX_JSON_DEPTH} levels") from None
    except UnityProtocolError:
        raise
    except ValueError as exc:  # an integer literal beyond Python's int_max_str_digits
        raise UnityProtocolError(f"xrfed message is not usable JSON: {str(exc)[:80]}") from None
    if _depth_exceeds(obj, MAX_JSON_DEPTH):
        raise UnityProtocolError(f"xrfed message nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(obj, dict):
        raise UnityProtocolError(f"xrfed message must be a JSON object, got {type(obj).__name__}")
    v = obj.get("v")
    if v != PROTOCOL_VERSION or isinstance(v, bool):
        raise UnityProtocolError(f"xrfed message version {_short(v)}; this side speaks {PROTOCOL_VERSION} "
                                 "(update the Unity package or xrfed so both match)")
    return obj


def _from_object(obj: Mapping[str, Any]) -> dict[str, Any]:
    mtype = obj.get("type")
    if not isinstance(mtype, str) or mtype not in MESSAGE_FIELDS:
        raise UnityProtocolError(f"unknown xrfed message type {_short(mtype)}; known: {', '.join(MESSAGE_FIELDS)}")
    missing = sorted(set(MESSAGE_FIELDS[mtype]) - set(obj))
    if missing:
        raise UnityProtocolError(f"xrfed message {mtype!r}: field {missing[0]!r} is missing")
    return make_message(mtype, **{k: val for k, val in obj.items() if k not in ("v", "type")})


def decode_message(payload: bytes) -> dict[str, Any]:
    """Parse and validate one xrfed-channel payload; raises :class:`UnityProtocolError` naming what is wrong.

    The envelope is checked by :func:`load_message`, the fields' kinds by :data:`MESSAGE_FIELDS`; nested contents
    of the scene's messages only by :func:`check_scene_message`.
    """
    return _from_object(load_message(payload))


def _name(where: str, value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS or not value.isprintable() or "/" in value:
        raise UnityProtocolError(f"{where}: got {_short(value)}; allowed a printable string of 1 to "
                                 f"{MAX_NAME_CHARS} characters without '/'")
    return value


def _number(where: str, kind: str, value: Any, lo: float, hi: float) -> Any:
    ok = (isinstance(value, int) if kind == "int" else isinstance(value, (int, float))) and not isinstance(value, bool)
    if not ok or not lo <= value <= hi:
        raise UnityProtocolError(f"{where}: got {_short(value)}; allowed {'an integer' if kind == 'int' else 'a number'}"
                                 f" in [{lo:g}, {hi:g}]")
    return value if kind == "int" else float(value)


def _frame_entry(i: int, entry: Any) -> dict[str, Any]:
    where = f"xrfed message 'frames': frames[{i}]"
    if not isinstance(entry, dict):
        raise UnityProtocolError(f"{where} must be an object with {', '.join(k for k, (_, r) in FRAME_FIELDS.items() if r)}"
                                 f", got {type(entry).__name__}")
    out = dict(entry)
    for key, (kind, required) in FRAME_FIELDS.items():
        value = entry.get(key)
        if value is None:
            if required:
                raise UnityProtocolError(f"{where}: field {key!r} is required")
            continue
        at = f"{where}.{key}"
        if kind == "name":
            out[key] = _name(at, value)
        elif kind == "names":
            if not isinstance(value, list) or len(value) > MAX_LIST_ITEMS:
                raise UnityProtocolError(f"{at}: got {_short(value)}; allowed a list of at most {MAX_LIST_ITEMS} names")
            out[key] = [_name(f"{at}[{j}]", v) for j, v in enumerate(value)]
        elif kind == "lighting":
            if not isinstance(value, list) or len(value) != 4:
                raise UnityProtocolError(f"{at}: got {_short(value)}; allowed 4 numbers (intensity, illuminance_lux, "
                                         "color_temperature_k, lights_on)")
            out[key] = [_number(f"{at}[{j}]", "float", v, -1e30, 1e30) for j, v in enumerate(value)]
        else:
            lo, hi = _FRAME_RANGES[key]
            out[key] = _number(at, kind, value, lo, hi)
    return out


def check_scene_message(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A message a scene sent (parsed by :func:`load_message`), checked down to its nested contents.

    Fields are completed and typed as :func:`decode_message` does; then ``hello`` devices must be 1 to
    :data:`MAX_DEVICES` objects with distinct printable ``device_id`` and printable ``user_id`` / ``profile`` and a
    step of (0, :data:`MAX_STEP_DT_S`] s; ``frames`` entries follow :data:`FRAME_FIELDS`; ``overlay_shown`` and
    ``event`` only need their typed fields. A type Python sends (``reset``, ...) is refused here.
    """
    msg = _from_object(obj)
    mtype = msg["type"]
    if mtype not in SCENE_MESSAGE_TYPES:
        raise UnityProtocolError(f"xrfed message {mtype!r} goes from Python to the scene, not back; a scene sends "
                                 f"{', '.join(SCENE_MESSAGE_TYPES)}")
    if mtype == "hello":
        dt = msg["step_dt_s"]
        if not 0.0 < dt <= MAX_STEP_DT_S:
            raise UnityProtocolError(f"xrfed message 'hello': step_dt_s {dt!r}; allowed (0, {MAX_STEP_DT_S:g}] s")
        devices = msg["devices"]
        if not 1 <= len(devices) <= MAX_DEVICES:
            raise UnityProtocolError(f"xrfed message 'hello': {len(devices)} devices; allowed 1 to {MAX_DEVICES}")
        seen: set[str] = set()
        for i, d in enumerate(devices):
            where = f"xrfed message 'hello': devices[{i}]"
            if not isinstance(d, dict):
                raise UnityProtocolError(f"{where} must be an object with device_id, user_id, profile, got "
                                         f"{type(d).__name__} {_short(d, 40)}")
            for key in ("device_id", "user_id", "profile"):
                _name(f"{where}.{key}", d.get(key))
            if d["device_id"] in seen:
                raise UnityProtocolError(f"{where}.device_id {d['device_id']!r} appears twice")
            seen.add(d["device_id"])
    elif mtype == "frames":
        frames = msg["frames"]
        if len(frames) > MAX_DEVICES:
            raise UnityProtocolError(f"xrfed message 'frames': {len(frames)} entries; at most {MAX_DEVICES}")
        msg["frames"] = [_frame_entry(i, f) for i, f in enumerate(frames)]
    return msg


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _depth_exceeds(obj: Any, limit: int) -> bool:
    """True if ``obj`` nests lists/dicts more than ``limit`` deep (iterative: no recursion on hostile input)."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (list, dict)):
            if d > limit:
                return True
            stack.extend((x, d + 1) for x in (o.values() if isinstance(o, dict) else o) if isinstance(x, (list, dict)))
    return False


# -- scene commands ----------------------------------------------------------------------------------------
def command_to_message(cmd: SceneCommand) -> dict[str, Any] | None:
    """The xrfed-channel message of a structured command (None for SetLighting: it travels as parameters)."""
    if isinstance(cmd, SetModality):
        return make_message("set_modality", device_id=cmd.device_id, modality=cmd.modality, enabled=cmd.enabled)
    if isinstance(cmd, ShowPrediction):
        return make_message("show_prediction", device_id=cmd.device_id, task=cmd.task, label=cmd.label,
                            confidence=cmd.confidence, latency_ms=cmd.latency_ms, frame_step=cmd.frame_step)
    if isinstance(cmd, SetLighting):
        return None
    raise UnityProtocolError(f"no xrfed message for scene command {cmd!r}")


def message_to_command(msg: Mapping[str, Any]) -> SceneCommand:
    """Inverse of :func:`command_to_message` for set_modality / show_prediction."""
    if msg["type"] == "set_modality":
        return SetModality(msg["device_id"], msg["modality"], msg["enabled"])
    if msg["type"] == "show_prediction":
        return ShowPrediction(msg["device_id"], msg["task"], msg["label"], msg["confidence"], msg["latency_ms"],
                              msg["frame_step"])
    raise UnityProtocolError(f"xrfed message {msg['type']!r} is not a scene command")


# -- side-channel records ----------------------------------------------------------------------------------
def pack_records(records: Iterable[tuple[uuid.UUID, bytes]]) -> bytes:
    """Concatenate side-channel records as ML-Agents frames them (GUID bytes_le + int32 length + payload)."""
    return b"".join(cid.bytes_le + struct.pack("<i", len(p)) + bytes(p) for cid, p in records)


def unpack_records(data: bytes, *, max_records: int | None = None) -> list[tuple[uuid.UUID, bytes]]:
    """Split side-channel bytes into (GUID, payload) records; a truncated record raises.

    Every length is checked against the bytes actually there before anything is sliced, so a length field of
    2**31 costs nothing; more than ``max_records`` records raise too.
    """
    out: list[tuple[uuid.UUID, bytes]] = []
    off = 0
    while off < len(data):
        if max_records is not None and len(out) >= max_records:
            raise UnityProtocolError(f"side channel: more than {max_records} records in one message")
        if off + 20 > len(data):
            raise UnityProtocolError(f"side channel: truncated record header at byte {off} of {len(data)}")
        cid = uuid.UUID(bytes_le=bytes(data[off:off + 16]))
        (n,) = struct.unpack_from("<i", data, off + 16)
        if n < 0 or off + 20 + n > len(data):
            raise UnityProtocolError(f"side channel: record of {n} bytes at byte {off} overruns {len(data)} bytes")
        out.append((cid, bytes(data[off + 20:off + 20 + n])))
        off += 20 + n
    return out


def _string(s: str) -> bytes:
    b = s.encode("ascii")
    return struct.pack("<i", len(b)) + b


class _Reader:
    """Reads ML-Agents' ``IncomingMessage`` primitives, checking every length before it reads (little-endian)."""

    def __init__(self, payload: bytes, what: str):
        self.p, self.off, self.what = bytes(payload), 0, what

    def _take(self, n: int, field: str) -> bytes:
        if n > len(self.p) - self.off:
            raise UnityProtocolError(f"{self.what}: {field} needs {n} bytes at byte {self.off}, only "
                                     f"{len(self.p) - self.off} left (payload of {len(self.p)} bytes)")
        out = self.p[self.off:self.off + n]
        self.off += n
        return out

    def int32(self, field: str) -> int:
        return int(struct.unpack("<i", self._take(4, field))[0])

    def float32(self, field: str, *, finite: bool = True) -> float:
        value = float(struct.unpack("<f", self._take(4, field))[0])
        if finite and not math.isfinite(value):
            raise UnityProtocolError(f"{self.what}: {field} must be finite, got {value}")
        return value

    def string(self, field: str) -> str:
        n = self.int32(f"{field} length")
        if not 0 <= n <= MAX_KEY_BYTES:
            raise UnityProtocolError(f"{self.what}: {field} length {n}; allowed 0 to {MAX_KEY_BYTES} bytes")
        raw = self._take(n, field)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise UnityProtocolError(f"{self.what}: {field} is not ASCII ({raw[:40]!r})") from None

    def float_list(self, field: str) -> list[float]:
        n = self.int32(f"{field} count")
        if not 0 <= n <= (len(self.p) - self.off) // 4:  # before allocating anything
            raise UnityProtocolError(f"{self.what}: {field} count {n} does not fit the {len(self.p) - self.off} "
                                     "bytes left")
        return [self.float32(f"{field}[{i}]") for i in range(n)]

    def end(self) -> None:
        if self.off != len(self.p):
            raise UnityProtocolError(f"{self.what}: {len(self.p) - self.off} unexpected bytes after the last field")


def encode_float_parameter(key: str, value: float) -> bytes:
    """EnvironmentParametersChannel payload of a FLOAT parameter (as ``set_float_parameter`` writes it)."""
    return _string(key) + struct.pack("<if", 0, float(value))


_SAMPLERS = {0: "uniform", 1: "gaussian", 2: "multirange_uniform"}


def decode_env_parameter(payload: bytes) -> tuple[str, float | None]:
    """(key, value) of an EnvironmentParametersChannel payload; value None for samplers (not used by xrfed).

    The whole payload is checked as ``EnvironmentParametersChannel`` writes it: ASCII key, int32 type, then a
    finite float32 (0 = FLOAT) or int32 seed, int32 sampler and its settings (1 = SAMPLER: uniform min <= max,
    gaussian std >= 0, multi-range uniform [min, max] pairs), and nothing after.
    """
    r = _Reader(payload, "environment parameter")
    key = r.string("key")
    r.what = f"environment parameter {key[:60]!r}"
    kind = r.int32("type")
    value: float | None = None
    if kind == 0:
        value = r.float32("value")
    elif kind == 1:
        r.int32("seed")
        sampler = r.int32("sampler type")
        if sampler == 0:
            lo, hi = r.float32("uniform min"), r.float32("uniform max")
            if lo > hi:
                raise UnityProtocolError(f"{r.what}: uniform sampler min {lo} > max {hi}")
        elif sampler == 1:
            r.float32("gaussian mean")
            if r.float32("gaussian std") < 0:
                raise UnityProtocolError(f"{r.what}: gaussian sampler std must be >= 0")
        elif sampler == 2:
            ranges = r.float_list("intervals")
            if len(ranges) % 2 or any(a > b for a, b in zip(ranges[::2], ranges[1::2], strict=True)):
                raise UnityProtocolError(f"{r.what}: multi-range sampler needs [min, max] pairs with min <= max")
        else:
            raise UnityProtocolError(f"{r.what}: unknown sampler type {sampler}; known: "
                                     + ", ".join(f"{k} {v}" for k, v in _SAMPLERS.items()))
    else:
        raise UnityProtocolError(f"{r.what}: unknown type {kind}; known: 0 float, 1 sampler")
    r.end()
    return key, value


#: EngineConfigurationChannel setting types and their fields (int32 "i" or float32 "f")
_ENGINE_SETTINGS = {0: ("screen_resolution", "ii"), 1: ("quality_level", "i"), 2: ("time_scale", "f"),
                    3: ("target_frame_rate", "i"), 4: ("capture_frame_rate", "i")}


def decode_engine_setting(payload: bytes) -> tuple[str, tuple[float, ...]]:
    """(name, values) of one EngineConfigurationChannel payload: int32 type, then its fields, nothing after.

    Unity clamps what it applies (time scale to [1, 100] in the Editor); here only the shape is checked, plus what
    no engine accepts: a resolution below 1 pixel or above 16384, a non-finite or negative time scale.
    """
    r = _Reader(payload, "engine configuration")
    kind = r.int32("type")
    if kind not in _ENGINE_SETTINGS:
        raise UnityProtocolError(f"engine configuration: unknown setting type {kind}; known: "
                                 + ", ".join(f"{k} {v[0]}" for k, v in _ENGINE_SETTINGS.items()))
    name, fields = _ENGINE_SETTINGS[kind]
    values = tuple(float(r.int32(name)) if f == "i" else r.float32(name) for f in fields)
    r.end()
    if name == "screen_resolution" and not all(1 <= v <= 16384 for v in values):
        raise UnityProtocolError(f"engine configuration: screen resolution {values[0]:g} x {values[1]:g}; each "
                                 "side must be 1 to 16384 pixels")
    if name == "time_scale" and values[0] < 0:
        raise UnityProtocolError(f"engine configuration: time scale {values[0]:g} must be >= 0")
    return name, values


def lighting_to_parameters(cmd: SetLighting) -> dict[str, float]:
    """Environment-parameter floats of a SetLighting (None fields are not sent: the schedule keeps them)."""
    suffix = f"@{cmd.room}" if cmd.room is not None else ""
    out: dict[str, float] = {}
    for field, value in (("intensity", cmd.intensity), ("color_temperature_k", cmd.color_temperature_k),
                         ("lights_on", None if cmd.lights_on is None else float(cmd.lights_on))):
        if value is not None:
            out[f"{LIGHTING_PARAM_PREFIX}{field}{suffix}"] = float(value)
    return out


def parameters_to_lighting(params: Mapping[str, float]) -> list[SetLighting]:
    """Group ``xrfed.lighting.*`` parameters back into SetLighting commands (one per room, None = every room)."""
    rooms: dict[str | None, dict[str, Any]] = {}
    for key, value in params.items():
        if not key.startswith(LIGHTING_PARAM_PREFIX):
            continue
        field, _, room = key[len(LIGHTING_PARAM_PREFIX):].partition("@")
        if field not in ("intensity", "color_temperature_k", "lights_on"):
            raise UnityProtocolError(f"unknown lighting parameter {key[:80]!r}; fields: intensity, "
                                     "color_temperature_k, lights_on")
        lo, hi = LIGHTING_RANGES[field]
        if not (math.isfinite(value) and lo <= value <= hi):
            raise UnityProtocolError(f"lighting parameter {key[:80]!r}: got {value!r}; allowed {lo:g} to {hi:g}")
        rooms.setdefault(room or None, {})[field] = bool(value >= 0.5) if field == "lights_on" else float(value)
    return [SetLighting(room=room, **vals) for room, vals in rooms.items()]


def encode_stat(key: str, value: float, aggregation: int = 1) -> bytes:
    """StatsSideChannel payload: key, float32 value, int32 aggregation (0 avg, 1 most recent, 2 sum, 3 hist)."""
    return _string(key) + struct.pack("<fi", float(value), int(aggregation))


def decode_stat(payload: bytes) -> tuple[str, float, int]:
    """(key, value, aggregation) of a StatsSideChannel payload; raises :class:`UnityProtocolError` if malformed."""
    r = _Reader(payload, "stat")
    key = r.string("key")
    value, agg = r.float32("value", finite=False), r.int32("aggregation")
    r.end()
    return key, value, agg


# -- scenario ----------------------------------------------------------------------------------------------
def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


_EMBEDDED_ONLY_RENDER_KEYS = ("cull", "process")


def scenario_to_dict(sc: Scenario) -> dict[str, Any]:
    """Every field of a validated scenario (defaults filled in), as the ``load_scenario`` message carries it.

    The C# ``ScenarioModel`` reads exactly these keys, so a scene built in Unity and the embedded scene start from
    the same numbers. ``source_yaml`` stays behind (the scene needs the values, not the text), and so do the
    embedded renderer's own performance switches (``render.cull``, ``render.process``), which change no pixel.
    """
    d = asdict(sc)
    d.pop("source_yaml", None)
    for key in _EMBEDDED_ONLY_RENDER_KEYS:
        d["render"].pop(key, None)
    d["task_scripts"] = {name: asdict(s) for name, s in sc.task_scripts.items()}
    return _plain(d)


def scene_export(sc: Scenario) -> dict[str, Any]:
    """What the Unity Editor's scene builder reads: the scenario, the device profiles its avatars wear (modalities,
    microphone count, vertical field of view) and the task vocabularies (comma-joined, :data:`bridge.tasks.TASKS`
    order) so Unity computes the same label indices as Python."""
    from ..devices import get_device
    from ..tasks import TASKS

    devices = {}
    for a in sc.avatars:
        p = get_device(a.device)
        devices[a.device] = {"modalities": list(p.modalities), "mics": p.microphones.count if p.microphones else 0,
                             "fov_v_deg": p.camera.fov_v_deg if p.camera else 90.0}
    return {"scenario": scenario_to_dict(sc), "devices": devices,
            "task_classes": [",".join(t.classes) for t in TASKS.values()]}


# -- golden messages for the C# test program -------------------------------------------------------------
def golden_messages() -> dict[str, bytes]:
    """Named payloads covering every message type, nulls, escapes and awkward floats (for the C# round trip)."""
    from ..scenario import load_scenario

    msgs: dict[str, Any] = {
        "reset": make_message("reset", seed=42),
        "set_modality": command_to_message(SetModality("ava-apple_vision_pro", "gaze", False)),
        "show_prediction": command_to_message(ShowPrediction("ben-meta_quest_3", "object_recognition", "mug",
                                                             0.8734, 12.5, 17)),
        "show_prediction_nulls": make_message("show_prediction", device_id="d\u00e9v\u00ee\u00e7\u00e9 \"q\"\\\n",
                                              task="speech_command", label="stop", confidence=1),
        "set_script": make_message("set_script", avatar="ava", script="tv_evening"),
        "hello": make_message("hello", scene="default", player="xrfed-sim/0.1.0", step_dt_s=0.1, devices=[
            {"device_id": "ava-apple_vision_pro", "user_id": "ava", "profile": "apple_vision_pro"}]),
        "frames": make_message("frames", frames=[{
            "device_id": "ava-apple_vision_pro", "step": 3, "sim_time_s": 0.30000000000000004,
            "wall_time_ns": 1_712_345_678_901_234_567, "room": "living", "events": ["mic_muted"],
            "active_tasks": ["object_recognition"], "lighting": [1.0, 201.99999, 5500.0, 1.0],
            "camera_fov_y_deg": 1e-07, "audio_hz": 16000, "audio_channels": 6, "big": 1e16, "neg": -2.5e-05,
            "edge": 0.7999999999999999, "tiny": 5e-324}]),
        "overlay_shown": make_message("overlay_shown", device_id="ava-apple_vision_pro", task="object_recognition",
                                      label="tv", frame_step=None, sent_ns=None, scene_step=9),
        "event": make_message("event", name="unsupported", detail="set_script needs a scene with task scripts"),
        "frames_float_sweep": make_message("frames", frames=[{"x": float(x)} for x in _float_sweep()]),
        "load_scenario_default": make_message("load_scenario", scenario=scenario_to_dict(load_scenario("default"))),
    }
    return {name: encode_message(m) for name, m in msgs.items()}


def _float_sweep() -> list[float]:
    """Doubles across every magnitude and digit count (seeded), to pin the shortest-repr rules on both sides.

    Every value is built by exact arithmetic -- an integer mantissa of 1 to 53 bits scaled by a power of two
    (``ldexp``), integers over 1000, literals -- so the golden bytes are the same on every CPU. A transcendental
    (``10.0 ** x``, ``exp``, ``sin``) is not: numpy's AVX-512 and AVX2 kernels differ in the last bit.
    """
    import numpy as np

    rng = np.random.default_rng(20240501)
    n = 240
    bits = rng.integers(1, 54, n)  # significant bits: 1 gives one-digit reprs, 53 gives 17 digits
    mantissa = rng.integers(2**52, 2**53, n) >> (53 - bits)  # exactly `bits` bits, < 2**53: exact as a double
    signed = np.where(rng.integers(0, 2, n) == 1, -mantissa, mantissa).astype(np.float64)
    # two thirds between ~1e-30 and ~1e30 (where the fixed/exponent switches of both formatters sit), the rest
    # anywhere from the smallest subnormal (2**-1074) to ~1e308; exponents >= -1074 keep ldexp exact
    exp2 = np.concatenate([rng.integers(-100, 100, 2 * n // 3), rng.integers(-1074, 971, n - 2 * n // 3)])
    vals = np.ldexp(signed, np.maximum(exp2 - bits, -1074))
    short = rng.integers(-10**7, 10**7, 60) / 1000  # three decimals, correctly rounded like the literal
    edges = [1e-4, 9.999e-5, 1e16, 9999999999999998.0, 0.1, -0.0, 5e-324, 2.225073858507201e-308,
             2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308]
    return [float(v) for v in np.concatenate([vals, short, edges])]


def write_golden(directory: str | Path) -> list[Path]:
    """Write :func:`golden_messages` as ``<name>.json`` files (the bytes the C# program must reproduce)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, payload in {**golden_messages(), "lighting_samples": lighting_samples()}.items():
        p = d / f"{name}.json"
        p.write_bytes(payload)
        paths.append(p)
    return paths


def lighting_samples(scenario: str = "default") -> bytes:
    """The embedded scene's lighting per room at awkward times (interpolation, flicker, lights off, overrides
    absent), so the C# ``LightingSchedule`` can be checked against it."""
    from ..embedded.lighting import LightingSchedule
    from ..scenario import load_scenario

    sc = load_scenario(scenario)
    sched = LightingSchedule(sc)
    out = []
    for room in sc.rooms:
        for t in (0.0, 7.3, 20.0, 33.3, 45.05, 45.2, 45.19, 52.0, 60.0, 75.0):
            li = sched.at(room.name, t)
            out.append({"room": room.name, "t_s": t, "light": [li.intensity, li.color_temperature_k,
                                                                float(li.lights_on), li.illuminance_lux]})
    return canonical_json(out).encode("ascii")
