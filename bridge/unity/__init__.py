"""Unity over ML-Agents: the :class:`UnityBackend`, a stand-in Unity player, and the xrfed side-channel codec.

Heavy pieces (mlagents-envs, grpcio) load only when used; ``import bridge.unity`` needs neither.
"""

from __future__ import annotations

from typing import Any

__all__ = ["UnityBackend", "UnityConfig", "StandInPlayer", "PlayerConfig", "SyntheticBackend", "SyntheticConfig",
           "write_launcher"]

_LAZY = {
    "UnityBackend": "backend", "UnityConfig": "backend", "StandInPlayer": "player", "PlayerConfig": "player",
    "SyntheticBackend": "synthetic", "SyntheticConfig": "synthetic", "write_launcher": "launcher",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
