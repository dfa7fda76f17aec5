"""Procedural hands of the embedded scene: OpenXR XR_EXT_hand_tracking joints for the ten XR gestures.

The gesture label must be learnable from the hand joints and the rendered images *only*, so each gesture is a
distinct finger configuration, hand orientation and wrist trajectory (a pinch closes thumb and index tips; a
swipe translates an open hand sideways; ...) and nothing else in the scene depends on it. Between gestures
both hands hang at the sides, outside every device's view.

Kinematics: a right hand is built in a *hand frame* (x towards the little finger, y along the extended
fingers, z the direction the palm faces; origin at the wrist) from bone lengths of an adult hand and
per-finger flexion angles; a pose then rotates it into the head frame (+x right, +y up, +z forward, metres)
around its palm joint. A left hand is the mirror image (x -> -x) of a right hand doing the mirrored gesture,
so "swipe_left" moves either hand towards -x. Joint order and names follow XR_EXT_hand_tracking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import BridgeError
from ..frame import NUM_HAND_JOINTS
from ..tasks import GESTURES

__all__ = [
    "HandModelError",
    "JOINT_NAMES",
    "BONES",
    "hand_pose",
    "hand_capsules",
    "VIEW_SEGMENTS",
    "HandAnimator",
]

_FINGERS = ("index", "middle", "ring", "little")
JOINT_NAMES: tuple[str, ...] = (
    "palm",
    "wrist",
    "thumb_metacarpal",
    "thumb_proximal",
    "thumb_distal",
    "thumb_tip",
    *(f"{f}_{j}" for f in _FINGERS for j in ("metacarpal", "proximal", "intermediate", "distal", "tip")),
)
assert len(JOINT_NAMES) == NUM_HAND_JOINTS

_PALM, _WRIST = 0, 1
_THUMB = (2, 3, 4, 5)
_FINGER_JOINTS = {f: tuple(6 + 5 * i + j for j in range(5)) for i, f in enumerate(_FINGERS)}

#: Parent -> child joint pairs along the bones (wrist to each metacarpal, then down each finger).
BONES: tuple[tuple[int, int], ...] = (
    (_WRIST, _THUMB[0]),
    (_THUMB[0], _THUMB[1]),
    (_THUMB[1], _THUMB[2]),
    (_THUMB[2], _THUMB[3]),
    *(
        pair
        for f in _FINGERS
        for pair in (
            (_WRIST, _FINGER_JOINTS[f][0]),
            (_FINGER_JOINTS[f][0], _FINGER_JOINTS[f][1]),
            (_FINGER_JOINTS[f][1], _FINGER_JOINTS[f][2]),
            (_FINGER_JOINTS[f][2], _FINGER_JOINTS[f][3]),
            (_FINGER_JOINTS[f][3], _FINGER_JOINTS[f][4]),
        )
    ),
)

# ---------------------------------------------------------------------------------------------- hand geometry
# Right hand, hand frame, scale 1 (an adult hand of ~19 cm): metacarpal bases, knuckles (MCP), phalanges.
_METACARPAL_BASE = {
    "index": (-0.012, 0.022, 0.0),
    "middle": (0.000, 0.024, 0.0),
    "ring": (0.011, 0.022, 0.0),
    "little": (0.021, 0.019, 0.0),
}
_KNUCKLE = {
    "index": (-0.024, 0.090, 0.0),
    "middle": (-0.004, 0.094, 0.0),
    "ring": (0.015, 0.089, 0.0),
    "little": (0.032, 0.079, 0.0),
}
_PHALANX_M = {  # proximal, intermediate, distal (to the tip)
    "index": (0.040, 0.024, 0.021),
    "middle": (0.044, 0.028, 0.022),
    "ring": (0.041, 0.027, 0.021),
    "little": (0.033, 0.019, 0.019),
}
_THUMB_BASE = (-0.020, 0.024, 0.010)
_THUMB_BONES_M = (0.042, 0.032, 0.027)  # metacarpal, proximal, distal (to the tip)
_THUMB_FLEX_TOWARD = np.array([0.5, 0.0, 0.866])  # thumb flexion curls towards the palm and the little finger
_BONE_RADIUS_M = {"thumb": 0.0095, "index": 0.0085, "middle": 0.0088, "ring": 0.0083, "little": 0.0073}
_PALM_RADIUS_M = 0.012


@dataclass(frozen=True)
class _Fingers:
    """Finger angles (rad): ``flex[f]`` = MCP, PIP, DIP flexion; ``spread[f]`` = abduction (to the little).

    ``thumb`` = (abduction from the index towards the radial side, opposition towards the palm, MCP flexion,
    IP flexion).
    """

    flex: dict[str, tuple[float, ...]]
    spread: dict[str, float]
    thumb: tuple[float, ...]


def _fingers(
    index: tuple[float, float, float],
    middle: tuple[float, float, float],
    ring: tuple[float, float, float],
    little: tuple[float, float, float],
    thumb: tuple[float, float, float, float],
    spread: float = 0.0,
) -> _Fingers:
    # Spread fans the fingers around the middle finger (index towards the thumb, little away).
    return _Fingers(
        flex={"index": index, "middle": middle, "ring": ring, "little": little},
        spread={"index": -0.12 * spread, "middle": 0.0, "ring": 0.1 * spread, "little": 0.22 * spread},
        thumb=thumb,
    )


_OPEN = _fingers(
    (0.05, 0.05, 0.03),
    (0.05, 0.05, 0.03),
    (0.05, 0.05, 0.03),
    (0.05, 0.05, 0.03),
    thumb=(0.75, 0.2, 0.1, 0.1),
    spread=1.0,
)
_RELAXED = _fingers(
    (0.35, 0.45, 0.25),
    (0.4, 0.5, 0.3),
    (0.45, 0.55, 0.3),
    (0.5, 0.6, 0.3),
    thumb=(0.45, 0.45, 0.25, 0.2),
    spread=0.3,
)
_CURLED = (1.45, 1.65, 0.95)
_THUMB_TUCKED = (0.35, -0.05, 1.75, 0.0)  # solved so the thumb lies across the curled index and middle
_FIST = _fingers(_CURLED, _CURLED, _CURLED, _CURLED, thumb=_THUMB_TUCKED)
_POINT = _fingers((0.0, 0.02, 0.02), _CURLED, _CURLED, _CURLED, thumb=_THUMB_TUCKED)
_THUMBS_UP = _fingers(_CURLED, _CURLED, _CURLED, _CURLED, thumb=(1.35, 0.05, 0.0, 0.0))
# Thumb and index angles solved numerically so the two tips meet (~8 mm apart: the pads touch).
_PINCH = _fingers(
    (0.80, 0.78, 0.42),
    (0.35, 0.4, 0.2),
    (0.4, 0.45, 0.25),
    (0.45, 0.5, 0.25),
    thumb=(0.17, 0.60, 0.07, 0.04),
    spread=0.3,
)


def _blend_fingers(a: _Fingers, b: _Fingers, w: float) -> _Fingers:
    return _Fingers(
        flex={f: _lerp(a.flex[f], b.flex[f], w) for f in _FINGERS},
        spread={f: a.spread[f] + (b.spread[f] - a.spread[f]) * w for f in _FINGERS},
        thumb=_lerp(a.thumb, b.thumb, w),
    )


def _lerp(a: tuple[float, ...], b: tuple[float, ...], w: float) -> tuple[float, ...]:
    return tuple(x + (y - x) * w for x, y in zip(a, b, strict=True))


def _chain(start: np.ndarray, d0: np.ndarray, bend: np.ndarray, lengths, angles) -> list[np.ndarray]:
    """Joints of a planar chain: segment k points along cos(phi_k) d0 + sin(phi_k) bend, phi cumulative."""
    out, p, phi = [], start, 0.0
    for length, angle in zip(lengths, angles, strict=True):
        phi += angle
        p = p + length * (math.cos(phi) * d0 + math.sin(phi) * bend)
        out.append(p)
    return out


def _hand_local(fingers: _Fingers) -> np.ndarray:
    """[26, 3] right-hand joints in the hand frame (scale 1)."""
    j = np.zeros((NUM_HAND_JOINTS, 3))
    z = np.array([0.0, 0.0, 1.0])
    for f in _FINGERS:
        idx = _FINGER_JOINTS[f]
        j[idx[0]] = _METACARPAL_BASE[f]
        knuckle = np.array(_KNUCKLE[f])
        j[idx[1]] = knuckle
        a = fingers.spread[f]
        d0 = np.array([math.sin(a), math.cos(a), 0.0])
        j[idx[2]], j[idx[3]], j[idx[4]] = _chain(knuckle, d0, z, _PHALANX_M[f], fingers.flex[f])
    abduction, opposition, mcp, ip = fingers.thumb
    base = np.array(_THUMB_BASE)
    radial = np.array([-math.sin(abduction), math.cos(abduction), 0.0])
    t0 = math.cos(opposition) * radial + math.sin(opposition) * z
    bend = _THUMB_FLEX_TOWARD - (_THUMB_FLEX_TOWARD @ t0) * t0
    bend /= np.linalg.norm(bend)
    j[_THUMB[0]] = base
    j[_THUMB[1]] = base + _THUMB_BONES_M[0] * t0
    j[_THUMB[2]], j[_THUMB[3]] = _chain(j[_THUMB[1]], t0, bend, _THUMB_BONES_M[1:], (mcp, ip))
    j[_PALM] = 0.5 * (j[_FINGER_JOINTS["middle"][0]] + j[_FINGER_JOINTS["middle"][1]])
    return j


# ---------------------------------------------------------------------------------------------- rotations
def _frame(finger_dir, palm_normal) -> np.ndarray:
    """Rotation whose columns are the hand frame's axes in the head frame (y = fingers, z = palm normal)."""
    y = np.asarray(finger_dir, dtype=np.float64)
    y = y / np.linalg.norm(y)
    z = np.asarray(palm_normal, dtype=np.float64)
    z = z - (z @ y) * y
    z = z / np.linalg.norm(z)
    return np.column_stack([np.cross(y, z), y, z])


def _axis_angle(axis, angle_rad: float) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1.0 - math.cos(angle_rad)) * (k @ k)


def _mat_to_quat(m: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a rotation matrix (Shepperd's method, numerically safe for every angle)."""
    t = np.trace(m)
    if t > 0.0:
        s = 2.0 * math.sqrt(t + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1e-12, 1.0 + m[i, i] - m[j, j] - m[k, k]))
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    quat = np.array(q)
    return quat / np.linalg.norm(quat)


def _quat_to_mat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def _slerp(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    qa, qb = _mat_to_quat(a), _mat_to_quat(b)
    dot = float(qa @ qb)
    if dot < 0.0:
        qb, dot = -qb, -dot
    if dot > 0.9995:
        q = qa + (qb - qa) * w
    else:
        theta = math.acos(dot)
        q = (math.sin((1.0 - w) * theta) * qa + math.sin(w * theta) * qb) / math.sin(theta)
    return _quat_to_mat(q / np.linalg.norm(q))


# ---------------------------------------------------------------------------------------------- gestures
@dataclass(frozen=True)
class _Pose:
    """A right hand's pose: palm joint position (head frame, m), hand-frame rotation, finger angles."""

    palm_m: np.ndarray
    rotation: np.ndarray
    fingers: _Fingers


def _blend_pose(a: _Pose, b: _Pose, w: float) -> _Pose:
    return _Pose(
        a.palm_m + (b.palm_m - a.palm_m) * w,
        _slerp(a.rotation, b.rotation, w),
        _blend_fingers(a.fingers, b.fingers, w),
    )


def _smooth(u: float) -> float:
    u = min(1.0, max(0.0, u))
    return u * u * (3.0 - 2.0 * u)


def _ramp(phase: float, start: float, end: float) -> float:
    return _smooth((phase - start) / (end - start))


_RAISED_PALM_M = np.array([0.07, -0.10, 0.36])  # slightly below eye level, ~17 deg off the view axis


def _swipe(phase: float, x_from: float, x_to: float, palm_normal) -> _Pose:
    # Stroke from x_from to x_to, dwell, then a quick return pulled back to the body with relaxed fingers.
    stroke, back = _ramp(phase, 0.1, 0.55), _ramp(phase, 0.82, 1.0)
    x = x_from + (x_to - x_from) * stroke + (x_from - x_to) * back
    pull = math.sin(math.pi * back)
    palm = np.array([x, -0.06, 0.37 - 0.06 * pull])
    return _Pose(palm, _frame((0.0, 0.5, 1.0), palm_normal), _blend_fingers(_OPEN, _RELAXED, pull))


def _right_hand_pose(gesture: str, phase: float) -> _Pose:
    """The right hand's pose for ``gesture`` at ``phase`` in [0, 1)."""
    two_pi = 2.0 * math.pi
    if gesture == "none":  # hanging at the side, palm towards the thigh, swaying with the gait/breathing
        palm = np.array(
            [0.20 + 0.005 * math.sin(two_pi * phase), -0.62, 0.02 + 0.02 * math.sin(two_pi * phase)]
        )
        return _Pose(palm, _frame((0.0, -1.0, 0.05), (-1.0, 0.0, 0.0)), _RELAXED)
    if gesture == "pinch":  # fingers up, palm medial: the thumb-index ring faces the camera
        close = _ramp(phase, 0.0, 0.2) * (1.0 - _ramp(phase, 0.8, 1.0))
        return _Pose(
            _RAISED_PALM_M.copy(),
            _frame((0.0, 1.0, 0.2), (-1.0, 0.0, 0.0)),
            _blend_fingers(_RELAXED, _PINCH, close),
        )
    if gesture == "tap":  # index up, hand pushing forward and back like pressing a button in the air
        push = math.sin(math.pi * phase) ** 2
        fingers = _blend_fingers(
            _POINT, _fingers((0.3, 0.4, 0.2), _CURLED, _CURLED, _CURLED, _THUMB_TUCKED), push
        )
        palm = _RAISED_PALM_M + np.array([-0.03, 0.03, 0.05 * push])
        return _Pose(palm, _frame((0.0, 1.0, 0.35), (0.0, -0.35, 1.0)), fingers)
    if gesture == "grab":  # palm down, an open hand closing into a fist and pulling back
        close = _ramp(phase, 0.0, 0.35)
        palm = _RAISED_PALM_M + np.array([0.0, -0.04, 0.04 - 0.04 * _ramp(phase, 0.4, 0.8)])
        return _Pose(palm, _frame((0.1, 0.3, 1.0), (0.0, -1.0, 0.3)), _blend_fingers(_OPEN, _FIST, close))
    if gesture == "point":  # index across the view, forward-left, palm down
        return _Pose(
            _RAISED_PALM_M + np.array([0.04, 0.0, 0.0]), _frame((-0.6, 0.15, 1.0), (0.0, -1.0, 0.0)), _POINT
        )
    if gesture == "open_palm":  # all fingers spread, palm facing forward
        palm = _RAISED_PALM_M + np.array([0.0, 0.005 * math.sin(two_pi * phase), 0.0])
        return _Pose(palm, _frame((0.0, 1.0, 0.25), (0.0, -0.25, 1.0)), _OPEN)
    if gesture == "swipe_left":
        return _swipe(phase, 0.16, -0.08, (-1.0, 0.0, 0.0))
    if gesture == "swipe_right":
        return _swipe(phase, -0.08, 0.16, (1.0, 0.0, 0.0))
    if gesture == "thumbs_up":  # fist with knuckles forward, palm medial, thumb up
        palm = _RAISED_PALM_M + np.array([0.0, 0.01 + 0.006 * math.sin(two_pi * phase), 0.0])
        return _Pose(palm, _frame((0.0, 0.0, 1.0), (-1.0, 0.0, 0.0)), _THUMBS_UP)
    if gesture == "wave":  # open palm raised beside the face, pivoting side to side twice per cycle
        swing = math.sin(2.0 * two_pi * phase)
        rot = _axis_angle((0.0, 0.0, 1.0), -0.45 * swing) @ _frame((0.0, 1.0, 0.1), (0.0, 0.0, 1.0))
        return _Pose(np.array([0.11 + 0.04 * swing, -0.03, 0.41]), rot, _OPEN)
    raise HandModelError(f"gesture: expected one of {', '.join(GESTURES)}, got {gesture!r}")


_MIRRORED = {"swipe_left": "swipe_right", "swipe_right": "swipe_left"}
_MIRROR_X = np.diag([-1.0, 1.0, 1.0])


def _joints(pose: _Pose, scale: float) -> np.ndarray:
    local = _hand_local(pose.fingers) * scale
    return (local - local[_PALM]) @ pose.rotation.T + pose.palm_m


def _check_side(side: str) -> None:
    if side not in ("left", "right"):
        raise HandModelError(f"side: expected 'left' or 'right', got {side!r}")


class HandModelError(BridgeError, ValueError):
    """A hand-model setting or input is invalid; the message names it, what was expected and what arrived."""


def hand_pose(gesture: str, phase: float, side: str, *, scale: float = 1.0) -> np.ndarray:
    """[26, 3] XR_EXT_hand_tracking joints (head frame, metres) of one raised hand performing ``gesture``.

    ``phase`` in [0, 1) is the position within one gesture cycle; ``"none"`` gives the hand hanging at the
    side. A left hand mirrors a right hand performing the mirrored gesture, so swipes keep their head-frame
    direction.
    """
    _check_side(side)
    if not math.isfinite(scale) or not 0.5 <= scale <= 1.5:
        raise HandModelError(f"scale: expected a number in [0.5, 1.5], got {scale!r}")
    phase = float(phase) % 1.0
    if side == "right":
        return _joints(_right_hand_pose(gesture, phase), scale)
    return _joints(_right_hand_pose(_MIRRORED.get(gesture, gesture), phase), scale) @ _MIRROR_X


#: The capsules an egocentric view draws per valid hand, ``((joint_a, joint_b), radius_m)``: 12 per hand (two per
#: finger, the thumb, the palm and the knuckle line). Software OpenGL pays per drawn geom, so the full skeleton of
#: :func:`hand_capsules` (35 bones and web) cost ~1 ms per frame; two segments per finger keep every gesture's shape
#: (curl, extension, pinch) at a third of that.
VIEW_SEGMENTS: tuple[tuple[tuple[int, int], float], ...] = (
    ((1, 12), 0.030), ((7, 22), 0.014),  # palm (wrist -> middle knuckle), knuckle line (index -> little)
    ((3, 4), 0.010), ((4, 5), 0.009),  # thumb
    *(((b + 1, b + 2), 0.009) for b in (6, 11, 16, 21)),  # each finger: proximal -> intermediate
    *(((b + 2, b + 4), 0.008) for b in (6, 11, 16, 21)),  # each finger: intermediate -> tip
)


def hand_capsules(joints_head: np.ndarray, valid: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Capsules (p0_head, p1_head, radius_m) that draw the valid hands: one per bone plus the palm's web.

    Radii follow an adult hand's finger widths, scaled by the hand's size measured from its joints (wrist to
    middle knuckle), so a small user's hand is thinner as well as shorter. Hands with ``valid`` False are not
    drawn: they hang outside the view, and drawing nothing keeps the gesture out of every image when no
    gesture is made.
    """
    joints = np.asarray(joints_head, dtype=np.float64)
    flags = np.asarray(valid, dtype=bool)
    if joints.shape != (2, NUM_HAND_JOINTS, 3) or not np.all(np.isfinite(joints)):
        raise HandModelError(
            f"joints_head: expected finite [2, {NUM_HAND_JOINTS}, 3], got shape {joints.shape}"
        )
    if flags.shape != (2,):
        raise HandModelError(f"valid: expected [2] bools (left, right), got shape {flags.shape}")
    nominal = float(np.linalg.norm(np.array(_KNUCKLE["middle"])))
    out: list[tuple[np.ndarray, np.ndarray, float]] = []
    for hand in range(2):
        if not flags[hand]:
            continue
        j = joints[hand]
        s = float(np.linalg.norm(j[_FINGER_JOINTS["middle"][1]] - j[_WRIST])) / nominal
        for a, b in BONES:
            name = "thumb" if b in _THUMB else JOINT_NAMES[b].split("_")[0]
            radius = _PALM_RADIUS_M if a == _WRIST and name != "thumb" else _BONE_RADIUS_M[name]
            out.append((j[a].copy(), j[b].copy(), radius * s))
        # The palm's web: knuckle line, metacarpal-base line and the thumb's web to the index knuckle.
        knuckles = [_FINGER_JOINTS[f][1] for f in _FINGERS]
        bases = [_FINGER_JOINTS[f][0] for f in _FINGERS]
        for row in (knuckles, bases):
            for a, b in zip(row[:-1], row[1:], strict=True):
                out.append((j[a].copy(), j[b].copy(), _PALM_RADIUS_M * s))
        for a, b in zip(bases, knuckles, strict=True):
            out.append((j[a].copy(), j[b].copy(), _PALM_RADIUS_M * s))
        out.append((j[_THUMB[1]].copy(), j[knuckles[0]].copy(), 0.7 * _PALM_RADIUS_M * s))
    return out


_RAISE_S = 0.2  # hand into view
_SWITCH_S = 0.15  # from one gesture to the next
_LOWER_S = 0.3  # back to the side


class HandAnimator:
    """Both hands of one user over time: the dominant hand raises, performs and lowers gestures.

    Per-user variation is drawn once from ``rng`` at construction (a personal signature kept through
    :meth:`reset`): hand size (``hand_scale``), where the hand is held, a small tilt, relaxed finger offsets
    and gesture speed. Each step adds a millimetre of physiological tremor. Changes of gesture (including to
    and from ``"none"``) blend the previous pose into the new one, so the hand takes ~0.2 s to rise into view
    and ~0.3 s to drop out of it.
    """

    def __init__(
        self,
        *,
        rng: np.random.Generator,
        handedness: str = "right",
        hand_scale: float = 1.0,
        gesture_duration_s: float = 1.2,
        fov_deg: tuple[float, float] = (90.0, 90.0),
        tremor_m: float = 0.001,
    ):
        if not isinstance(rng, np.random.Generator):
            raise HandModelError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
        if handedness not in ("left", "right"):
            raise HandModelError(f"handedness: expected 'left' or 'right', got {handedness!r}")
        for name, value, lo, hi in (
            ("hand_scale", hand_scale, 0.5, 1.5),
            ("gesture_duration_s", gesture_duration_s, 0.2, 10.0),
            ("tremor_m", tremor_m, 0.0, 0.01),
        ):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not lo <= value <= hi:
                raise HandModelError(f"{name}: expected a number in [{lo}, {hi}], got {value!r}")
        self.fov_deg = self._check_fov(fov_deg)
        self._rng = rng
        self.handedness = handedness
        self.hand_scale = float(hand_scale)
        self.gesture_duration_s = float(gesture_duration_s)
        self.tremor_m = float(tremor_m)
        # The personal signature.
        self._palm_offset_m = np.clip(rng.normal(0.0, 0.012, 3), -0.025, 0.025)
        axis = rng.normal(size=3)
        self._tilt = _axis_angle(axis, math.radians(float(np.clip(rng.normal(0.0, 4.0), -8.0, 8.0))))
        self._flex_offset = {
            f: tuple(float(v) for v in np.clip(rng.normal(0.0, 0.05, 3), -0.1, 0.1)) for f in _FINGERS
        }
        self._speed = float(rng.uniform(0.9, 1.1))
        self._sway_phase = float(rng.uniform(0.0, 1.0))
        self.reset()

    @staticmethod
    def _check_fov(fov_deg) -> tuple[float, float]:
        try:
            h, v = (float(x) for x in fov_deg)
        except (TypeError, ValueError):
            raise HandModelError(
                f"fov_deg: expected (horizontal, vertical) degrees, got {fov_deg!r}"
            ) from None
        if not (0.0 < h < 180.0 and 0.0 < v < 180.0):
            raise HandModelError(f"fov_deg: expected two angles in (0, 180) degrees, got {fov_deg!r}")
        return h, v

    def reset(self) -> None:
        """Both hands at the sides, no gesture under way."""
        self._time_s = 0.0
        self._gesture = "none"
        self._gesture_time_s = 0.0
        self._from: tuple[_Pose, _Pose] | None = None
        self._blend_time_s = 0.0
        self._blend_duration_s = 1.0
        self._current: tuple[_Pose, _Pose] = (self._pose("none", "left"), self._pose("none", "right"))
        self._hanging_cache: dict[tuple[int, int], np.ndarray] = {}

    def _hanging_key(self, i: int, gesture: str) -> tuple[int, int] | None:
        """Cache key of hand ``i``'s pose when it simply hangs (no gesture for it, no blend under way)."""
        side = ("left", "right")[i]
        if self._from is not None or (gesture != "none" and side == self.handedness):
            return None
        sway = (self._time_s / 4.0 + self._sway_phase + (0.5 if side == "left" else 0.0)) % 1.0
        return (i, int(sway * 64) % 64)

    def _personal(self, pose: _Pose, raised: bool) -> _Pose:
        if not raised:
            return pose
        flex = {
            f: tuple(a + b for a, b in zip(pose.fingers.flex[f], self._flex_offset[f], strict=True))
            if f != "index"
            else pose.fingers.flex[f]
            for f in _FINGERS
        }
        fingers = _Fingers(flex=flex, spread=pose.fingers.spread, thumb=pose.fingers.thumb)
        return _Pose(pose.palm_m + self._palm_offset_m, self._tilt @ pose.rotation, fingers)

    def _pose(self, gesture: str, side: str) -> _Pose:
        """This user's right-hand-frame pose of ``side`` (the left hand is mirrored when joints are made)."""
        if gesture != "none" and side == self.handedness:
            phase = (self._gesture_time_s * self._speed / self.gesture_duration_s) % 1.0
            g = _MIRRORED.get(gesture, gesture) if side == "left" else gesture
            return self._personal(_right_hand_pose(g, phase), raised=True)
        sway = (self._time_s / 4.0 + self._sway_phase + (0.5 if side == "left" else 0.0)) % 1.0
        return _right_hand_pose("none", sway)

    def step(
        self, dt_s: float, gesture: str, *, fov_deg: tuple[float, float] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Advance ``dt_s`` seconds with ``gesture`` being performed (``"none"``: hands down).

        Returns joints [2, 26, 3] float32 (left, right; head frame, m) and valid [2] bool: the hand's palm
        lies inside the camera's view (``fov_deg`` = horizontal, vertical, centred on +z; default: the
        constructor's).
        """
        dt = float(dt_s)
        if not math.isfinite(dt) or dt <= 0.0 or dt > 60.0:
            raise HandModelError(f"dt_s: expected a number in (0, 60] s, got {dt_s!r}")
        if gesture not in GESTURES:
            raise HandModelError(f"gesture: expected one of {', '.join(GESTURES)}, got {gesture!r}")
        fov = self.fov_deg if fov_deg is None else self._check_fov(fov_deg)
        if gesture != self._gesture:
            self._from = self._current
            self._blend_time_s = 0.0
            if self._gesture == "none":
                self._blend_duration_s = _RAISE_S
            elif gesture == "none":
                self._blend_duration_s = _LOWER_S
            else:
                self._blend_duration_s = _SWITCH_S
            self._gesture = gesture
            self._gesture_time_s = 0.0
        else:
            self._gesture_time_s += dt
        self._time_s += dt
        self._blend_time_s += dt
        target = (self._pose(gesture, "left"), self._pose(gesture, "right"))
        if self._from is not None and self._blend_time_s < self._blend_duration_s:
            w = _smooth(self._blend_time_s / self._blend_duration_s)
            target = (_blend_pose(self._from[0], target[0], w), _blend_pose(self._from[1], target[1], w))
        else:
            self._from = None
        self._current = target
        joints = np.empty((2, NUM_HAND_JOINTS, 3))
        for i, pose in enumerate(target):
            tremor = self._rng.normal(0.0, self.tremor_m, 3) if self.tremor_m > 0.0 else None
            key = self._hanging_key(i, gesture)
            if key is not None:
                # A hanging hand is a pure function of the sway phase: cache its joints per 1/64 of the sway cycle
                # (forward kinematics of 26 joints is most of this model's cost). Tremor moves the palm, so it
                # translates every joint.
                cached = self._hanging_cache.get(key)
                if cached is None:
                    cached = self._hanging_cache[key] = _joints(_right_hand_pose("none", key[1] / 64.0), self.hand_scale)
                joints[i] = cached if tremor is None else cached + tremor
                continue
            if tremor is not None:
                pose = _Pose(pose.palm_m + tremor, pose.rotation, pose.fingers)
            joints[i] = _joints(pose, self.hand_scale)
        joints[0] = joints[0] @ _MIRROR_X
        valid = np.array([_in_view(joints[i, _PALM], fov) for i in range(2)])
        return joints.astype(np.float32), valid


def _in_view(point_head: np.ndarray, fov_deg: tuple[float, float]) -> bool:
    x, y, z = (float(v) for v in point_head)
    if z <= 0.0:
        return False
    return (
        abs(math.degrees(math.atan2(x, z))) <= fov_deg[0] / 2
        and abs(math.degrees(math.atan2(y, z))) <= fov_deg[1] / 2
    )
