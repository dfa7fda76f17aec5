"""A reader written only from docs/stream-protocol.md (plain pyzmq + json + numpy + zlib) reads our stream."""

from __future__ import annotations

import json
import zlib

import numpy as np
import zmq

from bridge.stream import Compression, Publisher, PublisherConfig
from bridge.stream.synthetic import synthetic_frame


def _plain_read(sock: zmq.Socket, timeout_ms: int) -> tuple[dict, dict]:
    """Exactly the documented steps: topic, JSON header, one buffer per descriptor, C order little-endian."""
    assert sock.poll(timeout_ms), "no message"
    topic, header, *buffers = sock.recv_multipart()
    h = json.loads(header)
    assert h["proto"] == "xrfed-stream" and h["v"] == 1
    arrays = {}
    for desc, buf in zip(h["parts"], buffers, strict=True):
        if desc["encoding"] == "zlib":
            buf = zlib.decompressobj().decompress(buf, desc["nbytes"])
        assert len(buf) == desc["nbytes"]
        dtype = np.dtype(desc["dtype"]).newbyteorder("<") if desc["dtype"] != "bool" else np.dtype(bool)
        arrays[desc["name"]] = np.frombuffer(buf, dtype=dtype).reshape(desc["shape"])
    h["_topic"] = topic.decode()
    return h, arrays


def test_plain_pyzmq_reader_decodes_a_published_frame():
    frame = synthetic_frame("quest_7", step=12)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.linger = 0
    try:
        cfg = PublisherConfig(bind="tcp://127.0.0.1:*", mode="lossless", compression=Compression(depth_m="zlib"))
        with Publisher(cfg) as pub:
            sock.connect(pub.endpoint)
            sock.setsockopt(zmq.SUBSCRIBE, b"xrfed/quest_7/")
            assert pub.wait_for_subscriber(b"xrfed/quest_7/frame")
            pub.publish(frame)
            h, arrays = _plain_read(sock, 2000)
    finally:
        sock.close(0)
        ctx.term()
    assert h["_topic"] == "xrfed/quest_7/frame" and h["kind"] == "frame" and h["step"] == 12 and h["seq"] == 0
    assert np.array_equal(arrays["rgb"], frame.rgb) and np.array_equal(arrays["depth_m"], frame.depth_m)
    assert np.array_equal(arrays["segmentation"], frame.segmentation)
    # pose = position (x, y, z) then quaternion (w, x, y, z): the synthetic head is at (1, 2, 1.58)
    np.testing.assert_allclose(arrays["pose"][:3], [1.0, 2.0, 1.58], rtol=1e-6)
    assert arrays["audio"].shape == (2, 160) and h["audio_hz"] == 16000
    assert arrays["gaze_valid"].shape == () and bool(arrays["gaze_valid"]) is True
    assert h["labels"] == {"scene_classification": "kitchen", "object_recognition": "mug"}
