"""The one item builder: per-modality conversions on tiny hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bridge.errors import DatasetError
from bridge.items import ItemSpec, audio_tensor, build_item, depth_tensor, rgb_tensor, series_window


def test_rgb_is_channels_first_in_unit_range_and_resized():
    rgb = np.array([[[255, 0, 51], [0, 255, 102]]], dtype=np.uint8)  # [1, 2, 3]

    x = rgb_tensor(rgb)
    small = rgb_tensor(np.full((4, 4, 3), 200, np.uint8), (2, 2))

    assert x.shape == (3, 1, 2) and x.dtype == torch.float32
    assert x[:, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert small.shape == (3, 2, 2) and torch.allclose(small, torch.full((3, 2, 2), 200 / 255))


def test_depth_fills_no_hit_and_resizes_without_inventing_values():
    depth = np.array([[1.0, np.inf], [2.0, 3.0]], dtype=np.float32)

    x = depth_tensor(depth, far_m=9.0)
    big = depth_tensor(depth, (4, 4), far_m=9.0)

    assert x.tolist() == [[[1.0, 9.0], [2.0, 3.0]]]
    assert set(big.flatten().tolist()) == {1.0, 9.0, 2.0, 3.0}  # nearest: only recorded values


def test_audio_channels_all_mono_and_spread():
    audio = np.array([[1.0, 1.0], [2.0, 2.0], [6.0, 6.0]], dtype=np.float32)  # 3 mics, 2 samples

    assert audio_tensor(audio).shape == (3, 2)
    assert audio_tensor(audio, 1).tolist() == [[3.0, 3.0]]
    assert audio_tensor(audio, 2)[:, 0].tolist() == [1.0, 6.0]  # first and last microphone
    assert audio_tensor(audio[:1], 2)[:, 0].tolist() == [1.0, 1.0]  # a mono device repeats its channel


def test_series_window_pads_before_the_start_and_zeros_absent_rows():
    rows = [np.array([1.0, 2.0]), None, np.array([5.0, 6.0])]  # three steps of the episode, the middle one absent

    x, valid = series_window(rows, 4)

    assert x.tolist() == [[0.0, 0.0], [1.0, 2.0], [0.0, 0.0], [5.0, 6.0]]
    assert valid.tolist() == [False, True, False, True]


def test_build_item_flags_every_modality_and_builds_only_present_ones():
    step = {"present": {"gaze": True, "rgb": False}, "gaze": np.arange(8, dtype=np.float32),
            "gaze_valid": np.bool_(False)}

    item = build_item([step], ItemSpec(window=2), ["rgb", "gaze"], client_id="c", step=7, episode=1,
                      labels={"speech_command": 3})

    assert {m: bool(v) for m, v in item["present"].items()} == {"rgb": False, "gaze": True}
    assert "rgb" not in item and item["gaze"].shape == (2, 8) and item["gaze"][1, 7] == 7.0
    assert item["window_valid"]["gaze"].tolist() == [False, True] and item["gaze_valid"].tolist() == [False, False]
    assert item["labels"]["speech_command"].dtype == torch.int64 and (item["step"], item["episode"]) == (7, 1)


def test_spec_and_builder_reject_bad_input_by_name():
    with pytest.raises(DatasetError, match="window: expected an integer >= 1, got 0"):
        ItemSpec(window=0)
    with pytest.raises(DatasetError, match=r"image_size: expected \(height, width\) >= 1"):
        ItemSpec(image_size=(4,))
    with pytest.raises(DatasetError, match="depth_far_m: expected a positive finite number"):
        ItemSpec(depth_far_m=float("inf"))
    with pytest.raises(DatasetError, match=r"unknown modalities \['smell'\]"):
        build_item([{"present": {}}], ItemSpec(), ["smell"], client_id="c", step=0, episode=0, labels={})


def test_audio_window_concatenates_steps_with_silence_for_missing_ones():
    from bridge.items import audio_window

    a = np.full((2, 3), 1.0, np.float32)
    b = np.full((2, 3), 2.0, np.float32)
    # two steps given of four (one before the episode start pads), the middle one without audio
    out = audio_window([a, None, b], 4)
    assert out.shape == (2, 12)
    assert out[0].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 2, 2, 2]
    assert audio_window([a, b], 1).tolist() == b.tolist()
    with pytest.raises(DatasetError, match="current step has no audio"):
        audio_window([a, None], 2)
