"""xrfed's Omniverse Kit extension: stream avatar cameras with the xrfed stream protocol."""

from .extension import XrfedStreamExtension

__all__ = ["XrfedStreamExtension"]
