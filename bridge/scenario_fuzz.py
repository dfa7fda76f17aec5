"""Hostile-input surfaces of scenario files (``xrfed bench fuzz``; see :mod:`bridge.fuzzing`).

* ``scenario.yaml``: YAML text or bytes into :func:`~bridge.scenario.parse_scenario_yaml`, or written to a temporary
  file and loaded with :func:`~bridge.scenario.load_scenario`: the shipped scenarios mutated field by field
  (NaN, inf, negative, huge, wrong types, booleans for numbers, missing and extra keys, wrapped and swapped nodes,
  grown lists), structural mutations (a whole scenario under a list, a scalar), text mutations (truncation,
  garbage bytes, non-UTF-8), alias bombs (nested lists, merge keys, strings), deep nesting, hostile YAML
  (tags, bad dates, huge integers, several documents) and files over the size limit. A rejection must be one line of
  at most :data:`MAX_ERROR_CHARS` characters; an accepted scenario must hold only finite numbers.
* ``scenario.build``: small scenarios pushed to the edges of what validation allows -- every mutation is followed
  by repairs that read the error (its field path and allowed range or names) and move the value to the range's
  ends or inside it, add optional fields, grow lists -- and every accepted one is built into the embedded MuJoCo
  scene (16 x 16 px renders, audio on for a third of the inputs), reset and stepped once. Anything that passes
  validation and then fails in the scene, even with an :class:`~bridge.errors.XrfedError`, is a crash. This
  surface is slow (2-5 inputs/s: one MuJoCo model and GL context per input).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import ScenarioError, XrfedError
from .fuzzing import Surface, stateless, tree_get, tree_paths, tree_set
from .fuzzing import index as _index
from .fuzzing import ints as _ints
from .fuzzing import pick as _pick
from .fuzzing import strategies as _st

__all__ = ["SURFACES", "MAX_ERROR_CHARS"]

#: longest error message a rejected scenario may produce (one line: the field path and the message, at most 80 and
#: 90 characters; the value got, 80; what is allowed, 100)
MAX_ERROR_CHARS = 400

_NAN, _INF = float("nan"), float("inf")
_HOSTILE: tuple[Any, ...] = (
    _NAN, _INF, -_INF, -1, -0.8, 0, -0.0, 5e-324, 1e-9, 1e308, -1e308, 10**30, 2**63, -(2**63), 10**400, True, False,
    None, "", "x", "1.5", ".nan", "yes", [], {}, [_NAN], [_INF, 1, 1], [1, 2], [1, 2, 3, 4], [True, 1, 1],
    ["1", "1", "1"], [-0.8, 0.8, 0.8], {"a": 1}, "a" * 300, 96.7, 0.5, 1, 2, 60.0001, 360.0001, -360.0001, 1e6,
    [[1, 2]] * 3, "../../etc/passwd", "<x\">", "a/b", "\x01",
)
_NEAR_MISS_KEYS = ("size", "colour", "origin", "pos", "yaw", "rt60", "lux", "<<", "1", "", "name ", "Size_m")


def _one(draw: Any, options: tuple[Any, ...]) -> Any:
    """One of ``options`` (which need not be hashable)."""
    return options[_index(draw, len(options))]


# ---------------------------------------------------------------------------------------------------------------
# the raw scenarios mutated
#: a two-room scene with one of every optional field, so mutations reach them all
_SMALL: dict[str, Any] = {
    "name": "small", "description": "fuzz base", "step_hz": 10, "audio_hz": 16000, "radio_range_m": 6.0,
    "render": {"width_px": 16, "height_px": 16, "shadows": False, "reflections": False, "segmentation": False,
               "gl": "auto", "cull": True, "process": "off"},
    "rooms": [
        {"name": "a", "type": "office", "origin_m": [0, 0], "size_m": [5, 4, 2.7], "walls": "plaster",
         "floor": "carpet", "ceiling": "plaster", "doors": ["east"], "rt60_s": 0.5, "nominal_lux": 400},
        {"name": "b", "type": "kitchen", "origin_m": [5, 0], "size_m": [4, 4, 2.7], "doors": ["west"]},
    ],
    "objects": [
        {"name": "box", "category": "crate", "room": "a", "pos_m": [3.0, 2.0], "yaw_deg": 30,
         "size_m": [0.8, 0.8, 0.8], "color": [0.5, 0.2, 0.1]},
        {"name": "hum", "category": "machine", "room": "b", "pos_m": [2.0, 2.0, 0.0],
         "sound": {"kind": "hum", "level_db": 70, "freq_hz": 50}},
        {"name": "bell", "category": "cabinet", "room": "b", "pos_m": [3.5, 3.5],
         "sound": {"kind": "alarm", "level_db": 85, "freq_hz": 2500, "on_s": 0.4, "off_s": 1.0}},
    ],
    "lights": [{"name": "la", "room": "a", "pos_m": [2.5, 2.0, 2.6], "intensity": 1.0},
               {"name": "lb", "room": "b", "pos_m": [2.0, 2.0, 2.6]}],
    "lighting_schedule": [
        {"t_s": 0, "intensity": 1.0, "color_temperature_k": 5000},
        {"t_s": 0.1, "intensity": 0.3, "color_temperature_k": 2700, "flicker_hz": 4, "flicker_depth": 0.5,
         "rooms": ["b"]},
        {"t_s": 0.2, "lights_off": True, "rooms": ["a"]},
    ],
    "task_scripts": {
        "walk": {"loop": True, "segments": [
            {"duration_s": 0.2, "activity": "inspecting", "room": "b", "waypoints": [[1.0, 1.0], [3.0, 3.0]],
             "look_at": ["hum", "bell"], "gestures": ["pinch"], "commands": ["stop"], "interact": "hum",
             "tasks": ["gesture_recognition"]},
        ]},
        "wander": {"random": {"rooms": ["a", "b"], "segment_s": [0.2, 0.5], "gesture_prob": 1.0,
                              "command_rate_per_min": 120, "commands": ["yes"], "gestures": ["tap"],
                              "activities": ["walking", "idle"], "tasks": ["intent_prediction"]}},
    },
    "avatars": [
        {"name": "u1", "device": "apple_vision_pro", "start_room": "a", "start_pos_m": [1.0, 1.0],
         "start_yaw_deg": 45, "script": "walk",
         "user": {"gaze_bias_deg": [1.0, -0.5], "voice_pitch_hz": 200, "speech_rate_wpm": 160,
                  "gait_speed_mps": 1.3, "handedness": "left", "height_m": 1.7, "blink_rate_per_min": 15,
                  "hand_scale": 1.0}},
        {"name": "u2", "device": "meta_quest_3", "start_room": "b", "start_pos_m": [2.0, 1.0], "script": "wander"},
    ],
    "modality_events": [{"avatar": "u1", "kind": "mic_muted", "start_s": 0, "end_s": 0.15},
                        {"avatar": "u2", "kind": "camera_occluded", "start_s": 0.05, "end_s": 5}],
}


@functools.cache
def _shipped() -> tuple[dict[str, Any], ...]:
    """The shipped scenarios as plain data (trusted files), plus :data:`_SMALL`."""
    import yaml

    from .scenario import scenarios_dir

    out = [copy.deepcopy(_SMALL)]
    for p in sorted(scenarios_dir().glob("*.yaml")):
        out.append(yaml.safe_load(p.read_text()))
    return tuple(out)


@functools.cache
def _small_bases() -> tuple[dict[str, Any], ...]:
    """Cheap-to-build bases for ``scenario.build``: :data:`_SMALL` and the shipped scenes cut to three avatars."""
    out = []
    for raw in _shipped():
        raw = copy.deepcopy(raw)
        raw["avatars"] = raw["avatars"][:3]
        keep = {a["name"] for a in raw["avatars"]}
        raw["modality_events"] = [e for e in raw.get("modality_events") or [] if e["avatar"] in keep]
        out.append(raw)
    return tuple(out)


Path_ = tuple[Any, ...]
_paths, _get, _set = tree_paths, tree_get, tree_set


def _dotted(path: Path_) -> str:
    """A path as ScenarioError writes it: ``objects[1].size_m[0]``."""
    out = ""
    for k in path:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


def _hostile_value(draw: Any) -> Any:
    k = draw(_ints(0, 5))
    if k < 3:
        return copy.deepcopy(_one(draw, _HOSTILE))
    return draw(_scalars()[k - 3])


@functools.cache
def _scalars() -> tuple[Any, ...]:
    st = _st()
    return (st.floats(), st.integers(), st.text(max_size=6))


@functools.cache
def _extra_keys() -> Any:
    st = _st()
    return st.one_of(_pick(_NEAR_MISS_KEYS), st.text(max_size=5), st.integers(-2, 2))


def _mutate(draw: Any, raw: Any) -> Any:
    """One field-level or structural mutation of a raw scenario (modified in place where possible)."""
    paths = list(_paths(raw))
    path = paths[_index(draw, len(paths))]
    node = _get(raw, path)
    op = draw(_pick(("set", "set", "set", "delete", "extra", "grow", "wrap", "swap", "swap_elements")))
    if op == "set":
        return _set(raw, path, _hostile_value(draw))
    if op == "delete" and path:
        parent = _get(raw, path[:-1])
        del parent[path[-1]]
        return raw
    if op == "extra" and isinstance(node, dict):
        key = draw(_extra_keys())
        node[key] = _hostile_value(draw)
        return raw
    if op == "grow" and isinstance(node, list) and node:
        times = draw(_pick((1, 2, 7, 40, 300, 1200)))
        node.extend(copy.deepcopy(node[_index(draw, len(node))]) for _ in range(times))
        return raw
    if op == "wrap":
        return _set(raw, path, draw(_pick(("list", "dict"))) == "list" and [node] or {"x": node})
    if op == "swap":
        other = _get(raw, paths[_index(draw, len(paths))])
        return _set(raw, path, copy.deepcopy(other))
    if op == "swap_elements" and isinstance(node, list) and len(node) >= 2:
        i, j = _index(draw, len(node)), _index(draw, len(node))
        node[i], node[j] = node[j], node[i]
    return raw


# ---------------------------------------------------------------------------------------------------------------
# YAML text
def _dump(raw: Any, flow: bool) -> str:
    import yaml

    try:
        return yaml.safe_dump(raw, sort_keys=False, default_flow_style=flow, allow_unicode=True, width=120)
    except (yaml.YAMLError, ValueError):  # e.g. an integer beyond Python's digit limit
        return "name: unprintable\n"


def _mutate_text(draw: Any, text: str) -> str | bytes:
    op = draw(_pick(("truncate", "insert", "replace", "bytes", "dup_line", "indent", "non_utf8", "bom")))
    n = len(text)
    at = _index(draw, n + 1)
    if op == "truncate":
        return text[:at]
    if op == "insert":
        return text[:at] + draw(_pick((":", "- ", "&a ", "*a", "{", "[", "]", "\t", "\n", "'", '"', "!!", "<<: ",
                                      "? ", "---\n", "%YAML 1.1\n", "#", "\x00", "\u2028", "\ufeff"))) + text[at:]
    if op == "replace":
        return text[:at] + draw(_st().text(max_size=4)) + text[at + 1:]
    if op == "dup_line":
        lines = text.splitlines(keepends=True) or [""]
        k = _index(draw, len(lines))
        return "".join(lines[: k + 1] + lines[k:])
    if op == "indent":
        lines = text.splitlines(keepends=True) or [""]
        k = _index(draw, len(lines))
        lines[k] = draw(_pick((" ", "  ", "\t", ""))) + lines[k].lstrip()
        return "".join(lines)
    data = text.encode()
    if op == "bytes":
        return data[:at] + draw(_st().binary(min_size=1, max_size=8)) + data[at:]
    if op == "non_utf8":
        return data[:at] + draw(_pick((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xfe\xff", b"\x80\x80"))) + data[at:]
    return b"\xef\xbb\xbf" + data  # a UTF-8 BOM: must still load


def _alias_bomb(draw: Any) -> str:
    levels, fan = draw(_ints(2, 12)), draw(_ints(2, 12))
    kind = draw(_pick(("seq", "merge", "str", "map", "in_scenario")))
    if kind == "merge":
        lines = ["a0: &a0 {k0: 1, k1: 2}"]
        lines += [f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * fan)}], k{i}x: {i}}}" for i in range(1, levels)]
        return "\n".join(lines) + "\n"
    if kind == "str":
        text = "lol" * draw(_ints(1, 3000))
        return f"description: &s {text}\nrooms: [{', '.join(['*s'] * fan * levels)}]\n"
    open_, close = ("{", "}") if kind == "map" else ("[", "]")
    lines = ['a0: &a0 ["lol", "lol"]']
    for i in range(1, levels):
        items = ", ".join(f"k{j}: *a{i - 1}" for j in range(fan)) if kind == "map" else ", ".join(
            [f"*a{i - 1}"] * fan)
        lines.append(f"a{i}: &a{i} {open_}{items}{close}")
    if kind == "in_scenario":
        # a scenario whose objects list is the bomb: the validator must never see it expanded
        return "\n".join(["name: bomb", "x: &x [" + ", ".join(['{"name": "o", "category": "crate"}'] * fan) + "]",
                          *[f"y{i}: &y{i} [" + ", ".join([f"*{'x' if i == 0 else f'y{i - 1}'}"] * fan) + "]"
                            for i in range(levels)], f"objects: *y{levels - 1}"]) + "\n"
    return "\n".join(lines) + "\n"


def _deep(draw: Any) -> str:
    depth = draw(_pick((10, 63, 64, 65, 100, 1000, 5000, 100_000)))
    kind = draw(_pick(("flow_seq", "flow_map", "block_seq", "block_map", "unclosed")))
    if kind == "flow_seq":
        return "rooms: " + "[" * depth + "1" + "]" * depth
    if kind == "flow_map":
        return "rooms: " + "{a: " * depth + "1" + "}" * depth
    if kind == "unclosed":
        return "[" * depth
    depth = min(depth, 2000)
    if kind == "block_seq":
        return "".join("  " * i + "-\n" for i in range(depth)) + "  " * depth + "- 1\n"
    return "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v: 1\n"


_YAML_SPECIALS = (
    "!!python/object/apply:os.system ['true']", "!!python/name:os.system", "!!binary aGVsbG8=", "2001-13-45",
    "2001-02-29", "1:2:3:4:5:6:7:8:9", "0x" + "f" * 100, "9" * 5000, ".inf", "-.inf", ".nan", "0o777", "1_000",
    "!!float nan", "!!int 1.5", "!!set {a, b}", "!!omap [a: 1]", "~", "*undefined", "&a [*a]",
    "? [complex, key]\n: 1", "{[1]: 2}", "a: 1\n---\nb: 2", "%TAG ! tag:x,2000:\n---\n!x 1", "'\\ud800'",
    "\"\\ud800\"", "\"\\x00\"", "!!str", "<<: {x: 1}", "<<: [1, 2]", "<<: *a",
)


def _specials(draw: Any) -> str:
    base = _dump(_one(draw, _shipped()), flow=True)
    special = draw(_pick(_YAML_SPECIALS))
    where = draw(_pick(("top", "value", "replace")))
    if where == "top":
        return special
    if where == "value":
        return base.rstrip("}\n") + f", step_hz: {special}}}\n"
    return base.replace("10", special, 1)


def _oversized(draw: Any) -> bytes:
    from .scenario import MAX_SCENARIO_BYTES

    pad = MAX_SCENARIO_BYTES + draw(_pick((1, 100, 1 << 16)))
    return b"name: big\n# " + b"x" * pad + b"\n"


def _yaml_inputs() -> Any:
    st = _st()

    @st.composite
    def build(draw: Any) -> tuple[str, str | bytes]:
        kind = draw(_pick(("mutated", "mutated", "mutated", "mutated", "text", "bomb", "deep", "specials",
                           "garbage", "garbage_text", "structure", "valid", "oversized")))
        payload: str | bytes
        if kind in ("mutated", "text", "valid", "structure"):
            raw: Any = copy.deepcopy(_one(draw, _shipped()))
            if kind == "structure":
                raw = _structure(draw(_pick(("list", "list_of_two", "scalar", "nested", "empty"))), raw)
            elif kind != "valid":
                for _ in range(draw(_ints(1, 4))):
                    raw = _mutate(draw, raw)
            payload = _dump(raw, flow=draw(_st().booleans()))
            if kind == "text":
                for _ in range(draw(_ints(1, 3))):
                    payload = _mutate_text(draw, payload if isinstance(payload, str) else
                                           payload.decode("utf-8", "replace"))
        elif kind == "bomb":
            payload = _alias_bomb(draw)
        elif kind == "deep":
            payload = _deep(draw)
        elif kind == "specials":
            payload = _specials(draw)
        elif kind == "garbage":
            payload = draw(st.binary(max_size=600))
        elif kind == "garbage_text":
            payload = draw(st.text(max_size=300))
        else:
            payload = _oversized(draw)
        return (draw(_pick(("text", "text", "file"))), payload)

    return build()


def _structure(kind: str, raw: Any) -> Any:
    """A whole scenario moved under a list, a key, or replaced by a scalar or nothing."""
    return {"list": [raw], "list_of_two": [raw, raw], "scalar": 1, "nested": {"scenario": raw},
            "empty": None}[kind]


def _check_message(exc: XrfedError) -> None:
    text = str(exc)
    if "\n" in text or len(text) > MAX_ERROR_CHARS:
        raise AssertionError(f"error is not one short line ({len(text)} chars): {text[:200]!r}") from exc


def _check_finite(value: Any, where: str = "scenario") -> None:
    """Every number an accepted scenario holds is finite (and no boolean stands in for one)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise AssertionError(f"accepted scenario holds {value!r} at {where}")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            if f.name != "source_yaml":
                _check_finite(getattr(value, f.name), f"{where}.{f.name}")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]")


def _yaml_session() -> contextlib.AbstractContextManager[Callable[[Any], None]]:
    @contextlib.contextmanager
    def session() -> Iterator[Callable[[Any], None]]:
        from .scenario import load_scenario, parse_scenario_yaml

        with tempfile.TemporaryDirectory(prefix="xrfed-fuzz-scenario-") as tmp:
            path = Path(tmp) / "fuzz.yaml"

            def feed(example: tuple[str, str | bytes]) -> None:
                mode, payload = example
                try:
                    if mode == "file":
                        path.write_bytes(payload if isinstance(payload, bytes)
                                         else payload.encode("utf-8", "surrogatepass"))
                        sc = load_scenario(path)
                    else:
                        sc = parse_scenario_yaml(payload)
                except XrfedError as exc:
                    _check_message(exc)
                    raise
                _check_finite(sc)

            yield feed

    return session()


# ---------------------------------------------------------------------------------------------------------------
# accepted scenarios built into the scene
_INTERVAL = re.compile(r"[\[(]\s*(-?[0-9.e+-]+|-?inf),\s*(-?[0-9.e+-]+|inf)\s*\]")


def _in_range(draw: Any, lo: float, hi: float, whole: bool) -> float:
    k = draw(_pick((0, 0, 1, 2, 3, 4)))
    if k == 0:
        v = lo if draw(_st().booleans()) else hi
    elif k == 1:  # just inside an open or closed end
        v = lo + (hi - lo) * 1e-6
    else:
        v = lo + (hi - lo) * draw(_ints(0, 1000)) / 1000
    return float(round(v)) if whole else v


def _repair(draw: Any, raw: Any, *, tries: int = 8) -> Any:
    """Parse ``raw``; while it is rejected, move the value the error names into what the error allows."""
    try:
        return _repair_steps(draw, raw, tries)
    except (KeyError, IndexError, TypeError):  # the error named a path this mutated input does not have
        return raw


def _repair_steps(draw: Any, raw: Any, tries: int) -> Any:
    from .scenario import parse_scenario

    for _ in range(tries):
        try:
            parse_scenario(raw, source_yaml="-")  # (a source skips the YAML dump of the accepted scenario)
            return raw
        except ScenarioError as exc:
            lookup = {_dotted(p): p for p in _paths(raw)}
            msg, allowed = str(exc), str(exc.allowed or "")
            path = lookup.get(exc.path)
            if path is None:  # a required field is missing, or a pair check names the pair
                parent, _, key = exc.path.rpartition(".")
                if "is required" in msg and (parent in lookup or not parent):
                    raw = _set(raw, (*lookup.get(parent, ()), key), 1.0)
                    continue
                return raw
            if "multiple of step_hz" in msg and isinstance(raw, dict):
                raw["step_hz"], raw["audio_hz"] = _one(draw, (1, 10, 16, 40, 100, 120)), 48000
                continue
            intervals = _INTERVAL.findall(allowed)
            if "outside room" in msg and isinstance(_get(raw, path), list) and len(intervals) >= 2:
                pos = _get(raw, path)
                for i, (lo, hi) in enumerate(intervals[:2]):
                    if i < len(pos):
                        pos[i] = _in_range(draw, float(lo), float(hi), False)
                continue
            if intervals:
                lo, hi = (float(x) for x in intervals[0])
                raw = _set(raw, path, _in_range(draw, lo, hi, "whole number" in allowed))
            elif m := re.search(r"list of (\d+)", msg):
                raw = _set(raw, path, [1.0] * int(m.group(1)))
            elif "must be a number" in msg:
                raw = _set(raw, path, 1.0)
            elif "true or false" in msg:
                raw = _set(raw, path, draw(_st().booleans()))
            elif "unknown value" in msg and allowed:
                options = tuple(x.strip() for x in allowed.split(","))
                raw = _set(raw, path, _one(draw, options))
            elif "must be a mapping" in msg and path and isinstance(path[-1], int):
                del _get(raw, path[:-1])[path[-1]]
            elif "must be a mapping" in msg:
                raw = _set(raw, path, {})
            elif "must be text" in msg:
                raw = _set(raw, path, "x")
            elif "list of strings" in msg:
                raw = _set(raw, path, [])
            elif "must be a name" in msg or "duplicate name" in msg:
                raw = _set(raw, path, f"n{draw(_ints(0, 10**6))}")
            elif "unknown field" in msg and path:
                del _get(raw, path[:-1])[path[-1]]
            else:
                return raw
    return raw


def _grow(draw: Any, raw: dict[str, Any]) -> None:
    """Append renamed copies to one of the scenario's lists (objects, lights, avatars, keyframes, ...)."""
    key = draw(_pick(("objects", "lights", "avatars", "lighting_schedule", "modality_events", "rooms")))
    items = raw.get(key)
    if not isinstance(items, list) or not items:
        return
    for _ in range(draw(_pick((1, 3, 8, 20)))):
        new = copy.deepcopy(items[_index(draw, len(items))])
        if isinstance(new, dict) and "name" in new:
            new["name"] = f"{new['name']}_{len(items)}"
        if key == "rooms" and isinstance(new, dict):
            new["origin_m"] = [15.0 * len(items), 20.0]
        items.append(new)


_PLACEHOLDERS: tuple[Any, ...] = (1.0, 0.0, [1.0, 1.0, 1.0], [1.0, 1.0], "x", True, {})


def _add_field(draw: Any, raw: dict[str, Any]) -> None:
    """Add a field the node lacks (found through the 'unknown field; allowed: ...' error) with a placeholder."""
    from .scenario import parse_scenario

    paths = [p for p in _paths(raw) if isinstance(_get(raw, p), dict)]
    if not paths:
        return
    path = paths[_index(draw, len(paths))]
    node = _get(raw, path)
    node["zz_probe"] = 1
    try:
        parse_scenario(raw, source_yaml="-")
    except ScenarioError as exc:
        if exc.path == _dotted((*path, "zz_probe")) and exc.allowed:
            missing = [k.strip() for k in str(exc.allowed).split(",") if k.strip() not in node]
            if missing:
                node[_one(draw, tuple(missing))] = copy.deepcopy(_one(draw, _PLACEHOLDERS))
    finally:
        node.pop("zz_probe", None)


def _build_inputs() -> Any:
    st = _st()

    @st.composite
    def build(draw: Any) -> tuple[Any, bool]:
        raw: Any = copy.deepcopy(_one(draw, _small_bases()))
        for _ in range(draw(_ints(1, 5))):
            op = draw(_pick(("number", "number", "number", "add", "grow", "hostile")))
            if op == "number":
                nums = [p for p in _paths(raw) if isinstance(_get(raw, p), (int, float))
                        and not isinstance(_get(raw, p), bool)]
                if nums:
                    path = nums[_index(draw, len(nums))]
                    raw = _set(raw, path, draw(_pick((-1e9, -1.0, 0.0, 1e-9, 1e9, 1e6, 360.5, _NAN))))
            elif op == "add":
                _add_field(draw, raw)
            elif op == "grow" and isinstance(raw, dict):
                _grow(draw, raw)
            else:
                raw = _mutate(draw, raw)
            raw = _repair(draw, raw)
        return raw, draw(_ints(0, 2)) == 0  # audio for a third of the inputs (pyroomacoustics is the slow part)

    return build()


def _build_scene(example: tuple[Any, bool]) -> None:
    """Validate; then an accepted scenario must build, reset and step in the embedded scene without any error."""
    from .embedded.backend import EmbeddedBackend
    from .scenario import parse_scenario

    raw, audio = example
    try:
        sc = parse_scenario(raw)
    except XrfedError as exc:
        _check_message(exc)
        raise
    _check_finite(sc)
    try:
        # gl="auto": the OpenGL backend is chosen once per process (the first scene's wins), so a later scenario
        # asking for another one is refused by design -- not something the scenario under test got wrong
        with EmbeddedBackend(sc, render_size=(16, 16), audio=audio, render_process=False, gl="auto") as env:
            env.reset(seed=0)
            env.step()
    except XrfedError as exc:
        raise AssertionError(f"an accepted scenario failed in the scene: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------------------------------------
SURFACES: list[Surface] = [
    Surface("scenario.yaml", "scenario YAML (shipped scenarios mutated field by field, structure, alias bombs, deep "
                             "nesting, hostile YAML, garbage and oversized files) -> parse_scenario_yaml / "
                             "load_scenario", _yaml_inputs, _yaml_session),
    Surface("scenario.build", "scenarios at the edges of validation, every accepted one built, reset and stepped "
                              "in the embedded MuJoCo scene (16 x 16 px)", _build_inputs, stateless(_build_scene)),
]
