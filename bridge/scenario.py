"""Scenarios: the YAML description of a scene -- rooms, objects, lights, a lighting schedule, avatars wearing device
profiles, task scripts that move avatars between tasks, and modality events.

``load_scenario(name_or_path)`` accepts a shipped scenario's name (``default``, ``home``, ``factory``, ``clinic``) or a
path to a YAML file. Validation happens on load; every error names the field path, the value and what is allowed::

    ScenarioError: scenario field 'avatars[2].device': unknown device profile (got 'quest9');
    allowed: apple_vision_pro, hololens_2, ...

Coordinates: each room has an ``origin_m`` (x, y of its min corner in the world, metres) and a ``size_m``
(x, y, height); object and waypoint positions are given **in room coordinates** (metres from the room's min corner)
and converted to the world frame (z up) by the scene. Yaw angles are degrees about world +z, 0 = facing world +x.

Scenario files come from outside, so loading is bounded and strict: the YAML is read through
:func:`bridge.yamlsafe.load_yaml` (at most :data:`MAX_SCENARIO_BYTES`, alias/node/nesting budgets checked before any
object is built); every number must be finite and inside its physical range (sizes > 0 and bounded, colours in
[0, 1], angles in [-360, 360] degrees, rates and durations > 0, ...), booleans and strings are not numbers, every
list has a maximum length (``MAX_*``), and names are short identifiers. Errors are one line: the field path, the
value got (cut to ~80 characters) and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .cliargs import NAME_RE
from .devices import device_names
from .errors import ScenarioError
from .tasks import ACTIVITIES, COMMANDS, GESTURES, OBJECT_CATEGORIES, ROOM_TYPES, TASKS
from .yamlsafe import YamlError, load_yaml, read_text

__all__ = [
    "Room", "SceneObject", "SoundSpec", "Light", "LightingKeyframe", "UserTraits", "Avatar", "Segment",
    "TaskScript", "RandomScript", "ModalityEvent", "RenderSettings", "Scenario", "load_scenario",
    "parse_scenario", "parse_scenario_yaml", "scenario_names", "scenarios_dir", "MATERIALS", "EVENT_KINDS",
    "NOMINAL_LUX", "MAX_SCENARIO_BYTES", "MAX_ROOMS", "MAX_OBJECTS", "MAX_LIGHTS", "MAX_AVATARS", "MAX_SCRIPTS",
    "MAX_SEGMENTS", "MAX_WAYPOINTS", "MAX_KEYFRAMES", "MAX_EVENTS", "MAX_NAMES", "MAX_DESCRIPTION", "WORLD_M",
    "MAX_TIME_S",
]

#: wall/floor materials the embedded scene knows (colour for rendering, absorption for acoustics)
MATERIALS: tuple[str, ...] = (
    "plaster", "wood", "carpet", "tile", "concrete", "metal", "vinyl", "glass", "brick", "curtain",
)
#: modality events and the modality each one removes
EVENT_KINDS: dict[str, str] = {
    "mic_muted": "audio", "eye_tracking_lost": "gaze", "camera_occluded": "rgb", "depth_lost": "depth",
    "hand_tracking_lost": "hands", "imu_dropout": "imu", "tracking_lost": "pose",
}
SOUND_KINDS = ("hum", "alarm")
#: nominal illuminance (lux) at intensity 1.0 per room type (xr-sensing-models.md: homes 50-300, offices 300-500,
#: industry 300-750, clinical examination ~1000)
NOMINAL_LUX: dict[str, float] = {
    "living_room": 200.0, "kitchen": 300.0, "bedroom": 120.0, "office": 400.0, "factory_floor": 500.0,
    "warehouse": 300.0, "clinic_exam": 1000.0, "clinic_ward": 300.0,
}


# ---------------------------------------------------------------------------------------------------------------
# limits: every number a scenario holds is finite and inside a physical range, every list is bounded
#: largest scenario file (bytes); see bridge.yamlsafe for the alias, node and nesting limits
MAX_SCENARIO_BYTES = 1 << 20
MAX_ROOMS = 32
MAX_OBJECTS = 512
#: MuJoCo's fixed-function renderer draws at most 8 lights (mjMAXLIGHT)
MAX_LIGHTS = 8
MAX_AVATARS = 64
MAX_SCRIPTS = 256
MAX_SEGMENTS = 1000  # per task script
MAX_WAYPOINTS = 256  # per segment
MAX_KEYFRAMES = 1000
MAX_EVENTS = 10_000
MAX_NAMES = 256  # names in one list (look_at, gestures, commands, rooms, tasks, doors, ...)
MAX_DESCRIPTION = 2000  # characters
#: room origins lie within +-WORLD_M metres of the world origin
WORLD_M = 1000.0
#: times on the scenario clock (keyframes, modality events) lie in [0, MAX_TIME_S] seconds (~11.6 days)
MAX_TIME_S = 1e6
_SPEED_OF_SOUND_MPS = 343.0
#: the shortest room-type default RT60 in ``bridge.embedded.acoustics.DEFAULT_RT60_S`` (a test keeps them in step):
#: rooms small enough for it are checked without importing the acoustics model
_SHORTEST_DEFAULT_RT60_S = 0.4
_SHOW = 80  # characters of an offending value an error shows


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 2, 6, 6, 4
_REPR.maxstring, _REPR.maxother = _SHOW, _SHOW


def _repr(value: Any) -> str:
    """A bounded repr: nested and long containers are elided, so even a huge (or aliased) value costs little."""
    try:
        return _REPR.repr(value)
    except ValueError:  # an int beyond Python's digit limit, or a container holding one
        if isinstance(value, int):
            return f"<an integer of {value.bit_length()} bits>"
        return f"<a {type(value).__name__}>"


class _Shown:
    """An offending value as an error shows it: its repr cut to ~80 characters, so no error dumps a whole file."""

    def __init__(self, raw: Any):
        self.raw = raw

    def __repr__(self) -> str:
        text = _repr(self.raw)
        if isinstance(self.raw, (list, tuple, dict)) and len(text) > _SHOW:
            suffix = f" (a {type(self.raw).__name__} of {len(self.raw)})"
            return _clip(text, _SHOW - len(suffix)) + suffix
        return _clip(text, _SHOW)


_UNSET: Any = object()


def _err(path: str, message: str, value: Any = _UNSET, allowed: object = None) -> ScenarioError:
    """A one-line :class:`ScenarioError`: the field path, what is wrong, the value got (cut) and what is allowed."""
    shown = None
    if value is not _UNSET:
        plain = isinstance(value, (int, float, str, bool)) and not (isinstance(value, int) and value.bit_length() > 64)
        shown = value if plain and len(repr(value)) <= _SHOW else _Shown(value)
    return ScenarioError(_clip(path, 80) or "<root>", _clip(message, 90), value=shown,
                         allowed=_clip(str(allowed), 100) if allowed is not None else None)


def _g(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class _Range:
    """A closed (or left-open) interval a number must lie in, with its unit, as errors show it."""

    lo: float
    hi: float
    unit: str = ""
    lo_open: bool = False
    integer: bool = False

    def __str__(self) -> str:
        text = f"{'(' if self.lo_open else '['}{_g(self.lo)}, {_g(self.hi)}]"
        if self.integer:
            text = "a whole number in " + text
        return f"{text} {self.unit}" if self.unit else text

    def check(self, path: str, v: Any) -> float:
        """``v`` as a float, or a ScenarioError: booleans and strings are not numbers, NaN and inf are refused."""
        if isinstance(v, bool):
            raise _err(path, "must be a number, not true/false", v, self)
        if not isinstance(v, (int, float)):
            kind = "a string" if isinstance(v, str) else f"a {type(v).__name__}"
            raise _err(path, f"must be a number, not {kind}", v, self)
        if isinstance(v, float) and not math.isfinite(v):
            raise _err(path, "must be a finite number", v, self)
        if not ((self.lo < v) if self.lo_open else (self.lo <= v)) or not v <= self.hi:
            raise _err(path, "out of range", v, self)
        if self.integer and v != int(v):
            raise _err(path, "must be a whole number", v, self)
        return float(v)


def _where(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{_clip(str(key), 40)}" if path else _clip(str(key), 40)


class _Reader:
    """Reads one mapping, tracking the field path for error messages and rejecting unknown keys."""

    def __init__(self, raw: Any, path: str, known: Sequence[str]):
        if not isinstance(raw, Mapping):
            if not path:
                raise _err("<root>", f"a scenario must be a mapping (name:, rooms:, ...), not a {type(raw).__name__}",
                       raw)
            raise _err(path, "must be a mapping", raw)
        for key in raw:
            if key not in known:
                raise _err(_where(path, key if isinstance(key, str) else _repr(key)), "unknown field",
                           allowed=", ".join(known))
        self.raw, self.path = raw, path

    def p(self, key: str | int) -> str:
        return _where(self.path, key)

    def get(self, key: str, default: Any = _UNSET) -> Any:
        if key not in self.raw or self.raw[key] is None:
            if default is _UNSET:
                raise _err(self.p(key), "is required")
            return default
        return self.raw[key]

    def num(self, key: str, default: Any, rng: _Range) -> Any:
        v = self.get(key, default)
        return None if v is None else rng.check(self.p(key), v)

    def integer(self, key: str, default: Any, rng: _Range) -> int:
        return int(_Range(rng.lo, rng.hi, rng.unit, rng.lo_open, True).check(self.p(key), self.get(key, default)))

    def flag(self, key: str, default: bool) -> bool:
        v = self.get(key, default)
        if not isinstance(v, bool):
            raise _err(self.p(key), "must be true or false", v)
        return v

    def choice(self, key: str, allowed: Sequence[str], default: Any = _UNSET) -> Any:
        v = self.get(key, default)
        if v is not None and (not isinstance(v, str) or v not in allowed):
            raise _err(self.p(key), "unknown value", v, ", ".join(allowed) or "(none defined)")
        return v

    def name(self, key: str, default: Any = _UNSET) -> str:
        v = self.get(key, default)
        if not isinstance(v, str) or not NAME_RE.match(v):
            raise _err(self.p(key), "must be a name", v,
                       "1-64 letters, digits, '_', '.', '-', starting with a letter or digit (quote numbers)")
        return v

    def text(self, key: str, default: str, max_chars: int) -> str:
        v = self.get(key, default)
        if not isinstance(v, str) or len(v) > max_chars:
            raise _err(self.p(key), f"must be text of at most {max_chars} characters", v)
        return v

    def vec(self, key: str, n: int | tuple[int, ...], default: Any, rng: _Range | Sequence[_Range]) -> Any:
        v = self.get(key, default)
        if v is None:
            return v
        ns = (n,) if isinstance(n, int) else n
        if not isinstance(v, (list, tuple)) or len(v) not in ns:
            raise _err(self.p(key), f"must be a list of {' or '.join(map(str, ns))} numbers", v)
        rngs = [rng] * len(v) if isinstance(rng, _Range) else rng
        return tuple(r.check(f"{self.p(key)}[{i}]", x) for i, (x, r) in enumerate(zip(v, rngs, strict=False)))

    def strings(self, key: str, allowed: Sequence[str] | None = None, default: Any = _UNSET, *,
                nonempty: bool = False) -> Any:
        v = self.get(key, default)
        if v is None:
            return v
        if isinstance(v, str):
            v = [v]
        if isinstance(v, (list, tuple)) and any(isinstance(x, bool) for x in v):
            raise _err(self.p(key), "YAML reads unquoted yes/no/on/off as booleans: quote them (e.g. [\"yes\"])", v)
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
            raise _err(self.p(key), "must be a list of strings", v)
        if len(v) > MAX_NAMES or (nonempty and not v):
            raise _err(self.p(key), f"must hold {1 if nonempty else 0} to {MAX_NAMES} names", v)
        if allowed is not None:
            for i, x in enumerate(v):
                if x not in allowed:
                    raise _err(f"{self.p(key)}[{i}]", "unknown value", x, ", ".join(allowed) or "(none defined)")
        return tuple(v)

    def items(self, key: str, limit: int, *, required: bool = False) -> list[Any]:
        """A list field (``None``/absent = empty unless required) of at most ``limit`` entries."""
        v = self.get(key, _UNSET if required else [])
        if not isinstance(v, list) or len(v) > limit or (required and not v):
            raise _err(self.p(key), f"must be a {'non-empty ' if required else ''}list of at most {limit} entries",
                       v)
        return v


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _min_rt60_s(size_m: Sequence[float]) -> float:
    """The shortest reverberation time a shoebox room allows (Sabine's formula with fully absorbing walls)."""
    sx, sy, sz = size_m
    volume, surface = sx * sy * sz, 2 * (sx * sy + sx * sz + sy * sz)
    return 24 * math.log(10) * volume / (_SPEED_OF_SOUND_MPS * surface)


# ---------------------------------------------------------------------------------------------------------------
# the model
@dataclass(frozen=True)
class Room:
    name: str
    type: str  # one of ROOM_TYPES
    origin_m: tuple[float, float]  # world x, y of the min corner
    size_m: tuple[float, float, float]  # x, y, height
    walls: str = "plaster"
    floor: str = "wood"
    ceiling: str = "plaster"
    doors: tuple[str, ...] = ()  # sides with a 1 m doorway: east (+x), west (-x), north (+y), south (-y)
    rt60_s: float | None = None  # None = default for the room type
    nominal_lux: float | None = None  # None = NOMINAL_LUX[type]

    @property
    def lux(self) -> float:
        return self.nominal_lux if self.nominal_lux is not None else NOMINAL_LUX[self.type]

    def contains(self, x_world: float, y_world: float, margin: float = 0.0) -> bool:
        ox, oy = self.origin_m
        return (ox - margin <= x_world <= ox + self.size_m[0] + margin
                and oy - margin <= y_world <= oy + self.size_m[1] + margin)

    def to_world(self, xy: Sequence[float]) -> tuple[float, float]:
        return (self.origin_m[0] + xy[0], self.origin_m[1] + xy[1])


@dataclass(frozen=True)
class SoundSpec:
    kind: str  # hum | alarm
    level_db: float = 75.0  # SPL at 1 m
    freq_hz: float | None = None  # hum: mains frequency (50/60); alarm: tone frequency
    on_s: float = 0.5  # alarm on/off pattern
    off_s: float = 0.5


@dataclass(frozen=True)
class SceneObject:
    name: str
    category: str  # one of OBJECT_CATEGORIES (not background)
    room: str
    pos_m: tuple[float, ...]  # (x, y) or (x, y, z) in room coordinates; z = bottom height (default on the floor)
    yaw_deg: float = 0.0
    size_m: tuple[float, float, float] | None = None  # None = category default
    color: tuple[float, float, float] | None = None  # RGB 0..1, None = category default
    sound: SoundSpec | None = None


@dataclass(frozen=True)
class Light:
    name: str
    room: str
    pos_m: tuple[float, float, float]  # room coordinates
    intensity: float = 1.0  # relative


@dataclass(frozen=True)
class LightingKeyframe:
    """Lighting at time ``t_s`` (linear interpolation of intensity/colour between keyframes).

    ``lights_off`` holds until a later keyframe switches lights on; ``flicker_hz`` > 0 modulates the intensity
    (a failing lamp) until a later keyframe sets it back to 0.
    """

    t_s: float
    intensity: float = 1.0
    color_temperature_k: float = 4000.0
    lights_off: bool = False
    flicker_hz: float = 0.0
    flicker_depth: float = 0.6
    rooms: tuple[str, ...] = ()  # empty = every room


@dataclass(frozen=True)
class UserTraits:
    """A user's personal signature."""

    gaze_bias_deg: tuple[float, float] = (0.0, 0.0)  # yaw, pitch calibration offset
    voice_pitch_hz: float = 150.0
    speech_rate_wpm: float = 150.0
    gait_speed_mps: float = 1.3
    handedness: str = "right"
    height_m: float = 1.70  # eye height = 0.93 * height
    blink_rate_per_min: float = 15.0
    hand_scale: float = 1.0


@dataclass(frozen=True)
class Segment:
    """One timeline segment of a task script."""

    duration_s: float
    activity: str = "idle"  # one of ACTIVITIES; "walking" is used automatically while travelling to waypoints
    room: str | None = None  # room of the waypoints (default: the avatar's current room)
    waypoints: tuple[tuple[float, float], ...] = ()  # room coordinates, walked in order at gait speed
    look_at: tuple[str, ...] = ()  # object names the eyes/head fixate among
    gestures: tuple[str, ...] = ()  # performed in turn during the segment
    commands: tuple[str, ...] = ()  # spoken in turn at random moments during the segment
    interact: str | None = None  # object the user will interact with at the end (intent label)
    tasks: tuple[str, ...] = ()  # active tasks (empty = all)


@dataclass(frozen=True)
class RandomScript:
    """Generate segments from the seed: random rooms/targets/activities/gestures/commands (for varied datasets)."""

    rooms: tuple[str, ...] = ()  # rooms to wander through (empty = all)
    segment_s: tuple[float, float] = (4.0, 9.0)
    gesture_prob: float = 0.5
    command_rate_per_min: float = 8.0
    commands: tuple[str, ...] = COMMANDS[1:]
    gestures: tuple[str, ...] = GESTURES[1:]
    activities: tuple[str, ...] = ACTIVITIES
    tasks: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskScript:
    name: str
    segments: tuple[Segment, ...] = ()
    random: RandomScript | None = None
    loop: bool = True


@dataclass(frozen=True)
class Avatar:
    name: str
    device: str  # device profile name
    start_room: str
    start_pos_m: tuple[float, float]  # room coordinates
    start_yaw_deg: float = 0.0
    script: str | None = None  # task script name
    user: UserTraits = field(default_factory=UserTraits)


@dataclass(frozen=True)
class ModalityEvent:
    avatar: str
    kind: str  # one of EVENT_KINDS
    start_s: float
    end_s: float

    @property
    def modality(self) -> str:
        return EVENT_KINDS[self.kind]


@dataclass(frozen=True)
class RenderSettings:
    width_px: int = 96
    height_px: int = 96
    shadows: bool = False  # ~5x slower on CPU rendering
    reflections: bool = False
    segmentation: bool = False  # an extra render pass; ground truth comes from ray casts regardless
    gl: str = "auto"  # auto | egl | osmesa | glfw
    # Leave geoms wholly outside each camera's view frustum out of its scene (images unchanged; ~10 us per geom and
    # pass saved on software OpenGL). Off by itself when shadows or reflections are on: an unseen geom can cast one.
    cull: bool = True
    # Render in a child process (auto: when the machine has >= 2 CPUs), so OpenGL and the Python work of a step run
    # on two cores without sharing the GIL. Images are the same either way.
    process: str = "auto"  # auto | on | off


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    step_hz: float
    audio_hz: int
    render: RenderSettings
    rooms: tuple[Room, ...]
    objects: tuple[SceneObject, ...]
    lights: tuple[Light, ...]
    lighting_schedule: tuple[LightingKeyframe, ...]
    avatars: tuple[Avatar, ...]
    task_scripts: Mapping[str, TaskScript]
    modality_events: tuple[ModalityEvent, ...]
    radio_range_m: float = 8.0  # D2D radio range used by the federation's D2D graph
    source_yaml: str = ""

    @property
    def step_dt_s(self) -> float:
        return 1.0 / self.step_hz

    def room(self, name: str) -> Room:
        for r in self.rooms:
            if r.name == name:
                return r
        raise ScenarioError("rooms", "unknown room", value=name, allowed=", ".join(r.name for r in self.rooms))

    def object(self, name: str) -> SceneObject:
        for o in self.objects:
            if o.name == name:
                return o
        raise ScenarioError("objects", "unknown object", value=name, allowed=", ".join(o.name for o in self.objects))

    def room_at(self, x_world: float, y_world: float) -> Room | None:
        for r in self.rooms:
            if r.contains(x_world, y_world):
                return r
        return None

    @property
    def digest(self) -> str:
        """A short content hash (for cache keys and dataset attributes)."""
        return hashlib.sha256(self.source_yaml.encode()).hexdigest()[:12]

    def with_render(self, **kw: Any) -> Scenario:
        return dataclasses.replace(self, render=dataclasses.replace(self.render, **kw))


# ---------------------------------------------------------------------------------------------------------------
def scenarios_dir() -> Path:
    """Folder of the shipped scenarios (``XRFED_SCENARIOS`` overrides)."""
    env = os.environ.get("XRFED_SCENARIOS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "scenarios", here / "data" / "scenarios"):
        if cand.is_dir():
            return cand
    return here.parent / "scenarios"


def scenario_names() -> tuple[str, ...]:
    d = scenarios_dir()
    return tuple(sorted(p.stem for p in d.glob("*.yaml"))) if d.is_dir() else ()


def _yaml_error(exc: YamlError) -> ScenarioError:
    where = f" (line {exc.line}, column {exc.column})" if exc.line is not None else ""
    return ScenarioError("<yaml>", f"{exc.problem}{where}")


def load_scenario(name_or_path: str | os.PathLike[str] | Scenario) -> Scenario:
    """Load and validate a shipped scenario by name, or a YAML file by path (at most :data:`MAX_SCENARIO_BYTES`)."""
    if isinstance(name_or_path, Scenario):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise _err("<name>", "expected a scenario name or a path", name_or_path)
    text = os.fspath(name_or_path)
    if not isinstance(text, str) or "\x00" in text or len(text) > 4096:
        raise _err("<path>", "not a valid file name", text)
    p = Path(text)
    try:
        exists = p.exists()
    except OSError as exc:  # e.g. a name too long for the file system
        raise _err("<path>", f"cannot use this path: {exc.strerror or type(exc).__name__}", text) from None
    if not (p.suffix in (".yaml", ".yml") or exists):
        cand = scenarios_dir() / f"{text}.yaml"
        if not NAME_RE.match(text) or not cand.exists():
            raise _err("<name>", "no such shipped scenario or file", text, ", ".join(scenario_names()))
        p = cand
    if not p.exists():
        raise _err("<path>", "file not found", str(p))
    try:
        source = read_text(p, what=str(p), max_bytes=MAX_SCENARIO_BYTES)
    except YamlError as exc:
        raise _err("<file>", exc.problem, str(p)) from None
    stem = p.stem if NAME_RE.match(p.stem) else "scenario"
    # universal newlines, as Path.read_text gave them: the digest of a CRLF file stays what it was
    return parse_scenario_yaml(source.replace("\r\n", "\n").replace("\r", "\n"), default_name=stem)


def parse_scenario_yaml(text: str | bytes, *, default_name: str = "scenario") -> Scenario:
    """Validate a scenario given as YAML text (bounded: see :mod:`bridge.yamlsafe`) into a :class:`Scenario`."""
    try:
        raw = load_yaml(text, what="scenario", max_bytes=MAX_SCENARIO_BYTES)
    except YamlError as exc:
        raise _yaml_error(exc) from None
    source = text.decode("utf-8-sig") if isinstance(text, bytes) else text
    return parse_scenario(raw, source_yaml=source, default_name=default_name)


def parse_scenario(raw: Any, *, source_yaml: str = "", default_name: str = "scenario") -> Scenario:
    """Validate a scenario mapping (as loaded from YAML) into a :class:`Scenario`.

    Every number must be finite and inside its physical range; every error is one line naming the field path, the
    value got (cut to ~80 characters) and what is allowed.
    """
    top = _Reader(raw, "", ["name", "description", "step_hz", "audio_hz", "render", "rooms", "objects", "lights",
                            "lighting_schedule", "avatars", "task_scripts", "modality_events", "radio_range_m"])
    name = top.name("name", default_name if NAME_RE.match(default_name) else "scenario")
    description = top.text("description", "", MAX_DESCRIPTION)
    step_hz = top.num("step_hz", 10.0, _Range(1.0, 120.0, "Hz"))
    audio_hz = top.integer("audio_hz", 16000, _Range(8000, 48000, "Hz"))
    per_step = audio_hz / step_hz
    if abs(per_step - round(per_step)) > 1e-9 * per_step:
        raise _err("audio_hz", "must be a whole multiple of step_hz so each step has a whole number of samples",
                   audio_hz, f"a multiple of step_hz = {_g(step_hz)}")
    rr = _Reader(top.get("render", {}), "render", _fields(RenderSettings))
    px = _Range(16, 2048, "px")
    render = RenderSettings(
        width_px=rr.integer("width_px", 96, px), height_px=rr.integer("height_px", 96, px),
        shadows=rr.flag("shadows", False), reflections=rr.flag("reflections", False),
        segmentation=rr.flag("segmentation", False), cull=rr.flag("cull", True),
        process=rr.choice("process", ("auto", "on", "off"), "auto"),
        gl=rr.choice("gl", ("auto", "egl", "osmesa", "glfw"), "auto"),
    )

    rooms: list[Room] = []
    for i, r in enumerate(top.items("rooms", MAX_ROOMS, required=True)):
        rd = _Reader(r, f"rooms[{i}]", _fields(Room))
        side = _Range(2.0, 60.0, "m")
        room = Room(
            name=rd.name("name"), type=rd.choice("type", ROOM_TYPES),
            origin_m=rd.vec("origin_m", 2, (0.0, 0.0), _Range(-WORLD_M, WORLD_M, "m")),
            size_m=rd.vec("size_m", 3, _UNSET, (side, side, _Range(2.2, 20.0, "m"))),
            walls=rd.choice("walls", MATERIALS, "plaster"), floor=rd.choice("floor", MATERIALS, "wood"),
            ceiling=rd.choice("ceiling", MATERIALS, "plaster"),
            doors=rd.strings("doors", ("east", "west", "north", "south"), ()),
            rt60_s=rd.num("rt60_s", None, _Range(0.1, 5.0, "s")),
            nominal_lux=rd.num("nominal_lux", None, _Range(1.0, 1e5, "lux")),
        )
        _check_reverb(room, i)
        rooms.append(room)
    _unique([r.name for r in rooms], "rooms")
    room_names = [r.name for r in rooms]
    room_by_name = {r.name: r for r in rooms}

    def in_room(path: str, room: str, pos: Sequence[float], margin: float = 0.0) -> None:
        sx, sy, sz = room_by_name[room].size_m
        if not (margin <= pos[0] <= sx - margin and margin <= pos[1] <= sy - margin):
            raise _err(path, f"position outside room {room!r} (size {_g(sx)} x {_g(sy)} m, room coordinates)",
                       list(pos), f"x in [{_g(margin)}, {_g(sx - margin)}], y in [{_g(margin)}, {_g(sy - margin)}] m")
        if len(pos) == 3 and not 0.0 <= pos[2] <= sz:
            raise _err(f"{path}[2]", f"height outside room {room!r}", pos[2], f"[0, {_g(sz)}] m")

    coord = _Range(-WORLD_M, WORLD_M, "m")
    objects: list[SceneObject] = []
    for i, o in enumerate(top.items("objects", MAX_OBJECTS)):
        od = _Reader(o, f"objects[{i}]", _fields(SceneObject))
        sound = None
        if od.get("sound", None) is not None:
            sd = _Reader(od.get("sound"), f"objects[{i}].sound", _fields(SoundSpec))
            kind = sd.choice("kind", SOUND_KINDS)
            # a hum's harmonics and an alarm's tone must stay below the Nyquist frequency of the audio
            top_hz = audio_hz / 4 if kind == "hum" else 0.45 * audio_hz
            sound = SoundSpec(kind=kind, level_db=sd.num("level_db", 75.0, _Range(20.0, 120.0, "dB SPL")),
                              freq_hz=sd.num("freq_hz", None, _Range(20.0, top_hz, "Hz")),
                              on_s=sd.num("on_s", 0.5, _Range(0.05, 60.0, "s")),
                              off_s=sd.num("off_s", 0.5, _Range(0.0, 60.0, "s")))
        room = od.choice("room", room_names)
        pos = od.vec("pos_m", (2, 3), _UNSET, coord)
        in_room(f"objects[{i}].pos_m", room, pos)
        extent = _Range(0.01, 60.0, "m")
        objects.append(SceneObject(
            name=od.name("name"), category=od.choice("category", OBJECT_CATEGORIES[1:]), room=room, pos_m=pos,
            yaw_deg=od.num("yaw_deg", 0.0, _Range(-360.0, 360.0, "deg")),
            size_m=od.vec("size_m", 3, None, (extent, extent, _Range(0.01, 20.0, "m"))),
            color=od.vec("color", 3, None, _Range(0.0, 1.0, "(RGB)")), sound=sound,
        ))
    _unique([o.name for o in objects], "objects")
    object_names = [o.name for o in objects]

    lights: list[Light] = []
    for i, li in enumerate(top.items("lights", MAX_LIGHTS)):
        ld = _Reader(li, f"lights[{i}]", _fields(Light))
        room = ld.choice("room", room_names)
        pos = ld.vec("pos_m", 3, _UNSET, coord)
        in_room(f"lights[{i}].pos_m", room, pos)
        lights.append(Light(name=ld.name("name"), room=room, pos_m=pos,
                            intensity=ld.num("intensity", 1.0, _Range(0.0, 10.0))))
    _unique([li.name for li in lights], "lights")

    clock = _Range(0.0, MAX_TIME_S, "s")
    schedule: list[LightingKeyframe] = []
    for i, k in enumerate(top.items("lighting_schedule", MAX_KEYFRAMES)):
        kd = _Reader(k, f"lighting_schedule[{i}]", _fields(LightingKeyframe))
        schedule.append(LightingKeyframe(
            t_s=kd.num("t_s", _UNSET, clock), intensity=kd.num("intensity", 1.0, _Range(0.0, 10.0)),
            color_temperature_k=kd.num("color_temperature_k", 4000.0, _Range(1500.0, 12000.0, "K")),
            lights_off=kd.flag("lights_off", False), flicker_hz=kd.num("flicker_hz", 0.0, _Range(0.0, 60.0, "Hz")),
            flicker_depth=kd.num("flicker_depth", 0.6, _Range(0.0, 1.0)), rooms=kd.strings("rooms", room_names, ()),
        ))
    if [k.t_s for k in schedule] != sorted(k.t_s for k in schedule):
        raise _err("lighting_schedule", "keyframes must be sorted by t_s", [k.t_s for k in schedule])

    scripts: dict[str, TaskScript] = {}
    raw_scripts = top.get("task_scripts", {})
    if not isinstance(raw_scripts, Mapping) or len(raw_scripts) > MAX_SCRIPTS:
        raise _err("task_scripts", f"must be a mapping of at most {MAX_SCRIPTS} script names -> scripts",
                   raw_scripts)
    for sname, s in raw_scripts.items():
        sp = _where("task_scripts", sname if isinstance(sname, str) else _repr(sname))
        if not isinstance(sname, str) or not NAME_RE.match(sname):
            raise _err(sp, "a script name must be a name", sname,
                       "1-64 letters, digits, '_', '.', '-', starting with a letter or digit")
        sd = _Reader(s, sp, ["segments", "random", "loop"])
        segs = []
        for j, seg in enumerate(sd.items("segments", MAX_SEGMENTS)):
            gd = _Reader(seg, f"{sp}.segments[{j}]", _fields(Segment))
            room = gd.choice("room", room_names, None)
            wps = gd.items("waypoints", MAX_WAYPOINTS)
            if wps and room is None:
                raise _err(gd.p("room"), "is required when waypoints are given")
            wps_t = []
            for w_i, w in enumerate(wps):
                wp = f"{gd.p('waypoints')}[{w_i}]"
                if not isinstance(w, (list, tuple)) or len(w) != 2:
                    raise _err(wp, "must be [x, y] in metres (room coordinates)", w)
                xy = (coord.check(f"{wp}[0]", w[0]), coord.check(f"{wp}[1]", w[1]))
                in_room(wp, room, xy, margin=0.2)
                wps_t.append(xy)
            segs.append(Segment(
                duration_s=gd.num("duration_s", _UNSET, _Range(0.1, 3600.0, "s")),
                activity=gd.choice("activity", ACTIVITIES, "idle"),
                room=room, waypoints=tuple(wps_t), look_at=gd.strings("look_at", object_names, ()),
                gestures=gd.strings("gestures", GESTURES, ()), commands=gd.strings("commands", COMMANDS[1:], ()),
                interact=gd.choice("interact", object_names, None), tasks=gd.strings("tasks", tuple(TASKS), ()),
            ))
        rnd = None
        if sd.get("random", None) is not None:
            rd_ = _Reader(sd.get("random"), f"{sp}.random", _fields(RandomScript))
            seg_s = rd_.vec("segment_s", 2, (4.0, 9.0), _Range(0.1, 3600.0, "s"))
            if seg_s[0] > seg_s[1]:
                raise _err(rd_.p("segment_s"), "must be [shortest, longest]", list(seg_s), "shortest <= longest")
            rnd = RandomScript(
                rooms=rd_.strings("rooms", room_names, ()), segment_s=seg_s,
                gesture_prob=rd_.num("gesture_prob", 0.5, _Range(0.0, 1.0)),
                command_rate_per_min=rd_.num("command_rate_per_min", 8.0, _Range(0.0, 120.0, "per minute")),
                # random segments draw from these lists, so none may be empty
                commands=rd_.strings("commands", COMMANDS[1:], COMMANDS[1:], nonempty=True),
                gestures=rd_.strings("gestures", GESTURES[1:], GESTURES[1:], nonempty=True),
                activities=rd_.strings("activities", ACTIVITIES, ACTIVITIES, nonempty=True),
                tasks=rd_.strings("tasks", tuple(TASKS), ()),
            )
        if not segs and rnd is None:
            raise _err(sp, "needs 'segments' or 'random'")
        scripts[sname] = TaskScript(name=sname, segments=tuple(segs), random=rnd, loop=sd.flag("loop", True))

    avatars: list[Avatar] = []
    devices = device_names()
    for i, a in enumerate(top.items("avatars", MAX_AVATARS, required=True)):
        ad = _Reader(a, f"avatars[{i}]", _fields(Avatar))
        ud = _Reader(ad.get("user", {}), f"avatars[{i}].user", _fields(UserTraits))
        user = UserTraits(
            gaze_bias_deg=ud.vec("gaze_bias_deg", 2, (0.0, 0.0), _Range(-10.0, 10.0, "deg")),
            voice_pitch_hz=ud.num("voice_pitch_hz", 150.0, _Range(60.0, 400.0, "Hz")),
            speech_rate_wpm=ud.num("speech_rate_wpm", 150.0, _Range(60.0, 300.0, "words per minute")),
            gait_speed_mps=ud.num("gait_speed_mps", 1.3, _Range(0.3, 2.5, "m/s")),
            handedness=ud.choice("handedness", ("left", "right"), "right"),
            height_m=ud.num("height_m", 1.70, _Range(1.0, 2.2, "m")),
            blink_rate_per_min=ud.num("blink_rate_per_min", 15.0, _Range(0.0, 60.0, "per minute")),
            hand_scale=ud.num("hand_scale", 1.0, _Range(0.7, 1.3)),
        )
        room = ad.choice("start_room", room_names)
        pos = ad.vec("start_pos_m", 2, _UNSET, coord)
        in_room(f"avatars[{i}].start_pos_m", room, pos, margin=0.2)
        avatars.append(Avatar(name=ad.name("name"), device=ad.choice("device", devices), start_room=room,
                              start_pos_m=pos, start_yaw_deg=ad.num("start_yaw_deg", 0.0, _Range(-360.0, 360.0, "deg")),
                              script=ad.choice("script", tuple(scripts), None), user=user))
    _unique([a.name for a in avatars], "avatars")

    events: list[ModalityEvent] = []
    avatar_names = [a.name for a in avatars]
    for i, e in enumerate(top.items("modality_events", MAX_EVENTS)):
        ed = _Reader(e, f"modality_events[{i}]", _fields(ModalityEvent))
        ev = ModalityEvent(avatar=ed.choice("avatar", avatar_names), kind=ed.choice("kind", tuple(EVENT_KINDS)),
                           start_s=ed.num("start_s", _UNSET, clock), end_s=ed.num("end_s", _UNSET, clock))
        if ev.end_s <= ev.start_s:
            raise _err(f"modality_events[{i}].end_s", "must be after start_s", ev.end_s, f"> {_g(ev.start_s)} s")
        events.append(ev)

    return Scenario(
        name=name, description=description, step_hz=step_hz, audio_hz=audio_hz, render=render,
        rooms=tuple(rooms), objects=tuple(objects), lights=tuple(lights), lighting_schedule=tuple(schedule),
        avatars=tuple(avatars), task_scripts=scripts, modality_events=tuple(events),
        radio_range_m=top.num("radio_range_m", 8.0, _Range(0.5, 1000.0, "m")),
        source_yaml=source_yaml or yaml.safe_dump(raw),
    )


def _check_reverb(room: Room, i: int) -> None:
    """The room's reverberation time (given, or its type's default) must be one its size allows."""
    shortest = _min_rt60_s(room.size_m)
    if room.rt60_s is not None:
        if room.rt60_s < shortest:
            raise _err(f"rooms[{i}].rt60_s", f"too short for a room of {' x '.join(map(_g, room.size_m))} m "
                       "(Sabine's formula, fully absorbing walls)", room.rt60_s, f"[{shortest:.2f}, 5] s")
        return
    if shortest <= _SHORTEST_DEFAULT_RT60_S:
        return  # every room type's default fits: no need to import the acoustics model
    from .embedded.acoustics import rt60_for_room_type

    default = rt60_for_room_type(room.type)
    if default < shortest:
        raise _err(f"rooms[{i}].rt60_s", f"the {room.type} default ({_g(default)} s) is too short for a room of "
                   f"{' x '.join(map(_g, room.size_m))} m; give rt60_s", allowed=f"[{shortest:.2f}, 5] s")


def _unique(names: list[str], path: str) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise _err(f"{path}[{i}].name", "duplicate name", n)
        seen.add(n)
