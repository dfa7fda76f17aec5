import math

import numpy as np
import pytest

from bridge import Audio, DeviceFrame, FrameValidationError, Gaze, Imu, Pose
from bridge.arrays import arrays_to_frame, frame_to_arrays


def _frame(**kw):
    base = dict(device_id="d0", user_id="u0", profile="apple_vision_pro", step=3, sim_time_s=0.4)
    base.update(kw)
    return DeviceFrame(**base)


def test_valid_frame_keeps_absent_modalities_none():
    f = _frame(rgb=np.zeros((4, 5, 3), np.uint8), depth_m=np.ones((4, 5), np.float32))
    assert f.present_modalities() == ("rgb", "depth")
    assert f.audio is None and f.gaze is None


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(rgb=np.zeros((4, 5, 3), np.float32)), "rgb"),
        (dict(rgb=np.zeros((4, 5), np.uint8)), "rgb"),
        (dict(depth_m=np.ones((4, 5), np.float64)), "depth_m"),
        (dict(depth_m=-np.ones((4, 5), np.float32)), "depth_m"),
        (dict(rgb=np.zeros((4, 5, 3), np.uint8), depth_m=np.ones((3, 5), np.float32)), "depth_m"),
        (dict(step=-1), "step"),
        (dict(sim_time_s=float("nan")), "sim_time_s"),
        (dict(labels={"speech_command": "banana"}), "labels['speech_command']"),
        (dict(labels={"juggling": "none"}), "labels['juggling']"),
        (dict(active_tasks=("juggling",)), "active_tasks"),
        (dict(gaze="left"), "gaze"),
    ],
)
def test_invalid_frames_name_the_field(kw, field):
    with pytest.raises(FrameValidationError) as exc:
        _frame(**kw)
    assert exc.value.field == field
    assert repr(field)[1:-1] in str(exc.value)


def test_parts_validate_units():
    with pytest.raises(FrameValidationError, match="pupil_diameter_mm"):
        Gaze(0.1, 0.0, np.zeros(3), 1.0, 12.0, True, 0.9)  # 12 mm is not a human pupil
    with pytest.raises(FrameValidationError, match="orientation_wxyz"):
        Pose(np.zeros(3), np.array([1.0, 1.0, 0.0, 0.0]))
    with pytest.raises(FrameValidationError, match="audio.samples"):
        Audio(np.zeros((2, 10), np.float64), 16000)
    with pytest.raises(FrameValidationError, match="audio.sample_rate_hz"):
        Audio(np.zeros((2, 10), np.float32), 10)
    with pytest.raises(FrameValidationError, match="imu.angular_velocity_radps"):
        Imu(np.zeros(3), np.array([0.0, np.inf, 0.0]))


def test_gaze_direction_is_head_frame_forward_minus_z():
    g = Gaze(math.atan(0.5), 0.0, np.zeros(3), 1.0, 4.0, True, 1.0)
    d = g.direction_head()
    # yaw = atan2(x, -z): 0.5 to the right for every metre forward
    assert d[2] < 0 and d[0] > 0 and d[0] / -d[2] == pytest.approx(0.5)


def test_arrays_round_trip_with_absent_modalities():
    f = _frame(
        rgb=np.arange(60, dtype=np.uint8).reshape(4, 5, 3),
        gaze=Gaze(0.1, -0.2, np.array([0.0, 0.0, 0.01]), 2.0, 3.5, False, 0.0),
        audio=Audio(np.ones((3, 160), np.float32), 16000),
        head_pose=Pose(np.array([1.0, 2.0, 1.6]), np.array([1.0, 0.0, 0.0, 0.0])),
        labels={"speech_command": "stop", "scene_classification": "office"},
    )
    arr = frame_to_arrays(f)
    assert arr["present"] == {"rgb": True, "depth": False, "gaze": True, "audio": True, "pose": True,
                              "imu": False, "hands": False}
    assert "depth_m" not in arr and "imu" not in arr
    assert arr["labels"] == {"speech_command": 3, "scene_classification": 3}
    back = arrays_to_frame(arr, device_id="d0", user_id="u0", profile="apple_vision_pro", step=3, sim_time_s=0.4)
    np.testing.assert_array_equal(back.rgb, f.rgb)
    assert back.gaze.valid is False and back.gaze.pitch_rad == pytest.approx(-0.2)
    assert back.depth_m is None and back.imu is None
    assert back.labels == f.labels


def test_records_stay_frozen_dataclasses_and_replace_revalidates():
    import dataclasses

    from bridge import Hands, LightingState

    f = _frame(rgb=np.zeros((4, 5, 3), np.uint8), audio=Audio(np.zeros((1, 8), np.float32), 16000),
               lighting=LightingState(1.0, 300.0, 4000.0))
    for rec, name in ((f, "step"), (f.audio, "sample_rate_hz"), (f.lighting, "intensity"),
                      (Hands(np.zeros((2, 26, 3)), [True, False]), "valid")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(rec, name, 1)
    assert [fl.name for fl in dataclasses.fields(DeviceFrame)][:5] == ["device_id", "user_id", "profile", "step",
                                                                       "sim_time_s"]
    assert dataclasses.replace(f, step=4).step == 4 and f.step == 3
    assert f.without("rgb").rgb is None and f.without("rgb").audio == f.audio
    with pytest.raises(FrameValidationError, match="step"):
        dataclasses.replace(f, step=-1)
    assert LightingState(1.0, 300.0, 4000.0).lights_on is True  # the default survives the hand-written __init__
    assert _frame().labels == {} and _frame().wall_time_ns == 0
    with pytest.raises(FrameValidationError, match="hands.joints_m"):
        Hands(np.full((2, 26, 3), np.nan), [True, True])
    with pytest.raises(FrameValidationError, match="audio.samples"):
        Audio(np.array([[0.0, np.inf]], np.float32), 16000)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 2.0])
def test_fast_and_slow_construction_paths_agree(bad):
    from bridge import LightingState

    # the common case (all floats in range) takes one combined test; anything else the per-field checks
    ok = Gaze(0.1, -0.2, np.zeros(3), 1.5, 4.0, True, 0.5)
    slow = Gaze(0, 0, [0, 0, 0], 2, 4, 1, 1)  # ints: the per-field path, which converts
    assert (slow.yaw_rad, slow.vergence_depth_m, slow.valid, slow.confidence) == (0.0, 2.0, True, 1.0)
    assert type(slow.confidence) is float and slow.origin_m.dtype == np.float64
    with pytest.raises(FrameValidationError, match="gaze.yaw_rad"):
        Gaze(bad, -0.2, np.zeros(3), 1.5, 4.0, True, 0.5)
    with pytest.raises(FrameValidationError, match="gaze.confidence"):
        Gaze(0.1, -0.2, np.zeros(3), 1.5, 4.0, True, bad)
    with pytest.raises(FrameValidationError, match="lighting.color_temperature_k"):
        LightingState(1.0, 300.0, bad)
    assert ok.yaw_rad == 0.1 and LightingState(1, 300, 4000).intensity == 1.0
    # huge but finite vector values overflow a sum; they are still finite
    assert Imu(np.array([1e308, 1e308, 0.0]), np.zeros(3)).linear_acceleration_mps2[0] == 1e308
    if not math.isfinite(bad):
        with pytest.raises(FrameValidationError, match="head_pose.position_m"):
            Pose(np.array([0.0, bad, 1.0]), np.array([1.0, 0.0, 0.0, 0.0]))
