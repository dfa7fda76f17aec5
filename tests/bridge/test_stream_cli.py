"""``xrfed stream`` publishes the embedded scene; the zmq backend consumes it with the frame contract intact."""

from __future__ import annotations

import argparse
import threading

import numpy as np
import pytest

from bridge.registry import make_backend
from bridge.stream.cli import register, run


def _args(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_stream_cli_parses_its_options():
    args = _args(["stream", "default", "--bind", "tcp://127.0.0.1:5999", "--steps", "3", "--compress", "rgb=png"])
    assert args.func is run and args.steps == 3 and args.mode == "latest" and args.compress == "rgb=png"


@pytest.mark.slow
def test_embedded_scene_streams_into_the_zmq_backend():
    import zmq

    ctx = zmq.Context()
    probe = ctx.socket(zmq.PUB)  # find a free port, then let the CLI bind it
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(0)
    ctx.term()
    endpoint = f"tcp://127.0.0.1:{port}"
    args = _args(["stream", "default", "--bind", endpoint, "--steps", "60", "--rate-hz", "40", "--mode", "lossless",
                  "--max-avatars", "2", "--render-size", "32x32", "--no-audio", "--compress", "depth_m=zlib"])
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", run(args)), daemon=True)
    thread.start()
    try:
        with make_backend("zmq", endpoint, timeout_s=30.0) as env:
            first = env.reset()
            second = env.step()
            expected = make_backend("embedded", "default", max_avatars=2, render_size=(32, 32), audio=False).devices
    finally:
        thread.join(60)
    assert result.get("rc") == 0
    assert env.devices == expected and set(first) == {d.device_id for d in expected}
    frame = second[expected[0].device_id]
    assert frame.step == first[expected[0].device_id].step + 1
    assert frame.rgb.shape == (32, 32, 3) and frame.depth_m.dtype == np.float32 and frame.head_pose is not None
    assert env.step_dt_s == pytest.approx(make_backend("embedded", "default").step_dt_s)
