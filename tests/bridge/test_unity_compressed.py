"""Compressed visual observations (issue 17): the wire spec of docs/unity.md, and embedded frames through the real
mlagents-envs client -- RGB bit-exact, depth within half a millimetre, no-hit preserved."""

from __future__ import annotations

import io
import socket

import numpy as np
import pytest

from bridge.unity.errors import UnityProtocolError
from bridge.unity.observations import (
    DEPTH_BOUND_M,
    DEPTH_NO_HIT,
    depth_from_channels,
    depth_to_millimetres,
    encode_depth_png,
    encode_png,
)


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png), formats=["PNG"]) as im:
        assert (im.format, im.mode) == ("PNG", "RGB")
        return np.asarray(im)


def test_depth_to_millimetres_hand_computed():
    depth = np.array([[0.0, 0.0004, 0.0006, 1.2346], [65.534, 65.5346, 1e6, np.inf]], np.float32)
    np.testing.assert_array_equal(depth_to_millimetres(depth), [[0, 0, 1, 1235], [65534, 65535, 65535, 65535]])


def test_depth_png_carries_hi_lo_bytes_and_zero_blue():
    # 0.258 m = 258 mm = 0x0102; 1 m = 1000 mm = 0x03E8; no hit = 0xFFFF
    px = _pixels(encode_depth_png(np.array([[0.258, 1.0, np.inf]], np.float32)))
    assert px.tolist() == [[[1, 2, 0], [3, 232, 0], [255, 255, 0]]]


def test_rgb_png_round_trips_every_byte():
    img = np.random.default_rng(0).integers(0, 256, (7, 13, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_pixels(encode_png(img)), img)
    with pytest.raises(UnityProtocolError, match=r"expected a uint8 \[H, W, 3\] image, got float32 \(2, 2\)"):
        encode_png(np.zeros((2, 2), np.float32))


def test_depth_through_the_mlagents_decoder_stays_within_the_bound():
    process_pixels = pytest.importorskip("mlagents_envs.rpc_utils").process_pixels
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.0, 65.5, (16, 20)).astype(np.float32)
    depth[0, :4] = (np.inf, 0.0, 65.534, 0.0005)
    hi_lo = process_pixels(encode_depth_png(depth), 2, [0, 1, -1])  # the client drops the blue channel
    assert hi_lo.shape == (2, 16, 20) and hi_lo.dtype == np.float32
    back = depth_from_channels(*hi_lo)
    assert back.dtype == np.float32 and np.isinf(back[0, 0]) and np.isfinite(back[0, 1:]).all()
    assert back[0, 1] == 0.0 and back[0, 2] == np.float32(65.534)
    err = np.abs(back[np.isfinite(depth)] - depth[np.isfinite(depth)])
    assert err.max() <= DEPTH_BOUND_M
    mm = hi_lo * 255  # every decoded value is a byte / 255
    np.testing.assert_allclose(mm, np.rint(mm), atol=1e-4)
    assert (np.rint(mm[0]) * 256 + np.rint(mm[1]))[0, 0] == DEPTH_NO_HIT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_embedded_frames_through_the_real_client_match_the_scene():
    pytest.importorskip("mujoco")
    pytest.importorskip("mlagents_envs")
    from bridge.arrays import frame_to_arrays
    from bridge.embedded.backend import EmbeddedBackend
    from bridge.unity.backend import UnityBackend
    from bridge.unity.player import PlayerConfig, StandInPlayer

    kw = {"seed": 4, "render_size": (24, 24), "max_avatars": 2, "render_process": False}
    with EmbeddedBackend("default", **kw) as ref:
        want = [ref.reset(seed=4)] + [ref.step() for _ in range(2)]
    port = _free_port()
    player = StandInPlayer(EmbeddedBackend("default", **kw), PlayerConfig(port=port, connect_timeout_s=30), seed=4)
    player.start()
    backend = UnityBackend(base_port=port, timeout_wait_s=30, seed=4)
    try:
        got = [backend.reset(seed=4)] + [backend.step() for _ in range(2)]
    finally:
        backend.close()
        player.stop(5.0)
    for g_step, w_step in zip(got, want, strict=True):
        assert sorted(g_step) == sorted(w_step)
        for dev, w in w_step.items():
            a, b = frame_to_arrays(g_step[dev]), frame_to_arrays(w)
            assert a.keys() == b.keys() and a["present"] == b["present"] and a["labels"] == b["labels"]
            assert b["rgb"].dtype == np.uint8 and a["rgb"].dtype == np.uint8
            np.testing.assert_array_equal(a["rgb"], b["rgb"], err_msg=f"{dev} rgb")
            hit = np.isfinite(b["depth_m"])
            np.testing.assert_array_equal(np.isfinite(a["depth_m"]), hit, err_msg=f"{dev} no-hit pixels")  # none
            # in this closed room; the synthetic scene's inf pixel is checked in test_unity_backend.py
            assert np.abs(a["depth_m"][hit] - b["depth_m"][hit]).max() <= DEPTH_BOUND_M
            for k in a.keys() - {"present", "labels", "rgb", "depth_m"}:
                np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=f"{dev} {k}")
