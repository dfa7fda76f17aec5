"""The frame contract: one validated :class:`DeviceFrame` per device per simulation step.

Every backend (embedded MuJoCo scene, Unity over ML-Agents, ZeroMQ streams, Omniverse) yields exactly this
record, so agents and federation cannot tell where a frame came from.

Units and frames of reference (the one place they are defined)
--------------------------------------------------------------
* **World frame**: right-handed, metres, **z up** (MuJoCo's convention); the floor is z = 0.
* **Head frame** (the device's view space, as OpenXR's ``XR_REFERENCE_SPACE_TYPE_VIEW``): origin between the eyes,
  **+x right, +y up, -z forward** (the direction the head faces), metres. Right-handed, so ``head_pose`` is a
  proper rotation; it is also MuJoCo's and OpenGL's camera frame.
* ``rgb``: ``uint8`` H x W x 3, sRGB, row 0 at the top of the image.
* ``depth_m``: ``float32`` H x W, metric depth **along the camera's optical axis** (not ray length), metres;
  ``inf`` where nothing was hit within the far plane.
* ``segmentation``: ``int32`` H x W, object id per pixel (index into the scenario's object list), -1 for
  structure (walls, floor, avatars) and background.
* gaze angles in **radians in the head frame**: ``yaw_rad = atan2(x, -z)`` (positive to the right),
  ``pitch_rad = atan2(y, -z)`` (positive up) -- the projections of the gaze ray on the horizontal and vertical planes
  of the head, as Aria's ``yaw_rads_cpf``/``pitch_rads_cpf`` (whose frame is mirrored but whose angles are read the
  same way); ``origin_m`` is the
  cyclopean eye origin in the head frame; ``vergence_depth_m`` the distance to the fixated point;
  ``pupil_diameter_mm`` in millimetres.
* ``audio.samples``: ``float32`` [channels, samples] in pascals-relative units (full scale 1.0), covering exactly
  the step interval ``[sim_time_s - dt, sim_time_s)`` at ``sample_rate_hz``; channel order follows the device's
  microphone array (``mic_positions_m`` in the head frame).
* ``head_pose``: world position (m) and orientation as a unit quaternion ``(w, x, y, z)`` rotating head-frame
  vectors into the world frame.
* ``imu``: specific force ``linear_acceleration_mps2`` (m/s^2, includes gravity reaction, head frame) and
  ``angular_velocity_radps`` (rad/s, head frame).
* ``hands.joints_m``: [2, 26, 3] OpenXR XR_EXT_hand_tracking joints (left, right) in the **head frame**, metres;
  ``hands.valid``: [2] bool (hand tracked and in view).
* ``lighting``: ``illuminance_lux`` at the avatar's room, ``color_temperature_k`` in kelvin, ``intensity``
  relative to the scenario's nominal 1.0.
* times: ``sim_time_s`` simulated seconds at the *end* of the step, ``step`` integer step index,
  ``wall_time_ns`` host clock when the frame was produced (for latency measurement only).

A modality the device lacks, or one that is dropped right now (mic muted, eye tracking lost, camera occluded),
is **None** -- never zeros posing as data. Labels are class names (see :mod:`bridge.tasks`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from .errors import FrameValidationError
from .tasks import MODALITIES, TASKS

__all__ = [
    "Gaze",
    "Audio",
    "Pose",
    "Imu",
    "Hands",
    "LightingState",
    "DeviceFrame",
    "NUM_HAND_JOINTS",
    "quat_to_matrix",
    "MODALITY_ATTR",
]

NUM_HAND_JOINTS = 26


def _vec(name: str, value: Any, n: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n,):
        raise FrameValidationError(name, f"{n} floats", f"shape {arr.shape}")
    values = arr.tolist()
    # A finite sum proves every value finite (NaN and inf propagate through a Python float sum, which never warns);
    # a non-finite one may be an overflow of huge values, so it is decided value by value. Faster than numpy here.
    if not math.isfinite(sum(values)) and not all(map(math.isfinite, values)):
        raise FrameValidationError(name, "finite values", values)
    return arr


def _finite(name: str, value: Any, lo: float = -math.inf, hi: float = math.inf) -> float:
    if type(value) is float and lo <= value <= hi and math.isfinite(value):  # the common case, checked first
        return value
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise FrameValidationError(name, "a number", repr(value)) from None
    if not math.isfinite(v) or v < lo or v > hi:
        raise FrameValidationError(name, f"a finite number in [{lo}, {hi}]", v)
    return v


_CLASSES: dict[str, frozenset[str]] = {name: frozenset(task.classes) for name, task in TASKS.items()}

# The records below are frozen dataclasses whose ``__init__`` is written out: it validates every field and stores
# them with one ``__dict__.update`` (what the generated ``__init__`` does one ``object.__setattr__`` at a time). One
# of each is built for every frame of every device, so construction is on the streaming hot path. ``replace()``,
# ``fields()``, equality and ``repr`` are the dataclass ones.
_HALF_PI = math.pi / 2


@dataclass(frozen=True, init=False)
class Gaze:
    """One eye-tracker sample in the head frame (see module docstring for conventions)."""

    yaw_rad: float
    pitch_rad: float
    origin_m: np.ndarray  # (3,) head frame
    vergence_depth_m: float
    pupil_diameter_mm: float
    valid: bool
    confidence: float  # [0, 1]

    def __init__(self, yaw_rad: float, pitch_rad: float, origin_m: Any, vergence_depth_m: float,
                 pupil_diameter_mm: float, valid: bool, confidence: float) -> None:
        if (type(yaw_rad) is float and -_HALF_PI <= yaw_rad <= _HALF_PI and type(pitch_rad) is float
                and -_HALF_PI <= pitch_rad <= _HALF_PI and type(vergence_depth_m) is float
                and 0.0 <= vergence_depth_m <= 1e4 and type(pupil_diameter_mm) is float
                and 1.0 <= pupil_diameter_mm <= 9.0 and type(confidence) is float and 0.0 <= confidence <= 1.0):
            # every bound is finite, so these comparisons alone rule out NaN and inf (the common case, one test)
            self.__dict__.update(yaw_rad=yaw_rad, pitch_rad=pitch_rad, origin_m=_vec("gaze.origin_m", origin_m, 3),
                                 vergence_depth_m=vergence_depth_m, pupil_diameter_mm=pupil_diameter_mm,
                                 valid=bool(valid), confidence=confidence)
            return
        self.__dict__.update(
            yaw_rad=_finite("gaze.yaw_rad", yaw_rad, -_HALF_PI, _HALF_PI),
            pitch_rad=_finite("gaze.pitch_rad", pitch_rad, -_HALF_PI, _HALF_PI),
            origin_m=_vec("gaze.origin_m", origin_m, 3),
            vergence_depth_m=_finite("gaze.vergence_depth_m", vergence_depth_m, 0.0, 1e4),
            pupil_diameter_mm=_finite("gaze.pupil_diameter_mm", pupil_diameter_mm, 1.0, 9.0),
            valid=bool(valid),
            confidence=_finite("gaze.confidence", confidence, 0.0, 1.0),
        )

    def direction_head(self) -> np.ndarray:
        """Unit gaze direction in the head frame (-z forward)."""
        v = np.array([math.tan(self.yaw_rad), math.tan(self.pitch_rad), -1.0])
        return v / np.linalg.norm(v)


@dataclass(frozen=True, init=False)
class Audio:
    """Microphone-array audio covering exactly one step interval."""

    samples: np.ndarray  # [channels, samples] float32
    sample_rate_hz: int

    def __init__(self, samples: np.ndarray, sample_rate_hz: int) -> None:
        s = samples
        if not isinstance(s, np.ndarray) or s.dtype != np.float32 or s.ndim != 2:
            raise FrameValidationError(
                "audio.samples", "float32 array [channels, samples]",
                f"{type(s).__name__} {getattr(s, 'dtype', '')} ndim={getattr(s, 'ndim', '?')}",
            )
        if s.shape[0] < 1 or s.shape[1] < 1:
            raise FrameValidationError("audio.samples", "at least 1 channel and 1 sample", s.shape)
        if not np.isfinite(s).all():
            raise FrameValidationError("audio.samples", "finite values", "NaN/inf present")
        rate = int(sample_rate_hz)
        if rate < 1000 or rate > 192_000:
            raise FrameValidationError("audio.sample_rate_hz", "an integer in [1000, 192000]", rate)
        self.__dict__.update(samples=s, sample_rate_hz=rate)

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / self.sample_rate_hz

    @property
    def rms(self) -> np.ndarray:
        """Per-channel RMS level (full scale 1.0)."""
        return np.sqrt(np.mean(self.samples.astype(np.float64) ** 2, axis=1))


@dataclass(frozen=True, init=False)
class Pose:
    """Head pose: world position (m) and unit quaternion (w, x, y, z) head -> world."""

    position_m: np.ndarray
    orientation_wxyz: np.ndarray

    def __init__(self, position_m: Any, orientation_wxyz: Any) -> None:
        p = _vec("head_pose.position_m", position_m, 3)
        q = _vec("head_pose.orientation_wxyz", orientation_wxyz, 4)
        n = math.hypot(*q.tolist())
        if abs(n - 1.0) > 1e-3:
            raise FrameValidationError("head_pose.orientation_wxyz", "a unit quaternion (norm 1 +- 1e-3)", n)
        self.__dict__.update(position_m=p, orientation_wxyz=q / n)

    def rotation(self) -> np.ndarray:
        """3x3 rotation matrix head frame -> world frame."""
        return quat_to_matrix(self.orientation_wxyz)


@dataclass(frozen=True, init=False)
class Imu:
    """Head-mounted IMU sample in the head frame."""

    linear_acceleration_mps2: np.ndarray
    angular_velocity_radps: np.ndarray

    def __init__(self, linear_acceleration_mps2: Any, angular_velocity_radps: Any) -> None:
        self.__dict__.update(
            linear_acceleration_mps2=_vec("imu.linear_acceleration_mps2", linear_acceleration_mps2, 3),
            angular_velocity_radps=_vec("imu.angular_velocity_radps", angular_velocity_radps, 3),
        )


@dataclass(frozen=True, init=False)
class Hands:
    """OpenXR-style hand joints (left, right) in the head frame."""

    joints_m: np.ndarray  # [2, 26, 3] float32
    valid: np.ndarray  # [2] bool

    def __init__(self, joints_m: Any, valid: Any) -> None:
        j = np.asarray(joints_m, dtype=np.float32)
        if j.shape != (2, NUM_HAND_JOINTS, 3):
            raise FrameValidationError("hands.joints_m", f"[2, {NUM_HAND_JOINTS}, 3] floats", j.shape)
        if not np.isfinite(j).all():
            raise FrameValidationError("hands.joints_m", "finite values", "NaN/inf present")
        v = np.asarray(valid, dtype=bool)
        if v.shape != (2,):
            raise FrameValidationError("hands.valid", "[2] bools (left, right)", v.shape)
        self.__dict__.update(joints_m=j, valid=v)


@dataclass(frozen=True, init=False)
class LightingState:
    """Lighting at the avatar's location at this step."""

    intensity: float  # relative to nominal 1.0
    illuminance_lux: float
    color_temperature_k: float
    lights_on: bool = True

    def __init__(self, intensity: float, illuminance_lux: float, color_temperature_k: float,
                 lights_on: bool = True) -> None:
        if (type(intensity) is float and 0.0 <= intensity <= 100.0 and type(illuminance_lux) is float
                and 0.0 <= illuminance_lux <= 1e6 and type(color_temperature_k) is float
                and 1000.0 <= color_temperature_k <= 20000.0):  # finite bounds: no NaN/inf passes (common case)
            self.__dict__.update(intensity=intensity, illuminance_lux=illuminance_lux,
                                 color_temperature_k=color_temperature_k, lights_on=bool(lights_on))
            return
        self.__dict__.update(
            intensity=_finite("lighting.intensity", intensity, 0.0, 100.0),
            illuminance_lux=_finite("lighting.illuminance_lux", illuminance_lux, 0.0, 1e6),
            color_temperature_k=_finite("lighting.color_temperature_k", color_temperature_k, 1000, 20000),
            lights_on=bool(lights_on),
        )


@dataclass(frozen=True, init=False)
class DeviceFrame:
    """Everything one device observed during one step, plus ground truth. Validated on creation."""

    device_id: str
    user_id: str
    profile: str
    step: int
    sim_time_s: float
    wall_time_ns: int = 0
    rgb: np.ndarray | None = None  # [H, W, 3] uint8
    depth_m: np.ndarray | None = None  # [H, W] float32, along optical axis
    segmentation: np.ndarray | None = None  # [H, W] int32 object ids, -1 = structure/background
    gaze: Gaze | None = None
    audio: Audio | None = None
    head_pose: Pose | None = None
    imu: Imu | None = None
    hands: Hands | None = None
    lighting: LightingState | None = None
    camera_fov_y_deg: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    active_tasks: tuple[str, ...] = ()
    room: str | None = None
    events: tuple[str, ...] = ()  # modality events in force, e.g. ("mic_muted",)

    def __init__(self, device_id: str, user_id: str, profile: str, step: int, sim_time_s: float,
                 wall_time_ns: int = 0, rgb: np.ndarray | None = None, depth_m: np.ndarray | None = None,
                 segmentation: np.ndarray | None = None, gaze: Gaze | None = None, audio: Audio | None = None,
                 head_pose: Pose | None = None, imu: Imu | None = None, hands: Hands | None = None,
                 lighting: LightingState | None = None, camera_fov_y_deg: float | None = None,
                 labels: Mapping[str, str] | None = None, active_tasks: Any = (), room: str | None = None,
                 events: Any = ()) -> None:
        if not isinstance(device_id, str) or not device_id:
            raise FrameValidationError("device_id", "a non-empty string", repr(device_id))
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise FrameValidationError("step", "a non-negative integer", repr(step))
        sim_time_s = _finite("sim_time_s", sim_time_s, 0.0)
        shape_hw: tuple[int, ...] | None = None
        if rgb is not None:
            r = rgb
            if not isinstance(r, np.ndarray) or r.dtype != np.uint8 or r.ndim != 3 or r.shape[2] != 3:
                raise FrameValidationError(
                    "rgb", "uint8 array [H, W, 3]", f"{getattr(r, 'dtype', type(r).__name__)} {getattr(r, 'shape', '')}"
                )
            shape_hw = r.shape[:2]
        if depth_m is not None:
            d = depth_m
            if not isinstance(d, np.ndarray) or d.dtype != np.float32 or d.ndim != 2:
                raise FrameValidationError(
                    "depth_m", "float32 array [H, W] in metres", f"{getattr(d, 'dtype', type(d).__name__)} {getattr(d, 'shape', '')}"
                )
            if d.size and not d.min() >= 0:  # NaN propagates through min, and NaN >= 0 is False
                raise FrameValidationError("depth_m", "non-negative metres (inf = no hit)", "NaN or negative values")
            if shape_hw is not None and d.shape != shape_hw:
                raise FrameValidationError("depth_m", f"the rgb image size {shape_hw}", d.shape)
            shape_hw = shape_hw or d.shape
        if segmentation is not None:
            s = segmentation
            if not isinstance(s, np.ndarray) or s.dtype != np.int32 or s.ndim != 2:
                raise FrameValidationError("segmentation", "int32 array [H, W]", getattr(s, "dtype", type(s).__name__))
            if shape_hw is not None and s.shape != shape_hw:
                raise FrameValidationError("segmentation", f"the image size {shape_hw}", s.shape)
        if not ((gaze is None or type(gaze) is Gaze) and (audio is None or type(audio) is Audio)
                and (head_pose is None or type(head_pose) is Pose) and (imu is None or type(imu) is Imu)
                and (hands is None or type(hands) is Hands)
                and (lighting is None or type(lighting) is LightingState)):  # else: a subclass, or an error
            for name, value, cls in (("gaze", gaze, Gaze), ("audio", audio, Audio), ("head_pose", head_pose, Pose),
                                     ("imu", imu, Imu), ("hands", hands, Hands), ("lighting", lighting, LightingState)):
                if value is not None and not isinstance(value, cls):
                    raise FrameValidationError(name, f"{cls.__name__} or None", type(value).__name__)
        labels = {} if labels is None else dict(labels)
        for task, label in labels.items():
            if label not in _CLASSES.get(task, ()):
                if task not in TASKS:
                    raise FrameValidationError(f"labels[{task!r}]", f"a task in {sorted(TASKS)}", task)
                raise FrameValidationError(f"labels[{task!r}]", f"one of {TASKS[task].classes}", repr(label))
        active_tasks = tuple(active_tasks)
        for t in active_tasks:
            if t not in TASKS:
                raise FrameValidationError("active_tasks", f"tasks in {sorted(TASKS)}", t)
        self.__dict__.update(
            device_id=device_id, user_id=user_id, profile=profile, step=int(step), sim_time_s=sim_time_s,
            wall_time_ns=wall_time_ns, rgb=rgb, depth_m=depth_m, segmentation=segmentation, gaze=gaze, audio=audio,
            head_pose=head_pose, imu=imu, hands=hands, lighting=lighting, camera_fov_y_deg=camera_fov_y_deg,
            labels=labels, active_tasks=active_tasks, room=room, events=tuple(events),
        )

    # -- conveniences ---------------------------------------------------------------------------------
    def present_modalities(self) -> tuple[str, ...]:
        """Modalities actually carried by this frame (in :data:`bridge.tasks.MODALITIES` order)."""
        return tuple(m for m in MODALITIES if getattr(self, MODALITY_ATTR[m]) is not None)

    def without(self, *modalities: str) -> DeviceFrame:
        """A copy with the named modalities absent (used by modality-dropout wrappers and device filters)."""
        attr = {**MODALITY_ATTR, "segmentation": "segmentation"}
        unknown = [m for m in modalities if m not in attr]
        if unknown:
            raise FrameValidationError("modalities", f"names in {sorted(attr)}", unknown)
        changes: dict[str, Any] = {attr[m]: None for m in modalities}
        return replace(self, **changes)

    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))


MODALITY_ATTR: dict[str, str] = {
    "rgb": "rgb", "depth": "depth_m", "gaze": "gaze", "audio": "audio", "pose": "head_pose", "imu": "imu",
    "hands": "hands",
}


def quat_to_matrix(q_wxyz: np.ndarray) -> np.ndarray:
    """Rotation matrix of a unit quaternion (w, x, y, z)."""
    w, x, y, z = (float(c) for c in q_wxyz)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )
