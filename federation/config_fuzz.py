"""Hostile-input surface of experiment configs (``xrfed bench fuzz``; see :mod:`bridge.fuzzing`).

* ``config.yaml``: YAML text, or a file through :func:`~federation.config.load_config`, then -- when the config is
  accepted -- :func:`federation.cli.preflight`, which is what ``xrfed run`` checks before any work. The inputs are
  the shipped configs (``configs/**/*.yaml``) and a base with every optional field set, mutated field by field
  (hostile values and types: truthy strings, booleans for numbers, floats with fractions, NaN, inf, huge and
  negative numbers, long and path-like strings, costly regular expressions), pushed to and just past every
  declared range end (:func:`federation.config.ranges`), with missing and extra keys, wrapped, swapped and grown
  nodes; structural mutations (the config under a list, a scalar); text mutations (truncation, garbage bytes,
  non-UTF-8); alias bombs; deep nesting; hostile YAML (tags, bad dates, huge integers, several documents); files
  over the size limit; garbage.

  A rejection must be one line of at most :data:`MAX_ERROR_CHARS` characters. An accepted config must be
  *runnable*: it survives a YAML round trip unchanged, and the objects a run builds first are constructed -- the
  strategy (DP-wrapped when enabled), the round engine over synthetic clients with the config's device ids,
  profiles, tasks, ranks and round settings, the engine's initial sync, and (:func:`~federation.cli.preflight` has built
  every paradigm's derived config). Anything failing there, even with an :class:`~bridge.errors.XrfedError`, is a crash.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import os
import tempfile
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bridge.errors import XrfedError
from bridge.fuzzing import Surface, tree_get, tree_paths, tree_set
from bridge.fuzzing import index as _index
from bridge.fuzzing import ints as _ints
from bridge.fuzzing import pick as _pick
from bridge.fuzzing import strategies as _st

__all__ = ["SURFACES", "MAX_ERROR_CHARS"]

#: longest error message a rejected config may produce (one line: field path, value got, what is allowed)
MAX_ERROR_CHARS = 400

_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
_NAN, _INF = float("nan"), float("inf")
_HOSTILE: tuple[Any, ...] = (
    "false", "true", "no", "yes", "off", "1", "0", "", "abc", "1e12", "1e7", "96.7", ".nan", True, False, None,
    _NAN, _INF, -_INF, -1, 0, 1, 2, 96.7, 4.0, 1e7, 1e12, 1e308, -1e308, 5e-324, 2**31 - 1, 2**31, 2**63, 10**30,
    -(2**63), 10**400, [], {}, [1], ["a", "a"], [[]], {"a": 1}, "a" * 300, "../../etc/passwd", "a/b", "\x01",
    "nul\x00x", "(a+)+$", ".*.*.*.*.*x", "[", "q_proj", "fovea", "net.0", "ava", "default", "meta_quest_3",
    "object_recognition", "fedavg", "krum", "trimmed_mean", "semi", "local", "ray", "ewc", "replay", "scale",
    "label_flip", "~/nosuch", "/", ".", "x" * 5000,
)
_NEAR_MISS_KEYS = ("round", "Rounds", "seed ", "enable", "<<", "1", "", "lora-rank", "name", "options", "devices")

#: a config with every optional field set, so mutations reach them all (devices are avatars of the default scene)
_FULL: dict[str, Any] = {
    "name": "fuzz-full", "description": "every field set", "scenario": "default", "model_preset": "tiny",
    "tuning": "lora", "lora_rank": 4, "lora_alpha": 8.0, "lora_targets": ["q_proj", "v_proj"],
    "personal_adapters": True, "personal_heads": True, "share_all_heads": False, "episode_steps": 240, "phases": 2,
    "eval": {"test_fraction": 0.25, "guard_s": 4.0, "local_baseline": False},
    "foundation": {"checkpoint": None, "scenarios": ["default"], "steps": 10, "record_steps": 20, "batch_size": 4,
                   "learning_rate": 0.002, "seed": 1, "guard_s": 1.0},
    "devices": [
        {"id": "ava", "profile": "apple_vision_pro", "tasks": ["object_recognition", "speech_command"], "rank": 8,
         "modality_dropout": 0.1},
        {"id": "ben", "profile": "meta_quest_3", "tasks": ["object_recognition"], "rank": None,
         "modality_dropout": 0.0, "avatar": "ben"},
        {"id": "chloe", "profile": "hololens_2", "tasks": ["gesture_recognition"], "rank": 2},
    ],
    "aggregator": {"name": "trimmed_mean", "options": {"trim": 1}, "modality_aware": True, "task_aware": True},
    "rounds": {"paradigm": "semi", "rounds": 3, "local_steps": 2, "participation": 0.9, "availability": 0.8,
               "min_battery_frac": 0.05, "deadline_s": 5.0, "radio_range_m": 6.0, "max_cluster_size": 2,
               "clusters": [["ava", "ben"]], "cluster_aggregation": "tree", "d2d_rounds": 2, "gossip_steps": 3,
               "executor": "local"},
    "dp": {"enabled": True, "clip_norm": 1.0, "noise_multiplier": 0.5, "delta": 1e-5, "mode": "local"},
    "continual": {"method": "ewc", "ewc_strength": 10.0, "replay_capacity": 8},
    "attack": {"kind": "sign_flip", "fraction": 0.0, "scale": 10.0, "devices": ["chloe"]},
    "seed": 3, "seeds": [0, 1],
}


def _one(draw: Any, options: tuple[Any, ...]) -> Any:
    """One of ``options`` (which need not be hashable)."""
    return options[_index(draw, len(options))]


@functools.cache
def _bases() -> tuple[dict[str, Any], ...]:
    """The shipped configs as plain data (trusted files), plus :data:`_FULL`."""
    import yaml

    out = [copy.deepcopy(_FULL)]
    for p in sorted(_CONFIGS.glob("**/*.yaml")):
        out.append(yaml.safe_load(p.read_text()))
    return tuple(out)


# -- field-level mutations ----------------------------------------------------------------------------------------
Path_ = tuple[Any, ...]
_paths, _get, _set = tree_paths, tree_get, tree_set


@functools.cache
def _schema() -> tuple[tuple[Path_, Any, Any], ...]:
    """Every numeric field of the schema: (path with ``"*"`` for a device index, type, Limit)."""
    from .config import DeviceConfig, ExperimentConfig, Limit

    out: list[tuple[Path_, Any, Any]] = []

    def walk(cls: type, prefix: Path_) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if typing.get_origin(tp) in (typing.Union, types.UnionType):
                tp = next(a for a in typing.get_args(tp) if a is not type(None))
            limit = f.metadata.get("limit", Limit())
            if isinstance(tp, type) and dataclasses.is_dataclass(tp):
                walk(tp, (*prefix, f.name))
            elif tp in (int, float):
                out.append(((*prefix, f.name), tp, limit))
            elif typing.get_origin(tp) is list and f.name == "seeds":
                out.append(((*prefix, f.name, 0), int, limit.item))

    walk(ExperimentConfig, ())
    walk(DeviceConfig, ("devices", "*"))
    return tuple(out)


def _edge_values(tp: Any, limit: Any) -> tuple[Any, ...]:
    """The range's ends, just inside and just outside them, and a value in between."""
    out: list[Any] = []
    for end, inward in ((limit.lo, 1), (limit.hi, -1)):
        if end is None:
            continue
        if tp is int:
            out += [int(end), int(end) + inward, int(end) - inward]
        else:
            step = max(abs(end) * 1e-9, 1e-12)
            out += [float(end), end + inward * step, end - inward * step]
    if limit.lo is not None and limit.hi is not None:
        mid = (limit.lo + limit.hi) / 2
        out.append(int(mid) if tp is int else mid)
    return tuple(out) or (0,)


def _edge(draw: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """A numeric field moved to (or just past) one end of its declared range."""
    path, tp, limit = _one(draw, _schema())
    if path[0] == "devices":
        devs = raw.get("devices")
        if not isinstance(devs, list) or not devs or not isinstance(devs[0], dict):
            return raw
        path = ("devices", _index(draw, len(devs)), *path[2:])
    node = raw
    for k in path[:-1]:
        if isinstance(node, dict) and not isinstance(node.get(k), (dict, list)):
            node[k] = [0] if k == "seeds" else {}
        node = node[k]
    if isinstance(node, list) and not node:
        node.append(0)
    node[path[-1]] = _one(draw, _edge_values(tp, limit))
    return raw


def _hostile_value(draw: Any) -> Any:
    k = draw(_ints(0, 5))
    if k < 4:
        return copy.deepcopy(_one(draw, _HOSTILE))
    return draw(_one(draw, (_st().floats(), _st().integers(), _st().text(max_size=6))))


def _mutate(draw: Any, raw: Any) -> Any:
    """One field-level or structural mutation (in place where possible)."""
    op = draw(_pick(("set", "set", "set", "edge", "edge", "delete", "extra", "grow", "wrap", "swap")))
    if op == "edge" and isinstance(raw, dict):
        return _edge(draw, raw)
    paths = list(_paths(raw))
    path = paths[_index(draw, len(paths))]
    node = _get(raw, path)
    if op == "set":
        return _set(raw, path, _hostile_value(draw))
    if op == "delete" and path:
        del _get(raw, path[:-1])[path[-1]]
        return raw
    if op == "extra" and isinstance(node, dict):
        key = draw(_st().one_of(_pick(_NEAR_MISS_KEYS), _st().text(max_size=5), _st().integers(-2, 2)))
        node[key] = _hostile_value(draw)
        return raw
    if op == "grow" and isinstance(node, list) and node:
        times = draw(_pick((1, 2, 7, 40, 300)))
        node.extend(copy.deepcopy(node[_index(draw, len(node))]) for _ in range(times))
        return raw
    if op == "wrap":
        return _set(raw, path, [node] if draw(_st().booleans()) else {"x": node})
    if op == "swap":
        return _set(raw, path, copy.deepcopy(_get(raw, paths[_index(draw, len(paths))])))
    return raw


# -- whole-text inputs ----------------------------------------------------------------------------------------------
def _dump(raw: Any, flow: bool) -> str:
    import yaml

    try:
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        return yaml.dump(raw, Dumper=dumper, sort_keys=False, default_flow_style=flow, allow_unicode=True, width=120)
    except (yaml.YAMLError, ValueError):  # an integer beyond Python's digit limit
        return "name: unprintable\n"


def _mutate_text(draw: Any, text: str) -> str | bytes:
    op = draw(_pick(("truncate", "insert", "replace", "bytes", "non_utf8", "bom")))
    at = _index(draw, len(text) + 1)
    if op == "truncate":
        return text[:at]
    if op == "insert":
        return text[:at] + draw(_pick((":", "- ", "&a ", "*a", "{", "[", "]", "\t", "\n", "'", '"', "!!", "<<: ",
                                      "? ", "---\n", "#", "\x00", "\u2028", "\ufeff"))) + text[at:]
    if op == "replace":
        return text[:at] + draw(_st().text(max_size=4)) + text[at + 1:]
    data = text.encode()
    if op == "bytes":
        return data[:at] + draw(_st().binary(min_size=1, max_size=8)) + data[at:]
    if op == "non_utf8":
        return data[:at] + draw(_pick((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"))) + data[at:]
    return b"\xef\xbb\xbf" + data  # a UTF-8 BOM: must still load


def _alias_bomb(draw: Any) -> str:
    levels, fan = draw(_ints(2, 12)), draw(_ints(2, 12))
    kind = draw(_pick(("seq", "merge", "str", "in_config")))
    if kind == "merge":
        lines = ["a0: &a0 {k0: 1, k1: 2}"]
        lines += [f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * fan)}], k{i}x: {i}}}" for i in range(1, levels)]
        return "\n".join(lines) + "\n"
    if kind == "str":
        return f"description: &s {'lol' * draw(_ints(1, 3000))}\nlora_targets: [{', '.join(['*s'] * fan * levels)}]\n"
    if kind == "in_config":  # a config whose devices list is the bomb: the validator must never see it expanded
        dev = '{"id": "ava", "profile": "meta_quest_3"}'
        return "\n".join(["name: bomb", f"x: &x [{', '.join([dev] * fan)}]",
                          *[f"y{i}: &y{i} [" + ", ".join([f"*{'x' if i == 0 else f'y{i - 1}'}"] * fan) + "]"
                            for i in range(levels)], f"devices: *y{levels - 1}"]) + "\n"
    lines = ['a0: &a0 ["lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fan)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _deep(draw: Any) -> str:
    depth = draw(_pick((10, 63, 64, 65, 100, 1000, 100_000)))
    kind = draw(_pick(("flow_seq", "flow_map", "block_map", "unclosed")))
    if kind == "flow_seq":
        return "devices: " + "[" * depth + "1" + "]" * depth
    if kind == "flow_map":
        return "rounds: " + "{a: " * depth + "1" + "}" * depth
    if kind == "unclosed":
        return "[" * depth
    depth = min(depth, 2000)
    return "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v: 1\n"


_YAML_SPECIALS = (
    "!!python/object/apply:os.system ['true']", "!!python/name:os.system", "!!binary aGVsbG8=", "2001-13-45",
    "1:2:3:4:5:6:7:8:9", "0x" + "f" * 100, "9" * 5000, ".inf", "-.inf", ".nan", "0o777", "1_000", "!!float nan",
    "!!int 1.5", "!!set {a, b}", "~", "*undefined", "&a [*a]", "? [complex, key]\n: 1", "{[1]: 2}",
    "a: 1\n---\nb: 2", "'\\ud800'", "\"\\x00\"", "<<: {x: 1}", "<<: [1, 2]", "yes", "off", "1e12", "96.7",
)


def _specials(draw: Any) -> str:
    base = _dump(_one(draw, _bases()), flow=True)
    special = draw(_pick(_YAML_SPECIALS))
    where = draw(_pick(("top", "value", "replace")))
    if where == "top":
        return special
    if where == "value":
        return base.rstrip("}\n") + f", seed: {special}}}\n"
    return base.replace("true", special, 1) if draw(_st().booleans()) else base.replace("4", special, 1)


def _oversized(draw: Any) -> bytes:
    from .config import MAX_CONFIG_BYTES

    return b"name: big\n# " + b"x" * (MAX_CONFIG_BYTES + draw(_pick((1, 100, 1 << 16)))) + b"\n"


def _inputs() -> Any:
    st = _st()

    @st.composite
    def build(draw: Any) -> tuple[str, str | bytes]:
        kind = draw(_pick(("mutated", "mutated", "mutated", "mutated", "mutated", "edge", "edge", "text", "bomb",
                           "deep", "specials", "garbage", "garbage_text", "structure", "valid", "oversized")))
        payload: str | bytes
        if kind in ("mutated", "edge", "text", "valid", "structure"):
            raw: Any = copy.deepcopy(_one(draw, _bases()))
            if kind == "structure":
                raw = {"list": [raw], "scalar": 1, "nested": {"experiment": raw}, "empty": None,
                       "string": "name: x"}[draw(_pick(("list", "scalar", "nested", "empty", "string")))]
            elif kind == "edge":
                raw = _edge(draw, raw)
            elif kind != "valid":
                for _ in range(draw(_ints(1, 3))):
                    raw = _mutate(draw, raw)
            payload = _dump(raw, flow=draw(st.booleans()))
            if kind == "text":
                payload = _mutate_text(draw, payload)
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


# -- the feed -------------------------------------------------------------------------------------------------------
def _check_message(exc: XrfedError) -> None:
    text = str(exc)
    if "\n" in text or len(text) > MAX_ERROR_CHARS:
        raise AssertionError(f"error is not one short line ({len(text)} chars): {text[:200]!r}") from exc


def _build_objects(cfg: Any) -> None:
    """What a run builds first, from an accepted config: any failure here is a crash."""
    from bridge.devices import get_device

    from .client import LocalExecutor
    from .config import ExperimentConfig
    from .rounds import RoundEngine
    from .synthetic import SyntheticClient

    again = ExperimentConfig.from_yaml(cfg.to_yaml())
    if again != cfg:
        raise AssertionError("the config does not survive a YAML round trip")
    clients = []
    for i, d in enumerate(cfg.devices):
        mods = tuple(get_device(d.profile).modalities)[:2]
        clients.append(SyntheticClient(d.id, d.profile, modalities=mods, tasks=tuple(d.tasks) or ("object_recognition",),
                                       rank=d.rank or cfg.lora_rank, alpha=cfg.lora_alpha, samples=8, seed=i))
    engine = RoundEngine(LocalExecutor(clients), cfg.aggregator.make(), cfg.rounds, seed=cfg.seed, dp=cfg.dp,
                         attack=cfg.attack, attackers=cfg.attackers())
    engine.initial_sync()


@contextlib.contextmanager
def _session() -> Iterator[Any]:
    from .cli import preflight
    from .config import ExperimentConfig, load_config

    with tempfile.TemporaryDirectory(prefix="xrfed-config-fuzz-") as tmp:
        path = Path(tmp) / "experiment.yaml"

        def feed(example: tuple[str, str | bytes]) -> None:
            mode, payload = example
            try:
                if mode == "text" and isinstance(payload, str):
                    cfg = ExperimentConfig.from_yaml(payload)
                else:
                    path.write_bytes(payload.encode("utf-8", "surrogatepass") if isinstance(payload, str)
                                     else payload)
                    cfg = load_config(path)
                preflight(cfg)
            except XrfedError as exc:
                _check_message(exc)
                raise
            try:
                _build_objects(cfg)
            except XrfedError as exc:
                raise AssertionError(f"an accepted config failed to build: {exc}") from exc
            finally:
                with contextlib.suppress(OSError):
                    os.remove(path)

        yield feed


SURFACES = [
    Surface("config.yaml", "experiment configs (shipped ones mutated field by field, range ends, alias bombs, deep "
            "nesting, hostile YAML, garbage) -> load_config + preflight; accepted ones build their round engine",
            _inputs, _session),
]
