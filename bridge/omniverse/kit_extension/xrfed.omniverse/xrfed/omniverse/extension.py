"""Kit extension entry point: starts an :class:`AvatarStreamer` and ticks it on every app update."""

from __future__ import annotations

import carb
import omni.ext
import omni.kit.app

from .streamer import AvatarStreamer, StreamSettings, ensure_xrfed_importable

__all__ = ["XrfedStreamExtension"]

_PREFIX = "/exts/xrfed.omniverse"


class XrfedStreamExtension(omni.ext.IExt):
    """Streams every ``/World/Avatars/*/Camera`` of the open stage (see ``docs/README.md``)."""

    def on_startup(self, ext_id: str) -> None:
        s = carb.settings.get_settings()
        ensure_xrfed_importable(s.get(f"{_PREFIX}/xrfed_root") or "")
        self._settings = StreamSettings(
            endpoint=s.get(f"{_PREFIX}/endpoint") or StreamSettings.endpoint,
            width_px=int(s.get(f"{_PREFIX}/width_px") or 128), height_px=int(s.get(f"{_PREFIX}/height_px") or 128),
            rate_hz=float(s.get(f"{_PREFIX}/rate_hz") or 10.0),
            avatars_root=s.get(f"{_PREFIX}/avatars_root") or "/World/Avatars",
            compress=s.get(f"{_PREFIX}/compress") or "",
        )
        self._streamer: AvatarStreamer | None = None
        self._sub = None
        if s.get(f"{_PREFIX}/autostart"):
            self.start()

    def start(self) -> None:
        """(Re)create the streamer for the current stage and subscribe to app updates."""
        self.stop()
        self._streamer = AvatarStreamer(self._settings)
        carb.log_info(f"xrfed: streaming {self._streamer.device_ids} on {self._settings.endpoint}")
        stream = omni.kit.app.get_app().get_update_event_stream()
        self._sub = stream.create_subscription_to_pop(lambda _e: self._streamer and self._streamer.tick(),
                                                      name="xrfed.omniverse.tick")

    def stop(self) -> None:
        if self._sub is not None:
            self._sub.unsubscribe()
            self._sub = None
        if self._streamer is not None:
            self._streamer.close()
            self._streamer = None

    def on_shutdown(self) -> None:
        self.stop()
