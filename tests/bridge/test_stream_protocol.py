"""The stream wire format without sockets: round trips, compression, and rejection of malformed messages."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from bridge.frame import DeviceFrame
from bridge.stream.protocol import (
    PART_SPECS,
    Compression,
    Limits,
    StreamProtocolError,
    decode_message,
    encode_arrays_message,
    encode_frame,
    encode_heartbeat,
    frame_topic,
)
from bridge.stream.synthetic import synthetic_frame


def _bytes(parts):
    return [bytes(memoryview(p)) for p in parts]


def _assert_same(a: DeviceFrame, b: DeviceFrame) -> None:
    for name in ("rgb", "depth_m", "segmentation"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), name
    np.testing.assert_array_equal(a.audio.samples, b.audio.samples)
    assert a.audio.sample_rate_hz == b.audio.sample_rate_hz
    np.testing.assert_allclose(a.head_pose.position_m, b.head_pose.position_m, atol=1e-6)
    np.testing.assert_allclose(a.head_pose.orientation_wxyz, b.head_pose.orientation_wxyz, atol=1e-6)
    np.testing.assert_allclose(a.imu.linear_acceleration_mps2, b.imu.linear_acceleration_mps2, atol=1e-5)
    np.testing.assert_array_equal(a.hands.joints_m, b.hands.joints_m)
    np.testing.assert_array_equal(a.hands.valid, b.hands.valid)
    assert abs(a.gaze.yaw_rad - b.gaze.yaw_rad) < 1e-6 and a.gaze.valid == b.gaze.valid
    assert abs(a.lighting.illuminance_lux - b.lighting.illuminance_lux) < 1e-3
    for name in ("device_id", "user_id", "profile", "step", "sim_time_s", "wall_time_ns", "camera_fov_y_deg",
                 "labels", "active_tasks", "room", "events"):
        assert getattr(a, name) == getattr(b, name), name


@pytest.mark.parametrize("compression", [
    Compression(),
    Compression(rgb="png", depth_m="zlib", segmentation="zlib", audio="zlib"),
])
def test_every_modality_round_trips_bit_exact(compression):
    # Prepare
    frame = synthetic_frame(height_px=8, width_px=6, step=3)
    # Execute
    back = decode_message(_bytes(encode_frame(frame, seq=5, session="ab", publisher="p",
                                              compression=compression))).to_frame()
    # Assert
    _assert_same(frame, back)
    assert np.isinf(back.depth_m[0, 0])


def test_jpeg_is_lossy_but_close_and_declared_in_header():
    frame = synthetic_frame(height_px=32, width_px=32)
    parts = _bytes(encode_frame(frame, seq=0, session="s", publisher="p", compression=Compression(rgb="jpeg")))
    msg = decode_message(parts)
    rgb_desc = next(d for d in msg.header["parts"] if d["name"] == "rgb")
    assert rgb_desc["encoding"] == "jpeg" and rgb_desc["quality"] == 90
    assert msg.arrays["rgb"].shape == (32, 32, 3)
    assert np.abs(msg.arrays["rgb"].astype(int) - frame.rgb.astype(int)).mean() < 6.0


def test_absent_modalities_are_absent_on_the_wire():
    frame = synthetic_frame().without("audio", "gaze", "rgb")
    msg = decode_message(_bytes(encode_frame(frame, seq=0, session="s", publisher="p")))
    assert [d["name"] for d in msg.header["parts"]] == ["depth_m", "segmentation", "pose", "imu", "hands",
                                                         "hands_valid", "lighting"]
    back = msg.to_frame()
    assert back.audio is None and back.gaze is None and back.rgb is None and "audio_hz" not in msg.header


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float16",
                                   "float32", "float64"])
def test_every_wire_dtype_round_trips_raw_and_zlib(dtype):
    arr = (np.arange(12).reshape(3, 4) % 2 == 1) if dtype == "bool" else np.arange(12, dtype=dtype).reshape(3, 4)
    header = {"proto": "xrfed-stream", "v": 1, "kind": "frame", "device_id": "d", "step": 0, "sim_time_s": 0.0,
              "seq": 0}
    for enc in ("raw", "zlib"):
        parts = encode_arrays_message(frame_topic("d"), header, {"extra": arr}, Compression(audio=enc))
        if enc == "zlib":  # extra parts are raw by policy; compress by hand to exercise the decoder's zlib path
            desc = json.loads(parts[1])
            desc["parts"][0]["encoding"] = "zlib"
            parts = [parts[0], json.dumps(desc).encode(), zlib.compress(bytes(memoryview(parts[2])))]
        got = decode_message(_bytes(parts)).arrays["extra"]
        assert got.dtype == arr.dtype and got.shape == (3, 4) and np.array_equal(got, arr)


def test_header_declares_units_and_little_endian_layout():
    msg = decode_message(_bytes(encode_frame(synthetic_frame(), seq=0, session="s", publisher="p")))
    depth = next(d for d in msg.header["parts"] if d["name"] == "depth_m")
    assert depth == {"name": "depth_m", "dtype": "float32", "shape": [8, 6], "encoding": "raw", "nbytes": 8 * 6 * 4,
                     "units": PART_SPECS["depth_m"].units}
    # The raw buffer is the little-endian C-order array: element [1, 2] = 1.0 + 0.01 * 1 + 0.002 * 2
    raw = bytes(memoryview(encode_frame(synthetic_frame(), seq=0, session="s", publisher="p")[3]))
    assert np.frombuffer(raw, "<f4")[1 * 6 + 2] == np.float32(1.014)


def _valid_parts():
    return _bytes(encode_frame(synthetic_frame(), seq=0, session="s", publisher="p"))


@pytest.mark.parametrize("mutate, reason", [
    (lambda p: p[:1], "too_few_parts"),
    (lambda p: [p[0], b"\xff\xfe not json", *p[2:]], "bad_header"),
    (lambda p: [p[0], b"[1, 2]", *p[2:]], "bad_header"),
    (lambda p: [p[0], p[1].replace(b'"v":1', b'"v":2'), *p[2:]], "bad_version"),
    (lambda p: [p[0], p[1].replace(b"xrfed-stream", b"other"), *p[2:]], "bad_proto"),
    (lambda p: p[:-1], "part_count"),
    (lambda p: [p[0], p[1], p[2][:-1], *p[3:]], "size_mismatch"),
    (lambda p: [b"xrfed/other/frame", *p[1:]], "topic_mismatch"),
    (lambda p: [p[0], p[1].replace(b'"dtype":"float32","shape":[8,6]', b'"dtype":"float64","shape":[8,6]'),
                *p[2:]], "bad_dtype"),
    (lambda p: [p[0], p[1].replace(b'"shape":[8,6]', b'"shape":[8,-6]'), *p[2:]], "bad_shape"),
    (lambda p: [p[0], p[1].replace(b'"encoding":"raw"', b'"encoding":"gzip"', 1), *p[2:]], "bad_encoding"),
])
def test_malformed_messages_are_rejected_with_a_reason(mutate, reason):
    with pytest.raises(StreamProtocolError, match=reason) as info:
        decode_message(mutate(_valid_parts()))
    assert info.value.reason == reason


def test_oversized_message_and_zip_bomb_are_rejected_before_allocation():
    with pytest.raises(StreamProtocolError, match="oversized"):
        decode_message(_valid_parts(), Limits(max_message_bytes=1000))
    # A zlib part that inflates past its declared shape: 8x6 int32 declared, 1 MB of zeros inside.
    header = {"proto": "xrfed-stream", "v": 1, "kind": "frame", "device_id": "d", "step": 0, "sim_time_s": 0.0,
              "seq": 0, "parts": [{"name": "segmentation", "dtype": "int32", "shape": [8, 6], "encoding": "zlib"}]}
    bomb = [b"xrfed/d/frame", json.dumps(header).encode(), zlib.compress(bytes(1_000_000))]
    with pytest.raises(StreamProtocolError, match="size_mismatch"):
        decode_message(bomb)
    header["parts"][0]["shape"] = [100_000, 100_000]
    with pytest.raises(StreamProtocolError, match="oversized"):
        decode_message([bomb[0], json.dumps(header).encode(), bomb[2]])


def test_heartbeat_carries_last_sequence_numbers_and_devices():
    parts = encode_heartbeat(publisher="pub", session="s1", seqs={"xrfed/d/frame": 41},
                             devices=[{"device_id": "d", "user_id": "u", "profile": "hololens_2"}], step_dt_s=0.1)
    msg = decode_message(parts)
    assert msg.topic == "xrfed-hb/pub" and msg.kind == "heartbeat"
    assert msg.header["last_seq"] == {"xrfed/d/frame": 41} and msg.header["step_dt_s"] == 0.1
    with pytest.raises(StreamProtocolError, match="not_a_frame"):
        msg.to_frame()


def test_topics_reject_separators_and_compression_rejects_unknown_codecs():
    assert frame_topic("quest_0", "gaze") == b"xrfed/quest_0/gaze"
    with pytest.raises(StreamProtocolError, match="without '/'"):
        frame_topic("a/b")
    with pytest.raises(Exception, match="Compression.depth_m"):
        Compression(depth_m="jpeg")
    assert Compression.parse("rgb=jpeg,depth=zlib,jpeg_quality=70") == Compression(rgb="jpeg", depth_m="zlib",
                                                                                    jpeg_quality=70)


# -- the decoder's cache of descriptor arrays must never change what a header means ----------------------------
def _with_header(parts, header_text: bytes):
    return [parts[0], header_text, *parts[2:]]


def test_cached_descriptors_decode_like_a_full_parse():
    parts = _valid_parts()
    first, second = decode_message(parts), decode_message(parts)  # the second one uses the cache
    assert first.header == second.header == json.loads(parts[1])
    for name in first.arrays:
        np.testing.assert_array_equal(first.arrays[name], second.arrays[name])
    second.header["parts"][0]["name"] = "mutated"  # a caller's header is its own
    assert decode_message(parts).header["parts"][0]["name"] == "rgb"


def test_header_tricks_around_the_cache():
    parts = _valid_parts()
    decode_message(parts)  # cache this descriptor array
    text = parts[1]
    cut = text.rfind(b',"parts":')
    tail = text[cut:]
    # "parts" first (no ',"parts":' at all): a plain parse, same arrays
    head = json.loads(text)
    reordered = json.dumps({"parts": head["parts"], **{k: v for k, v in head.items() if k != "parts"}}).encode()
    assert decode_message(_with_header(parts, reordered)).arrays.keys() == decode_message(parts).arrays.keys()
    # a broken text before the cached tail is still a broken header
    with pytest.raises(StreamProtocolError) as e:
        decode_message(_with_header(parts, b'{"proto":"xrfed-stream",' + tail))
    assert e.value.reason == "bad_header"
    # an empty object before the tail ('{,"parts":...}') is not JSON
    with pytest.raises(StreamProtocolError) as e:
        decode_message(_with_header(parts, b"{" + tail))
    assert e.value.reason == "bad_header"
    # the tail quoted inside a string value is not the parts array
    sneaky = json.dumps({**{k: v for k, v in head.items() if k != "parts"},
                         "room": tail.decode() + "}"}).encode()[:-1] + b',"parts":[]}'
    with pytest.raises(StreamProtocolError) as e:
        decode_message(_with_header(parts, sneaky))
    assert e.value.reason == "part_count"


# -- the JSON layer: orjson when installed, the standard library otherwise, with the same rules --------------------
@pytest.fixture(params=["orjson", "stdlib"])
def json_impl(request, monkeypatch):
    import bridge.stream.protocol as protocol

    if request.param == "stdlib":
        monkeypatch.setattr(protocol, "_orjson", None)
    else:
        pytest.importorskip("orjson")
    return request.param


def test_both_json_paths_write_the_same_bytes_and_read_them_back(json_impl):
    import bridge.stream.protocol as protocol
    from bridge.stream.golden import golden_messages, read_container

    # both paths write the committed golden messages byte for byte (they are what the C# codec is tested against)
    golden = Path(__file__).resolve().parents[2] / "unity_project" / "Tests" / "StreamCodec" / "golden"
    fresh = golden_messages()
    for name in ("frame_raw", "heartbeat"):
        assert read_container(golden / f"{name}.xrfmsg") == fresh[name], name
    frame = synthetic_frame()
    _assert_same(frame, decode_message(_bytes(encode_frame(frame, seq=3, session="s", publisher="p"))).to_frame())
    # numpy scalars in a caller's header are numbers; non-string keys become strings
    msg = encode_arrays_message(b"xrfed/d/extra", {"proto": "xrfed-stream", "v": 1, "kind": "frame", "device_id": "d",
                                                   "step": np.int64(2), "sim_time_s": np.float32(0.5), "seq": 0,
                                                   "extra": {1: "one"}}, {})
    h = decode_message(_bytes(msg)).header
    assert h["step"] == 2 and h["sim_time_s"] == 0.5 and h["extra"] == {"1": "one"}
    assert protocol._json({"a": [1, 2.5, "é"]}) == '{"a":[1,2.5,"é"]}'.encode()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.float32("-inf")])
def test_non_finite_header_values_are_refused_on_both_paths(json_impl, bad):
    header = {"proto": "xrfed-stream", "v": 1, "kind": "frame", "device_id": "d", "step": 0, "sim_time_s": 0.0,
              "seq": 0, "meta": {"nested": [1.0, bad]}}
    with pytest.raises(ValueError):
        encode_arrays_message(b"xrfed/d/frame", header, {})
    frame = synthetic_frame()
    with pytest.raises(ValueError, match="camera_fov_y_deg"):
        encode_frame(DeviceFrame(**{**{f: getattr(frame, f) for f in frame.field_names()}, "camera_fov_y_deg": bad}),
                     seq=0, session="s", publisher="p")


@pytest.mark.parametrize("text", [
    b'{"proto":"xrfed-stream","v":1,"kind":"heartbeat","x":NaN,"parts":[]}',
    b'{"proto":"xrfed-stream","v":1,"kind":"heartbeat","x":Infinity,"parts":[]}',
    b'{"proto":"xrfed-stream","v":1,"kind":"heartbeat","x":"\xff","parts":[]}',
    b'{"proto":"xrfed-stream","v":1,"kind":"heartbeat","x":' + b"[" * 5000 + b"]" * 5000 + b',"parts":[]}',
])
def test_what_is_not_strict_json_is_a_bad_header_on_both_paths(json_impl, text):
    with pytest.raises(StreamProtocolError) as e:
        decode_message([b"xrfed-hb/p", text])
    assert e.value.reason == "bad_header"


@pytest.mark.parametrize("key, value", [
    ("labels", ["scene_classification"]), ("labels", {"scene_classification": "moon"}), ("labels", 5),
    ("active_tasks", 3), ("events", 2), ("camera_fov_y_deg", "wide"), ("camera_fov_y_deg", [1]),
    ("wall_time_ns", None), ("audio_hz", "fast"), ("audio_hz", 10), ("sim_time_s", -1.0),
])
def test_frame_content_errors_are_ones_the_subscriber_counts(key, value):
    from bridge.stream.subscriber import FRAME_ERRORS

    parts = _valid_parts()
    head = json.loads(parts[1])
    head[key] = value
    try:
        msg = decode_message([parts[0], json.dumps(head).encode(), *parts[2:]])
    except StreamProtocolError:
        return  # refused by the wire format already
    with pytest.raises(FRAME_ERRORS):
        msg.to_frame()
