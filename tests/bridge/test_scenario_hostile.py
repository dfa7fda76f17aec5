"""Hostile scenario files (issue 14): bounded YAML, every number finite and in range, one-line errors, fuzzing."""

import copy
import math
import os
import threading
import time
import tracemalloc

import pytest
import yaml

from bridge.cli import main
from bridge.errors import ScenarioError, XrfedError
from bridge.fuzzing import assert_no_crash
from bridge.scenario import load_scenario, parse_scenario, parse_scenario_yaml, scenario_names
from bridge.scenario_fuzz import _SMALL, MAX_ERROR_CHARS, SURFACES
from bridge.yamlsafe import YamlError, load_yaml

NAN, INF = float("nan"), float("inf")


def _bomb(levels: int, fan: int = 10) -> str:
    """A "billion laughs": each level lists the previous one ``fan`` times (fan**levels leaves)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fan)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _one_short_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and len(text) <= MAX_ERROR_CHARS, f"{len(text)} chars: {text[:300]!r}"
    return text


def _rejected(raw: object) -> ScenarioError:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(raw)
    _one_short_line(exc.value)
    return exc.value


# ---------------------------------------------------------------------------------------------------------------
# defect 1: alias bombs, oversized files and deep nesting are refused before any Python object is built
def test_alias_bomb_in_a_scenario_is_refused_before_expansion():
    """Defect: a billion-laughs scenario hung `xrfed scenarios` (the validator walked, then printed, the expanded
    value: 650+ MB). Here ``rooms`` names 10**6 leaves; it must be refused in milliseconds with little memory."""
    text = _bomb(5) + "rooms: [*a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4]\navatars: []\n"
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ScenarioError, match="alias expansion") as exc:
            parse_scenario_yaml(text)
        seconds = time.perf_counter() - t0
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _one_short_line(exc.value)
    assert seconds < 1.0 and peak_bytes < 8 * 2**20, (seconds, peak_bytes)


def test_billion_laughs_and_merge_key_bombs_are_refused():
    """Nine levels of nine (387 M nodes) and the merge-key variant (each level merges the previous one 12 times)."""
    with pytest.raises(YamlError, match=r"too many (nodes|aliases)"):
        load_yaml(_bomb(9, fan=9), what="bomb")
    merge = "a0: &a0 {k: 1}\n" + "".join(f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * 12)}], k{i}: 1}}\n"
                                         for i in range(1, 8))
    with pytest.raises(YamlError, match="too many"):
        load_yaml(merge, what="merge bomb")
    with pytest.raises(YamlError, match="recursive alias"):
        load_yaml("a: &a [1, *a]", what="recursive")


@pytest.mark.parametrize("text", [
    "rooms: " + "[" * 5000 + "]" * 5000,
    "rooms: " + "{a: " * 3000 + "1" + "}" * 3000,
    "- " * 1500 + "1\n",
])
def test_deep_nesting_is_refused_without_recursion_error(text):
    """Defect: ``[[[[...]]]]`` a few thousand deep raised RecursionError (a traceback) from yaml's composer."""
    with pytest.raises(ScenarioError, match="nested too deeply|nesting depth") as exc:
        parse_scenario_yaml(text)
    _one_short_line(exc.value)


def test_oversized_file_is_refused_before_it_is_read(tmp_path):
    """Defect: any file size was read into memory and parsed; the limit is 1 MiB, checked before reading."""
    p = tmp_path / "big.yaml"
    p.write_bytes(b"name: big\n# " + b"x" * (2 << 20) + b"\n")
    with pytest.raises(ScenarioError, match="too large") as exc:
        load_scenario(p)
    _one_short_line(exc.value)


@pytest.mark.parametrize("data, needle", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    (b"name: caf\xe9\nrooms: []\n", "not UTF-8"),
])
def test_binary_or_non_utf8_file_is_a_one_line_error(tmp_path, capsys, data, needle):
    """Defect: `xrfed scenarios FILE` on a binary or Latin-1 file died with a UnicodeDecodeError traceback."""
    p = tmp_path / "bad.yaml"
    p.write_bytes(data)
    with pytest.raises(ScenarioError, match=needle):
        load_scenario(p)
    assert main(["scenarios", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_cli_scenarios_on_an_oversized_file_exits_2_with_one_line(tmp_path, capsys):
    p = tmp_path / "huge.yaml"
    p.write_bytes(b"# " + b"x" * (3 << 20))
    assert main(["scenarios", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert "too large" in err and "\n" not in err


def test_fifo_and_directory_are_refused_without_blocking(tmp_path):
    """Defect: a FIFO named as a scenario blocked the loader forever. (A helper thread writes EOF into the FIFO
    whenever someone is waiting to read it, so a loader that opens it fails this test instead of hanging.)"""
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    stop = threading.Event()

    def unblock_readers() -> None:
        while not stop.wait(0.1):
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while nobody reads
            except OSError:
                continue
            os.close(fd)

    helper = threading.Thread(target=unblock_readers, daemon=True)
    helper.start()
    try:
        with pytest.raises(ScenarioError, match="not a regular file"):
            load_scenario(fifo)
    finally:
        stop.set()
        helper.join()
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ScenarioError, match="directory"):
        load_scenario(tmp_path / "dir.yaml")


def test_hostile_yaml_constructs_are_yaml_errors_not_tracebacks():
    """Scalars the constructors choke on (a 13th month, a 5000-digit integer) and Python tags are refused."""
    for text in ("a: 2001-13-45", "a: " + "9" * 5000, "a: !!python/object/apply:os.system ['true']", "a: 1\na: 2",
                 "a: 1\n---\nb: 2", "{[1]: 2}"):
        with pytest.raises(YamlError) as exc:
            load_yaml(text, what="t")
        _one_short_line(exc.value)


def test_yaml_limits_are_parameters():
    text = "a: &a [1, 2]\nb: [*a, *a, *a]\n"
    assert load_yaml(text, what="t") == {"a": [1, 2], "b": [[1, 2]] * 3}
    with pytest.raises(YamlError, match="too many aliases"):
        load_yaml(text, what="t", max_aliases=2)
    with pytest.raises(YamlError, match="too many nodes"):
        load_yaml(text, what="t", max_nodes=10)
    with pytest.raises(YamlError, match="nested too deeply"):
        load_yaml("[[[1]]]", what="t", max_depth=2)
    with pytest.raises(YamlError, match="too large"):
        load_yaml("a: 1234", what="t", max_bytes=4)
    assert load_yaml("[[1]]", what="t", max_depth=2) == [[1]]
    assert load_yaml("a: &m {x: 1}\nb: {<<: *m, y: 2}\n", what="t") == {"a": {"x": 1}, "b": {"x": 1, "y": 2}}
    assert load_yaml("", what="t") is None


# ---------------------------------------------------------------------------------------------------------------
# defect 2: every number is finite and in its physical range at load time
@pytest.mark.parametrize("mutate, path, got", [
    (lambda r: r["objects"][1].__setitem__("size_m", [-0.8, 0.8, 0.8]), "objects[1].size_m[0]", "-0.8"),
    (lambda r: r["rooms"][0].__setitem__("origin_m", [NAN, 0]), "rooms[0].origin_m[0]", "nan"),
    (lambda r: r["objects"][0].__setitem__("color", [0.2, NAN, 0.2]), "objects[0].color[1]", "nan"),
    (lambda r: r["avatars"][0].__setitem__("start_yaw_deg", INF), "avatars[0].start_yaw_deg", "inf"),
    (lambda r: r["avatars"][0].__setitem__("user", {"gaze_bias_deg": [NAN, 0.0]}),
     "avatars[0].user.gaze_bias_deg[0]", "nan"),
    (lambda r: r["task_scripts"]["wander"]["random"].__setitem__("segment_s", [-3, 5]),
     "task_scripts.wander.random.segment_s[0]", "-3"),
    (lambda r: r["objects"][1].__setitem__("size_m", [True, 1, 1]), "objects[1].size_m[0]", "True"),
    (lambda r: r["objects"][1].__setitem__("size_m", ["1", 1, 1]), "objects[1].size_m[0]", "'1'"),
    (lambda r: r["render"].__setitem__("width_px", 96.7), "render.width_px", "96.7"),
    (lambda r: r["objects"][0].__setitem__("color", [1.5, 0, 0]), "objects[0].color[0]", "1.5"),
    (lambda r: r["objects"][0].__setitem__("size_m", [10**5000, 1, 1]), "objects[0].size_m[0]", "<an integer of"),
    (lambda r: r["task_scripts"]["walk"]["segments"][0]["waypoints"].__setitem__(0, [True, 1.0]),
     "task_scripts.walk.segments[0].waypoints[0][0]", "True"),
])
def test_numbers_that_used_to_crash_later_are_refused_at_load(mutate, path, got):
    """Defect: these passed validation and failed later (a MuJoCo traceback for the negative size, a math domain
    error for the infinite yaw) or were accepted silently (NaN colour, NaN gaze bias, booleans as numbers). The
    error names the field path, the value got and the allowed range."""
    raw = copy.deepcopy(_SMALL)
    mutate(raw)
    exc = _rejected(raw)
    assert exc.path == path
    assert f"(got {got}" in str(exc) and "allowed: " in str(exc)


def _numeric_leaves(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _numeric_leaves(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _numeric_leaves(v, (*prefix, i))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield prefix


def _dotted(path):
    out = ""
    for k in path:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else k)
    return out


_LEAVES = list(_numeric_leaves(_SMALL))


@pytest.mark.parametrize("bad", [NAN, INF, -INF, True, "1", 1e300, -1e300])
def test_every_numeric_field_refuses_non_finite_boolean_string_and_absurd_values(bad):
    """Every number of a scenario with every optional field set (``scenario_fuzz._SMALL``) is checked: NaN, inf,
    booleans, strings and +-1e300 are refused naming that very field."""
    assert len(_LEAVES) > 60
    for path in _LEAVES:
        raw = copy.deepcopy(_SMALL)
        node = raw
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = bad
        exc = _rejected(raw)
        assert exc.path == _dotted(path), (path, str(exc))


def test_values_the_scene_cannot_honour_are_refused_at_load():
    """Defect: accepted at load, failed at reset: an alarm at the Nyquist frequency, an RT60 shorter than the room
    allows, a random script with nothing to choose from, a scenario name that breaks the MJCF, a 9th light."""
    cases = [
        (lambda r: r["objects"][2]["sound"].__setitem__("freq_hz", 8000), "objects[2].sound.freq_hz"),
        (lambda r: r["objects"][1]["sound"].__setitem__("freq_hz", 5000), "objects[1].sound.freq_hz"),
        (lambda r: r["rooms"][0].update(size_m=[60, 60, 20], rt60_s=0.3), "rooms[0].rt60_s"),
        (lambda r: r["rooms"][0].update(size_m=[60, 60, 20], rt60_s=None), "rooms[0].rt60_s"),
        (lambda r: r["task_scripts"]["wander"]["random"].__setitem__("activities", []),
         "task_scripts.wander.random.activities"),
        (lambda r: r.__setitem__("name", 'x"/><bad'), "name"),
        (lambda r: r["lights"].extend({"name": f"x{i}", "room": "a", "pos_m": [1, 1, 2]} for i in range(7)),
         "lights"),
        (lambda r: r["objects"][0].__setitem__("pos_m", [1.0, 1.0, 3.0]), "objects[0].pos_m[2]"),
        (lambda r: r.__setitem__("step_hz", 7), "audio_hz"),
    ]
    for mutate, path in cases:
        raw = copy.deepcopy(_SMALL)
        mutate(raw)
        assert _rejected(raw).path == path


def test_edges_of_the_allowed_ranges_build_in_the_scene():
    """The other side of the ranges: a scenario at their edges loads, builds, resets and steps."""
    from bridge.embedded.backend import EmbeddedBackend

    raw = copy.deepcopy(_SMALL)
    raw["objects"][0].update(size_m=[0.01, 0.01, 0.01], color=[0, 0, 1], yaw_deg=-360, pos_m=[0, 0, 2.7])
    raw["objects"][2]["sound"]["freq_hz"] = 0.45 * 16000
    raw["objects"][1]["sound"]["freq_hz"] = 16000 / 4
    raw["rooms"][1].update(size_m=[60, 60, 3], origin_m=[5, -1000], rt60_s=5)
    raw["avatars"][0].update(start_yaw_deg=360, user={"gaze_bias_deg": [10, -10], "height_m": 2.2})
    sc = parse_scenario(raw)
    with EmbeddedBackend(sc, render_size=(16, 16), audio=True, render_process=False) as env:
        env.reset(seed=0)
        frames = env.step()
    assert len(frames) == 2


def test_random_walk_to_an_unreachable_room_stays_put():
    """Found by ``scenario.build``: rooms without a connecting door are valid (the planner means to "stay in the
    room"), but ``_random_segment`` then zips ``[pos] + path[:-1]`` with an empty path and raises ValueError."""
    from bridge.embedded.backend import EmbeddedBackend

    raw = copy.deepcopy(_SMALL)
    raw["rooms"][0]["doors"] = raw["rooms"][1]["doors"] = []
    raw["task_scripts"]["wander"]["random"].update(rooms=["a"], activities=["walking"])
    with EmbeddedBackend(parse_scenario(raw), render_size=(16, 16), audio=False, render_process=False) as env:
        env.reset(seed=0)
        for _ in range(3):
            env.step()


def test_rt60_default_shortcut_stays_in_step_with_the_acoustics_model():
    """scenario.py skips importing the acoustics model for rooms where every room-type default RT60 fits."""
    from bridge.embedded.acoustics import DEFAULT_RT60_S
    from bridge.scenario import _SHORTEST_DEFAULT_RT60_S

    assert min(DEFAULT_RT60_S.values()) >= _SHORTEST_DEFAULT_RT60_S


# ---------------------------------------------------------------------------------------------------------------
# defect 3: errors stay one short line
def test_scenario_nested_under_a_list_is_a_short_error():
    """Defect: a whole scenario under a top-level list printed a 4 000-character error dumping the file."""
    text = yaml.safe_dump([yaml.safe_load(load_scenario("default").source_yaml)])
    with pytest.raises(ScenarioError) as exc:
        parse_scenario_yaml(text)
    msg = _one_short_line(exc.value)
    assert "must be a mapping" in msg and "list" in msg and len(msg) < 260


def test_long_values_names_and_keys_are_cut_in_errors():
    raw = copy.deepcopy(_SMALL)
    raw["rooms"] = {"k" * 5000: list(range(5000))}
    _rejected(raw)
    raw = copy.deepcopy(_SMALL)
    raw["x" * 5000] = 1
    _rejected(raw)
    raw = copy.deepcopy(_SMALL)
    raw["task_scripts"]["y" * 300] = raw["task_scripts"].pop("walk")
    _rejected(raw)
    for bad in ("n" * 10_000, "a\x00b"):
        with pytest.raises(ScenarioError) as exc:
            load_scenario(bad)
        _one_short_line(exc.value)


# ---------------------------------------------------------------------------------------------------------------
# good input still works
def test_shipped_scenarios_and_the_fuzz_base_load():
    for name in scenario_names():
        assert load_scenario(name).name == name
    sc = parse_scenario(copy.deepcopy(_SMALL))
    assert sc.objects[0].size_m == (0.8, 0.8, 0.8) and sc.avatars[0].user.gaze_bias_deg == (1.0, -0.5)
    assert all(math.isfinite(x) for o in sc.objects for x in o.pos_m)


def test_bom_and_anchors_within_budget_load(tmp_path):
    text = yaml.safe_dump(copy.deepcopy(_SMALL), sort_keys=False)
    p = tmp_path / "bom.yaml"
    p.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_scenario(p).name == "small"
    anchored = text.replace("user:\n", "user: &traits\n", 1) + ""
    raw = yaml.safe_load(anchored)
    assert parse_scenario_yaml(anchored).avatars[0].user == parse_scenario(raw).avatars[0].user


def test_file_stem_that_is_not_a_name_falls_back(tmp_path):
    raw = copy.deepcopy(_SMALL)
    del raw["name"]
    p = tmp_path / 'we"ird name.yaml'
    p.write_text(yaml.safe_dump(raw))
    assert load_scenario(p).name == "scenario"


# ---------------------------------------------------------------------------------------------------------------
# fuzzing
def test_fuzz_scenario_yaml_never_crashes():
    result = assert_no_crash(next(s for s in SURFACES if s.name == "scenario.yaml"), examples=200)
    assert result.accepted > 0 and result.rejected > 0


def test_fuzz_scenario_build_never_crashes():
    """Accepted scenarios at the edges of validation build, reset and step in the embedded scene (slow surface)."""
    result = assert_no_crash(next(s for s in SURFACES if s.name == "scenario.build"), examples=30)
    assert result.accepted > 0


def test_surfaces_are_named_and_errors_are_xrfed_errors():
    assert {s.name for s in SURFACES} == {"scenario.yaml", "scenario.build"}
    assert issubclass(YamlError, XrfedError)
