"""The embedded scene's eye model: pupil, fixation accuracy, biases, blinks, saccades, determinism."""

import math

import numpy as np
import pytest

from bridge.embedded.gaze import (
    GazeModel,
    GazeModelError,
    GazeUserTraits,
    angles_from_point,
    direction_from_angles,
    pupil_diameter_mm,
    saccade_duration_s,
)
from bridge.frame import Gaze


def _model(seed=0, traits=None, accuracy_deg=0.0, precision_deg=0.0, **kw):
    return GazeModel(
        rng=np.random.default_rng(seed),
        traits=traits or GazeUserTraits(),
        accuracy_deg=accuracy_deg,
        precision_deg=precision_deg,
        **kw,
    )


def _run(model, seconds, dt_s, targets, **kw):
    return [model.step(dt_s, targets_head=targets, **kw) for _ in range(round(seconds / dt_s))]


# ------------------------------------------------------------------ pupil
def test_pupil_follows_de_groot_gebhard_and_clips():
    # 7.175 * exp(-0.00092 * 9.597^3) = 7.175 * exp(-0.81320) = 3.1817 mm at 100 cd/m^2
    assert pupil_diameter_mm(100.0) == pytest.approx(3.1817, abs=1e-3)
    assert pupil_diameter_mm(10_000.0) < pupil_diameter_mm(100.0) < pupil_diameter_mm(0.01)
    assert pupil_diameter_mm(1e6) == 2.0  # the fit goes below 2 mm; the clip holds
    assert 7.0 < pupil_diameter_mm(0.0) <= 8.0  # darkness is treated as 1e-6 cd/m^2


def test_pupil_rejects_negative_luminance():
    with pytest.raises(GazeModelError, match="luminance_cd_m2"):
        pupil_diameter_mm(-1.0)


def _pupil_fraction_after_1s(lum_from, lum_to):
    model = _model(hippus_mm=0.0, traits=GazeUserTraits(blink_rate_per_min=0.0))
    start = _run(model, 1.0, 0.1, np.zeros((0, 3)), luminance_cd_m2=lum_from)[-1].pupil_diameter_mm
    end = _run(model, 1.0, 0.1, np.zeros((0, 3)), luminance_cd_m2=lum_to)[-1].pupil_diameter_mm
    steady = pupil_diameter_mm(lum_to)
    return (end - start) / (steady - start)


def test_pupil_constricts_fast_and_dilates_slowly():
    # First order: after 1 s the covered fraction is 1 - exp(-1/tau): tau 0.3 s -> 0.9643, 2.5 s -> 0.3297.
    constrict = _pupil_fraction_after_1s(0.01, 1000.0)
    dilate = _pupil_fraction_after_1s(1000.0, 0.01)
    assert constrict == pytest.approx(1 - math.exp(-1 / 0.3), abs=1e-6)
    assert dilate == pytest.approx(1 - math.exp(-1 / 2.5), abs=1e-6)


def test_pupil_scale_is_a_personal_factor():
    model = _model(hippus_mm=0.0, traits=GazeUserTraits(pupil_scale=1.2))
    sample = model.step(0.1, targets_head=np.zeros((0, 3)), luminance_cd_m2=100.0)
    assert sample.pupil_diameter_mm == pytest.approx(1.2 * 3.1817, abs=2e-3)


# ------------------------------------------------------------------ geometry helpers
def test_angles_follow_the_frame_convention_and_clamp():
    yaw, pitch = angles_from_point(np.array([0.3, 0.1, 2.0]))
    assert (math.degrees(yaw), math.degrees(pitch)) == pytest.approx((8.5308, 2.8624), abs=1e-3)
    yaw, pitch = angles_from_point(np.array([1.0, 0.0, 0.0]))  # 90 deg right: beyond the eye's reach
    assert math.degrees(yaw) == pytest.approx(35.0)
    d = direction_from_angles(yaw, 0.2)
    assert np.linalg.norm(d) == pytest.approx(1.0)
    assert math.atan2(d[0], d[2]) == pytest.approx(yaw) and math.atan2(d[1], d[2]) == pytest.approx(0.2)


def test_saccade_duration_is_the_main_sequence():
    assert saccade_duration_s(10.0) == pytest.approx(0.043)  # 21 ms + 2.2 ms * 10
    assert saccade_duration_s(20.0) == pytest.approx(0.065)


# ------------------------------------------------------------------ fixation, bias, noise
def test_measured_gaze_settles_on_a_single_target():
    target = np.array([[0.3, 0.1, 2.0]])
    samples = _run(_model(), 10.0, 0.1, target)[10:]
    valid = [s for s in samples if s.valid]
    assert len(valid) > 50
    for s in valid:
        assert math.degrees(s.yaw_rad) == pytest.approx(8.5308, abs=0.5)
        assert math.degrees(s.pitch_rad) == pytest.approx(2.8624, abs=0.5)
        assert s.target_index == 0
        assert s.vergence_depth_m == pytest.approx(math.sqrt(0.09 + 0.01 + 4.0), abs=1e-9)
        assert s.confidence == pytest.approx(0.95)


def test_user_bias_is_a_mean_offset():
    traits = GazeUserTraits(bias_yaw_deg=2.0, bias_pitch_deg=-1.0)
    samples = [
        s
        for s in _run(_model(1, traits, precision_deg=0.5), 30.0, 0.1, np.array([[0.0, 0.0, 1.5]]))[5:]
        if s.valid
    ]
    mean_yaw = np.mean([math.degrees(s.yaw_rad) for s in samples])
    mean_pitch = np.mean([math.degrees(s.pitch_rad) for s in samples])
    assert (mean_yaw, mean_pitch) == pytest.approx((2.0, -1.0), abs=0.15)
    spread = np.std([math.degrees(s.yaw_rad) for s in samples])
    assert 0.35 < spread < 0.7  # the per-sample precision noise of 0.5 deg (plus fixational drift)


def test_device_bias_has_the_profile_accuracy_and_adds_to_the_user_bias():
    model = _model(2, GazeUserTraits(bias_yaw_deg=1.0), accuracy_deg=1.5)
    by, bp = model.device_bias_deg
    assert 0.75 * 1.5 <= math.hypot(by, bp) <= 1.25 * 1.5
    samples = [s for s in _run(model, 20.0, 0.1, np.array([[0.0, 0.0, 1.0]]))[5:] if s.valid]
    assert np.mean([math.degrees(s.yaw_rad) for s in samples]) == pytest.approx(1.0 + by, abs=0.15)
    assert np.mean([math.degrees(s.pitch_rad) for s in samples]) == pytest.approx(bp, abs=0.15)


def test_no_targets_looks_straight_ahead():
    samples = _run(_model(3), 3.0, 0.1, np.zeros((0, 3)))
    for s in samples:
        assert s.target_index == -1
        assert abs(math.degrees(s.yaw_rad)) < 0.5 and abs(math.degrees(s.pitch_rad)) < 0.5
        assert s.vergence_depth_m == 1.0
        assert s.true_dir_head[2] > 0.999


def test_eye_in_head_is_clamped_to_35_degrees():
    far_right = np.array([[math.tan(math.radians(60.0)), 0.0, 1.0]])
    samples = _run(_model(4), 2.0, 0.1, far_right)[5:]
    yaws = [math.degrees(math.atan2(s.true_dir_head[0], s.true_dir_head[2])) for s in samples]
    assert max(yaws) <= 35.0 + 1e-9 and min(yaws) > 34.0


def test_eye_follows_a_target_moving_in_the_head_frame():
    model = _model(5, GazeUserTraits(blink_rate_per_min=0.0))
    _run(model, 1.0, 0.1, np.array([[-math.tan(math.radians(10.0)), 0.0, 1.0]]))
    for k in range(1, 11):  # the head turns: the target sweeps from -10 to +10 deg at 20 deg/s
        yaw_deg = -10.0 + 2.0 * k
        s = model.step(0.1, targets_head=np.array([[math.tan(math.radians(yaw_deg)), 0.0, 1.0]]))
        assert s.target_index == 0
        assert math.degrees(s.yaw_rad) == pytest.approx(yaw_deg, abs=0.5)


def test_weights_choose_the_fixated_target():
    targets = np.array([[0.5, 0.0, 2.0], [-0.5, 0.0, 2.0]])
    samples = _run(_model(6), 10.0, 0.1, targets, weights=np.array([1.0, 0.0]))
    assert {s.target_index for s in samples} <= {0, -1}
    assert sum(s.target_index == 0 for s in samples) > 90


# ------------------------------------------------------------------ blinks and saccades
def test_blink_rate_matches_the_trait_and_blinks_are_invalid():
    model = _model(7, GazeUserTraits(blink_rate_per_min=15.0))
    samples = _run(model, 120.0, 0.1, np.array([[0.0, 0.0, 1.0]]))
    assert 18 <= model.blink_count <= 42  # 15/min * 2 min = 30, +-40%
    blinking = [s for s in samples if s.blinking]
    assert blinking and all(not s.valid and s.confidence == 0.0 for s in blinking)
    assert all(s.valid for s in samples if not s.blinking)


def test_no_blinks_at_rate_zero():
    model = _model(8, GazeUserTraits(blink_rate_per_min=0.0))
    samples = _run(model, 30.0, 0.1, np.array([[0.0, 0.0, 1.0]]))
    assert model.blink_count == 0 and all(s.valid for s in samples)


def test_saccade_durations_follow_the_main_sequence():
    # Targets at +-10 deg: the first saccade (0 -> 10 deg) lasts 21 + 2.2 * 10 = 43 ms, the rest span 20 deg:
    # 21 + 2.2 * 20 = 65 ms.
    x = math.tan(math.radians(10.0))
    targets = np.array([[x, 0.0, 1.0], [-x, 0.0, 1.0]])
    model = _model(9, GazeUserTraits(blink_rate_per_min=0.0), rate_hz=1000.0)
    flags = [s.in_saccade for s in _run(model, 4.0, 0.001, targets)]
    runs, n = [], 0
    for f in flags + [False]:
        if f:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    assert len(runs) >= 3
    assert runs[0] == pytest.approx(43, abs=2)
    assert all(r == pytest.approx(65, abs=2) for r in runs[1:])


def test_confidence_drops_during_saccades():
    targets = np.array([[0.4, 0.0, 1.0], [-0.4, 0.0, 1.0]])
    model = _model(10, GazeUserTraits(blink_rate_per_min=0.0), rate_hz=1000.0)
    samples = _run(model, 3.0, 0.002, targets)
    in_sacc = [s for s in samples if s.in_saccade]
    assert in_sacc and all(s.confidence < 0.5 and s.target_index == -1 for s in in_sacc)
    assert all(s.confidence > 0.9 for s in samples if not s.in_saccade)


# ------------------------------------------------------------------ determinism, contract, errors
def test_same_seed_same_samples():
    targets = np.array([[0.2, 0.1, 1.0], [-0.3, 0.0, 2.0], [0.0, -0.2, 1.5]])

    def trace(seed):
        model = _model(seed, accuracy_deg=1.0, precision_deg=0.3)
        return [
            (s.yaw_rad, s.pitch_rad, s.pupil_diameter_mm, s.valid) for s in _run(model, 5.0, 0.1, targets)
        ]

    assert trace(11) == trace(11)
    assert trace(11) != trace(12)


def test_sample_converts_to_the_frame_contract():
    sample = _model(13).step(0.1, targets_head=np.array([[0.1, 0.0, 1.0]]))
    gaze = sample.to_frame_gaze()
    assert isinstance(gaze, Gaze)
    assert gaze.yaw_rad == sample.yaw_rad and gaze.valid == sample.valid
    assert np.array_equal(gaze.origin_m, np.zeros(3))


def test_invalid_inputs_are_rejected_with_the_name():
    model = _model(14)
    with pytest.raises(GazeModelError, match="dt_s"):
        model.step(0.0, targets_head=np.zeros((0, 3)))
    with pytest.raises(GazeModelError, match="targets_head"):
        model.step(0.1, targets_head=np.zeros(3))
    with pytest.raises(GazeModelError, match="weights"):
        model.step(0.1, targets_head=np.zeros((2, 3)), weights=np.ones(3))
    with pytest.raises(GazeModelError, match="pupil_scale"):
        GazeUserTraits(pupil_scale=0.0)
    with pytest.raises(GazeModelError, match="accuracy_deg"):
        _model(accuracy_deg=-1.0)
