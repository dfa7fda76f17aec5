"""Room acoustics: RT60 defaults, head-frame mapping, interaural cues, IR cache, streaming convolution."""

import json
import math

import numpy as np
import pytest

from bridge.embedded import acoustics
from bridge.embedded.acoustics import (
    AcousticsError,
    ListenerStream,
    RoomAcoustics,
    bench_audio,
    head_offsets_to_room,
    rt60_for_room_type,
    schroeder_rt60_s,
)
from bridge.errors import UnknownNameError
from bridge.tasks import ROOM_TYPES

FS = 16000
EARS = np.array([[-0.075, 0.0, 0.0], [0.075, 0.0, 0.0]])  # left, right; 0.15 m apart in the head frame


# ------------------------------------------------------------------ defaults and frames
def test_every_room_type_has_a_plausible_rt60():
    for room_type in ROOM_TYPES:
        assert 0.3 <= rt60_for_room_type(room_type) <= 2.0
    assert 0.4 <= rt60_for_room_type("living_room") <= 0.6
    assert 1.2 <= rt60_for_room_type("factory_floor") <= 2.0
    with pytest.raises(UnknownNameError, match="known: .*living_room"):
        rt60_for_room_type("ballroom")


def test_head_offsets_map_to_room_by_yaw():
    right, up, forward = np.eye(3)

    at0 = head_offsets_to_room(np.stack([right, up, forward]), 0.0)
    at90 = head_offsets_to_room(np.stack([right, up, forward]), math.pi / 2)

    np.testing.assert_allclose(at0, [[0, -1, 0], [0, 0, 1], [1, 0, 0]], atol=1e-12)  # facing +x: right is -y
    np.testing.assert_allclose(at90, [[1, 0, 0], [0, 0, 1], [0, 1, 0]], atol=1e-12)  # facing +y: right is +x


# ------------------------------------------------------------------ impulse responses
@pytest.mark.parametrize(
    ("yaw_rad", "source_m"), [(0.0, (2.25, 0.75, 1.75)), (math.pi / 2, (3.75, 2.25, 1.75))]
)
def test_source_on_the_right_is_earlier_and_louder_at_the_right_ear(yaw_rad, source_m):
    room = RoomAcoustics(size_m=(5.0, 4.5, 3.0), rt60_s=0.5, sample_rate_hz=FS)
    head_m = (2.25, 2.25, 1.75)  # a cell centre, so no quantisation shift; the source is 1.5 m to the right

    ir = room.impulse_responses(source_m, head_m, yaw_rad, EARS)

    direct = np.abs(ir[:, : int(0.008 * FS)])  # the direct sound arrives at ~4.4 ms
    arrival = direct.argmax(axis=1)
    itd_s = (arrival[0] - arrival[1]) / FS
    # right ear 1.425 m, left ear 1.575 m away: ITD 0.15 / 343 = 0.437 ms (7 samples). ILD: spreading 1.575 / 1.425
    # times head shadow: the right mic faces the source (gain 1), the left one faces away (sub-cardioid p:
    # gain p - (1 - p) = 2p - 1 from directly behind).
    assert arrival[1] == round(1.425 / 343.0 * FS)
    assert itd_s == pytest.approx(0.15 / 343.0, abs=1.0 / FS)
    assert 0.0 < itd_s <= 0.7e-3
    p = acoustics._MIC_PATTERN_P
    assert direct[1].max() / direct[0].max() == pytest.approx(1.575 / 1.425 / (2 * p - 1), rel=0.05)
    assert ir.shape == (2, int(0.35 * FS)) and ir.dtype == np.float32


def test_impulse_response_decays_with_the_requested_rt60():
    room = RoomAcoustics(size_m=(5.0, 4.0, 3.0), rt60_s=0.5, sample_rate_hz=FS, max_ir_s=0.4)

    ir = room.impulse_responses((1.1, 1.3, 1.2), (3.7, 2.8, 1.6), 0.5, EARS)

    assert schroeder_rt60_s(ir[0], FS) == pytest.approx(0.5, rel=0.3)
    assert schroeder_rt60_s(ir[1], FS) == pytest.approx(0.5, rel=0.3)


def test_same_quantised_key_hits_the_cache_without_pyroomacoustics(monkeypatch):
    room = RoomAcoustics(size_m=(5.0, 4.0, 3.0), rt60_s=0.5, sample_rate_hz=FS, cell_m=0.5, yaw_step_deg=30)
    first = room.impulse_responses((1.1, 1.2, 1.1), (3.1, 2.1, 1.6), 0.0, EARS)
    calls = []
    real_shoebox = room._pra.ShoeBox
    monkeypatch.setattr(room._pra, "ShoeBox", lambda *a, **k: calls.append(1) or real_shoebox(*a, **k))

    same_cells = room.impulse_responses((1.4, 1.0, 1.4), (3.4, 2.4, 1.9), math.radians(10), EARS)
    calls_after_hit = len(calls)
    turned = room.impulse_responses((1.4, 1.0, 1.4), (3.4, 2.4, 1.9), math.radians(20), EARS)

    assert same_cells is first and calls_after_hit == 0  # 10 deg rounds to yaw step 0: a hit
    assert turned is not first and len(calls) == 1  # 20 deg rounds to 30 deg: a miss
    assert room.cache_stats == {"hits": 1, "misses": 2, "hit_rate": pytest.approx(1 / 3), "entries": 2}
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0] = 1.0


def test_room_rejects_impossible_configs():
    with pytest.raises(AcousticsError, match="too large for so short a reverberation"):
        RoomAcoustics(size_m=(30.0, 20.0, 8.0), rt60_s=0.1, sample_rate_hz=FS)
    with pytest.raises(AcousticsError, match="size_m must be 3 lengths"):
        RoomAcoustics(size_m=(5.0, 4.0), rt60_s=0.5, sample_rate_hz=FS)
    room = RoomAcoustics(size_m=(5.0, 4.0, 3.0), rt60_s=0.5, sample_rate_hz=FS)
    with pytest.raises(AcousticsError, match=r"mic_offsets_head_m must be \[C, 3\]"):
        room.impulse_responses((1, 1, 1), (2, 2, 1.6), 0.0, np.zeros((2, 2)))


# ------------------------------------------------------------------ streaming convolution
def _ir(seed, channels, length):
    rng = np.random.default_rng(seed)
    decay = np.exp(-np.arange(length) / (length / 4))
    return (0.1 * rng.standard_normal((channels, length)) * decay).astype(np.float32)


def test_streaming_equals_one_shot_convolution_and_rings_out():
    b, n_blocks = 64, 10
    ir = _ir(1, 2, 150)  # 3 partitions of 64
    x = np.random.default_rng(2).standard_normal(b * n_blocks).astype(np.float32)
    stream = ListenerStream(channels=2, block_len=b, max_ir_len=200)

    live = [stream.process({"a": (x[k * b : (k + 1) * b], ir)}) for k in range(n_blocks)]
    tail = [stream.process({}) for _ in range(5)]  # the source went away: its reverberation rings out
    out = np.concatenate(live + tail, axis=1)

    ref = np.stack([np.convolve(x, ir[c]) for c in range(2)])  # 640 + 150 - 1 = 789 samples
    np.testing.assert_allclose(out[:, : ref.shape[1]], ref, atol=1e-4)
    assert np.max(np.abs(tail[0])) > 0.05  # the first silent block still carries the tail
    assert np.max(np.abs(tail[2][:, 789 - 12 * b :])) < 1e-6 and np.max(np.abs(tail[3])) < 1e-6  # decayed
    assert stream.active_sources == []  # forgotten once rung out


def test_changed_ir_is_crossfaded_in_one_block_then_used():
    b = 64
    ir_a, ir_b = _ir(3, 2, 100), _ir(4, 2, 100)
    x = np.random.default_rng(5).standard_normal(b * 8).astype(np.float32)
    stream = ListenerStream(channels=2, block_len=b, max_ir_len=128)

    out = [stream.process({"a": (x[k * b : (k + 1) * b], ir_a if k < 4 else ir_b)}) for k in range(8)]

    ref_a = np.stack([np.convolve(x, ir_a[c]) for c in range(2)])
    ref_b = np.stack([np.convolve(x, ir_b[c]) for c in range(2)])
    w = (np.arange(b) + 0.5) / b  # linear crossfade over block 4
    np.testing.assert_allclose(
        out[4], (1 - w) * ref_a[:, 4 * b : 5 * b] + w * ref_b[:, 4 * b : 5 * b], atol=1e-4
    )
    np.testing.assert_allclose(
        out[5], ref_b[:, 5 * b : 6 * b], atol=1e-4
    )  # the new IR over the whole history
    np.testing.assert_allclose(out[3], ref_a[:, 3 * b : 4 * b], atol=1e-4)


def test_sources_add_up_and_sensor_noise_has_the_requested_rms():
    b = 64
    ir1, ir2 = _ir(6, 3, 64), _ir(7, 3, 90)
    x1, x2 = np.random.default_rng(8).standard_normal((2, b)).astype(np.float32)
    both = ListenerStream(channels=3, block_len=b, max_ir_len=128).process({"s1": (x1, ir1), "s2": (x2, ir2)})
    noisy = ListenerStream(
        channels=3, block_len=b, max_ir_len=128, sensor_noise_rms=0.01, rng=np.random.default_rng(9)
    )

    noise = np.concatenate([noisy.process({}) for _ in range(100)], axis=1)

    ref = np.stack([np.convolve(x1, ir1[c])[:b] + np.convolve(x2, ir2[c])[:b] for c in range(3)])
    np.testing.assert_allclose(both, ref, atol=1e-4)
    assert np.sqrt(np.mean(noise**2)) == pytest.approx(0.01, rel=0.1)
    assert abs(np.corrcoef(noise)[0, 1]) < 0.1  # independent per channel


def test_stream_rejects_wrong_shapes():
    stream = ListenerStream(channels=2, block_len=64, max_ir_len=100)
    with pytest.raises(AcousticsError, match=r"block must be float32 \[64\]"):
        stream.process({"a": (np.zeros(63, np.float32), np.zeros((2, 10), np.float32))})
    with pytest.raises(AcousticsError, match=r"impulse responses must be \[2, 1..100\]"):
        stream.process({"a": (np.zeros(64, np.float32), np.zeros((2, 101), np.float32))})


# ------------------------------------------------------------------ benchmark
def test_bench_audio_writes_its_figures(tmp_path):
    path = tmp_path / "audio.json"

    result = bench_audio(path, repeats=3)

    assert json.loads(path.read_text()) == result
    assert result["ir_miss_ms"] > result["ir_hit_ms"] > 0
    assert result["process_ms"] > 0 and result["fftconvolve_baseline_ms"] > 0
    assert result["config"]["ir_len"] == int(0.35 * 16000)
    assert acoustics.__all__.count("bench_audio") == 1
