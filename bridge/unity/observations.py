"""How a :class:`~bridge.frame.DeviceFrame` travels as ML-Agents observations, and back (pure numpy + Pillow).

One agent per device. Its sensors, named so the Python side can map them back (Unity sorts sensors by name, so
the list below is also the wire order):

============  ==========================  ================================================================
name          shape (1.x client / 0.x)    content (units as in :mod:`bridge.frame`, layout as :mod:`bridge.arrays`)
============  ==========================  ================================================================
``audio``     [C * N]                     the step's audio, channel-major (``audio.reshape(C, N)``), float32
``depth_m``   [1, H, W] / [H, W, 1]       metric depth along the optical axis, float32, uncompressed (exact)
``device``    [1]                         index of the device in the scene's ``hello`` device list
``gaze``      [8]                         :data:`bridge.arrays.GAZE_FIELDS`
``hands``     [156]                       [2, 26, 3] joints, head frame
``imu``       [6]                         :data:`bridge.arrays.IMU_FIELDS`
``labels``    [6]                         class index per task in :data:`bridge.tasks.TASKS` order, -1 = none
``pose``      [7]                         :data:`bridge.arrays.POSE_FIELDS`
``present``   [10]                        1/0 per modality in MODALITIES order, then gaze_valid, hands_valid L, R
``rgb``       [3, H, W] / [H, W, 3]       PNG (row 0 = top), decoded by the client as value / 255
============  ==========================  ================================================================

A modality the device profile lacks has no sensor at all; one that is dropped at this step is sent as zeros with
its ``present`` flag at 0 and comes back as None -- zeros never pose as data. The layout is channels-first for
mlagents-envs >= 1.0 (Unity package >= 3.0) and channels-last for 0.x clients (Unity <= 2.3), chosen from the
client's ``package_version`` in the handshake.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..arrays import frame_to_arrays
from ..frame import NUM_HAND_JOINTS, DeviceFrame
from ..tasks import MODALITIES, TASKS
from .errors import UnityProtocolError

__all__ = ["ObservationLayout", "VECTOR_SIZES", "PRESENT_SIZE", "channels_first_for", "encode_png",
           "frame_to_observations", "observations_to_arrays", "layout_for"]

PRESENT_SIZE = len(MODALITIES) + 3
VECTOR_SIZES = {"device": 1, "gaze": 8, "hands": 2 * NUM_HAND_JOINTS * 3, "imu": 6, "labels": len(TASKS),
                "pose": 7, "present": PRESENT_SIZE}
_MODALITY_OBS = {"rgb": "rgb", "depth": "depth_m", "gaze": "gaze", "audio": "audio", "pose": "pose", "imu": "imu",
                 "hands": "hands"}
_TASK_ORDER = tuple(TASKS)


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
        out: dict[str, tuple[int, ...]] = {}
        for m in self.modalities:
            name = _MODALITY_OBS[m]
            if m in ("rgb", "depth"):
                assert self.image_hw is not None
                h, w = self.image_hw
                c = 3 if m == "rgb" else 1
                out[name] = (c, h, w) if self.channels_first else (h, w, c)
            elif m == "audio":
                out[name] = (int(self.audio_channels or 0) * int(self.audio_samples or 0),)
            else:
                out[name] = (VECTOR_SIZES[name],)
        out.update({k: (VECTOR_SIZES[k],) for k in ("device", "labels", "present")})
        return dict(sorted(out.items()))

    @property
    def dimension_properties(self) -> dict[str, tuple[int, ...]]:
        """ML-Agents DimensionProperty flags per observation (visual: [1,2,2] CHW or [2,2,1] HWC; vector: [1])."""
        visual = (1, 2, 2) if self.channels_first else (2, 2, 1)
        return {k: (visual if len(s) == 3 else (1,)) for k, s in self.shapes().items()}


def encode_png(rgb: np.ndarray, compress_level: int = 1) -> bytes:
    """An RGB PNG as Unity's ``EncodeToPNG`` sends it (level 1: the speed/size trade-off the reference measured)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def frame_to_observations(frame: DeviceFrame, layout: ObservationLayout, device_index: int, *,
                          png_level: int = 1) -> dict[str, np.ndarray | bytes]:
    """Observation name -> float32 array (flattened in the layout's order) or PNG bytes (``rgb``)."""
    arr = frame_to_arrays(frame)
    shapes = layout.shapes()
    present = np.zeros(PRESENT_SIZE, dtype=np.float32)
    out: dict[str, np.ndarray | bytes] = {}
    for i, m in enumerate(MODALITIES):
        if m not in layout.modalities:
            continue
        name = _MODALITY_OBS[m]
        have = arr["present"][m]
        present[i] = float(have)
        if name == "rgb":
            h, w = shapes["rgb"][1:] if layout.channels_first else shapes["rgb"][:2]
            img = arr["rgb"] if have else np.zeros((h, w, 3), np.uint8)
            if img.shape[:2] != (h, w):
                raise UnityProtocolError(f"device {frame.device_id}: rgb is {img.shape[:2]}, layout says {(h, w)}")
            out[name] = encode_png(img, png_level)
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
            img = v.transpose(1, 2, 0) if channels_first else v
            out["rgb"] = np.rint(img * 255.0).clip(0, 255).astype(np.uint8)
        elif name == "depth_m":
            out["depth_m"] = np.ascontiguousarray((v[0] if channels_first else v[..., 0]).astype(np.float32))
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
