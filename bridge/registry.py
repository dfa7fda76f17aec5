"""Explicit registry of simulator backends: ``register_backend(name, factory)`` and ``make_backend(name, ...)``.

Factories are referenced by import path so heavy backends (MuJoCo, mlagents-envs, pyzmq) load only when made.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .backend import SimBackend
from .errors import UnknownNameError

__all__ = ["register_backend", "make_backend", "backend_names"]

_BACKENDS: dict[str, str | Callable[..., SimBackend]] = {
    "embedded": "bridge.embedded.backend:EmbeddedBackend",
    "unity": "bridge.unity.backend:UnityBackend",
    "zmq": "bridge.stream.backend:ZmqBackend",
}


def register_backend(name: str, factory: str | Callable[..., SimBackend], *, overwrite: bool = False) -> None:
    """Register a backend factory (a callable or a ``"module:attr"`` path imported on first use)."""
    if name in _BACKENDS and not overwrite:
        raise ValueError(f"backend {name!r} already registered; pass overwrite=True")
    _BACKENDS[name] = factory


def make_backend(name: str, *args: Any, **kwargs: Any) -> SimBackend:
    """Create a backend by name; an unknown name lists the known ones."""
    try:
        factory = _BACKENDS[name]
    except KeyError:
        raise UnknownNameError("backend", name, tuple(_BACKENDS)) from None
    if isinstance(factory, str):
        mod, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(mod), attr)
    return factory(*args, **kwargs)


def backend_names() -> tuple[str, ...]:
    return tuple(_BACKENDS)
