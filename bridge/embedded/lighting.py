"""Lighting schedule evaluation: keyframes -> per-room intensity, colour temperature, lights on/off, flicker.

For each room, only keyframes that apply to it (no ``rooms`` list, or the room named in it) count. Intensity and
colour temperature interpolate linearly between the surrounding applicable keyframes; ``lights_off`` and flicker hold
from the last applicable keyframe at or before ``t``. Manual overrides (``SetLighting`` commands) sit on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..scenario import LightingKeyframe, Room, Scenario

__all__ = ["RoomLight", "LightingSchedule", "cct_to_rgb"]

AMBIENT_LUX = 2.0  # light that leaks in when the lamps are off (windows, standby LEDs)


@dataclass(frozen=True)
class RoomLight:
    intensity: float  # effective, after flicker and on/off
    color_temperature_k: float
    lights_on: bool
    illuminance_lux: float


def cct_to_rgb(kelvin: float) -> np.ndarray:
    """Approximate RGB (0..1, max channel 1) of a black body at ``kelvin`` (Tanner Helland's fit)."""
    t = kelvin / 100.0
    r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    g = 99.4708025861 * math.log(t) - 161.1195681661 if t <= 66 else 288.1221695283 * (t - 60) ** -0.0755148492
    b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * math.log(t - 10) - 305.0447927307)
    rgb = np.clip(np.array([r, g, b]) / 255.0, 0.0, 1.0)
    return rgb / rgb.max()


class LightingSchedule:
    """Evaluates a scenario's lighting schedule per room and time, with manual overrides."""

    def __init__(self, scenario: Scenario):
        self._rooms = {r.name: r for r in scenario.rooms}
        self._frames: dict[str, list[LightingKeyframe]] = {
            name: [k for k in scenario.lighting_schedule if not k.rooms or name in k.rooms] for name in self._rooms
        }
        self._override: dict[str | None, dict[str, float | bool]] = {}

    def set_override(self, room: str | None, **values: float | bool | None) -> None:
        """Override intensity / color_temperature_k / lights_on for a room (None = every room)."""
        cur = self._override.setdefault(room, {})
        for k, v in values.items():
            if v is not None:
                cur[k] = v

    def clear_overrides(self) -> None:
        self._override.clear()

    def at(self, room: str, t_s: float) -> RoomLight:
        r: Room = self._rooms[room]
        frames = self._frames[room]
        if not frames:
            intensity, cct, off, flicker_hz, depth = 1.0, 4000.0, False, 0.0, 0.0
        else:
            prev = [k for k in frames if k.t_s <= t_s]
            nxt = [k for k in frames if k.t_s > t_s]
            a = prev[-1] if prev else frames[0]
            if nxt and prev:
                b = nxt[0]
                w = (t_s - a.t_s) / (b.t_s - a.t_s)
                intensity = a.intensity + w * (b.intensity - a.intensity)
                cct = a.color_temperature_k + w * (b.color_temperature_k - a.color_temperature_k)
            else:
                intensity, cct = a.intensity, a.color_temperature_k
            off, flicker_hz, depth = a.lights_off, a.flicker_hz, a.flicker_depth
        for key in (None, room):
            ov = self._override.get(key, {})
            intensity = float(ov.get("intensity", intensity))
            cct = float(ov.get("color_temperature_k", cct))
            if "lights_on" in ov:
                off = not bool(ov["lights_on"])
        if flicker_hz > 0:
            # A failing lamp: square-ish modulation at flicker_hz (sharp dips, as fluorescent tubes do).
            phase = math.sin(2 * math.pi * flicker_hz * t_s)
            intensity *= 1.0 - depth * (phase < -0.3)
        eff = 0.0 if off else intensity
        return RoomLight(intensity=eff, color_temperature_k=cct, lights_on=not off,
                         illuminance_lux=r.lux * eff + AMBIENT_LUX)
