"""Where federation meets the scenario: avatar positions for the D2D graph, the radio range, device mapping.

The D2D graph of the semi-decentralized and decentralized paradigms comes from where the avatars stand (world
frame, metres, z up) and the scenario's ``radio_range_m``. Positions here are the avatars' scripted start
positions at eye height; clients that know better (the mean head position of a phase's recorded frames) expose
``position_m(phase)`` and the runner prefers that.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.scenario import Scenario

from .config import ExperimentConfig
from .errors import ConfigError

__all__ = ["avatar_positions_m", "device_avatars", "EYE_HEIGHT_FRACTION"]

#: eye height as a fraction of body height (the bridge's avatar model uses the same figure)
EYE_HEIGHT_FRACTION = 0.93


def device_avatars(cfg: ExperimentConfig, scenario: Scenario) -> dict[str, str]:
    """Device id -> scenario avatar name; every avatar must exist in the scenario."""
    names = [a.name for a in scenario.avatars]
    out = {}
    for i, d in enumerate(cfg.devices):
        avatar = d.avatar or d.id
        if avatar not in names:
            raise ConfigError(f"devices[{i}].avatar", f"no such avatar in scenario {scenario.name!r}", value=avatar,
                              allowed=names)
        out[d.id] = avatar
    return out


def avatar_positions_m(scenario: Scenario, avatars: Sequence[str] | dict[str, str]) -> dict[str, tuple[float, float,
                                                                                                          float]]:
    """World positions (x, y, eye height) of avatars at their scripted start, keyed as given.

    ``avatars`` is a list of avatar names, or a mapping key -> avatar name (e.g. device id -> avatar).
    """
    mapping = dict(avatars) if isinstance(avatars, dict) else {a: a for a in avatars}
    by_name = {a.name: a for a in scenario.avatars}
    out = {}
    for key, name in mapping.items():
        if name not in by_name:
            raise ConfigError("devices.avatar", f"no such avatar in scenario {scenario.name!r}", value=name,
                              allowed=sorted(by_name))
        a = by_name[name]
        x, y = scenario.room(a.start_room).to_world(a.start_pos_m)
        out[key] = (float(x), float(y), EYE_HEIGHT_FRACTION * a.user.height_m)
    return out
