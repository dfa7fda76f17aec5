"""Errors of the Unity path; each derives from the bridge's own bases so ``except BridgeError`` catches them."""

from __future__ import annotations

from ..errors import BackendError, TransportError

__all__ = ["UnityProtocolError", "RejectedMessageError", "UnityConnectionError", "MessageTooLargeError",
           "UnityExtraMissingError"]


class UnityProtocolError(BackendError, ValueError):
    """A side-channel message or an observation does not follow xrfed's Unity protocol (version, type, fields)."""


class RejectedMessageError(UnityProtocolError):
    """The stand-in player refused what a client sent (a side-channel record, a command, actions, bytes that are
    not a message); ``reason`` is the counter it was counted under in ``StandInPlayer.stats.rejected``."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


class UnityConnectionError(TransportError):
    """Nothing answered on the ML-Agents port, the peer closed, or the ports are in use; the cause is chained."""


class MessageTooLargeError(UnityProtocolError):
    """A message would exceed gRPC's 4 MiB default receive limit, which the other side would only see as a timeout."""

    def __init__(self, nbytes: int, limit: int, what: str = "message"):
        self.nbytes, self.limit = nbytes, limit
        super().__init__(f"{what} of {nbytes} bytes exceeds the {limit}-byte gRPC limit; use fewer devices per "
                         f"step, a smaller render size, or PNG-compressed images")


class UnityExtraMissingError(BackendError, ImportError):
    """mlagents-envs / grpcio are not installed (the optional ``unity`` extra)."""

    def __init__(self, missing: str):
        super().__init__(
            f"the Unity path needs the optional 'unity' extra ({missing} is missing): run\n"
            "  pip install 'protobuf==5.29.5' 'grpcio>=1.49,<2' cloudpickle filelock\n"
            "  pip install --no-deps --ignore-requires-python mlagents-envs==1.1.0\n"
            "  python -m bridge.unity.protos\n"
            "(scripts/setup.sh does this; see docs/unity.md)")
