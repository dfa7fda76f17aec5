"""The ``zmq`` backend: frames from a stream-protocol publisher, with the same contract as every backend."""

from __future__ import annotations

import threading
import time

import pytest

from bridge.backend import DeviceInfo, SetLighting, SetModality
from bridge.errors import BackendError, TransportError
from bridge.registry import make_backend
from bridge.stream import Publisher, PublisherConfig
from bridge.stream.backend import ZmqBackend
from bridge.stream.synthetic import synthetic_frame


class _Scene(threading.Thread):
    """Publishes two devices' synthetic frames step after step until stopped (a stand-in remote scene)."""

    def __init__(self, publisher: Publisher, rate_hz: float = 200.0):
        super().__init__(daemon=True)
        self.pub, self.period, self.stop = publisher, 1.0 / rate_hz, threading.Event()

    def run(self) -> None:
        step = 0
        while not self.stop.is_set():
            for dev in ("d0", "d1"):
                self.pub.publish(synthetic_frame(dev, step=step))
            step += 1
            time.sleep(self.period)


@pytest.fixture
def scene():
    pub = Publisher(PublisherConfig(bind="tcp://127.0.0.1:*", mode="lossless", heartbeat_s=0.05),
                    step_dt_s=0.1).open()
    thread = _Scene(pub)
    thread.start()
    yield pub
    thread.stop.set()
    thread.join(5)
    pub.close()


def test_zmq_backend_learns_devices_and_yields_consecutive_steps(scene):
    with make_backend("zmq", scene.endpoint, timeout_s=5.0) as env:
        first = env.reset()
        second = env.step()
        third = env.step([SetModality("d1", "audio", enabled=False), SetModality("d1", "rgb", enabled=False)])
    assert env.devices == (DeviceInfo("d0", "user_d0", "meta_quest_3"), DeviceInfo("d1", "user_d1", "meta_quest_3"))
    assert env.step_dt_s == 0.1
    assert set(first) == {"d0", "d1"} and first["d0"].step == first["d1"].step
    assert second["d0"].step == second["d1"].step == first["d0"].step + 1
    assert third["d1"].audio is None and third["d1"].rgb is None and third["d0"].audio is not None
    assert third["d0"].step == second["d0"].step + 1


def test_latest_mode_returns_newer_frames_each_step(scene):
    with ZmqBackend(scene.endpoint, mode="latest", devices=["d0"], step_dt_s=0.1, timeout_s=5.0) as env:
        a = env.reset()
        time.sleep(0.05)
        b = env.step()
    assert set(a) == {"d0"} and b["d0"].step > a["d0"].step


def test_incomplete_step_is_skipped_and_counted():
    with Publisher(PublisherConfig(bind="tcp://127.0.0.1:*", mode="lossless")) as pub:
        env = ZmqBackend(pub.endpoint, devices=["d0", "d1"], step_dt_s=0.1, timeout_s=3.0).open()
        with env:
            assert pub.wait_for_subscriber(b"xrfed/d1/frame")
            for dev, step in [("d0", 0), ("d1", 0), ("d0", 1), ("d0", 2), ("d1", 2)]:  # d1's step 1 is lost
                pub.publish(synthetic_frame(dev, step=step))
            first = env.reset()
            second = env.step()
    assert first["d0"].step == 0 and second["d0"].step == second["d1"].step == 2
    assert env.incomplete_steps == 1


def test_silent_stream_times_out_naming_the_missing_device():
    with Publisher(PublisherConfig(bind="tcp://127.0.0.1:*", mode="lossless")) as pub:
        with ZmqBackend(pub.endpoint, devices=["d0", "d1"], step_dt_s=0.1, timeout_s=0.5).open() as env:
            assert pub.wait_for_subscriber(b"xrfed/d0/frame")
            pub.publish(synthetic_frame("d0", step=0))
            with pytest.raises(TransportError, match=r"missing frames of \['d1'\]"):
                env.reset()


def test_lighting_commands_warn_once_and_are_counted(scene):
    with ZmqBackend(scene.endpoint, timeout_s=5.0) as env:
        env.reset()
        with pytest.warns(UserWarning, match="one-way stream"):
            env.step([SetLighting(intensity=0.5)])
        env.step([SetLighting(intensity=0.2)])
    assert env.unapplied_commands == 2
    with pytest.raises(BackendError, match="after close"):
        env.step()
