"""Eye-gaze model of the embedded scene: fixations, saccades, blinks and pupil, as a tracker reports them.

Why a model rather than "gaze = direction to the intent object": the SHIFT effects the federation studies must
come from physiology and from the device, not from hand-tuned labels. So the eye fixates scene targets for
gamma-distributed durations, jumps between them with saccades whose duration follows the main sequence, drifts
and microsaccades during fixations, blinks at a per-user Poisson rate, and its pupil follows the scene
luminance with the eye's asymmetric dynamics. The tracker then adds a per-user calibration bias (a personal
signature), a per-device calibration error of the profile's accuracy, and per-sample noise of the profile's
precision, and reports invalid samples during blinks.

Frames and units (as :mod:`bridge.frame`): head frame +x right, +y up, +z forward, metres; angles in radians
with ``yaw_rad = atan2(x, z)`` and ``pitch_rad = atan2(y, z)``; user/device biases and noise figures in
degrees because that is how eye-tracker data sheets state them.

Literature figures used as defaults: fixations ~300 ms; saccade duration 21 ms + 2.2 ms/deg (Carpenter's main
sequence); microsaccades < 0.5-1 deg at 1-2 per second; blinks 100-400 ms at ~15 per minute; pupil 2-8 mm from
De Groot & Gebhard (1952), constricting within ~0.5-1 s and dilating over several seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import BridgeError
from ..frame import Gaze

__all__ = [
    "GazeModelError",
    "GazeUserTraits",
    "GazeSample",
    "GazeModel",
    "pupil_diameter_mm",
    "saccade_duration_s",
    "direction_from_angles",
    "angles_from_point",
    "EYE_IN_HEAD_LIMIT_DEG",
]

#: Largest eye-in-head rotation per axis; larger gaze shifts are the head's job (eye-head coordination).
EYE_IN_HEAD_LIMIT_DEG = 35.0
_LIMIT_RAD = math.radians(EYE_IN_HEAD_LIMIT_DEG)
#: Sub-step of the internal simulation: half the shortest (21 ms) saccade; saccade ends are timed exactly within it.
_MAX_SUBSTEP_S = 0.010
#: Depth reported when nothing is fixated (Aria MPS documents 1 m as its default gaze depth).
_REST_DEPTH_M = 1.0
_SACCADE_BASE_S = 0.021
_SACCADE_PER_DEG_S = 0.0022
_FIXATION_GAMMA_SHAPE = 4.0  # coefficient of variation 0.5: fixations mostly 150-500 ms around a 300 ms mean
_MIN_FIXATION_S = 0.08
_BLINK_MIN_S, _BLINK_MAX_S = 0.1, 0.4
_DRIFT_STD_RAD = math.radians(0.08)  # stationary spread of fixational drift per axis
_DRIFT_TAU_S = 0.4
_MICROSACCADE_RATE_HZ = 1.5
_MICROSACCADE_STD_RAD = math.radians(0.06)  # microsaccades re-centre the eye near the target
_LANDING_STD_RAD = math.radians(0.1)
_FIXATIONAL_LIMIT_RAD = math.radians(0.4)  # drift and microsaccades stay well inside the fovea (~1 deg)
_PUPIL_CONSTRICT_TAU_S = 0.3
_PUPIL_DILATE_TAU_S = 2.5
_HIPPUS_TAU_S = 1.0
_CONFIDENCE_FIXATION = 0.95
_CONFIDENCE_SACCADE = 0.3
_ANGLE_REPORT_LIMIT_RAD = math.pi / 2 - 1e-6


class GazeModelError(BridgeError, ValueError):
    """A gaze-model setting or step input is invalid; the message says what was expected and what came."""


def pupil_diameter_mm(luminance_cd_m2: float) -> float:
    """Steady-state pupil diameter (mm) at a luminance, De Groot & Gebhard (1952), clipped to [2, 8].

    ``D = 7.175 * exp(-0.00092 * (7.597 + log10 L)^3)``. Luminance below 1e-6 cd/m^2 (and exactly 0, complete
    darkness) is treated as 1e-6 so the logarithm stays finite; the clip keeps the fit physiological.
    """
    lum = float(luminance_cd_m2)
    if not math.isfinite(lum) or lum < 0.0:
        raise GazeModelError(f"luminance_cd_m2: expected a finite number >= 0, got {luminance_cd_m2!r}")
    x = 7.597 + math.log10(max(lum, 1e-6))
    return min(8.0, max(2.0, 7.175 * math.exp(-0.00092 * x**3)))


def saccade_duration_s(amplitude_deg: float) -> float:
    """Saccade duration from Carpenter's main sequence: 21 ms + 2.2 ms per degree of amplitude."""
    return _SACCADE_BASE_S + _SACCADE_PER_DEG_S * abs(float(amplitude_deg))


def direction_from_angles(yaw_rad: float, pitch_rad: float) -> np.ndarray:
    """Unit head-frame direction with ``atan2(x, z) == yaw_rad`` and ``atan2(y, z) == pitch_rad`` ."""
    v = np.array([math.tan(yaw_rad), math.tan(pitch_rad), 1.0])
    return v / np.linalg.norm(v)


def angles_from_point(point_head: np.ndarray, limit_rad: float = _LIMIT_RAD) -> tuple[float, float]:
    """Eye-in-head (yaw, pitch) in radians towards a head-frame point, each clamped to +-``limit_rad``.

    A point beside or behind the head (z <= 0) has no atan2 pitch in front of the eye; its elevation
    ``atan2(y, hypot(x, z))`` is used instead, and its yaw saturates at the limit on its side.
    """
    x, y, z = float(point_head[0]), float(point_head[1]), float(point_head[2])
    yaw = math.atan2(x, z)
    pitch = math.atan2(y, z) if z > 1e-9 else math.atan2(y, math.hypot(x, z))
    return _clamp(yaw, limit_rad), _clamp(pitch, limit_rad)


def _clamp(v: float, limit: float) -> float:
    return -limit if v < -limit else (limit if v > limit else v)


def _min_jerk(u: float) -> float:
    """Minimum-jerk position profile on [0, 1]: peak velocity 1.875 * amplitude / duration, like saccades."""
    return u * u * u * (10.0 - 15.0 * u + 6.0 * u * u)


@dataclass(frozen=True)
class GazeUserTraits:
    """A user's personal eye signature; the federation's per-user heterogeneity in the gaze stream."""

    bias_yaw_deg: float = 0.0  # calibration offset of this user (added to the device's error)
    bias_pitch_deg: float = 0.0
    blink_rate_per_min: float = 15.0
    fixation_mean_s: float = 0.3
    pupil_scale: float = 1.0  # per-user pupil size factor

    def __post_init__(self) -> None:
        for name in ("bias_yaw_deg", "bias_pitch_deg"):
            v = getattr(self, name)
            if not math.isfinite(v) or abs(v) > 20.0:
                raise GazeModelError(
                    f"GazeUserTraits.{name}: expected a finite number in [-20, 20] deg, got {v!r}"
                )
        if not math.isfinite(self.blink_rate_per_min) or not 0.0 <= self.blink_rate_per_min <= 120.0:
            raise GazeModelError(
                "GazeUserTraits.blink_rate_per_min: expected a number in [0, 120], "
                f"got {self.blink_rate_per_min!r}"
            )
        if not math.isfinite(self.fixation_mean_s) or not 0.05 <= self.fixation_mean_s <= 10.0:
            raise GazeModelError(
                "GazeUserTraits.fixation_mean_s: expected a number in [0.05, 10] s, "
                f"got {self.fixation_mean_s!r}"
            )
        if not math.isfinite(self.pupil_scale) or not 0.5 <= self.pupil_scale <= 1.5:
            raise GazeModelError(
                f"GazeUserTraits.pupil_scale: expected a number in [0.5, 1.5], got {self.pupil_scale!r}"
            )


@dataclass(frozen=True)
class GazeSample:
    """One eye-tracker sample plus the eye's ground truth, head frame (see module docstring)."""

    yaw_rad: (
        float  # MEASURED: true + user bias + device bias + noise; held at the last valid value while invalid
    )
    pitch_rad: float
    true_dir_head: np.ndarray  # (3,) unit, the eye's actual direction
    origin_m: np.ndarray  # (3,) cyclopean eye origin (the head frame's origin)
    vergence_depth_m: float  # true distance to the fixated point
    pupil_diameter_mm: float
    valid: bool  # False during blinks / tracking loss
    confidence: float  # [0, 1]: low during saccades, 0 when invalid
    target_index: int  # fixated target (-1: none, or in flight during a saccade)
    in_saccade: bool
    blinking: bool

    def to_frame_gaze(self) -> Gaze:
        """The measured part of this sample as the frame contract's :class:`bridge.frame.Gaze`."""
        return Gaze(
            yaw_rad=self.yaw_rad,
            pitch_rad=self.pitch_rad,
            origin_m=self.origin_m,
            vergence_depth_m=self.vergence_depth_m,
            pupil_diameter_mm=self.pupil_diameter_mm,
            valid=self.valid,
            confidence=self.confidence,
        )


class GazeModel:
    """One user's eyes behind one device's eye tracker, simulated in <= 5 ms sub-steps whatever the step.

    The device calibration error is drawn once per instance (``device_bias_deg``) and survives :meth:`reset`,
    as a headset keeps its calibration between sessions. The tracker samples at ``rate_hz`` and :meth:`step`
    returns the newest tracker sample (sample-and-hold between ticks). Every random draw comes from ``rng``,
    so a seed fixes the whole sequence.
    """

    def __init__(
        self,
        *,
        rng: np.random.Generator,
        traits: GazeUserTraits,
        accuracy_deg: float,
        precision_deg: float,
        rate_hz: float = 90.0,
        hippus_mm: float = 0.03,
    ):
        if not isinstance(rng, np.random.Generator):
            raise GazeModelError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
        if not isinstance(traits, GazeUserTraits):
            raise GazeModelError(f"traits: expected a GazeUserTraits, got {type(traits).__name__}")
        for name, value, lo, hi in (
            ("accuracy_deg", accuracy_deg, 0.0, 20.0),
            ("precision_deg", precision_deg, 0.0, 10.0),
            ("rate_hz", rate_hz, 1.0, 2000.0),
            ("hippus_mm", hippus_mm, 0.0, 0.5),
        ):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not lo <= value <= hi:
                raise GazeModelError(f"{name}: expected a number in [{lo}, {hi}], got {value!r}")
        self._rng = rng
        self.traits = traits
        self.accuracy_deg = float(accuracy_deg)
        self.precision_deg = float(precision_deg)
        self.rate_hz = float(rate_hz)
        self.hippus_mm = float(hippus_mm)
        # Device calibration error: random direction, magnitude around the profile's accuracy.
        angle = rng.uniform(0.0, 2.0 * math.pi)
        magnitude = self.accuracy_deg * rng.uniform(0.75, 1.25)
        self.device_bias_deg: tuple[float, float] = (magnitude * math.cos(angle), magnitude * math.sin(angle))
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Start a new session: eyes straight ahead with nothing fixated, pupil adapting on the first step."""
        self._eye = [0.0, 0.0]  # true eye-in-head yaw, pitch (rad)
        self._in_saccade = False
        self._target = -1
        self._fix_remaining_s = 0.0  # 0: pick a target on the first sub-step
        self._offset = [0.0, 0.0]  # fixational drift/microsaccade offset from the target (rad)
        self._sacc_start = [0.0, 0.0]
        self._sacc_target = -1
        self._sacc_elapsed_s = 0.0
        self._sacc_duration_s = 0.0
        self._sacc_depth_start_m = _REST_DEPTH_M
        self._depth_m = _REST_DEPTH_M
        self._blink_remaining_s = 0.0
        self._pupil_mm = 0.0
        self._pupil_adapted = False  # the first step sets the pupil to that scene's steady state
        self._hippus_mm = 0.0
        self._tick_accum_s = 0.0
        self._last_valid_measured: tuple[float, float] | None = None
        self._sample: GazeSample | None = None
        self._prev_targets: np.ndarray | None = None
        self._time_s = 0.0
        self.blink_count = 0
        self.saccade_count = 0

    @property
    def time_s(self) -> float:
        """Simulated seconds since :meth:`reset`."""
        return self._time_s

    # ------------------------------------------------------------------ stepping
    def step(
        self,
        dt_s: float,
        *,
        targets_head: np.ndarray,
        weights: np.ndarray | None = None,
        luminance_cd_m2: float = 100.0,
    ) -> GazeSample:
        """Advance ``dt_s`` seconds and return the newest tracker sample.

        ``targets_head`` [K, 3] are candidate fixation points in the head frame at the *end* of the step (the
        previous call's points are taken as the start, and the eye follows the fixated one in between: smooth
        pursuit / VOR). ``weights`` [K] >= 0 are relative preferences for the next fixation (uniform when
        None).
        """
        dt = float(dt_s)
        if not math.isfinite(dt) or dt <= 0.0 or dt > 60.0:
            raise GazeModelError(f"dt_s: expected a number in (0, 60] s, got {dt_s!r}")
        targets = np.asarray(targets_head, dtype=np.float64)
        if targets.ndim != 2 or targets.shape[1] != 3 or not np.all(np.isfinite(targets)):
            raise GazeModelError(
                f"targets_head: expected finite [K, 3] head-frame points, got shape {targets.shape}"
            )
        k = targets.shape[0]
        probs = self._target_probabilities(weights, k)
        target_pupil = pupil_diameter_mm(luminance_cd_m2) * self.traits.pupil_scale
        if not self._pupil_adapted:  # the eye arrives adapted to the first scene it sees
            self._pupil_mm, self._pupil_adapted = target_pupil, True
        prev = (
            self._prev_targets
            if self._prev_targets is not None and self._prev_targets.shape == targets.shape
            else targets
        )
        if self._target >= k:  # the scene's target list shrank under a fixation
            self._target, self._fix_remaining_s, self._in_saccade = -1, 0.0, False
        if self._in_saccade and self._sacc_target >= k:
            self._sacc_target = -1

        n_sub = max(1, math.ceil(dt / _MAX_SUBSTEP_S - 1e-9))
        h = dt / n_sub
        period = 1.0 / self.rate_hz
        for i in range(n_sub):
            frac = (i + 1) / n_sub
            self._substep(h, prev, targets, frac, probs, target_pupil)
            self._tick_accum_s += h
            if self._tick_accum_s >= period - 1e-9:
                self._tick_accum_s -= period
                self._sample = self._take_sample()
        if self._sample is None:
            self._sample = self._take_sample()
        self._prev_targets = targets.copy()
        self._time_s += dt
        return self._sample

    def _target_probabilities(self, weights: np.ndarray | None, k: int) -> np.ndarray | None:
        if k == 0:
            return None
        if weights is None:
            return np.full(k, 1.0 / k)
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (k,) or not np.all(np.isfinite(w)) or np.any(w < 0.0):
            raise GazeModelError(
                f"weights: expected {k} finite numbers >= 0 (one per target), got {w.tolist()}"
            )
        total = float(w.sum())
        return np.full(k, 1.0 / k) if total <= 0.0 else w / total

    @staticmethod
    def _point(prev: np.ndarray, cur: np.ndarray, index: int, frac: float) -> np.ndarray | None:
        if index < 0:
            return None
        return prev[index] + (cur[index] - prev[index]) * frac

    def _aim(self, prev: np.ndarray, cur: np.ndarray, index: int, frac: float) -> tuple[float, float, float]:
        """(yaw, pitch, depth_m) of target ``index`` at sub-step fraction ``frac``; straight ahead for -1."""
        p = self._point(prev, cur, index, frac)
        if p is None:
            return 0.0, 0.0, _REST_DEPTH_M
        yaw, pitch = angles_from_point(p)
        return yaw, pitch, float(np.linalg.norm(p))

    def _substep(
        self,
        h: float,
        prev: np.ndarray,
        cur: np.ndarray,
        frac: float,
        probs: np.ndarray | None,
        target_pupil: float,
    ) -> None:
        rng = self._rng
        # Blinks: a Poisson process at the user's rate, each 100-400 ms, none starting during another.
        if self._blink_remaining_s > 0.0:
            self._blink_remaining_s = max(0.0, self._blink_remaining_s - h)
        elif rng.random() < -math.expm1(-self.traits.blink_rate_per_min / 60.0 * h):
            self._blink_remaining_s = rng.uniform(_BLINK_MIN_S, _BLINK_MAX_S)
            self.blink_count += 1

        if not self._in_saccade:
            self._fix_remaining_s -= h
            if self._fix_remaining_s <= 0.0:
                self._next_fixation(prev, cur, frac, probs)
        if self._in_saccade:
            self._advance_saccade(h, prev, cur, frac)
        else:
            self._fixational_motion(h)
            yaw, pitch, depth = self._aim(prev, cur, self._target, frac)
            self._eye = [
                _clamp(yaw + self._offset[0], _LIMIT_RAD),
                _clamp(pitch + self._offset[1], _LIMIT_RAD),
            ]
            self._depth_m = depth

        # Pupil: first-order towards the luminance steady state, constricting fast and dilating slowly.
        tau = _PUPIL_CONSTRICT_TAU_S if target_pupil < self._pupil_mm else _PUPIL_DILATE_TAU_S
        self._pupil_mm += (target_pupil - self._pupil_mm) * -math.expm1(-h / tau)
        if self.hippus_mm > 0.0:
            a = math.exp(-h / _HIPPUS_TAU_S)
            self._hippus_mm = (
                a * self._hippus_mm + self.hippus_mm * math.sqrt(1.0 - a * a) * rng.standard_normal()
            )

    def _next_fixation(
        self, prev: np.ndarray, cur: np.ndarray, frac: float, probs: np.ndarray | None
    ) -> None:
        mean = self.traits.fixation_mean_s
        self._fix_remaining_s = max(_MIN_FIXATION_S, _gamma(self._rng, _FIXATION_GAMMA_SHAPE, mean))
        nxt = -1 if probs is None else int(self._rng.choice(probs.shape[0], p=probs))
        if nxt == self._target:
            return  # a refixation of the same target: the fixation simply goes on
        yaw, pitch, _ = self._aim(prev, cur, nxt, frac)
        amplitude_deg = math.degrees(math.hypot(yaw - self._eye[0], pitch - self._eye[1]))
        self._target = -1
        if amplitude_deg < 1e-6:
            self._target = nxt
            return
        self._in_saccade = True
        self._sacc_start = list(self._eye)
        self._sacc_target = nxt
        self._sacc_elapsed_s = 0.0
        self._sacc_duration_s = saccade_duration_s(amplitude_deg)
        self._sacc_depth_start_m = self._depth_m
        self.saccade_count += 1

    def _advance_saccade(self, h: float, prev: np.ndarray, cur: np.ndarray, frac: float) -> None:
        self._sacc_elapsed_s += h
        u = min(1.0, self._sacc_elapsed_s / self._sacc_duration_s)
        s = _min_jerk(u)
        yaw, pitch, depth = self._aim(
            prev, cur, self._sacc_target, frac
        )  # the landing point follows the target
        self._eye = [
            self._sacc_start[0] + (yaw - self._sacc_start[0]) * s,
            self._sacc_start[1] + (pitch - self._sacc_start[1]) * s,
        ]
        self._depth_m = self._sacc_depth_start_m + (depth - self._sacc_depth_start_m) * s
        if u >= 1.0 - 1e-9:
            self._in_saccade = False
            self._target = self._sacc_target
            self._offset = [
                _LANDING_STD_RAD * self._rng.standard_normal(),
                _LANDING_STD_RAD * self._rng.standard_normal(),
            ]
            self._limit_offset()

    def _fixational_motion(self, h: float) -> None:
        """Drift (an Ornstein-Uhlenbeck walk) and corrective microsaccades around the fixated target."""
        rng = self._rng
        if rng.random() < -math.expm1(-_MICROSACCADE_RATE_HZ * h):
            self._offset = [
                _MICROSACCADE_STD_RAD * rng.standard_normal(),
                _MICROSACCADE_STD_RAD * rng.standard_normal(),
            ]
        else:
            a = math.exp(-h / _DRIFT_TAU_S)
            kick = _DRIFT_STD_RAD * math.sqrt(1.0 - a * a)
            self._offset = [
                a * self._offset[0] + kick * rng.standard_normal(),
                a * self._offset[1] + kick * rng.standard_normal(),
            ]
        self._limit_offset()

    def _limit_offset(self) -> None:
        norm = math.hypot(self._offset[0], self._offset[1])
        if norm > _FIXATIONAL_LIMIT_RAD:
            self._offset = [
                self._offset[0] * _FIXATIONAL_LIMIT_RAD / norm,
                self._offset[1] * _FIXATIONAL_LIMIT_RAD / norm,
            ]

    def _take_sample(self) -> GazeSample:
        rng = self._rng
        noise = (self.precision_deg * rng.standard_normal(), self.precision_deg * rng.standard_normal())
        bias_yaw = self.traits.bias_yaw_deg + self.device_bias_deg[0]
        bias_pitch = self.traits.bias_pitch_deg + self.device_bias_deg[1]
        measured = (
            _clamp(self._eye[0] + math.radians(bias_yaw + noise[0]), _ANGLE_REPORT_LIMIT_RAD),
            _clamp(self._eye[1] + math.radians(bias_pitch + noise[1]), _ANGLE_REPORT_LIMIT_RAD),
        )
        blinking = self._blink_remaining_s > 0.0
        if blinking:
            # Trackers hold the last good value while the lid covers the pupil; valid=False says so.
            measured = self._last_valid_measured if self._last_valid_measured is not None else measured
            confidence = 0.0
        else:
            self._last_valid_measured = measured
            confidence = _CONFIDENCE_SACCADE if self._in_saccade else _CONFIDENCE_FIXATION
        pupil = min(9.0, max(1.0, self._pupil_mm + self._hippus_mm))
        return GazeSample(
            yaw_rad=measured[0],
            pitch_rad=measured[1],
            true_dir_head=direction_from_angles(self._eye[0], self._eye[1]),
            origin_m=np.zeros(3),
            vergence_depth_m=min(1e4, max(0.0, self._depth_m)),
            pupil_diameter_mm=pupil,
            valid=not blinking,
            confidence=confidence,
            target_index=-1 if self._in_saccade else self._target,
            in_saccade=self._in_saccade,
            blinking=blinking,
        )


def _gamma(rng: np.random.Generator, shape: float, mean: float) -> float:
    """A gamma draw with the given shape and mean (scale = mean / shape)."""
    return float(rng.gamma(shape, mean / shape))
