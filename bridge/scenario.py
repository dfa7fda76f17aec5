"""Scenarios: the YAML description of a scene -- rooms, objects, lights, a lighting schedule, avatars wearing device
profiles, task scripts that move avatars between tasks, and modality events.

``load_scenario(name_or_path)`` accepts a shipped scenario's name (``default``, ``home``, ``factory``, ``clinic``) or a
path to a YAML file. Validation happens on load; every error names the field path, the value and what is allowed::

    ScenarioError: scenario field 'avatars[2].device': unknown device profile (got 'quest9');
    allowed: apple_vision_pro, hololens_2, ...

Coordinates: each room has an ``origin_m`` (x, y of its min corner in the world, metres) and a ``size_m``
(x, y, height); object and waypoint positions are given **in room coordinates** (metres from the room's min corner)
and converted to the world frame (z up) by the scene. Yaw angles are degrees about world +z, 0 = facing world +x.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .devices import device_names
from .errors import ScenarioError
from .tasks import ACTIVITIES, COMMANDS, GESTURES, OBJECT_CATEGORIES, ROOM_TYPES, TASKS

__all__ = [
    "Room", "SceneObject", "SoundSpec", "Light", "LightingKeyframe", "UserTraits", "Avatar", "Segment",
    "TaskScript", "RandomScript", "ModalityEvent", "RenderSettings", "Scenario", "load_scenario",
    "parse_scenario", "scenario_names", "scenarios_dir", "MATERIALS", "EVENT_KINDS", "NOMINAL_LUX",
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
# validation helpers
class _Reader:
    """Reads one mapping, tracking the field path for error messages and rejecting unknown keys."""

    def __init__(self, raw: Any, path: str, known: Sequence[str]):
        if not isinstance(raw, Mapping):
            raise ScenarioError(path or "<root>", "must be a mapping", value=raw)
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ScenarioError(f"{path}.{unknown[0]}" if path else unknown[0], "unknown field",
                                allowed=", ".join(known))
        self.raw, self.path = raw, path

    def p(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, default: Any = dataclasses.MISSING) -> Any:
        if key not in self.raw or self.raw[key] is None:
            if default is dataclasses.MISSING:
                raise ScenarioError(self.p(key), "is required")
            return default
        return self.raw[key]

    def num(self, key: str, default: Any = dataclasses.MISSING, *, lo: float = float("-inf"),
            hi: float = float("inf")) -> float:
        v = self.get(key, default)
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ScenarioError(self.p(key), "must be a number", value=v)
        if not (lo <= v <= hi):
            raise ScenarioError(self.p(key), f"must be in [{lo}, {hi}]", value=v)
        return float(v)

    def flag(self, key: str, default: bool) -> bool:
        v = self.get(key, default)
        if not isinstance(v, bool):
            raise ScenarioError(self.p(key), "must be true or false", value=v)
        return v

    def choice(self, key: str, allowed: Sequence[str], default: Any = dataclasses.MISSING) -> Any:
        v = self.get(key, default)
        if v is not None and v not in allowed:
            raise ScenarioError(self.p(key), "unknown value", value=v, allowed=", ".join(allowed))
        return v

    def vec(self, key: str, n: int | tuple[int, ...], default: Any = dataclasses.MISSING) -> Any:
        v = self.get(key, default)
        if v is None:
            return v
        ns = (n,) if isinstance(n, int) else n
        if (not isinstance(v, (list, tuple)) or len(v) not in ns
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
            raise ScenarioError(self.p(key), f"must be a list of {' or '.join(map(str, ns))} numbers", value=v)
        return tuple(float(x) for x in v)

    def strings(self, key: str, allowed: Sequence[str] | None = None, default: Any = dataclasses.MISSING) -> Any:
        v = self.get(key, default)
        if v is None:
            return v
        if isinstance(v, str):
            v = [v]
        if isinstance(v, (list, tuple)) and any(isinstance(x, bool) for x in v):
            raise ScenarioError(self.p(key), "YAML reads unquoted yes/no/on/off as booleans: quote them "
                                "(e.g. [\"yes\"])", value=v)
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
            raise ScenarioError(self.p(key), "must be a list of strings", value=v)
        if allowed is not None:
            for i, x in enumerate(v):
                if x not in allowed:
                    raise ScenarioError(f"{self.p(key)}[{i}]", "unknown value", value=x, allowed=", ".join(allowed))
        return tuple(v)


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


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


def load_scenario(name_or_path: str | os.PathLike[str] | Scenario) -> Scenario:
    """Load and validate a shipped scenario by name, or a YAML file by path."""
    if isinstance(name_or_path, Scenario):
        return name_or_path
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") or p.exists()):
        cand = scenarios_dir() / f"{name_or_path}.yaml"
        if not cand.exists():
            raise ScenarioError("<name>", "no such shipped scenario or file", value=str(name_or_path),
                                allowed=", ".join(scenario_names()))
        p = cand
    if not p.exists():
        raise ScenarioError("<path>", "file not found", value=str(p))
    text = p.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError("<yaml>", f"not valid YAML: {exc}") from None
    return parse_scenario(raw, source_yaml=text, default_name=p.stem)


def parse_scenario(raw: Any, *, source_yaml: str = "", default_name: str = "scenario") -> Scenario:
    """Validate a scenario mapping (as loaded from YAML) into a :class:`Scenario`."""
    top = _Reader(raw, "", ["name", "description", "step_hz", "audio_hz", "render", "rooms", "objects", "lights",
                            "lighting_schedule", "avatars", "task_scripts", "modality_events", "radio_range_m"])
    name = str(top.get("name", default_name))
    step_hz = top.num("step_hz", 10.0, lo=1.0, hi=120.0)
    audio_hz = int(top.num("audio_hz", 16000, lo=8000, hi=48000))
    if int(audio_hz) % int(step_hz) != 0 and (audio_hz / step_hz) % 1 != 0:
        raise ScenarioError("audio_hz", "must be a whole multiple of step_hz so each step has a whole number of "
                            "samples", value=audio_hz)
    rr = _Reader(top.get("render", {}), "render", _fields(RenderSettings))
    render = RenderSettings(
        width_px=int(rr.num("width_px", 96, lo=16, hi=2048)), height_px=int(rr.num("height_px", 96, lo=16, hi=2048)),
        shadows=rr.flag("shadows", False), reflections=rr.flag("reflections", False),
        segmentation=rr.flag("segmentation", False), cull=rr.flag("cull", True),
        process=rr.choice("process", ("auto", "on", "off"), "auto"),
        gl=rr.choice("gl", ("auto", "egl", "osmesa", "glfw"), "auto"),
    )

    rooms: list[Room] = []
    raw_rooms = top.get("rooms")
    if not isinstance(raw_rooms, list) or not raw_rooms:
        raise ScenarioError("rooms", "must be a non-empty list", value=raw_rooms)
    for i, r in enumerate(raw_rooms):
        rd = _Reader(r, f"rooms[{i}]", _fields(Room))
        rooms.append(Room(
            name=str(rd.get("name")), type=rd.choice("type", ROOM_TYPES),
            origin_m=rd.vec("origin_m", 2, (0.0, 0.0)), size_m=rd.vec("size_m", 3),
            walls=rd.choice("walls", MATERIALS, "plaster"), floor=rd.choice("floor", MATERIALS, "wood"),
            ceiling=rd.choice("ceiling", MATERIALS, "plaster"),
            doors=rd.strings("doors", ("east", "west", "north", "south"), ()),
            rt60_s=rd.num("rt60_s", None, lo=0.1, hi=5.0), nominal_lux=rd.num("nominal_lux", None, lo=1.0, hi=1e5),
        ))
        sx, sy, sz = rooms[-1].size_m
        if min(sx, sy) < 2.0 or sz < 2.2 or max(sx, sy) > 60:
            raise ScenarioError(f"rooms[{i}].size_m", "each side in [2, 60] m and height >= 2.2 m", value=[sx, sy, sz])
    _unique([r.name for r in rooms], "rooms")
    room_names = [r.name for r in rooms]
    room_by_name = {r.name: r for r in rooms}

    def in_room(path: str, room: str, pos: Sequence[float], margin: float = 0.0) -> None:
        sx, sy, _ = room_by_name[room].size_m
        if not (margin <= pos[0] <= sx - margin and margin <= pos[1] <= sy - margin):
            raise ScenarioError(path, f"position outside room {room!r} (size {sx} x {sy} m, room coordinates)",
                                value=list(pos))

    objects: list[SceneObject] = []
    for i, o in enumerate(top.get("objects", []) or []):
        od = _Reader(o, f"objects[{i}]", _fields(SceneObject) + ["pos_m"])
        sound = None
        if od.get("sound", None) is not None:
            sd = _Reader(od.get("sound"), f"objects[{i}].sound", _fields(SoundSpec))
            sound = SoundSpec(kind=sd.choice("kind", SOUND_KINDS), level_db=sd.num("level_db", 75.0, lo=20, hi=120),
                              freq_hz=sd.num("freq_hz", None, lo=20, hi=8000), on_s=sd.num("on_s", 0.5, lo=0.05),
                              off_s=sd.num("off_s", 0.5, lo=0.0))
        room = od.choice("room", room_names)
        pos = od.vec("pos_m", (2, 3))
        in_room(f"objects[{i}].pos_m", room, pos)
        col = od.vec("color", 3, None)
        objects.append(SceneObject(
            name=str(od.get("name")), category=od.choice("category", OBJECT_CATEGORIES[1:]), room=room, pos_m=pos,
            yaw_deg=od.num("yaw_deg", 0.0), size_m=od.vec("size_m", 3, None), color=col, sound=sound,
        ))
    _unique([o.name for o in objects], "objects")
    object_names = [o.name for o in objects]

    lights: list[Light] = []
    for i, li in enumerate(top.get("lights", []) or []):
        ld = _Reader(li, f"lights[{i}]", _fields(Light))
        room = ld.choice("room", room_names)
        pos = ld.vec("pos_m", 3)
        in_room(f"lights[{i}].pos_m", room, pos)
        lights.append(Light(name=str(ld.get("name")), room=room, pos_m=pos,
                            intensity=ld.num("intensity", 1.0, lo=0.0, hi=10.0)))
    _unique([li.name for li in lights], "lights")

    schedule: list[LightingKeyframe] = []
    for i, k in enumerate(top.get("lighting_schedule", []) or []):
        kd = _Reader(k, f"lighting_schedule[{i}]", _fields(LightingKeyframe))
        schedule.append(LightingKeyframe(
            t_s=kd.num("t_s", lo=0.0), intensity=kd.num("intensity", 1.0, lo=0.0, hi=10.0),
            color_temperature_k=kd.num("color_temperature_k", 4000.0, lo=1500.0, hi=12000.0),
            lights_off=kd.flag("lights_off", False), flicker_hz=kd.num("flicker_hz", 0.0, lo=0.0, hi=60.0),
            flicker_depth=kd.num("flicker_depth", 0.6, lo=0.0, hi=1.0), rooms=kd.strings("rooms", room_names, ()),
        ))
    if [k.t_s for k in schedule] != sorted(k.t_s for k in schedule):
        raise ScenarioError("lighting_schedule", "keyframes must be sorted by t_s",
                            value=[k.t_s for k in schedule])

    scripts: dict[str, TaskScript] = {}
    raw_scripts = top.get("task_scripts", {}) or {}
    if not isinstance(raw_scripts, Mapping):
        raise ScenarioError("task_scripts", "must be a mapping of script name -> script", value=raw_scripts)
    for sname, s in raw_scripts.items():
        sp = f"task_scripts.{sname}"
        sd = _Reader(s, sp, ["segments", "random", "loop"])
        segs = []
        for j, seg in enumerate(sd.get("segments", []) or []):
            gd = _Reader(seg, f"{sp}.segments[{j}]", _fields(Segment))
            room = gd.choice("room", room_names, None)
            wps = gd.get("waypoints", [])
            if not isinstance(wps, list):
                raise ScenarioError(gd.p("waypoints"), "must be a list of [x, y] room coordinates", value=wps)
            wps_t = []
            for w_i, w in enumerate(wps):
                if (not isinstance(w, (list, tuple)) or len(w) != 2
                        or not all(isinstance(c, (int, float)) for c in w)):
                    raise ScenarioError(f"{gd.p('waypoints')}[{w_i}]", "must be [x, y] in metres", value=w)
                if room is not None:
                    in_room(f"{gd.p('waypoints')}[{w_i}]", room, w, margin=0.2)
                wps_t.append((float(w[0]), float(w[1])))
            if wps_t and room is None:
                raise ScenarioError(gd.p("room"), "is required when waypoints are given")
            segs.append(Segment(
                duration_s=gd.num("duration_s", lo=0.1, hi=3600.0), activity=gd.choice("activity", ACTIVITIES, "idle"),
                room=room, waypoints=tuple(wps_t), look_at=gd.strings("look_at", object_names, ()),
                gestures=gd.strings("gestures", GESTURES, ()), commands=gd.strings("commands", COMMANDS[1:], ()),
                interact=gd.choice("interact", object_names, None), tasks=gd.strings("tasks", tuple(TASKS), ()),
            ))
        rnd = None
        if sd.get("random", None) is not None:
            rd_ = _Reader(sd.get("random"), f"{sp}.random", _fields(RandomScript))
            rnd = RandomScript(
                rooms=rd_.strings("rooms", room_names, ()), segment_s=rd_.vec("segment_s", 2, (4.0, 9.0)),
                gesture_prob=rd_.num("gesture_prob", 0.5, lo=0.0, hi=1.0),
                command_rate_per_min=rd_.num("command_rate_per_min", 8.0, lo=0.0, hi=120.0),
                commands=rd_.strings("commands", COMMANDS[1:], COMMANDS[1:]),
                gestures=rd_.strings("gestures", GESTURES[1:], GESTURES[1:]),
                activities=rd_.strings("activities", ACTIVITIES, ACTIVITIES),
                tasks=rd_.strings("tasks", tuple(TASKS), ()),
            )
        if not segs and rnd is None:
            raise ScenarioError(sp, "needs 'segments' or 'random'")
        scripts[str(sname)] = TaskScript(name=str(sname), segments=tuple(segs), random=rnd,
                                         loop=sd.flag("loop", True))

    avatars: list[Avatar] = []
    raw_avatars = top.get("avatars")
    if not isinstance(raw_avatars, list) or not raw_avatars:
        raise ScenarioError("avatars", "must be a non-empty list", value=raw_avatars)
    for i, a in enumerate(raw_avatars):
        ad = _Reader(a, f"avatars[{i}]", _fields(Avatar))
        ud = _Reader(ad.get("user", {}), f"avatars[{i}].user", _fields(UserTraits))
        user = UserTraits(
            gaze_bias_deg=ud.vec("gaze_bias_deg", 2, (0.0, 0.0)),
            voice_pitch_hz=ud.num("voice_pitch_hz", 150.0, lo=60.0, hi=400.0),
            speech_rate_wpm=ud.num("speech_rate_wpm", 150.0, lo=60.0, hi=300.0),
            gait_speed_mps=ud.num("gait_speed_mps", 1.3, lo=0.3, hi=2.5),
            handedness=ud.choice("handedness", ("left", "right"), "right"),
            height_m=ud.num("height_m", 1.70, lo=1.0, hi=2.2),
            blink_rate_per_min=ud.num("blink_rate_per_min", 15.0, lo=0.0, hi=60.0),
            hand_scale=ud.num("hand_scale", 1.0, lo=0.7, hi=1.3),
        )
        room = ad.choice("start_room", room_names)
        pos = ad.vec("start_pos_m", 2)
        in_room(f"avatars[{i}].start_pos_m", room, pos, margin=0.2)
        script = ad.choice("script", tuple(scripts), None)
        avatars.append(Avatar(name=str(ad.get("name")), device=ad.choice("device", device_names()), start_room=room,
                              start_pos_m=pos, start_yaw_deg=ad.num("start_yaw_deg", 0.0), script=script, user=user))
    _unique([a.name for a in avatars], "avatars")

    events: list[ModalityEvent] = []
    for i, e in enumerate(top.get("modality_events", []) or []):
        ed = _Reader(e, f"modality_events[{i}]", _fields(ModalityEvent))
        ev = ModalityEvent(avatar=ed.choice("avatar", [a.name for a in avatars]), kind=ed.choice("kind", tuple(EVENT_KINDS)),
                           start_s=ed.num("start_s", lo=0.0), end_s=ed.num("end_s", lo=0.0))
        if ev.end_s <= ev.start_s:
            raise ScenarioError(f"modality_events[{i}].end_s", "must be after start_s", value=ev.end_s)
        events.append(ev)

    return Scenario(
        name=name, description=str(top.get("description", "")), step_hz=step_hz, audio_hz=audio_hz, render=render,
        rooms=tuple(rooms), objects=tuple(objects), lights=tuple(lights), lighting_schedule=tuple(schedule),
        avatars=tuple(avatars), task_scripts=scripts, modality_events=tuple(events),
        radio_range_m=top.num("radio_range_m", 8.0, lo=0.5, hi=1000.0), source_yaml=source_yaml or yaml.safe_dump(raw),
    )


def _unique(names: list[str], path: str) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise ScenarioError(f"{path}[{i}].name", "duplicate name", value=n)
        seen.add(n)


