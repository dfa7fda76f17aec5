"""The xrfed side-channel codec, side-channel framing, the observation layout and the hand-written protobuf."""

from __future__ import annotations

import struct
import uuid

import numpy as np
import pytest

from bridge.backend import SetLighting, SetModality, ShowPrediction
from bridge.scenario import load_scenario
from bridge.unity import codec
from bridge.unity.errors import UnityProtocolError
from bridge.unity.observations import (
    DEPTH_BOUND_M,
    ObservationLayout,
    channels_first_for,
    frame_to_observations,
    observations_to_arrays,
)
from bridge.unity.synthetic import SyntheticBackend, SyntheticConfig


def test_canonical_message_bytes_are_sorted_compact_ascii():
    payload = codec.encode_message(codec.make_message("set_modality", device_id="dév", modality="gaze", enabled=False))
    assert payload == b'{"device_id":"d\\u00e9v","enabled":false,"modality":"gaze","type":"set_modality","v":1}'


def test_decode_round_trips_and_fills_nullable_fields():
    msg = codec.decode_message(b'{"v":1,"type":"show_prediction","device_id":"a","task":"speech_command",'
                               b'"label":"stop","confidence":1,"latency_ms":null,"frame_step":3,"sent_ns":null}')
    assert msg["confidence"] == 1.0 and isinstance(msg["confidence"], float)
    assert codec.message_to_command(msg) == ShowPrediction("a", "speech_command", "stop", 1.0, None, 3)


@pytest.mark.parametrize("payload, match", [
    (b'{"v":2,"type":"reset","seed":1}', "version 2"),
    (b'{"v":1,"type":"teleport"}', "unknown xrfed message type 'teleport'"),
    (b'{"v":1,"type":"reset"}', "field 'seed' is missing"),
    (b'{"v":1,"type":"reset","seed":"1"}', "field 'seed' must be int"),
    (b'{"v":1,"type":"reset","seed":1,"x":0}', "unknown field 'x'"),
    (b'\xff', "not ASCII JSON"),
])
def test_decode_rejects_bad_messages(payload, match):
    with pytest.raises(UnityProtocolError, match=match):
        codec.decode_message(payload)


def test_nan_cannot_be_sent():
    with pytest.raises(UnityProtocolError, match="must be finite"):
        codec.make_message("show_prediction", device_id="a", task="t", label="l", confidence=float("nan"))


def test_records_pack_with_bytes_le_guid_and_int32_length():
    cid = uuid.UUID("e951342c-4f7e-11ea-b238-784f4387d1f7")
    data = codec.pack_records([(cid, b"\x01\x02")])
    assert data.hex() == "2c3451e97e4fea11b238784f4387d1f7" + "02000000" + "0102"
    assert codec.unpack_records(data + data) == [(cid, b"\x01\x02")] * 2
    with pytest.raises(UnityProtocolError, match="overruns"):
        codec.unpack_records(data[:-1])


def test_env_parameter_payload_matches_mlagents_bytes():
    # The reference's measured bytes of set_float_parameter("gaze_noise", 0.25).
    payload = codec.encode_float_parameter("gaze_noise", 0.25)
    assert payload.hex() == "0a000000" + b"gaze_noise".hex() + "00000000" + "0000803e"
    assert codec.decode_env_parameter(payload) == ("gaze_noise", 0.25)


def test_lighting_parameters_round_trip_per_room():
    params = {**codec.lighting_to_parameters(SetLighting(intensity=0.5, lights_on=False, room="kitchen")),
              **codec.lighting_to_parameters(SetLighting(color_temperature_k=2700.0))}
    assert params == {"xrfed.lighting.intensity@kitchen": 0.5, "xrfed.lighting.lights_on@kitchen": 0.0,
                      "xrfed.lighting.color_temperature_k": 2700.0}
    assert codec.parameters_to_lighting(params) == [SetLighting(intensity=0.5, lights_on=False, room="kitchen"),
                                                    SetLighting(color_temperature_k=2700.0)]


def test_structured_commands_map_to_messages():
    assert codec.command_to_message(SetModality("d", "audio", True))["type"] == "set_modality"
    assert codec.command_to_message(SetLighting(intensity=1.0)) is None


def test_stat_payload():
    assert codec.decode_stat(codec.encode_stat("xrfed/lux", 2.5, 1)) == ("xrfed/lux", 2.5, 1)
    assert codec.encode_stat("k", 1.0)[4:5] == b"k" and struct.unpack("<fi", codec.encode_stat("k", 1.0)[5:]) == (1.0, 1)


def test_scenario_dict_has_every_field_and_no_yaml_text():
    d = codec.scenario_to_dict(load_scenario("default"))
    assert "source_yaml" not in d
    assert d["render"] == {"width_px": 96, "height_px": 96, "shadows": False, "reflections": False,
                           "segmentation": False, "gl": "auto"}
    assert d["task_scripts"]["wander"]["random"]["segment_s"] == [4.0, 8.0]
    assert d["objects"][0]["size_m"] is None  # category default travels as null
    assert codec.decode_message(codec.golden_messages()["load_scenario_default"])["scenario"] == d


# -- observation layout -----------------------------------------------------------------------------------------
def test_layout_follows_client_version():
    assert channels_first_for("1.1.0") and not channels_first_for("0.28.0")
    lay = ObservationLayout(("rgb", "depth", "gaze"), (4, 5), channels_first=False)
    assert lay.shapes() == {"depth_m": (4, 5, 2), "device": (1,), "gaze": (8,), "labels": (6,), "present": (10,),
                            "rgb": (4, 5, 3)}
    assert lay.dimension_properties["rgb"] == (2, 2, 1)
    assert lay.channel_mappings == {"depth_m": (0, 1, -1), "device": (), "gaze": (), "labels": (), "present": (),
                                    "rgb": ()}
    with pytest.raises(UnityProtocolError, match="image_hw is required"):
        ObservationLayout(("rgb",))


def _decode_like_client(obs, layout):
    """What mlagents-envs hands back: its own PNG decoder (value / 255, channel mapping applied), floats reshaped."""
    process_pixels = pytest.importorskip("mlagents_envs.rpc_utils").process_pixels
    out = {}
    for name, v in obs.items():
        shape = layout.shapes()[name]
        if isinstance(v, bytes):
            img = process_pixels(v, shape[0], list(layout.channel_mappings[name]))  # 1.x: channels first
            out[name] = img if layout.channels_first else img.transpose(1, 2, 0)
        else:
            out[name] = v.reshape(shape)
        assert out[name].shape == shape, name
    return out


@pytest.mark.parametrize("channels_first", [True, False])
def test_frame_survives_observations_and_back(channels_first):
    be = SyntheticBackend(SyntheticConfig(profiles=("meta_quest_pro",), render_size=(4, 3)), seed=1)
    frame = be.reset()["user0-meta_quest_pro"]
    lay = ObservationLayout(("rgb", "depth", "gaze", "audio", "pose", "imu", "hands"), (4, 3), 3, 1600, channels_first)
    obs = frame_to_observations(frame, lay, device_index=0)
    assert list(obs) == sorted(obs)  # Unity's sensor order
    back = observations_to_arrays(_decode_like_client(obs, lay), audio_channels=3, audio_hz=16000,
                                  channels_first=channels_first)
    np.testing.assert_array_equal(back["rgb"], frame.rgb)
    assert np.isinf(frame.depth_m[0, 0]) and np.isinf(back["depth_m"][0, 0])  # no hit stays no hit
    np.testing.assert_allclose(back["depth_m"], frame.depth_m, rtol=0, atol=DEPTH_BOUND_M)
    np.testing.assert_array_equal(back["audio"], frame.audio.samples)
    assert back["gaze_valid"] == frame.gaze.valid
    assert back["labels"]["gesture_recognition"] == 1  # (k + i + j) % 10 with k=0, i=0, j=1


def test_dropped_modality_comes_back_absent_not_zero():
    be = SyntheticBackend(SyntheticConfig(profiles=("meta_quest_pro",), render_size=(4, 3)))
    be.reset()
    frame = be.step([SetModality("user0-meta_quest_pro", "gaze", False)])["user0-meta_quest_pro"]
    lay = ObservationLayout(("gaze", "pose"), None)
    obs = frame_to_observations(frame, lay, 0)
    assert obs["gaze"].tolist() == [0.0] * 8 and obs["present"][2] == 0.0
    back = observations_to_arrays(obs)
    assert "gaze" not in back and "pose" in back
