"""NVIDIA Omniverse as a scene source: scenario -> OpenUSD export (:mod:`.usd_export`, needs usd-core) and a Kit
extension (``kit_extension/xrfed.omniverse``) that publishes Replicator annotators with the stream protocol.

Nothing here imports pxr or omni at import time.
"""

from __future__ import annotations

__all__: list[str] = []
