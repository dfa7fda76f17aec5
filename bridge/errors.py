"""The project's exception base and the bridge package's exceptions.

:class:`XrfedError` is the one base of every error xrfed raises on purpose: each package derives its own base from
it (:class:`BridgeError` here, ``agents.errors.AgentError``, ``federation.errors.FederationError``), so a caller --
the CLI above all -- catches one type. It lives in the lowest package so every package can import it.
"""

from __future__ import annotations

__all__ = [
    "XrfedError",
    "BridgeError",
    "FrameValidationError",
    "ScenarioError",
    "UnknownNameError",
    "BackendError",
    "TransportError",
    "DatasetError",
]


class XrfedError(Exception):
    """Base class of every error xrfed raises deliberately (a user error: bad input, config, file or request)."""


class BridgeError(XrfedError):
    """Base class of every error the bridge raises deliberately."""


class FrameValidationError(BridgeError, ValueError):
    """A DeviceFrame (or one of its parts) breaks the frame contract; the message names the field."""

    def __init__(self, field: str, expected: str, got: object):
        self.field, self.expected, self.got = field, expected, got
        super().__init__(f"frame field {field!r}: expected {expected}, got {got}")


class ScenarioError(BridgeError, ValueError):
    """A scenario file is invalid; the message names the field path, the value and what is allowed."""

    def __init__(self, path: str, message: str, *, value: object = None, allowed: object = None):
        self.path, self.value, self.allowed = path, value, allowed
        text = f"scenario field {path!r}: {message}"
        if value is not None:
            text += f" (got {value!r})"
        if allowed is not None:
            text += f"; allowed: {allowed}"
        super().__init__(text)


class UnknownNameError(BridgeError, KeyError):
    """A registry lookup (backend, device profile, task, scenario) failed; the message lists known names."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]):
        self.kind, self.name, self.known = kind, name, list(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(sorted(self.known))}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class BackendError(BridgeError, RuntimeError):
    """A simulator backend failed or was used outside its lifecycle (e.g. step after close)."""


class TransportError(BridgeError, ConnectionError):
    """A network transport (gRPC, ZeroMQ) failed; the third-party error is chained as the cause."""


class DatasetError(BridgeError, OSError):
    """A recorded dataset is missing, malformed, or does not match what the reader expects."""
