"""The ``zmq`` scene backend: consumes any publisher that speaks the stream protocol and yields DeviceFrames.

Publishers include ``xrfed stream`` (the embedded scene), the Omniverse Kit extension and the Unity NetMQ streamer.
The stream is one-way, so this backend is a *consumer*: ``reset`` starts reading (it cannot restart a remote scene,
and ``seed`` is the publisher's business), ``step`` returns the next step's frames.

* ``mode="lossless"``: every step in order. Frames are grouped by ``step``; a step is returned once every device has
  a frame for it. A step that can never complete (a frame was lost) is skipped when a later one completes, and
  counted in :attr:`ZmqBackend.incomplete_steps`. Pending steps are bounded (256 steps and
  ``Limits.max_queue_bytes`` of arrays); a step number far behind the last (a restarted scene, or an absurd one) starts
  step tracking over, counted in :attr:`ZmqBackend.step_resyncs`.
* ``mode="latest"``: the newest frame of every device (they may come from different steps), for live viewing.

Scene commands: :class:`~bridge.backend.SetModality` is applied here (the modality is removed from that device's
frames, as every backend does); lighting and prediction commands cannot travel up a PUB/SUB stream, so they are
counted in :attr:`ZmqBackend.unapplied_commands` and a warning is issued once.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from ..backend import DeviceInfo, SceneCommand, SetModality, SimBackend
from ..errors import BackendError, TransportError
from ..frame import DeviceFrame
from .protocol import FRAME_TOPIC_PREFIX, Limits, device_prefix
from .security import CurveConfig
from .subscriber import Subscriber, SubscriberConfig

__all__ = ["ZmqBackend"]

_MAX_PENDING_STEPS = 256
#: a frame whose step is further than this behind the last step returned means the scene restarted (or lied):
#: step tracking starts over (counted in ZmqBackend.step_resyncs) instead of ignoring every frame from then on
_STEP_WINDOW = 100_000


def _frame_nbytes(frame: DeviceFrame) -> int:
    """The bytes a frame's arrays hold (images and audio; the small records are noise next to them)."""
    n = 0
    for a in (frame.rgb, frame.depth_m, frame.segmentation):
        if a is not None:
            n += a.nbytes
    if frame.audio is not None:
        n += frame.audio.samples.nbytes
    return n


class ZmqBackend(SimBackend):
    """``make_backend("zmq", "tcp://host:port", ...)``: frames from a stream-protocol publisher.

    ``endpoint``: address(es) to connect to; or ``bind=`` to listen for publishers that connect (devices on a
    network). ``devices``: device ids (or :class:`DeviceInfo`) to expect; ``None`` = the devices the first heartbeat
    announces. ``channel``: which channel's topics to read (``frame`` = whole frames).
    """

    name = "zmq"
    deterministic = False  # the remote scene cannot be restarted from here: a seed replays nothing

    def __init__(self, endpoint: str | Sequence[str] | None = None, *, bind: str | None = None, mode: str = "lossless",
                 devices: Sequence[str | DeviceInfo] | None = None, channel: str = "frame", timeout_s: float = 10.0,
                 step_dt_s: float | None = None, curve: CurveConfig | None = None, limits: Limits | None = None):
        super().__init__()
        connect = () if endpoint is None else ((endpoint,) if isinstance(endpoint, str) else tuple(endpoint))
        if timeout_s <= 0:
            raise BackendError(f"zmq backend: timeout_s must be > 0, got {timeout_s}")
        self._mode = mode
        self._channel = channel
        self._timeout_s = float(timeout_s)
        self._step_dt_s = step_dt_s
        self._fixed: tuple[DeviceInfo | str, ...] | None = tuple(devices) if devices is not None else None
        topics = ((FRAME_TOPIC_PREFIX,) if self._fixed is None
                  else tuple(device_prefix(d if isinstance(d, str) else d.device_id).decode() for d in self._fixed))
        self._sub_config = SubscriberConfig(connect=connect, bind=bind, topics=topics, mode=mode,
                                            limits=limits or Limits(), curve=curve)
        self._sub: Subscriber | None = None
        self._devices: tuple[DeviceInfo, ...] = ()
        self._disabled: dict[str, set[str]] = {}
        self._pending: dict[int, dict[str, DeviceFrame]] = {}
        self._pending_bytes = 0  # array bytes of the frames in _pending
        self._max_pending_bytes = self._sub_config.limits.max_queue_bytes
        self._last_step = -1
        self._last_by_device: dict[str, int] = {}
        self.incomplete_steps = 0
        self.step_resyncs = 0
        self.unapplied_commands = 0
        self._warned = False

    # -- SimBackend ---------------------------------------------------------------------------------
    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        return self._devices

    @property
    def step_dt_s(self) -> float:
        if self._step_dt_s is None:
            raise BackendError("zmq backend: step_dt_s is unknown until a heartbeat announced it (or pass step_dt_s=)")
        return self._step_dt_s

    @property
    def subscriber(self) -> Subscriber:
        """The underlying subscriber (its ``stats`` hold gaps, rejects and restarts)."""
        if self._sub is None:
            raise BackendError("zmq backend: call reset() first")
        return self._sub

    @property
    def endpoint(self) -> str:
        return self.subscriber.endpoint

    def open(self) -> ZmqBackend:
        """Create the socket before ``reset`` (needed with ``bind=``: publishers need the address first)."""
        self._check_not_closed("open")
        if self._sub is None:
            self._sub = Subscriber(self._sub_config).open()
        return self

    def _reset(self, *, seed: int | None, options: dict[str, Any]) -> dict[str, DeviceFrame]:
        sub = self.open().subscriber
        self._pending.clear()
        self._pending_bytes = 0
        self._last_step = -1
        self._last_by_device.clear()
        self._disabled.clear()
        deadline = time.monotonic() + self._timeout_s
        early: list[Any] = []
        if self._fixed is None or self._step_dt_s is None:
            if not sub.wait_for_heartbeat(self._timeout_s, keep=early):
                raise TransportError(f"zmq backend: no heartbeat from a publisher at {sub.endpoint} within "
                                     f"{self._timeout_s} s")
        announced = {d["device_id"]: d for d in sub.known_devices()}
        if self._fixed is None:
            self._devices = tuple(DeviceInfo(d["device_id"], d.get("user_id", ""), d.get("profile", ""))
                                  for d in announced.values())
        else:
            self._devices = tuple(
                d if isinstance(d, DeviceInfo) else DeviceInfo(d, announced.get(d, {}).get("user_id", ""),
                                                               announced.get(d, {}).get("profile", ""))
                for d in self._fixed)
        if not self._devices:
            raise TransportError("zmq backend: the publisher announced no devices")
        if self._step_dt_s is None:
            self._step_dt_s = next((i.step_dt_s for i in sub.publishers.values() if i.step_dt_s), None)
        for msg in early:
            self._add(sub.to_frame(msg))
        return self._next(deadline)

    def _step(self, commands: tuple[SceneCommand, ...]) -> dict[str, DeviceFrame]:
        for c in commands:
            if isinstance(c, SetModality):
                mods = self._disabled.setdefault(c.device_id, set())
                (mods.discard if c.enabled else mods.add)(c.modality)
            else:
                self.unapplied_commands += 1
                if not self._warned:
                    self._warned = True
                    warnings.warn(f"zmq backend: {type(c).__name__} cannot be sent up a one-way stream; "
                                  "it is counted in unapplied_commands and otherwise ignored", stacklevel=3)
        return self._next(time.monotonic() + self._timeout_s)

    def _close(self) -> None:
        if self._sub is not None:
            self._sub.close()

    # -- gathering ----------------------------------------------------------------------------------
    def _wanted(self) -> set[str]:
        return {d.device_id for d in self._devices}

    def _add(self, frame: DeviceFrame | None) -> None:
        if frame is None or frame.device_id not in self._wanted():
            return
        if frame.step <= self._last_step:
            if self._last_step - frame.step <= _STEP_WINDOW:
                return  # a late frame of a step already returned or skipped
            self._resync_steps()
        if self._mode == "lossless":
            step = self._pending.setdefault(frame.step, {})
            old = step.get(frame.device_id)
            if old is not None:
                self._pending_bytes -= _frame_nbytes(old)
            step[frame.device_id] = frame
            self._pending_bytes += _frame_nbytes(frame)
            # bounded in steps and in bytes (Limits.max_queue_bytes): frames of steps that never complete go first
            while len(self._pending) > _MAX_PENDING_STEPS or (
                    self._pending_bytes > self._max_pending_bytes and len(self._pending) > 1):
                self._drop_step(min(self._pending))

    def _complete_step(self) -> dict[str, DeviceFrame] | None:
        wanted = self._wanted()
        done = [s for s, fr in self._pending.items() if wanted <= set(fr)]
        if not done:
            return None
        step = min(done)
        for s in [s for s in self._pending if s < step]:
            self._drop_step(s)
        frames = self._pending.pop(step)
        self._pending_bytes -= sum(map(_frame_nbytes, frames.values()))
        self._last_step = step
        return frames

    def _resync_steps(self) -> None:
        """A step number far behind the last one: the scene restarted (or a step number was absurd, e.g. 10**18).
        Follow the new numbering instead of waiting forever for steps past the old one."""
        for s in list(self._pending):
            self._drop_step(s)
        self._last_step = -1
        self._last_by_device.clear()
        self.step_resyncs += 1

    def _drop_step(self, step: int) -> None:
        self._pending_bytes -= sum(map(_frame_nbytes, self._pending.pop(step).values()))
        self.incomplete_steps += 1

    def _filtered(self, frames: Mapping[str, DeviceFrame]) -> dict[str, DeviceFrame]:
        out = {}
        for d in self._devices:
            f = frames[d.device_id]
            off = self._disabled.get(d.device_id)
            out[d.device_id] = f.without(*sorted(off)) if off else f
        return out

    def _next(self, deadline: float) -> dict[str, DeviceFrame]:
        sub = self.subscriber
        if self._mode == "latest":
            newest: dict[str, DeviceFrame] = {}
            while True:
                for msg in sub.recv_latest(max(0.0, deadline - time.monotonic())).values():
                    f = sub.to_frame(msg)
                    if f is None or f.device_id not in self._wanted():
                        continue
                    last = self._last_by_device.get(f.device_id, -1)
                    if last - f.step > _STEP_WINDOW:
                        self._resync_steps()
                        last = -1
                    if f.step > last:
                        newest[f.device_id] = f
                if self._wanted() <= set(newest):
                    for k, f in newest.items():
                        self._last_by_device[k] = f.step
                    return self._filtered(newest)
                if time.monotonic() >= deadline:
                    self._timeout(set(newest))
        while True:
            frames = self._complete_step()
            if frames is not None:
                return self._filtered(frames)
            left = deadline - time.monotonic()
            if left <= 0:
                self._timeout(set(self._pending.get(min(self._pending), {})) if self._pending else set())
            got = sub.recv(left)
            if got is not None:
                self._add(sub.to_frame(got))

    def _timeout(self, have: set[str]) -> None:
        missing = sorted(self._wanted() - have)
        raise TransportError(f"zmq backend: no complete step within {self._timeout_s} s from "
                             f"{self.subscriber.endpoint}; missing frames of {missing} "
                             f"(rejected so far: {dict(self.subscriber.stats.rejected)})")
