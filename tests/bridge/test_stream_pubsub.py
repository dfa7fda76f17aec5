"""Publisher and subscriber on real pyzmq sockets (127.0.0.1, random ports, linger 0, receive timeouts)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import zmq

from bridge.errors import TransportError
from bridge.stream import (
    Compression,
    CurveConfig,
    Publisher,
    PublisherConfig,
    Subscriber,
    SubscriberConfig,
    encode_frame,
    generate_keypair,
)
from bridge.stream.protocol import encode_heartbeat
from bridge.stream.synthetic import synthetic_frame


@pytest.fixture
def raw_pub():
    """A bare PUB socket to inject hand-made messages (gaps, garbage)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close(0)
    ctx.term()


def _joined(sock, sub, timeout_s=5.0):
    """Send heartbeats until the subscriber has one (the slow-joiner handshake for a bare PUB socket)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sock.send_multipart(encode_heartbeat(publisher="raw", session="s0", seqs={}, devices=[], step_dt_s=None))
        if sub.recv(0.05) is None and sub.stats.heartbeats:
            return
    raise AssertionError("subscriber never joined")


def _subscribed(pub, sub, timeout_s=5.0, topic=b"xrfed/"):
    """Wait until ``pub`` sees ``sub``'s subscription. libzmq sends a SUB socket's subscriptions on a new or re-made
    connection only when the socket's owner next touches it, so keep the subscriber polling meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pub.wait_for_subscriber(topic, timeout_s=0.05):
            return True
        assert sub.recv(0.02) is None
    return False


def _send(sock, frame, seq, session="s0"):
    sock.send_multipart([bytes(memoryview(p)) for p in
                         encode_frame(frame, seq=seq, session=session, publisher="raw")])


def test_lossless_delivers_every_frame_in_order():
    with Publisher(PublisherConfig(bind="tcp://127.0.0.1:*", mode="lossless")) as pub, \
            Subscriber(SubscriberConfig(connect=(pub.endpoint,))) as sub:
        assert pub.wait_for_subscriber()
        for step in range(20):
            for dev in ("d0", "d1"):
                pub.publish(synthetic_frame(dev, step=step))
        got = [sub.recv_frame(2.0) for _ in range(40)]
    assert [(f.device_id, f.step) for f in got] == [(d, s) for s in range(20) for d in ("d0", "d1")]
    assert sub.stats.missing == 0 and sub.stats.frames == 40 and sub.stats.rejected_total == 0


def test_sequence_gap_is_detected_and_counted(raw_pub):
    sock, ep = raw_pub
    with Subscriber(SubscriberConfig(connect=(ep,))) as sub:
        _joined(sock, sub)
        for seq in (0, 1, 4, 5):  # 2 and 3 lost
            _send(sock, synthetic_frame("d0", step=seq), seq)
        steps = [sub.recv_frame(2.0).step for _ in range(4)]
        # The heartbeat says 8 went out on this topic; 6..8 never arrived (a loss at the tail of the stream).
        sock.send_multipart(encode_heartbeat(publisher="raw", session="s0", seqs={"xrfed/d0/frame": 8},
                                             devices=[], step_dt_s=None))
        assert sub.recv(0.3) is None
    assert steps == [0, 1, 4, 5]
    assert sub.stats.missing == 2 + 3
    assert [(g.expected_seq, g.got_seq) for g in sub.stats.gap_events] == [(2, 4), (6, 9)]


def test_garbage_and_invalid_frames_are_counted_and_the_subscriber_keeps_running(raw_pub):
    sock, ep = raw_pub
    with Subscriber(SubscriberConfig(connect=(ep,))) as sub:
        _joined(sock, sub)
        sock.send_multipart([b"xrfed/d0/frame", b"\x00\x01garbage"])
        sock.send(b"xrfed/d0/frame")  # a single-part message
        good = [bytes(memoryview(p)) for p in encode_frame(synthetic_frame("d0"), seq=0, session="s0",
                                                            publisher="raw")]
        header = json.loads(good[1])
        header["labels"] = {"scene_classification": "spaceship"}  # decodes, but breaks the frame contract
        sock.send_multipart([good[0], json.dumps(header).encode(), *good[2:]])
        _send(sock, synthetic_frame("d0", step=7), seq=1)
        frame = sub.recv_frame(2.0)
    assert frame is not None and frame.step == 7
    assert sub.stats.rejected == {"bad_header": 1, "too_few_parts": 1, "bad_frame": 1}


def test_latest_only_keeps_the_newest_frame_per_topic():
    with Publisher(PublisherConfig(bind="tcp://127.0.0.1:*", mode="lossless")) as pub, \
            Subscriber(SubscriberConfig(connect=(pub.endpoint,), mode="latest")) as sub:
        assert pub.wait_for_subscriber()
        for step in range(5):
            pub.publish(synthetic_frame("d0", step=step))
        for step in range(3):
            pub.publish(synthetic_frame("d1", step=step))
        time.sleep(0.2)  # let everything arrive, so one drain sees all of it
        latest = sub.recv_latest(2.0)
    assert {t: m.header["step"] for t, m in latest.items()} == {"xrfed/d0/frame": 4, "xrfed/d1/frame": 2}
    assert sub.stats.superseded == 4 + 2 and sub.stats.missing == 0


def test_modality_channels_have_their_own_topics():
    cfg = PublisherConfig(bind="tcp://127.0.0.1:*", mode="lossless", channels={"frame": (), "gaze": ("gaze", "pose")})
    with Publisher(cfg) as pub, \
            Subscriber(SubscriberConfig(connect=(pub.endpoint,), topics=("xrfed/d0/gaze",))) as sub:
        assert pub.wait_for_subscriber(b"xrfed/d0/gaze")
        pub.publish(synthetic_frame("d0", step=0))
        frame = sub.recv_frame(2.0)
        assert sub.recv(0.2) is None  # the whole-frame channel was not subscribed
    assert frame.present_modalities() == ("gaze", "pose") and frame.rgb is None


def test_subscriber_survives_a_publisher_restart_on_the_same_address():
    first = Publisher(PublisherConfig(bind="tcp://127.0.0.1:*", mode="lossless")).open()
    endpoint = first.endpoint
    with Subscriber(SubscriberConfig(connect=(endpoint,))) as sub:
        assert first.wait_for_subscriber()
        first.publish(synthetic_frame("d0", step=0))
        assert sub.recv_frame(2.0).step == 0
        first.close()
        second = Publisher(PublisherConfig(bind=endpoint, mode="lossless")).open()
        try:
            assert _subscribed(second, sub, timeout_s=10.0)  # zmq reconnected by itself
            second.publish(synthetic_frame("d0", step=100))
            frame = sub.recv_frame(2.0)
        finally:
            second.close()
    assert frame.step == 100
    assert sub.stats.restarts == 1 and sub.stats.missing == 0  # a new session restarts sequence tracking


def test_silent_socket_is_rebuilt_after_reconnect_after_s(raw_pub):
    sock, ep = raw_pub
    with Subscriber(SubscriberConfig(connect=(ep,), reconnect_after_s=0.2)) as sub:
        assert sub.recv(0.3) is None
        assert sub.stats.reconnects == 1
        _joined(sock, sub)
        _send(sock, synthetic_frame("d0", step=3), seq=0)
        assert sub.recv_frame(2.0).step == 3


def test_curve_allow_list_rejects_an_unknown_publisher_key():
    # Prepare: the bridge binds and allows one publisher key; a second publisher has a key not on the list.
    bridge_pub, bridge_sec = generate_keypair()
    known_pub, known_sec = generate_keypair()
    stranger_pub, stranger_sec = generate_keypair()
    sub_cfg = SubscriberConfig(bind="tcp://127.0.0.1:*", curve=CurveConfig(bridge_pub, bridge_sec,
                                                                           allowed_keys=(known_pub,)))
    with Subscriber(sub_cfg) as sub:
        stranger = PublisherConfig(connect=(sub.endpoint,), mode="lossless", publisher_id="stranger",
                                   curve=CurveConfig(stranger_pub, stranger_sec, server_key=bridge_pub))
        known = PublisherConfig(connect=(sub.endpoint,), mode="lossless", publisher_id="known",
                                curve=CurveConfig(known_pub, known_sec, server_key=bridge_pub))
        with Publisher(stranger) as bad, Publisher(known) as good:
            # Execute
            assert _subscribed(good, sub)
            assert not _subscribed(bad, sub, timeout_s=0.3)
            bad.publish(synthetic_frame("intruder", step=0))
            good.publish(synthetic_frame("d0", step=1))
            frames = [sub.recv_frame(1.0), sub.recv_frame(0.3)]
    # Assert
    assert frames[0].device_id == "d0" and frames[1] is None
    assert sub.denied_keys >= 1 and set(sub.publishers) == {"known"}


def test_curve_client_pinning_the_wrong_server_key_receives_nothing():
    server_pub, server_sec = generate_keypair()
    impostor_pub, _ = generate_keypair()
    client_pub, client_sec = generate_keypair()
    with Publisher(PublisherConfig(bind="tcp://127.0.0.1:*", curve=CurveConfig(server_pub, server_sec))) as pub, \
            Subscriber(SubscriberConfig(connect=(pub.endpoint,),
                                        curve=CurveConfig(client_pub, client_sec, server_key=impostor_pub))) as sub:
        assert not pub.wait_for_subscriber(timeout_s=0.5)
        pub.publish(synthetic_frame("d0"))
        assert sub.recv(0.3) is None


def test_lifecycle_refuses_use_before_open_and_after_close():
    pub = Publisher(PublisherConfig(bind="tcp://127.0.0.1:*"))
    with pytest.raises(TransportError, match="unopened"):
        pub.publish(synthetic_frame())
    pub.open()
    pub.close()
    with pytest.raises(TransportError, match="after close"):
        pub.publish(synthetic_frame())
    with pytest.raises(TransportError, match="after close"):
        pub.open()


def test_compressed_stream_round_trips_over_the_socket():
    cfg = PublisherConfig(bind="tcp://127.0.0.1:*", mode="lossless",
                          compression=Compression(rgb="png", depth_m="zlib", segmentation="zlib"))
    frame = synthetic_frame("d0", height_px=48, width_px=64)
    with Publisher(cfg) as pub, Subscriber(SubscriberConfig(connect=(pub.endpoint,))) as sub:
        assert pub.wait_for_subscriber()
        pub.publish(frame)
        got = sub.recv_frame(2.0)
    assert np.array_equal(got.rgb, frame.rgb) and np.array_equal(got.depth_m, frame.depth_m)
    assert pub.stats.bytes < frame.rgb.nbytes + frame.depth_m.nbytes


def test_stream_bench_runs_alternating_repeats_and_reports_median_ratios():
    from bridge.stream.bench import bench_stream

    out = bench_stream(budget_mb=0.5, sizes=((16, 24),), devices=(2,), repeats=2)
    raw, comp = out["results"]
    assert raw["compression"] == "raw" and comp["compression"] == "compressed"
    for row in (raw, comp):
        assert len(row["ratio_vs_pyzmq_runs"]) == 2 and all(r > 0 for r in row["ratio_vs_pyzmq_runs"])
        assert min(row["ratio_vs_pyzmq_runs"]) <= row["ratio_vs_pyzmq"] <= max(row["ratio_vs_pyzmq_runs"])
        assert row["frames"] == row["steps"] * 2 and row["ours_frames_per_s"] > 0
    assert raw["ratio_vs_pyzmq_same_codec"] is None and len(comp["ratio_vs_pyzmq_same_codec_runs"]) == 2
    assert raw["ratio_vs_pyzmq_arrays"] > 0 and comp["ratio_vs_pyzmq_arrays"] is None
    assert out["summary"]["worst_ratio_vs_pyzmq_raw"] == raw["ratio_vs_pyzmq"]
