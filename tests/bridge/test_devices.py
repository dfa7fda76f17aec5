import numpy as np
import pytest

from bridge import UnknownNameError, device_names, get_device
from bridge.devices import DeviceProfile
from bridge.errors import ScenarioError

PAPER_DEVICES = {"apple_vision_pro", "meta_quest_3", "meta_quest_pro", "hololens_2", "magic_leap_2", "ray_ban_meta",
                 "xreal_air", "realwear_navigator_520", "vuzix_blade_2", "varjo_xr_4"}


def test_at_least_ten_paper_devices():
    assert PAPER_DEVICES <= set(device_names())


def test_modalities_follow_table_1():
    assert get_device("ray_ban_meta").modalities == ("rgb", "audio")
    assert "gaze" not in get_device("meta_quest_3").modalities  # Quest 3 has no eye tracking
    assert get_device("hololens_2").eye_tracker.rate_hz == 30
    assert get_device("varjo_xr_4").tethered


def test_mic_array_is_left_to_right_in_head_frame():
    pos = get_device("hololens_2").microphones.positions_head_m()
    assert pos.shape == (5, 3)
    assert np.all(np.diff(pos[:, 0]) > 0)  # channel 0 leftmost
    assert np.all(pos[:, 2] < 0)  # in front of the eyes (-z forward)


def test_energy_model_units():
    d = get_device("meta_quest_3")
    assert d.uplink_joules(1_000_000) == pytest.approx(8e6 * 0.645e-6)


def test_unknown_device_lists_known():
    with pytest.raises(UnknownNameError, match="hololens_2"):
        get_device("hololens_3")


def test_profile_validation():
    with pytest.raises(ScenarioError, match="camera"):
        DeviceProfile.from_dict("x", {"modalities": ["rgb"], "relative_compute": 1})
