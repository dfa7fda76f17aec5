"""The federation package's exceptions. Everything raised on purpose derives from :class:`FederationError`.

Partial participation and devices that miss a round's deadline are *not* errors: they are counted in the round
record. These exceptions are for misuse (bad configs, inconsistent tensors, unknown names) and broken runs.
"""

from __future__ import annotations

from bridge.errors import XrfedError

__all__ = [
    "FederationError",
    "ConfigError",
    "UnknownNameError",
    "AggregationError",
    "TopologyError",
    "CheckpointError",
    "ExecutorError",
]


class FederationError(XrfedError):
    """Base class of every error the federation package raises deliberately."""


class ConfigError(FederationError, ValueError):
    """An experiment config is invalid; the message names the field path, the value and what is allowed."""

    def __init__(self, path: str, message: str, *, value: object = None, allowed: object = None):
        self.path, self.value, self.allowed = path, value, allowed
        text = f"config field {path!r}: {message}"
        if value is not None:
            text += f" (got {value!r})"
        if allowed is not None:
            text += f"; allowed: {allowed}"
        super().__init__(text)


class UnknownNameError(FederationError, KeyError):
    """A registry lookup (strategy, paradigm, executor) failed; the message lists the known names."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]):
        self.kind, self.name, self.known = kind, name, list(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(sorted(self.known))}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class AggregationError(FederationError, ValueError):
    """Updates cannot be aggregated as asked (no updates, mismatched shapes, too few clients for Krum...)."""


class TopologyError(FederationError, ValueError):
    """A device graph, clustering or mixing matrix is malformed (not square, not symmetric, bad cluster)."""


class CheckpointError(FederationError, OSError):
    """A run directory or checkpoint is missing, malformed, or belongs to a different config."""


class ExecutorError(FederationError, RuntimeError):
    """An execution backend (local or Ray) failed to run a device's work; the cause is chained."""
