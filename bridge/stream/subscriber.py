"""Receive stream-protocol messages on a real ZeroMQ SUB socket: decode, count, detect gaps and restarts.

Two ways to read:

* :meth:`Subscriber.recv` (lossless, for recording): the next frame message in arrival order.
* :meth:`Subscriber.recv_latest` (live viewing): drains what is queued and keeps only the newest message per
  topic. ZeroMQ's ``CONFLATE`` cannot do this -- it breaks multipart messages -- so the drain happens here, and only
  the header of a superseded message is parsed (for sequence accounting), never its buffers.

Every byte from the socket is hostile. A malformed, oversized or invalid message is rejected and counted in
:attr:`Subscriber.stats` by reason (``stats.rejected``, see ``docs/stream-protocol.md`` for the reasons); the
subscriber keeps running and the next good message is delivered. Memory is bounded in bytes by
:class:`~bridge.stream.protocol.Limits`: the socket's ``ZMQ_MAXMSGSIZE`` is ``max_message_bytes`` (ZeroMQ drops a
connection that sends a larger part, counted in ``stats.disconnects``, and this subscriber connects it afresh), and
its receive queue holds ``max_queue_bytes // max_message_bytes`` messages (:attr:`SubscriberConfig.queue_messages`):
when it is full a lossless publisher waits and a latest one drops (seen here as sequence gaps).

Sequence numbers are per topic and per publisher session: a jump is a gap, a new session is a publisher restart
(sequence tracking starts over). A ``seq`` that goes backwards, or jumps more than ``seq_window`` ahead, is not a
loss of 10^15 frames: it is taken as a publisher that restarted without a new session (or that lies), counted in
``stats.resyncs``, and tracking starts over at it. ZeroMQ reconnects by itself after a publisher restarts on the
same address; if nothing at all arrives for ``reconnect_after_s`` the socket is rebuilt as well (a half-dead TCP
connection over Wi-Fi never reports an error).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import BridgeError, TransportError, XrfedError
from ..frame import DeviceFrame
from .protocol import (
    FRAME_TOPIC_PREFIX,
    HEARTBEAT_TOPIC_PREFIX,
    Limits,
    StreamMessage,
    StreamProtocolError,
    decode_message,
)
from .security import CurveConfig, SecuredSocket, SocketEndpoint, SocketState

__all__ = ["SubscriberConfig", "SubscriberStats", "PublisherInfo", "GapEvent", "Subscriber", "FRAME_ERRORS"]


#: what :meth:`StreamMessage.to_frame` raises for a well-formed message whose content breaks the frame contract
#: (XrfedError); the rest is a defect of ours, still counted (as ``bad_frame_unexpected``) rather than fatal
FRAME_ERRORS = (XrfedError, LookupError, TypeError, ValueError, ArithmeticError)

_MAX_DEVICES = 1024  # devices kept from one heartbeat
_MAX_GAP_EVENTS = 1000
_MONITOR_EVERY = 256  # messages between two looks at the connection events while messages keep coming


def _positive_int(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BridgeError(f"{owner}.{name}: expected a positive integer, got {value!r}")


def _positive_float(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise BridgeError(f"{owner}.{name}: expected a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class SubscriberConfig:
    """Where and what to receive. ``topics`` are prefixes (``xrfed/`` = everything, ``xrfed/quest_0/`` = one
    device); heartbeats are always subscribed.

    ``rcvhwm``: receive queue length in messages; None = as many as ``limits.max_queue_bytes`` holds
    (:attr:`queue_messages`), and a larger value is capped to that -- the queue is bounded in bytes, not messages.
    ``seq_window``: the largest forward ``seq`` jump taken as lost messages (beyond it: a resync, see the module
    docstring). ``max_topics`` / ``max_publishers``: sequence and liveness tables are bounded too (a peer inventing
    topics cannot grow them); the oldest entry is forgotten, counted in ``stats.forgotten``.
    """

    connect: tuple[str, ...] = ()
    bind: str | None = None
    topics: tuple[str, ...] = (FRAME_TOPIC_PREFIX,)
    mode: str = "lossless"
    rcvhwm: int | None = None  # messages; None = limits.queue_messages()
    limits: Limits = field(default_factory=Limits)
    curve: CurveConfig | None = None
    heartbeat_timeout_s: float = 3.0
    reconnect_after_s: float | None = 10.0
    reconnect_ivl_s: float = 0.1
    seq_window: int = 100_000
    max_topics: int = 4096
    max_publishers: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "connect", tuple([self.connect] if isinstance(self.connect, str) else self.connect))
        object.__setattr__(self, "topics", tuple(self.topics))
        if self.mode not in ("latest", "lossless"):
            raise BridgeError(f"SubscriberConfig.mode: expected 'latest' or 'lossless', got {self.mode!r}")
        if (self.bind is None) == (not self.connect):
            raise BridgeError("SubscriberConfig: give exactly one of bind= or connect=")
        if any(not isinstance(t, str) or not t.startswith(FRAME_TOPIC_PREFIX) for t in self.topics):
            raise BridgeError(f"SubscriberConfig.topics: prefixes must start with {FRAME_TOPIC_PREFIX!r}, "
                              f"got {self.topics}")
        if not isinstance(self.limits, Limits):
            raise BridgeError(f"SubscriberConfig.limits: expected a Limits, got {type(self.limits).__name__}")
        _positive_float("SubscriberConfig", "heartbeat_timeout_s", self.heartbeat_timeout_s)
        _positive_float("SubscriberConfig", "reconnect_ivl_s", self.reconnect_ivl_s)
        if self.reconnect_after_s is not None:
            _positive_float("SubscriberConfig", "reconnect_after_s (or None: never)", self.reconnect_after_s)
        if self.rcvhwm is not None:
            _positive_int("SubscriberConfig", "rcvhwm", self.rcvhwm)
        for name in ("seq_window", "max_topics", "max_publishers"):
            _positive_int("SubscriberConfig", name, getattr(self, name))

    @property
    def queue_messages(self) -> int:
        """The receive high-water mark in messages: ``rcvhwm`` (default: the mode's usual depth) capped so that
        the queue holds at most ``limits.max_queue_bytes``."""
        budget = self.limits.queue_messages()
        return budget if self.rcvhwm is None else min(self.rcvhwm, budget)

    @property
    def memory_cap_bytes(self) -> int:
        """What this subscriber may hold for received messages at most (:meth:`Limits.memory_cap_bytes`)."""
        return self.limits.memory_cap_bytes(self.queue_messages)


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
    missing: int = 0  # messages lost according to sequence numbers (at most seq_window per message)
    gap_events: list[GapEvent] = field(default_factory=list)  # the first 1000
    restarts: int = 0  # a known publisher came back with a new session
    resyncs: int = 0  # a seq went backwards or jumped beyond seq_window: tracking started over, nothing counted lost
    superseded: int = 0  # latest-only: older messages skipped in favour of a newer one
    reconnects: int = 0  # socket rebuilt after silence
    disconnects: int = 0  # connections ZeroMQ dropped (a peer left, or sent a part over Limits.max_message_bytes)
    handshake_failures: int = 0  # ZMTP/CURVE handshakes that failed (wrong key, not ZeroMQ at all)
    forgotten: int = 0  # topics/publishers dropped from the bounded tracking tables

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready counters (``rejected`` by reason, gap events left out)."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("rejected", "gap_events")}
        out["rejected"] = dict(self.rejected)
        out["rejected_total"] = self.rejected_total
        return out


@dataclass
class PublisherInfo:
    publisher: str
    session: str
    last_seen_s: float  # time.monotonic() of the last message from it
    devices: tuple[dict[str, str], ...] = ()
    step_dt_s: float | None = None


def _topic_name(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= 256 and "/" not in value and not any(c.isspace() for c in value)


def _announced_devices(devs: Any) -> tuple[dict[str, str], ...]:
    """A heartbeat's ``devices``, keeping only well-formed entries (as plain three-key dicts), at most 1024."""
    if type(devs) is not list:
        return ()
    out = []
    for d in devs[:_MAX_DEVICES]:
        if type(d) is dict and _topic_name(d.get("device_id")):
            user, profile = d.get("user_id", ""), d.get("profile", "")
            out.append({"device_id": d["device_id"], "user_id": user if type(user) is str else "",
                        "profile": profile if type(profile) is str else ""})
    return tuple(out)


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
        self._since_events = 0

    # -- lifecycle ------------------------------------------------------------------------------------
    def _make_socket(self) -> SecuredSocket:
        import zmq

        cfg = self.config
        opts: dict[int, Any] = {zmq.RCVHWM: cfg.queue_messages, zmq.MAXMSGSIZE: cfg.limits.max_message_bytes,
                                zmq.RECONNECT_IVL: max(1, int(cfg.reconnect_ivl_s * 1000)),
                                zmq.RECONNECT_IVL_MAX: 1000}
        s = SecuredSocket(zmq.SUB, bind=cfg.bind, connect=cfg.connect, curve=cfg.curve, options=opts, monitor=True)
        for t in (*cfg.topics, HEARTBEAT_TOPIC_PREFIX):
            s.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        return s

    def _opened(self) -> None:
        self._last_activity = time.monotonic()

    def close(self) -> None:
        """Close the socket and its context (connection events up to now are counted first). Idempotent."""
        if self._sock is not None and self._state is SocketState.OPEN:
            self._poll_events()
        super().close()

    # -- liveness -------------------------------------------------------------------------------------
    def alive(self, publisher: str | None = None) -> bool:
        """Whether ``publisher`` (or any publisher) was heard within ``heartbeat_timeout_s``."""
        now = time.monotonic()
        infos = [self.publishers[publisher]] if publisher in self.publishers else (
            [] if publisher is not None else list(self.publishers.values()))
        return any(now - i.last_seen_s <= self.config.heartbeat_timeout_s for i in infos)

    def _poll_events(self) -> None:
        """Count connection events and connect dropped endpoints afresh (see :meth:`SecuredSocket.poll_events`)."""
        self._since_events = 0
        sock = self._sock
        if sock is None:
            return
        try:
            events = sock.poll_events()
        except Exception as exc:  # noqa: BLE001 -- a zmq error here is a transport failure, reported as one
            raise TransportError(f"subscriber: reading connection events failed: {exc}") from exc
        self.stats.disconnects += events["disconnects"]
        self.stats.handshake_failures += events["handshake_failures"]

    def _maybe_reconnect(self) -> None:
        self._poll_events()
        cfg = self.config
        if cfg.bind is not None or cfg.reconnect_after_s is None:
            return
        if time.monotonic() - self._last_activity > cfg.reconnect_after_s:
            old = self._open_sock()
            self._poll_events()
            old.close()
            self._sock = self._make_socket()
            self.stats.reconnects += 1
            self._last_activity = time.monotonic()

    # -- receiving ------------------------------------------------------------------------------------
    def _recv_raw(self, timeout_s: float) -> list[Any] | None:
        """One multipart message, None after ``timeout_s``, or ``[]`` for a message refused (and counted) here."""
        import zmq

        sock = self._open_sock().sock
        self._since_events += 1
        if self._since_events >= _MONITOR_EVERY:
            self._poll_events()
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
            limit = self.config.limits.max_parts + 2
            while parts[-1].more:
                if len(parts) >= limit:  # more buffers than any message may have: read and release the rest
                    last = parts[-1]
                    parts.clear()
                    while last.more:
                        last = sock.recv(copy=False)
                    self.stats.received += 1
                    self.stats.rejected["oversized"] += 1
                    self._last_activity = time.monotonic()
                    return []
                parts.append(sock.recv(copy=False))
            return parts
        except zmq.Again:
            return None
        except zmq.ZMQError as exc:
            raise TransportError(f"subscriber: receive failed: {exc}") from exc

    def _account(self, parts: list[Any], *, arrays: bool) -> StreamMessage | None:
        """Decode (header only unless ``arrays``), update counters; None for heartbeats and rejects."""
        if not parts:
            return None  # refused while receiving (counted there)
        self.stats.received += 1
        self._last_activity = now = time.monotonic()
        try:
            msg = decode_message(parts, self.config.limits, arrays=arrays)
        except StreamProtocolError as exc:
            self.stats.rejected[exc.reason] += 1
            return None
        self.stats.bytes += msg.wire_bytes
        h = msg.header
        pub = str(h.get("publisher", "?"))[:256]
        session = msg.session[:256]
        info = self.publishers.get(pub)
        if info is None:
            if len(self.publishers) >= self.config.max_publishers:
                del self.publishers[next(iter(self.publishers))]
                self.stats.forgotten += 1
            info = self.publishers[pub] = PublisherInfo(pub, session, now)
        elif info.session != session:
            self.stats.restarts += 1
            info.session = session
            info.devices, info.step_dt_s = (), None
        info.last_seen_s = now
        if h["kind"] == "heartbeat":
            self.stats.heartbeats += 1
            info.devices = _announced_devices(h.get("devices", []))
            dt = h.get("step_dt_s")
            info.step_dt_s = float(dt) if isinstance(dt, (int, float)) and type(dt) is not bool and 0 < dt <= 3600 \
                else None
            topics = self.config.topics
            for topic, seq in h.get("last_seq", {}).items():  # checked by the decoder: str -> int in [0, MAX_SEQ]
                if any(topic.startswith(t) for t in topics):
                    self._track(topic, session, seq, tail=True)
            return None
        self._track(msg.topic, session, h["seq"], tail=False)  # a frame's seq is an int in [0, MAX_SEQ] (decoder)
        return msg

    def _track(self, topic: str, session: str, seq: int, *, tail: bool) -> None:
        """Sequence accounting for one frame (``tail=False``) or one heartbeat ``last_seq`` entry (``tail=True``:
        ``seq`` is the last one sent on ``topic``)."""
        prev = self._last_seq.get(topic)
        if prev is None or prev[0] != session:
            # First message of a topic (or of a new session): joining mid-stream is not a loss.
            if not tail:
                self._remember(topic, session, seq)
            return
        last = prev[1]
        expected = last + 1
        got = seq + 1 if tail else seq  # the first seq not (yet) lost
        if got == expected or (tail and seq <= last):
            if not tail:
                self._last_seq[topic] = (session, seq)
            return
        if got < expected or got - expected > self.config.seq_window:
            # backwards, or an absurd jump: a publisher restarted without a new session, or a lying one. Not a
            # count of lost messages; tracking starts over (a heartbeat's claim is dropped, the next frame starts it).
            self.stats.resyncs += 1
            if tail:
                del self._last_seq[topic]
            else:
                self._last_seq[topic] = (session, seq)
            return
        self.stats.missing += got - expected
        if len(self.stats.gap_events) < _MAX_GAP_EVENTS:
            self.stats.gap_events.append(GapEvent(topic, expected, got))
        self._last_seq[topic] = (session, seq)

    def _remember(self, topic: str, session: str, seq: int) -> None:
        table = self._last_seq
        if topic not in table and len(table) >= self.config.max_topics:
            del table[next(iter(table))]  # the oldest topic: a peer inventing topics cannot grow the table
            self.stats.forgotten += 1
        table[topic] = (session, seq)

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
        ``rejected['bad_frame']`` (or the wire reason, e.g. ``bad_shape``) and skipped."""
        deadline = time.monotonic() + timeout_s
        while True:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            if msg is None:
                return None
            frame = self.to_frame(msg)
            if frame is not None:
                return frame

    def to_frame(self, msg: StreamMessage) -> DeviceFrame | None:
        """``msg.to_frame()``, counting a contract violation in ``stats.rejected`` instead of raising: by its wire
        reason (``bad_header``, ``bad_shape``, ...), as ``bad_frame`` (the frame contract refused a value) or as
        ``bad_frame_unexpected`` (anything else: a defect of ours, still never fatal)."""
        try:
            return msg.to_frame()
        except StreamProtocolError as exc:
            reason = exc.reason
        except XrfedError:
            reason = "bad_frame"
        except FRAME_ERRORS:
            reason = "bad_frame_unexpected"
        self.stats.frames -= 1
        self.stats.rejected[reason] += 1
        return None

    def recv_latest(self, timeout_s: float = 1.0) -> dict[str, StreamMessage]:
        """Wait up to ``timeout_s`` for at least one frame message, then drain the socket and return the newest
        message per topic (older ones are counted in ``stats.superseded`` and never have their buffers decoded).

        One drain reads at most twice the queue length, so a flood cannot keep it from returning."""
        newest: dict[str, list[Any]] = {}
        deadline = time.monotonic() + timeout_s
        while not newest:
            parts = self._recv_raw(max(0.0, deadline - time.monotonic()))
            if parts is None:
                self._maybe_reconnect()
                return {}
            self._drain_into(newest, parts)
        for _ in range(2 * self.config.queue_messages):
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
        """Receive until a heartbeat has been seen from some publisher. Frames meanwhile are appended to ``keep``,
        at most ``limits.max_queue_bytes`` of them on the wire (the oldest go first, counted in
        ``stats.superseded``)."""
        deadline = time.monotonic() + timeout_s
        kept_bytes = sum(m.wire_bytes for m in keep) if keep else 0
        while True:
            if any(i.devices for i in self.publishers.values()):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            parts = self._recv_raw(left)
            if parts is None:
                self._maybe_reconnect()
                return False
            msg = self._account(parts, arrays=True)
            if msg is not None:
                self.stats.frames += 1
                if keep is not None:
                    keep.append(msg)
                    kept_bytes += msg.wire_bytes
                    while kept_bytes > self.config.limits.max_queue_bytes and len(keep) > 1:
                        kept_bytes -= keep.pop(0).wire_bytes
                        self.stats.superseded += 1
