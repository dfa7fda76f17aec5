"""Namespace of xrfed's Kit extension modules."""

__all__: list[str] = []
