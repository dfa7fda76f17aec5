"""ZeroMQ sensor streams: the versioned wire format (:mod:`.protocol`), a publisher, a subscriber, the ``zmq``
scene backend, CurveZMQ set-up, the ``xrfed stream`` CLI and its benchmark. Wire format: ``docs/stream-protocol.md``.

pyzmq is imported inside the socket classes, so :mod:`.protocol` works without it (e.g. for offline decoding).
"""

from __future__ import annotations

from .protocol import (
    PROTOCOL,
    VERSION,
    Compression,
    Limits,
    StreamMessage,
    StreamProtocolError,
    decode_message,
    device_prefix,
    encode_frame,
    frame_topic,
)
from .publisher import Publisher, PublisherConfig
from .security import CurveConfig, generate_keypair
from .subscriber import Subscriber, SubscriberConfig

__all__ = [
    "PROTOCOL", "VERSION", "Compression", "CurveConfig", "Limits", "Publisher", "PublisherConfig", "StreamMessage",
    "StreamProtocolError", "Subscriber", "SubscriberConfig", "decode_message", "device_prefix", "encode_frame",
    "frame_topic", "generate_keypair",
]
