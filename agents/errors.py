"""The agents package's exceptions. Everything raised on purpose derives from :class:`AgentError`.

Errors are raised at the package boundary with a message that says what was expected and what arrived, so a bad
checkpoint, an unknown task or an empty frame never surfaces as a shape error deep inside torch.
"""

from __future__ import annotations

from bridge.errors import XrfedError

__all__ = [
    "AgentError",
    "ConfigError",
    "CheckpointMismatchError",
    "UnknownTaskError",
    "UnknownModalityError",
    "EmptyFrameError",
    "PersonalizationError",
]


class AgentError(XrfedError):
    """Base class of every error the agents package raises deliberately."""


class ConfigError(AgentError, ValueError):
    """A model, personalization or agent configuration is invalid; the message names the field and the value."""

    def __init__(self, field: str, message: str, *, value: object = None, allowed: object = None):
        self.field, self.value, self.allowed = field, value, allowed
        text = f"config field {field!r}: {message}"
        if value is not None:
            text += f" (got {value!r})"
        if allowed is not None:
            text += f"; allowed: {allowed}"
        super().__init__(text)


class CheckpointMismatchError(AgentError, ValueError):
    """A checkpoint's config or tensors do not match the model they are loaded into."""


class UnknownTaskError(AgentError, KeyError):
    """A task the model has no head for was asked for; the message lists the model's tasks."""

    def __init__(self, task: str, known: tuple[str, ...] | list[str]):
        self.task, self.known = task, list(known)
        super().__init__(f"the model has no head for task {task!r}; its tasks: {', '.join(self.known)}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class UnknownModalityError(AgentError, KeyError):
    """A modality name the model does not know."""

    def __init__(self, modality: str, known: tuple[str, ...] | list[str]):
        self.modality, self.known = modality, list(known)
        super().__init__(f"unknown modality {modality!r}; known: {', '.join(self.known)}")

    def __str__(self) -> str:
        return str(self.args[0])


class EmptyFrameError(AgentError, ValueError):
    """A frame (or every sample of a batch) carries none of the modalities the model can use."""


class PersonalizationError(AgentError, ValueError):
    """A personalization method cannot be applied to this model (e.g. expert tuning without experts)."""
