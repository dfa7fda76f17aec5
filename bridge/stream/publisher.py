"""Publish DeviceFrames with the stream protocol on a real ZeroMQ PUB socket.

One multipart message per device per step per *channel*. The default channel ``frame`` carries the whole frame;
extra channels carry modality subsets under their own topic (e.g. ``{"frame": (), "gaze": ("gaze", "pose")}`` lets a
gaze dashboard subscribe to ``xrfed/<device>/gaze`` without receiving images). Modes:

* ``latest`` (live viewing): a small send high-water mark; when a subscriber is slow, ZeroMQ drops whole messages
  for it (never parts of one), and the subscriber sees the loss as a sequence gap.
* ``lossless`` (recording): ``XPUB_NODROP`` -- a full queue makes ``send`` wait (up to ``send_timeout_s``, then
  :class:`~bridge.errors.TransportError`) instead of dropping.

Heartbeats (``xrfed-hb/<publisher_id>``) go out every ``heartbeat_s`` from :meth:`Publisher.publish` and
:meth:`Publisher.heartbeat` (no background thread: a zmq socket belongs to one thread). They carry the last ``seq``
of every topic and the device list, so subscribers detect tail losses, learn the devices, and notice a restart
(a new ``session``).
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import BridgeError, TransportError
from ..frame import MODALITY_ATTR, DeviceFrame
from .protocol import Compression, encode_frame, encode_heartbeat, frame_topic
from .security import CurveConfig, SecuredSocket, SocketEndpoint, SocketState

__all__ = ["PublisherConfig", "PublisherStats", "Publisher", "SocketState"]

_SUBSET_NAMES = (*MODALITY_ATTR, "segmentation")

_SNDMORE = 2  # zmq.SNDMORE


@functools.cache
def _socket_send() -> Any:
    """pyzmq's backend ``Socket.send`` when it has one: the public wrapper only adds draft-socket options
    (``routing_id``/``group``) a publisher never uses, and costs as much again per part (measured)."""
    import zmq

    backend = getattr(getattr(zmq, "backend", None), "Socket", None)
    send = getattr(backend, "send", None)
    if isinstance(backend, type) and issubclass(zmq.Socket, backend) and callable(send):
        return send
    return zmq.Socket.send


_MAX_SUBSCRIPTION_BYTES = 4096  # ZMQ_MAXMSGSIZE of the XPUB socket: one subscription message (a topic prefix)
_MAX_SUBSCRIPTIONS = 1024  # distinct subscriptions remembered for wait_for_subscriber (the oldest are forgotten)

_ZERO_COPY_MIN = 262144  # bytes; smaller parts are copied: cheaper than pyzmq's zero-copy release path (measured at
# 64 KiB: -13 us of CPU per frame), which only pays off for parts of a MiB or so (-260 us per 640x480 frame)


@dataclass(frozen=True)
class PublisherConfig:
    """Where and how to publish.

    ``bind`` (e.g. ``tcp://127.0.0.1:5560``; port ``*`` = any free port) or ``connect`` (endpoints of subscribers
    that bind, e.g. a workstation that Quest players connect to). ``channels`` maps a channel name to the
    modalities it carries (empty = all).
    """

    bind: str | None = None
    connect: tuple[str, ...] = ()
    publisher_id: str = "xrfed"
    mode: str = "latest"
    sndhwm: int | None = None  # messages; None = 16 for latest, 10000 for lossless
    send_timeout_s: float = 10.0
    heartbeat_s: float = 1.0
    compression: Compression = field(default_factory=Compression)
    channels: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {"frame": ()})
    curve: CurveConfig | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "connect", tuple(self.connect))
        if self.mode not in ("latest", "lossless"):
            raise BridgeError(f"PublisherConfig.mode: expected 'latest' or 'lossless', got {self.mode!r}")
        if (self.bind is None) == (not self.connect):
            raise BridgeError("PublisherConfig: give exactly one of bind= or connect=")
        if not self.publisher_id or "/" in self.publisher_id or " " in self.publisher_id:
            raise BridgeError(f"PublisherConfig.publisher_id: no '/' or spaces, got {self.publisher_id!r}")
        if self.heartbeat_s <= 0 or self.send_timeout_s <= 0:
            raise BridgeError("PublisherConfig: heartbeat_s and send_timeout_s must be > 0")
        if self.sndhwm is not None and self.sndhwm < 0:
            raise BridgeError(f"PublisherConfig.sndhwm: expected >= 0, got {self.sndhwm}")
        if not self.channels:
            raise BridgeError("PublisherConfig.channels: at least one channel")
        for ch, mods in self.channels.items():
            frame_topic("d", ch)  # validates the channel name
            bad = [m for m in mods if m not in _SUBSET_NAMES]
            if bad:
                raise BridgeError(f"PublisherConfig.channels[{ch!r}]: unknown modalities {bad}; known {_SUBSET_NAMES}")
        object.__setattr__(self, "channels", {k: tuple(v) for k, v in self.channels.items()})


@dataclass
class PublisherStats:
    messages: int = 0
    frames: int = 0
    bytes: int = 0
    heartbeats: int = 0


class Publisher(SocketEndpoint):
    """A stream publisher. ``open()`` (or ``with``) binds/connects; ``publish(frame)``; ``close()``."""

    _role = "publisher"

    def __init__(self, config: PublisherConfig, *, step_dt_s: float | None = None):
        super().__init__()
        self.config = config
        self.step_dt_s = step_dt_s
        self.session = secrets.token_hex(8)
        self.stats = PublisherStats()
        self._seq: dict[str, int] = {}
        self._devices: dict[str, dict[str, str]] = {}
        self._next_hb = 0.0
        self._hb_seq = 0
        self._subscriptions: list[bytes] = []

    # -- lifecycle ------------------------------------------------------------------------------------
    def _make_socket(self) -> SecuredSocket:
        import zmq

        cfg = self.config
        hwm = cfg.sndhwm if cfg.sndhwm is not None else (16 if cfg.mode == "latest" else 10_000)
        # The XPUB receives subscriptions: topic prefixes, never large (a peer sending more is dropped by ZeroMQ).
        opts: dict[int, Any] = {zmq.SNDHWM: hwm, zmq.MAXMSGSIZE: _MAX_SUBSCRIPTION_BYTES}
        if cfg.mode == "lossless":
            opts[zmq.XPUB_NODROP] = 1
            opts[zmq.SNDTIMEO] = int(cfg.send_timeout_s * 1000)
        # XPUB (not PUB) so wait_for_subscriber() can see subscriptions arrive (the "slow joiner" problem).
        return SecuredSocket(zmq.XPUB, bind=cfg.bind, connect=cfg.connect, curve=cfg.curve, options=opts)

    # -- sending --------------------------------------------------------------------------------------
    def _send(self, parts: list[Any]) -> int:
        import zmq

        sock = self._open_sock().sock
        try:
            # send_multipart, minus its per-part checks: small parts copied (cheaper than a zero-copy frame), large
            # ones zero-copy. Half the cost of send_multipart for a 12-part frame (measured).
            send, last, total = _socket_send(), len(parts) - 1, 0
            for i, p in enumerate(parts):
                n = len(p)  # bytes, or a flat byte memoryview (the encoder makes only these)
                send(sock, p, _SNDMORE if i < last else 0, copy=n < _ZERO_COPY_MIN)
                total += n
        except zmq.Again as exc:
            raise TransportError(f"publisher: lossless send blocked for {self.config.send_timeout_s} s (subscriber "
                                 f"not reading?)") from exc
        except zmq.ZMQError as exc:
            raise TransportError(f"publisher: send failed: {exc}") from exc
        return total

    def publish(self, frame: DeviceFrame) -> int:
        """Send one frame on every configured channel; returns the bytes sent.

        A heartbeat follows when one is due. A device seen for the first time is announced by the heartbeat of the
        next call that adds no new device, so the announcement of a step's devices is complete.
        """
        new, nbytes = self._send_frame(frame)
        if not new:
            self.heartbeat(force=False)
        return nbytes

    def publish_frames(self, frames: Mapping[str, DeviceFrame] | Iterable[DeviceFrame]) -> int:
        """Publish every frame of one step (a backend's ``reset``/``step`` result), then a heartbeat if due."""
        items = frames.values() if isinstance(frames, Mapping) else frames
        total = sum(self._send_frame(f)[1] for f in items)
        self.heartbeat(force=False)
        return total

    def _send_frame(self, frame: DeviceFrame) -> tuple[bool, int]:
        self._open_sock()
        new = frame.device_id not in self._devices
        if new:
            self._devices[frame.device_id] = {"device_id": frame.device_id, "user_id": frame.user_id,
                                              "profile": frame.profile}
            self._next_hb = 0.0  # announce the new device soon
        total = 0
        for channel, mods in self.config.channels.items():
            f = frame if not mods else frame.without(*[m for m in _SUBSET_NAMES if m not in mods])
            topic = frame_topic(frame.device_id, channel).decode()
            seq = self._seq.get(topic, -1) + 1
            parts = encode_frame(f, seq=seq, session=self.session, publisher=self.config.publisher_id,
                                 channel=channel, compression=self.config.compression)
            total += self._send(parts)
            self._seq[topic] = seq
            self.stats.messages += 1
        self.stats.frames += 1
        self.stats.bytes += total
        return new, total

    def heartbeat(self, *, force: bool = True) -> bool:
        """Send a heartbeat now (``force``) or only if one is due; returns whether one was sent."""
        now = time.monotonic()
        if not force and now < self._next_hb:
            return False
        self._drain_subscriptions()
        parts = encode_heartbeat(publisher=self.config.publisher_id, session=self.session, seqs=self._seq,
                                 devices=list(self._devices.values()), step_dt_s=self.step_dt_s, hb_seq=self._hb_seq)
        self.stats.bytes += self._send(parts)
        self._hb_seq += 1
        self.stats.heartbeats += 1
        self._next_hb = now + self.config.heartbeat_s
        return True

    # -- subscriptions ------------------------------------------------------------------------------
    def _drain_subscriptions(self) -> None:
        import zmq

        sock = self._open_sock().sock
        while True:
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01" and msg[1:] not in self._subscriptions:
                if len(self._subscriptions) >= _MAX_SUBSCRIPTIONS:  # bounded: a peer may subscribe forever
                    self._subscriptions.pop(0)
                self._subscriptions.append(msg[1:])

    def wait_for_subscriber(self, topic: bytes | str = b"xrfed/", timeout_s: float = 5.0) -> bool:
        """Block until some subscriber's subscription covers ``topic`` (a PUB socket drops messages sent before a
        subscriber has joined). Returns False on timeout."""
        import zmq

        t = topic.encode() if isinstance(topic, str) else topic
        sock = self._open_sock().sock
        deadline = time.monotonic() + timeout_s
        while True:
            self._drain_subscriptions()
            if any(t.startswith(s) for s in self._subscriptions):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            sock.poll(int(min(left, 0.05) * 1000), zmq.POLLIN)
