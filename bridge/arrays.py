"""Flat numpy views of a :class:`DeviceFrame`: the one mapping that recorders, datasets, streams and models share.

``frame_to_arrays`` turns a frame into a dict of fixed-layout arrays plus presence flags; ``arrays_to_frame``
inverts it. Layouts (units as in :mod:`bridge.frame`):

=================  ======================  ==================================================================
key                shape / dtype           content
=================  ======================  ==================================================================
``rgb``            [H, W, 3] uint8
``depth_m``        [H, W] float32          metric depth along the optical axis
``segmentation``   [H, W] int32            object ids (optional)
``gaze``           [8] float32             yaw_rad, pitch_rad, origin_m (x, y, z), vergence_depth_m,
                                           pupil_diameter_mm, confidence  (see ``GAZE_FIELDS``)
``gaze_valid``     [] bool                 the tracker's validity flag
``audio``          [C, N] float32          one step of audio; ``audio_hz`` carries the rate
``pose``           [7] float32             position_m (x, y, z), orientation (w, x, y, z), world frame
``imu``            [6] float32             linear_acceleration_mps2 (3), angular_velocity_radps (3), head frame
``hands``          [2, 26, 3] float32      joints in the head frame; ``hands_valid`` [2] bool
``lighting``       [4] float32             intensity, illuminance_lux, color_temperature_k, lights_on
=================  ======================  ==================================================================

``present`` maps every modality in :data:`bridge.tasks.MODALITIES` to whether the frame carries it; absent
modalities have no key (never zero arrays). ``labels`` maps task -> class index.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .frame import MODALITY_ATTR, Audio, DeviceFrame, Gaze, Hands, Imu, LightingState, Pose
from .tasks import MODALITIES, TASKS

__all__ = ["GAZE_FIELDS", "POSE_FIELDS", "IMU_FIELDS", "LIGHTING_FIELDS", "frame_to_arrays", "modality_arrays",
           "arrays_to_frame", "records_from_arrays", "label_names", "labels_to_indices"]

GAZE_FIELDS = ("yaw_rad", "pitch_rad", "origin_x_m", "origin_y_m", "origin_z_m", "vergence_depth_m",
               "pupil_diameter_mm", "confidence")
POSE_FIELDS = ("x_m", "y_m", "z_m", "qw", "qx", "qy", "qz")
IMU_FIELDS = ("ax_mps2", "ay_mps2", "az_mps2", "wx_radps", "wy_radps", "wz_radps")
LIGHTING_FIELDS = ("intensity", "illuminance_lux", "color_temperature_k", "lights_on")


def labels_to_indices(labels: dict[str, str]) -> dict[str, int]:
    return {t: TASKS[t].index(v) for t, v in labels.items()}


def modality_arrays(frame: DeviceFrame) -> dict[str, Any]:
    """The frame's arrays only (no ``present``/``labels``/``audio_hz``), in the module docstring's layout and order;
    what a stream message carries."""
    out: dict[str, Any] = {}
    if frame.rgb is not None:
        out["rgb"] = frame.rgb
    if frame.depth_m is not None:
        out["depth_m"] = frame.depth_m
    if frame.segmentation is not None:
        out["segmentation"] = frame.segmentation
    g = frame.gaze
    if g is not None:
        o = g.origin_m
        out["gaze"] = np.array((g.yaw_rad, g.pitch_rad, o[0], o[1], o[2], g.vergence_depth_m, g.pupil_diameter_mm,
                                g.confidence), dtype=np.float32)
        out["gaze_valid"] = np.bool_(g.valid)
    if frame.audio is not None:
        out["audio"] = frame.audio.samples
    if frame.head_pose is not None:
        out["pose"] = np.concatenate((frame.head_pose.position_m, frame.head_pose.orientation_wxyz), dtype=np.float32)
    if frame.imu is not None:
        out["imu"] = np.concatenate((frame.imu.linear_acceleration_mps2, frame.imu.angular_velocity_radps),
                                    dtype=np.float32)
    if frame.hands is not None:
        out["hands"] = frame.hands.joints_m
        out["hands_valid"] = frame.hands.valid
    li = frame.lighting
    if li is not None:
        out["lighting"] = np.array((li.intensity, li.illuminance_lux, li.color_temperature_k, float(li.lights_on)),
                                   dtype=np.float32)
    return out


def frame_to_arrays(frame: DeviceFrame) -> dict[str, Any]:
    """Flatten a frame (see module docstring for the layout)."""
    out: dict[str, Any] = {"present": {m: getattr(frame, MODALITY_ATTR[m]) is not None for m in MODALITIES}}
    out.update(modality_arrays(frame))
    if frame.audio is not None:
        out["audio_hz"] = frame.audio.sample_rate_hz
    out["labels"] = labels_to_indices(dict(frame.labels))
    return out


def _split64(v: Any, at: int) -> tuple[np.ndarray, np.ndarray]:
    v = np.array(v, dtype=np.float64)  # a copy: the frame never aliases the caller's array
    return v[:at], v[at:]


def records_from_arrays(arr: Mapping[str, Any], audio_hz: int | None = None) -> tuple[
        Gaze | None, Audio | None, Pose | None, Imu | None, Hands | None, LightingState | None]:
    """The validated records (gaze, audio, head pose, imu, hands, lighting) of a flat array dict, None where absent;
    ``audio_hz`` if not ``arr["audio_hz"]``."""
    get = arr.get
    gaze = None
    g = get("gaze")
    if g is not None:
        g = g.tolist() if type(g) is np.ndarray else np.asarray(g, dtype=np.float64).tolist()  # Python floats
        gaze = Gaze(g[0], g[1], g[2:5], g[5], g[6], bool(get("gaze_valid", True)), g[7])
    a = get("audio")
    audio = None if a is None else Audio(np.asarray(a, dtype=np.float32),
                                         int(arr["audio_hz"] if audio_hz is None else audio_hz))
    p = get("pose")  # float32 on the wire: converted once here, then sliced (a float64 slice converts no more)
    pose = None if p is None else Pose(*_split64(p, 3))
    m = get("imu")
    imu = None if m is None else Imu(*_split64(m, 3))
    h = get("hands")
    hands = None if h is None else Hands(h, arr["hands_valid"] if "hands_valid" in arr else np.ones(2, bool))
    li = get("lighting")
    lighting = None
    if li is not None:
        li = np.asarray(li).tolist()
        lighting = LightingState(float(li[0]), float(li[1]), float(li[2]), bool(li[3] > 0.5))
    return gaze, audio, pose, imu, hands, lighting


def label_names(labels: Any) -> dict[str, str]:
    """task -> class name, from names or class indices."""
    if type(labels) is not dict:
        labels = dict(labels)
    if all(type(v) is str for v in labels.values()):
        return labels
    return {t: v if isinstance(v, str) else TASKS[t].classes[int(v)] for t, v in labels.items()}


def arrays_to_frame(arr: dict[str, Any], *, device_id: str, user_id: str, profile: str, step: int,
                    sim_time_s: float, labels: Any = None, **meta: Any) -> DeviceFrame:
    """Inverse of :func:`frame_to_arrays` (labels given as indices or names; ``labels=`` overrides
    ``arr["labels"]``)."""
    gaze, audio, pose, imu, hands, lighting = records_from_arrays(arr)
    get = arr.get
    return DeviceFrame(
        device_id=device_id, user_id=user_id, profile=profile, step=step, sim_time_s=sim_time_s,
        rgb=get("rgb"), depth_m=get("depth_m"), segmentation=get("segmentation"), gaze=gaze,
        audio=audio, head_pose=pose, imu=imu, hands=hands, lighting=lighting,
        labels=label_names(get("labels", {}) if labels is None else labels), **meta,
    )
