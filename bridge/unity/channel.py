"""The xrfed side channel as an mlagents-envs ``SideChannel`` (imported only when mlagents-envs is present)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mlagents_envs.side_channel.side_channel import IncomingMessage, OutgoingMessage, SideChannel

from . import codec

__all__ = ["XrfedSideChannel", "make_xrfed_channel"]


class XrfedSideChannel(SideChannel):
    """Sends and receives canonical JSON messages (see :mod:`bridge.unity.codec`) on :data:`codec.XRFED_CHANNEL_ID`.

    Received messages are validated and handed to ``on_message``; a malformed one raises, because a scene that
    speaks another protocol version must fail loudly rather than feed wrong metadata into frames.
    """

    def __init__(self, on_message: Callable[[dict[str, Any]], None]):
        super().__init__(codec.XRFED_CHANNEL_ID)
        self._on_message = on_message

    def on_message_received(self, msg: IncomingMessage) -> None:
        self._on_message(codec.decode_message(msg.get_raw_bytes()))

    def send(self, message: Mapping[str, Any]) -> None:
        """Queue one message; it leaves with the next ``reset()`` / ``step()``."""
        out = OutgoingMessage()
        out.set_raw_bytes(codec.encode_message(message))
        self.queue_message_to_send(out)


def make_xrfed_channel(on_message: Callable[[dict[str, Any]], None]) -> XrfedSideChannel:
    return XrfedSideChannel(on_message)
