"""Receive stream-protocol messages on a real ZeroMQ SUB socket: decode, count, detect gaps and restarts.

Two ways to read:

* :meth:`Subscriber.recv` (lossless, for recording): the next frame message in arrival order.
* :meth:`Subscriber.recv_latest` (live viewing): drains everything queued and keeps only the newest message per
  topic. ZeroMQ's ``CONFLATE`` cannot do this -- it breaks multipart messages -- so the drain happens here, and only
  the header of a superseded message is parsed (for sequence accounting), never its buffers.

A malformed, oversized or invalid message is rejected and counted in :attr:`Subscriber.stats` (by reason); the
subscriber keeps running. Sequence numbers are per topic and per publisher session: a jump is a gap, a new session
is a publisher restart (sequence tracking starts over). ZeroMQ reconnects by itself after a publisher restarts on the
same address; if nothing at all arrives for ``reconnect_after_s`` the socket is rebuilt as well (a half-dead TCP
connection over Wi-Fi never reports an error).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import BridgeError, FrameValidationError, TransportError
from ..frame import DeviceFrame
from .protocol import (
    FRAME_TOPIC_PREFIX,
    HEARTBEAT_TOPIC_PREFIX,
    Limits,
    StreamMessage,
    StreamProtocolError,
    decode_message,
)
from .security import CurveConfig, SecuredSocket, SocketEndpoint

__all__ = ["SubscriberConfig", "SubscriberStats", "PublisherInfo", "GapEvent", "Subscriber"]


#: what ``StreamMessage.to_frame`` raises for a well-formed message whose content breaks the frame contract
FRAME_ERRORS = (FrameValidationError, StreamProtocolError, KeyError, TypeError, ValueError, BridgeError)


@dataclass(frozen=True)
class SubscriberConfig:
    """Where and what to receive. ``topics`` are prefixes (``xrfed/`` = everything, ``xrfed/quest_0/`` = one
    device); heartbeats are always subscribed."""

    connect: tuple[str, ...] = ()
    bind: str | None = None
    topics: tuple[str, ...] = (FRAME_TOPIC_PREFIX,)
    mode: str = "lossless"
    rcvhwm: int | None = None  # messages; None = 100000 for lossless, 64 for latest
    limits: Limits = field(default_factory=Limits)
    curve: CurveConfig | None = None
    heartbeat_timeout_s: float = 3.0
    reconnect_after_s: float | None = 10.0
    reconnect_ivl_s: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "connect", tuple([self.connect] if isinstance(self.connect, str) else self.connect))
        object.__setattr__(self, "topics", tuple(self.topics))
        if self.mode not in ("latest", "lossless"):
            raise BridgeError(f"SubscriberConfig.mode: expected 'latest' or 'lossless', got {self.mode!r}")
        if (self.bind is None) == (not self.connect):
            raise BridgeError("SubscriberConfig: give exactly one of bind= or connect=")
        if any(not t.startswith(FRAME_TOPIC_PREFIX) for t in self.topics):
            raise BridgeError(f"SubscriberConfig.topics: prefixes must start with {FRAME_TOPIC_PREFIX!r}, "
                              f"got {self.topics}")
        if self.heartbeat_timeout_s <= 0 or self.reconnect_ivl_s <= 0:
            raise BridgeError("SubscriberConfig: heartbeat_timeout_s and reconnect_ivl_s must be > 0")
        if self.reconnect_after_s is not None and self.reconnect_after_s <= 0:
            raise BridgeError("SubscriberConfig.reconnect_after_s: > 0 or None (never)")


@dataclass(frozen=True)
class GapEvent:
    topic: str
    expected_seq: int
    got_seq: int

    @property
    def missing(self) -> int:
        return self.got_seq - self.expected_seq


@dataclass
class SubscriberStats:
    received: int = 0  # messages off the socket, good or bad
    frames: int = 0  # frame messages accepted
    heartbeats: int = 0
    bytes: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # reason -> count
    missing: int = 0  # messages lost according to sequence numbers
    gap_events: list[GapEvent] = field(default_factory=list)
    restarts: int = 0  # a known publisher came back with a new session
    superseded: int = 0  # latest-only: older messages skipped in favour of a newer one
    reconnects: int = 0  # socket rebuilt after silence

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass
class PublisherInfo:
    publisher: str
    session: str
    last_seen_s: float  # time.monotonic() of the last message from it
    devices: tuple[dict[str, str], ...] = ()
    step_dt_s: float | None = None


class Subscriber(SocketEndpoint):
    """A stream subscriber (see module docstring). ``open()`` (or ``with``) connects/binds; ``close()``."""

    _role = "subscriber"

    def __init__(self, config: SubscriberConfig):
        super().__init__()
        self.config = config
        self.stats = SubscriberStats()
        self.publishers: dict[str, PublisherInfo] = {}
        self._last_seq: dict[str, tuple[str, int]] = {}  # topic -> (session, seq)
        self._last_activity = time.monotonic()

    # -- lifecycle ------------------------------------------------------------------------------------
    def _make_socket(self) -> SecuredSocket:
        import zmq

        cfg = self.config
        hwm = cfg.rcvhwm if cfg.rcvhwm is not None else (100_000 if cfg.mode == "lossless" else 64)
        opts: dict[int, Any] = {zmq.RCVHWM: hwm, zmq.RECONNECT_IVL: int(cfg.reconnect_ivl_s * 1000),
                                zmq.RECONNECT_IVL_MAX: 1000}
        s = SecuredSocket(zmq.SUB, bind=cfg.bind, connect=cfg.connect, curve=cfg.curve, options=opts)
        for t in (*cfg.topics, HEARTBEAT_TOPIC_PREFIX):
            s.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        return s

    def _opened(self) -> None:
        self._last_activity = time.monotonic()

    # -- liveness -------------------------------------------------------------------------------------
    def alive(self, publisher: str | None = None) -> bool:
        """Whether ``publisher`` (or any publisher) was heard within ``heartbeat_timeout_s``."""
        now = time.monotonic()
        infos = [self.publishers[publisher]] if publisher in self.publishers else (
            [] if publisher is not None else list(self.publishers.values()))
        return any(now - i.last_seen_s <= self.config.heartbeat_timeout_s for i in infos)

    def _maybe_reconnect(self) -> None:
        cfg = self.config
        if cfg.bind is not None or cfg.reconnect_after_s is None:
            return
        if time.monotonic() - self._last_activity > cfg.reconnect_after_s:
            old = self._open_sock()
            old.close()
            self._sock = self._make_socket()
            self.stats.reconnects += 1
            self._last_activity = time.monotonic()

    # -- receiving ------------------------------------------------------------------------------------
    def _recv_raw(self, timeout_s: float) -> list[Any] | None:
        import zmq

        sock = self._open_sock().sock
        try:
            try:  # a message already queued needs no poll (one system call less per message in a busy stream)
                first = sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                if timeout_s <= 0 or not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
                    return None
                first = sock.recv(zmq.NOBLOCK, copy=False)
            # recv_multipart, reading each frame's ``more`` flag instead of a RCVMORE socket option per part: half
            # its cost for a 12-part frame (measured). ZeroMQ delivers the rest of a multipart message atomically.
            parts = [first]
            while parts[-1].more:
                parts.append(sock.recv(copy=False))
            return parts
        except zmq.Again:
            return None
        except zmq.ZMQError as exc:
            raise TransportError(f"subscriber: receive failed: {exc}") from exc

    def _account(self, parts: list[Any], *, arrays: bool) -> StreamMessage | None:
        """Decode (header only unless ``arrays``), update counters; None for heartbeats and rejects."""
        self.stats.received += 1
        self._last_activity = now = time.monotonic()
        try:
            msg = decode_message(parts, self.config.limits, arrays=arrays)
        except StreamProtocolError as exc:
            self.stats.rejected[exc.reason] += 1
            return None
        self.stats.bytes += msg.wire_bytes
        h = msg.header
        pub = str(h.get("publisher", "?"))
        session = msg.session
        info = self.publishers.get(pub)
        if info is None:
            info = self.publishers[pub] = PublisherInfo(pub, session, now)
        elif info.session != session:
            self.stats.restarts += 1
            info.session = session
            info.devices, info.step_dt_s = (), None
        info.last_seen_s = now
        if h["kind"] == "heartbeat":
            self.stats.heartbeats += 1
            devs = h.get("devices", [])
            if isinstance(devs, list):
                info.devices = tuple(d for d in devs if isinstance(d, dict) and isinstance(d.get("device_id"), str))
            dt = h.get("step_dt_s")
            info.step_dt_s = float(dt) if isinstance(dt, (int, float)) and not isinstance(dt, bool) and dt > 0 else None
            last = h.get("last_seq", {})
            if isinstance(last, dict):
                for topic, seq in last.items():
                    if isinstance(seq, int) and any(topic.startswith(t) for t in self.config.topics):
                        self._track(topic, session, seq, tail=True)
            return None
        self._track(msg.topic, session, h["seq"], tail=False)  # a frame's seq is an int (checked by the decoder)
        return msg

    def _track(self, topic: str, session: str, seq: int, *, tail: bool) -> None:
        prev = self._last_seq.get(topic)
        if prev is None or prev[0] != session:
            # First message of a topic (or of a new session): joining mid-stream is not a loss.
            if not tail:
                self._last_seq[topic] = (session, seq)
            return
        if seq > prev[1] + (0 if tail else 1):
            expected = prev[1] + 1
            got = seq + 1 if tail else seq
            self.stats.missing += got - expected
            if len(self.stats.gap_events) < 1000:
                self.stats.gap_events.append(GapEvent(topic, expected, got))
        if seq > prev[1]:
            self._last_seq[topic] = (session, seq)

    def recv(self, timeout_s: float = 1.0) -> StreamMessage | None:
        """The next frame message (heartbeats and rejects are handled internally), or None after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            parts = self._recv_raw(max(0.0, deadline - time.monotonic()))
            if parts is None:
                self._maybe_reconnect()
                return None
            msg = self._account(parts, arrays=True)
            if msg is not None:
                self.stats.frames += 1
                return msg
            if time.monotonic() >= deadline:
                return None

    def recv_frame(self, timeout_s: float = 1.0) -> DeviceFrame | None:
        """The next valid :class:`DeviceFrame`; a message that breaks the frame contract is counted as
        ``rejected['bad_frame']`` and skipped."""
        deadline = time.monotonic() + timeout_s
        while True:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            if msg is None:
                return None
            frame = self.to_frame(msg)
            if frame is not None:
                return frame

    def to_frame(self, msg: StreamMessage) -> DeviceFrame | None:
        """``msg.to_frame()``, counting a contract violation as ``rejected['bad_frame']`` instead of raising."""
        try:
            return msg.to_frame()
        except FRAME_ERRORS:
            self.stats.frames -= 1
            self.stats.rejected["bad_frame"] += 1
            return None

    def recv_latest(self, timeout_s: float = 1.0) -> dict[str, StreamMessage]:
        """Wait up to ``timeout_s`` for at least one frame message, then drain the socket and return the newest
        message per topic (older ones are counted in ``stats.superseded`` and never have their buffers decoded)."""
        newest: dict[str, list[Any]] = {}
        deadline = time.monotonic() + timeout_s
        while not newest:
            parts = self._recv_raw(max(0.0, deadline - time.monotonic()))
            if parts is None:
                self._maybe_reconnect()
                return {}
            self._drain_into(newest, parts)
        while True:
            parts = self._recv_raw(0.0)
            if parts is None:
                break
            self._drain_into(newest, parts)
        out: dict[str, StreamMessage] = {}
        for topic, raw in newest.items():
            try:
                out[topic] = decode_message(raw, self.config.limits)
                self.stats.frames += 1
            except StreamProtocolError as exc:  # header was fine, a buffer was not
                self.stats.rejected[exc.reason] += 1
        return out

    def _drain_into(self, newest: dict[str, list[Any]], parts: list[Any]) -> None:
        msg = self._account(parts, arrays=False)
        if msg is None:
            return
        if msg.topic in newest:
            self.stats.superseded += 1
        newest[msg.topic] = parts

    def known_devices(self) -> tuple[dict[str, str], ...]:
        """Devices announced by the heartbeats of every publisher heard so far (publisher order, then theirs)."""
        return tuple(d for info in self.publishers.values() for d in info.devices)

    def wait_for_heartbeat(self, timeout_s: float = 5.0, *, keep: list[StreamMessage] | None = None) -> bool:
        """Receive until a heartbeat has been seen from some publisher (frames are appended to ``keep``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if any(i.devices for i in self.publishers.values()):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            parts = self._recv_raw(left)
            if parts is None:
                return False
            msg = self._account(parts, arrays=True)
            if msg is not None:
                self.stats.frames += 1
                if keep is not None:
                    keep.append(msg)

