"""How a :class:`~bridge.frame.DeviceFrame` travels as ML-Agents observations, and back (pure numpy + Pillow).

One agent per device. Its sensors, named so the Python side can map them back (Unity sorts sensors by name, so
the list below is also the wire order):

============  ==========================  ================================================================
name          shape (1.x client / 0.x)    content (units as in :mod:`bridge.frame`, layout as :mod:`bridge.arrays`)
============  ==========================  ================================================================
``audio``     [C * N]                     the step's audio, channel-major (``audio.reshape(C, N)``), float32
``depth_m``   [2, H, W] / [H, W, 2]       metric depth along the optical axis as a PNG carrying millimetres
                                          (see below); the client decodes the hi and lo bytes as value / 255
``device``    [1]                         index of the device in the scene's ``hello`` device list
``gaze``      [8]                         :data:`bridge.arrays.GAZE_FIELDS`
``hands``     [156]                       [2, 26, 3] joints, head frame
``imu``       [6]                         :data:`bridge.arrays.IMU_FIELDS`
``labels``    [6]                         class index per task in :data:`bridge.tasks.TASKS` order, -1 = none
``pose``      [7]                         :data:`bridge.arrays.POSE_FIELDS`
``present``   [10]                        1/0 per modality in MODALITIES order, then gaze_valid, hands_valid L, R
``rgb``       [3, H, W] / [H, W, 3]       8-bit RGB PNG (row 0 = top), decoded by the client as value / 255
============  ==========================  ================================================================

Compressed depth (the same in the C# sensors of unity_project): ``v = clip(round(depth_m * 1000), 0, 65535)``
millimetres as an 8-bit RGB PNG with ``R = v >> 8``, ``G = v & 0xFF``, ``B = 0`` and
``compressed_channel_mapping = [0, 1, -1]``, so mlagents-envs returns two channels (hi, lo) and drops blue.
Decoding: ``v = round(hi * 255) * 256 + round(lo * 255)``, ``depth_m = v / 1000``; ``v = 65535`` is the frame
contract's no-hit ``inf`` (and so is anything at or beyond 65.5345 m). Within range a depth comes back within
:data:`DEPTH_BOUND_M` (0.5 mm of quantization, plus float32 rounding of at most 4 micrometres). RGB is bit-exact:
``round(value * 255)`` recovers every byte.

A modality the device profile lacks has no sensor at all; one that is dropped at this step is sent as zeros with
its ``present`` flag at 0 and comes back as None -- zeros never pose as data. The layout is channels-first for
mlagents-envs >= 1.0 (Unity package >= 3.0) and channels-last for 0.x clients (Unity <= 2.3), chosen from the
client's ``package_version`` in the handshake.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..arrays import frame_to_arrays
from ..frame import NUM_HAND_JOINTS, DeviceFrame
from ..tasks import MODALITIES, TASKS
from .errors import UnityProtocolError

__all__ = ["ObservationLayout", "VECTOR_SIZES", "PRESENT_SIZE", "IMAGE_CHANNELS", "CHANNEL_MAPPINGS", "DEPTH_MM_PER_M",
           "DEPTH_NO_HIT", "DEPTH_BOUND_M", "channels_first_for", "encode_png", "encode_depth_png",
           "depth_to_millimetres", "depth_from_channels", "frame_to_observations", "observations_to_arrays",
           "layout_for"]

PRESENT_SIZE = len(MODALITIES) + 3
VECTOR_SIZES = {"device": 1, "gaze": 8, "hands": 2 * NUM_HAND_JOINTS * 3, "imu": 6, "labels": len(TASKS),
                "pose": 7, "present": PRESENT_SIZE}
_MODALITY_OBS = {"rgb": "rgb", "depth": "depth_m", "gaze": "gaze", "audio": "audio", "pose": "pose", "imu": "imu",
                 "hands": "hands"}
_TASK_ORDER = tuple(TASKS)
#: channels of each visual observation as the client decodes it (depth: the hi and lo bytes of millimetres)
IMAGE_CHANNELS = {"rgb": 3, "depth_m": 2}
#: ``compressed_channel_mapping`` of each visual observation (rgb: none, the PNG's three channels in order)
CHANNEL_MAPPINGS: dict[str, tuple[int, ...]] = {"rgb": (), "depth_m": (0, 1, -1)}
#: depth quantization: millimetres per metre, and the 16-bit value meaning "no hit" (``inf`` in the frame)
DEPTH_MM_PER_M = 1000
DEPTH_NO_HIT = 65535
#: largest |sent - received| depth within range, metres: half a millimetre plus float32 rounding (<= 4 um at 65 m)
DEPTH_BOUND_M = 0.5e-3 + 4e-6
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def channels_first_for(package_version: str) -> bool:
    """mlagents-envs >= 1.0 decodes visual observations channels-first; 0.x channels-last (see the reference)."""
    try:
        major = int(package_version.split(".")[0])
    except ValueError:
        raise UnityProtocolError(f"client package_version {package_version!r} is not 'X.Y.Z'") from None
    return major >= 1


@dataclass(frozen=True)
class ObservationLayout:
    """The sensors of one device's agent: which modalities exist, image size, audio size, tensor order."""

    modalities: tuple[str, ...]
    image_hw: tuple[int, int] | None = None
    audio_channels: int | None = None
    audio_samples: int | None = None
    channels_first: bool = True

    def __post_init__(self) -> None:
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad:
            raise UnityProtocolError(f"observation layout: unknown modalities {bad}; allowed: {', '.join(MODALITIES)}")
        object.__setattr__(self, "modalities", tuple(m for m in MODALITIES if m in self.modalities))
        if ("rgb" in self.modalities or "depth" in self.modalities) and self.image_hw is None:
            raise UnityProtocolError("observation layout: image_hw is required with rgb or depth")
        if "audio" in self.modalities and not (self.audio_channels and self.audio_samples):
            raise UnityProtocolError("observation layout: audio_channels and audio_samples are required with audio")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Observation name -> shape, in wire (sorted-name) order."""
        return dict(self._shapes)

    @functools.cached_property
    def _shapes(self) -> dict[str, tuple[int, ...]]:
        # computed once per layout: the player asks for every agent at every step
        out: dict[str, tuple[int, ...]] = {}
        for m in self.modalities:
            name = _MODALITY_OBS[m]
            if m in ("rgb", "depth"):
                assert self.image_hw is not None
                h, w = self.image_hw
                c = IMAGE_CHANNELS[name]
                out[name] = (c, h, w) if self.channels_first else (h, w, c)
            elif m == "audio":
                out[name] = (int(self.audio_channels or 0) * int(self.audio_samples or 0),)
            else:
                out[name] = (VECTOR_SIZES[name],)
        out.update({k: (VECTOR_SIZES[k],) for k in ("device", "labels", "present")})
        return dict(sorted(out.items()))

    @functools.cached_property
    def channel_mappings(self) -> dict[str, tuple[int, ...]]:
        """Observation name -> ``compressed_channel_mapping`` (empty for every observation but depth)."""
        return {k: CHANNEL_MAPPINGS.get(k, ()) for k in self._shapes}

    @functools.cached_property
    def dimension_properties(self) -> dict[str, tuple[int, ...]]:
        """ML-Agents DimensionProperty flags per observation (visual: [1,2,2] CHW or [2,2,1] HWC; vector: [1])."""
        visual = (1, 2, 2) if self.channels_first else (2, 2, 1)
        return {k: (visual if len(s) == 3 else (1,)) for k, s in self._shapes.items()}


def _chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def encode_png(rgb: np.ndarray, compress_level: int = 1) -> bytes:
    """[H, W, 3] uint8 (row 0 at the top) -> an 8-bit RGB PNG, as Unity's ``EncodeToPNG`` sends camera images.

    Every row uses PNG's Sub filter (a byte minus the same channel of the pixel to its left, modulo 256) and the
    rows go through zlib at ``compress_level`` (1, Unity-like speed). Written here instead of by Pillow, whose
    adaptive per-row filter choice costs 2-3x the time of the whole encoding at 128 x 128; any PNG reader
    (Pillow in mlagents-envs) decodes it."""
    img = np.asarray(rgb)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
        raise UnityProtocolError(f"PNG encoding: expected a uint8 [H, W, 3] image, got {img.dtype} {img.shape}")
    h, w, _ = img.shape
    rows = img.reshape(h, 3 * w)
    raw = np.empty((h, 1 + 3 * w), np.uint8)
    raw[:, 0] = 1  # filter type Sub
    raw[:, 1:4] = rows[:, :3]
    np.subtract(rows[:, 3:], rows[:, :-3], out=raw[:, 4:])  # uint8 arithmetic wraps modulo 256, as PNG defines
    return (_PNG_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw.data, compress_level)) + _chunk(b"IEND", b""))


def depth_to_millimetres(depth_m: np.ndarray) -> np.ndarray:
    """[H, W] float depth in metres -> [H, W] uint16 ``clip(round(depth_m * 1000), 0, 65535)``; ``inf`` (no hit)
    and anything at or beyond 65.5345 m become :data:`DEPTH_NO_HIT`. Rounded half to even, in float64."""
    mm = np.rint(np.asarray(depth_m, dtype=np.float64) * DEPTH_MM_PER_M)
    return np.clip(mm, 0, DEPTH_NO_HIT, out=mm).astype(np.uint16)


def encode_depth_png(depth_m: np.ndarray, compress_level: int = 1) -> bytes:
    """Depth as the compressed ``depth_m`` observation sends it: an 8-bit RGB PNG with R = millimetres >> 8,
    G = millimetres & 0xFF, B = 0 (see the module docstring)."""
    mm = depth_to_millimetres(depth_m)
    img = np.zeros((*mm.shape, 3), dtype=np.uint8)
    img[..., 0] = mm >> 8
    img[..., 1] = mm & 0xFF
    return encode_png(img, compress_level)


def depth_from_channels(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The client's decoded hi and lo channels (float32 value / 255, [H, W] each) -> [H, W] float32 depth in metres;
    :data:`DEPTH_NO_HIT` -> ``inf``. Exact inverse of :func:`depth_to_millimetres` on the millimetre grid."""
    hi_b = np.rint(np.asarray(hi, dtype=np.float32) * np.float32(255.0))
    lo_b = np.rint(np.asarray(lo, dtype=np.float32) * np.float32(255.0))
    mm = hi_b * np.float32(256.0) + lo_b  # at most 65535: exact in float32
    depth = mm / np.float32(DEPTH_MM_PER_M)
    depth[mm == DEPTH_NO_HIT] = np.inf
    return depth


def frame_to_observations(frame: DeviceFrame, layout: ObservationLayout, device_index: int, *,
                          png_level: int = 1) -> dict[str, np.ndarray | bytes]:
    """Observation name -> float32 array (flattened in the layout's order) or PNG bytes (``rgb``, ``depth_m``)."""
    arr = frame_to_arrays(frame)
    shapes = layout._shapes
    present = np.zeros(PRESENT_SIZE, dtype=np.float32)
    out: dict[str, np.ndarray | bytes] = {}
    for i, m in enumerate(MODALITIES):
        if m not in layout.modalities:
            continue
        name = _MODALITY_OBS[m]
        have = arr["present"][m]
        present[i] = float(have)
        if name in IMAGE_CHANNELS:
            h, w = shapes[name][1:] if layout.channels_first else shapes[name][:2]
            img = arr[name] if have else None
            if img is not None and img.shape[:2] != (h, w):
                raise UnityProtocolError(f"device {frame.device_id}: {name} is {img.shape[:2]}, layout says {(h, w)}")
            if name == "rgb":
                out[name] = encode_png(np.zeros((h, w, 3), np.uint8) if img is None else img, png_level)
            else:
                out[name] = encode_depth_png(np.zeros((h, w), np.float32) if img is None else img, png_level)
            continue
        shape = shapes[name]
        size = int(np.prod(shape))
        if have:
            data = np.asarray(arr[name], dtype=np.float32).reshape(-1)
            if data.size != size:
                raise UnityProtocolError(f"device {frame.device_id}: {name} has {data.size} values, layout says "
                                         f"{size} (shape {shape})")
        else:
            data = np.zeros(size, np.float32)
        out[name] = data
    if frame.gaze is not None:
        present[len(MODALITIES)] = float(frame.gaze.valid)
    if frame.hands is not None:
        present[len(MODALITIES) + 1:] = frame.hands.valid.astype(np.float32)
    labels = np.full(len(_TASK_ORDER), -1.0, dtype=np.float32)
    for t, idx in arr["labels"].items():
        labels[_TASK_ORDER.index(t)] = idx
    out["device"] = np.array([device_index], dtype=np.float32)
    out["labels"] = labels
    out["present"] = present
    return dict(sorted(out.items()))


def observations_to_arrays(obs: Mapping[str, np.ndarray], *, audio_channels: int | None = None,
                           audio_hz: int | None = None, channels_first: bool = True) -> dict[str, Any]:
    """Decoded observations of one agent (as ``DecisionSteps.obs`` rows, by name) -> :mod:`bridge.arrays` layout.

    Only modalities whose ``present`` flag is set come back; the rest are absent keys (-> None in the frame).
    """
    if "present" not in obs:
        raise UnityProtocolError(f"agent observations lack 'present'; got {sorted(obs)} -- is this an xrfed scene?")
    present = np.asarray(obs["present"]).reshape(-1)
    out: dict[str, Any] = {}
    for i, m in enumerate(MODALITIES):
        name = _MODALITY_OBS[m]
        if present[i] < 0.5 or name not in obs:
            continue
        v = np.asarray(obs[name])
        if name == "rgb":
            # PNG-decoded: every value is k / 255 in float32, so + 0.5 and truncation is round(x * 255), exactly
            img = np.asarray(v, dtype=np.float32) * np.float32(255.0)
            img += np.float32(0.5)
            np.clip(img, 0.0, 255.5, out=img)  # only matters for float images from elsewhere
            out["rgb"] = (img.transpose(1, 2, 0) if channels_first else img).astype(np.uint8)
        elif name == "depth_m":
            out["depth_m"] = depth_from_channels(*(v if channels_first else v.transpose(2, 0, 1)))
        elif name == "audio":
            if not audio_channels or not audio_hz:
                raise UnityProtocolError("audio observation without audio_channels/audio_hz in the frame metadata")
            out["audio"] = v.astype(np.float32).reshape(audio_channels, -1)
            out["audio_hz"] = int(audio_hz)
        elif name == "hands":
            out["hands"] = v.astype(np.float32).reshape(2, NUM_HAND_JOINTS, 3)
            out["hands_valid"] = present[len(MODALITIES) + 1:] > 0.5
        else:
            out[name] = v.astype(np.float32)
    if "gaze" in out:
        out["gaze_valid"] = bool(present[len(MODALITIES)] > 0.5)
    labels = np.asarray(obs.get("labels", np.zeros(0))).reshape(-1)
    out["labels"] = {t: int(round(float(x))) for t, x in zip(_TASK_ORDER, labels, strict=False) if x >= 0}
    return out


def layout_for(modalities: Sequence[str], frames: Sequence[DeviceFrame], *, channels_first: bool,
               image_hw: tuple[int, int] | None = None, audio_channels: int | None = None,
               audio_samples: int | None = None) -> ObservationLayout:
    """A device's layout from its profile's modalities, sizes taken from explicit values or the first frames."""
    for f in frames:
        if image_hw is None and f.rgb is not None:
            image_hw = (int(f.rgb.shape[0]), int(f.rgb.shape[1]))
        if image_hw is None and f.depth_m is not None:
            image_hw = (int(f.depth_m.shape[0]), int(f.depth_m.shape[1]))
        if audio_samples is None and f.audio is not None:
            audio_channels, audio_samples = (int(x) for x in f.audio.samples.shape)
    return ObservationLayout(tuple(modalities), image_hw, audio_channels, audio_samples, channels_first)
