"""Hostile experiment configs and CLI flags (issue 14): strict types, declared ranges, one-line errors, alias bombs,
flags range-checked by the parser, configs checked before any work, and the ``config.yaml`` fuzz surface."""

import copy
import dataclasses
import re
import time
import tracemalloc
import typing
from pathlib import Path

import pytest
import yaml

from agents.config import ModelConfig, make_config
from agents.errors import ConfigError as ModelConfigError
from bridge.cli import main
from federation.config import MAX_CONFIG_BYTES, ExperimentConfig, Limit, load_config, ranges
from federation.config_fuzz import _FULL, _schema
from federation.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
#: a one-line error is at most this long (field path, value got, what is allowed)
MAX_ERROR_CHARS = 400


def minimal(**kw):
    raw = {"name": "x", "devices": [{"id": "a", "profile": "meta_quest_3", "tasks": ["object_recognition"]}]}
    raw.update(kw)
    return raw


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text and len(text) <= MAX_ERROR_CHARS, text[:500]
    return text


def _with(raw, path, value):
    raw = copy.deepcopy(raw)
    node = raw
    for k in path[:-1]:
        node = node.setdefault(k, {}) if isinstance(node, dict) else node[k]
    node[path[-1]] = value
    return raw


def _dotted(path) -> str:
    out = ""
    for k in path:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


def _concrete(path):
    """A schema path with the device index ``"*"`` replaced by 0."""
    return tuple(0 if k == "*" else k for k in path)


# -- defect 1: the issue's values ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, path, allowed", [
    ("dp: {enabled: 'false'}", "dp.enabled", "true or false"),
    ("dp: {enabled: 1}", "dp.enabled", "true or false"),
    ("rounds: {rounds: true}", "rounds.rounds", r"in \[1, 10000\]"),
    ("personal_adapters: \"no\"", "personal_adapters", "true or false"),
    ("episode_steps: 1e12", "episode_steps", r"in \[1, 100000\]"),  # YAML 1.1 reads 1e12 as a string
    ("episode_steps: 1000000000000", "episode_steps", r"in \[1, 100000\]"),
    ("lora_rank: 1e7", "lora_rank", r"in \[1, 256\]"),
    ("lora_rank: 10000000", "lora_rank", r"in \[1, 256\]"),
    ("lora_rank: 4.0", "lora_rank", r"in \[1, 256\]"),
    ("seed: abc", "seed", r"in \[0, 2147483647\]"),
    ("seed: 4294967296", "seed", r"in \[0, 2147483647\]"),
    ("devices: [{id: a, profile: meta_quest_3, rank: 96.7}]", r"devices\[0\].rank", r"in \[1, 256\]"),
])
def test_issue_values_are_refused_naming_path_value_and_range(text, path, allowed):
    """Issue 14: ``dp.enabled: 'false'`` turned DP on; ``episode_steps: 1e12``, ``lora_rank: 1e7``, huge seeds were
    accepted or refused without the allowed range. Now each is one line: the field path, the value, the range."""
    base = "name: x\ndevices: [{id: a, profile: meta_quest_3}]\n"
    if text.startswith("devices"):
        base = "name: x\n"
    with pytest.raises(ConfigError) as exc:
        ExperimentConfig.from_yaml(base + text + "\n")
    msg = one_line(exc)
    assert re.search(f"config field '{path}'", msg) and re.search(allowed, msg) and "(got " in msg, msg


def test_model_config_refuses_fractional_sizes_bool_ints_and_garbage_counts():
    """Issue 14 (``width_px: 96.7``): a model size with a fraction, a boolean as an integer, a class count that is not
    a number (``int('abc')`` was a ValueError traceback), an absurd layer count, a newer config version."""
    for kw, needle in [(dict(image_size_px=96.7), r"image_size_px.*\[8, 1024\].*96\.7"),
                       (dict(d_model=True), r"d_model.*\[8, 4096\]"),
                       (dict(n_layers=10**6), r"n_layers.*\[1, 64\]"),
                       (dict(class_counts=("abc",) * 7), r"class_counts.*'abc'"),
                       (dict(dropout=float("nan")), r"dropout.*finite"),
                       (dict(version=99), r"version.*newer")]:
        with pytest.raises(ModelConfigError, match=needle) as exc:
            make_config("tiny", **kw)
        one_line(exc)
    for text in ['{"tasks": 5}', '{"class_counts": 5}', "[" * 100_000, '{"d_model": ' + "9" * 5000 + "}"]:
        with pytest.raises(ModelConfigError) as exc:
            ModelConfig.from_json(text)
        one_line(exc)
    again = ModelConfig.from_json(make_config("base").to_json())
    assert again == make_config("base")


# -- defect 1: every field of the schema -----------------------------------------------------------------------------
def test_every_numeric_field_declares_a_finite_range():
    """Every int and float of the schema has both ends (no unbounded sizes), and ``ranges()`` documents each."""
    documented = ranges()
    for path, _tp, limit in _schema():
        assert limit.lo is not None and limit.hi is not None, path
        key = _dotted(path).replace("devices.*.", "devices[].").replace("seeds[0]", "seeds")
        assert key in documented, key


@pytest.mark.parametrize("path, tp, limit", _schema(), ids=lambda x: _dotted(x) if isinstance(x, tuple) else "")
def test_every_numeric_field_refuses_values_past_its_range_and_wrong_types(path, tp, limit: Limit):
    """Past either end, NaN/inf, a boolean, a string, or (for integers) a float: refused naming the field path.
    The old loader had no upper bounds at all and took ``4.0`` for an integer nowhere but refused it nowhere else."""
    p = _concrete(path)
    where = _dotted(p)
    lo, hi = limit.lo, limit.hi
    step = 1 if tp is int else max(abs(hi) * 1e-6, 1e-9)
    bad = [hi + step, True, "1", None if path[-1] not in ("rank", "deadline_s", "radio_range_m",
                                                           "max_cluster_size") else "x"]
    bad.append(lo - step if not limit.lo_open else lo)
    if tp is int:
        bad += [float(lo + 1), 2.5]
    else:
        bad += [float("nan"), float("inf")]
    for v in bad:
        raw = _with(_FULL, p, v)
        with pytest.raises(ConfigError) as exc:
            ExperimentConfig.from_dict(raw)
        msg = one_line(exc)
        assert f"'{where}'" in msg, (v, msg)
    # the ends themselves type-check (other rules may still refuse a combination, but not the range)
    for v in (lo if not limit.lo_open else None, hi if not limit.hi_open else None):
        if v is None:
            continue
        try:
            ExperimentConfig.from_dict(_with(_FULL, p, int(v) if tp is int else float(v)))
        except ConfigError as exc:
            assert f"'{where}'" not in str(exc) or "must be" not in str(exc), str(exc)


def _fields_of(tp_name):
    from federation import config as C

    out = []

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if isinstance(tp, type) and dataclasses.is_dataclass(tp):
                walk(tp, (*prefix, f.name))
            elif tp is tp_name:
                out.append((*prefix, f.name))

    walk(C.ExperimentConfig, ())
    walk(C.DeviceConfig, ("devices", 0))
    return out


@pytest.mark.parametrize("path", _fields_of(bool), ids=_dotted)
def test_every_boolean_field_refuses_truthy_strings_and_numbers(path):
    """Issue 14: a string ``'false'`` read as truthy turned DP on. Booleans are YAML booleans, nothing else."""
    for v in ("false", "no", "true", 0, 1, None, []):
        with pytest.raises(ConfigError, match="true or false") as exc:
            ExperimentConfig.from_dict(_with(_FULL, path, v))
        assert f"'{_dotted(path)}'" in one_line(exc)


@pytest.mark.parametrize("path", _fields_of(str), ids=_dotted)
def test_every_string_field_refuses_other_types_and_huge_or_control_text(path):
    for v in (1, True, ["x"], {"a": 1}, "x" * 10_000, "a\x00b"):
        with pytest.raises(ConfigError) as exc:
            ExperimentConfig.from_dict(_with(_FULL, path, v))
        assert f"'{_dotted(path)}'" in one_line(exc)


def test_list_fields_are_bounded_unique_and_typed():
    cases = [(("seeds",), [1, 1], "repeat"), (("seeds",), list(range(33)), "1 to 32"), (("seeds",), [], "1 to 32"),
             (("lora_targets",), [], "1 to 16"), (("devices", 0, "tasks"), ["object_recognition"] * 2, "repeat"),
             (("devices", 0, "tasks"), "object_recognition", "list"), (("rounds", "clusters"), [[]], "1 to 256"),
             (("attack", "devices"), ["ava", "ava"], "repeat"), (("foundation", "scenarios"), [], "1 to 16"),
             (("devices",), [], "1 to 256"), (("devices",), [{"id": f"d{i}", "profile": "meta_quest_3"}
                                                            for i in range(257)], "1 to 256")]
    for path, v, needle in cases:
        with pytest.raises(ConfigError, match=needle) as exc:
            ExperimentConfig.from_dict(_with(_FULL, path, v))
        one_line(exc)


def test_names_and_targets_are_safe():
    """Device ids become file and dataset names: no '/', no control characters. LoRA targets are module names or
    small regular expressions: a catastrophically backtracking one, or one that does not compile, is refused."""
    for path, v in [(("devices", 0, "id"), "../a"), (("devices", 0, "id"), "a/b"), (("devices", 0, "avatar"), "a b"),
                    (("name",), "x/y"), (("lora_targets",), ["(a+)+$"]), (("lora_targets",), [".*.*.*.*x"]),
                    (("lora_targets",), ["("]), (("aggregator", "options"), {"lora": "../x"}),
                    (("aggregator", "options"), {"trim": float("nan")}), (("aggregator", "options"), {"trim": [1]}),
                    (("aggregator", "options"), {"modality_aware": False})]:
        with pytest.raises(ConfigError) as exc:
            ExperimentConfig.from_dict(_with(_FULL, path, v))
        one_line(exc)
    ExperimentConfig.from_dict(_with(_FULL, ("lora_targets",), [r".*\.(q_proj|v_proj|fovea|net\.0)"]))


def test_unknown_and_missing_keys_name_the_field_and_the_allowed_ones():
    for path, needle in [(("x",), r"'x'.*unknown field.*allowed: name, .*, description$"),
                         (("dp", "enable"), r"'dp.enable'.*unknown field.*allowed.*'enabled'"),
                         (("devices", 0, "ranks"), r"'devices\[0\].ranks'.*unknown field.*'rank'"),
                         (("foundation", "lr"), r"'foundation.lr'.*learning_rate")]:
        with pytest.raises(ConfigError, match=needle) as exc:
            ExperimentConfig.from_dict(_with(_FULL, path, 1))
        one_line(exc)
    raw = copy.deepcopy(_FULL)
    del raw["name"]
    with pytest.raises(ConfigError, match=r"config field 'name': missing"):
        ExperimentConfig.from_dict(raw)
    raw = copy.deepcopy(_FULL)
    del raw["devices"][1]["profile"]
    with pytest.raises(ConfigError, match=r"config field 'devices\[1\].profile': missing"):
        ExperimentConfig.from_dict(raw)
    with pytest.raises(ConfigError) as exc:
        ExperimentConfig.from_dict({**_FULL, "k" * 100_000: 1, 7: 2})
    one_line(exc)


def test_errors_stay_one_short_line_for_huge_and_hostile_values():
    """A value of 100 000 characters, a nested structure, a key with newlines: the error is still one short line."""
    for kw in [dict(name="x" * 100_000), dict(name="a\nb\rc"), dict(seeds=[[[[[1] * 1000] * 10]]]),
               dict(devices=[{"id": "a", "profile": "p\n" * 1000}]), dict(description=["x"] * 10_000),
               {"x\ny" * 50: 1}, dict(lora_targets=["\n" * 500])]:
        with pytest.raises(ConfigError) as exc:
            ExperimentConfig.from_dict(minimal(**kw))
        one_line(exc)


# -- alias bombs, size, YAML oddities -------------------------------------------------------------------------------
def test_alias_bomb_is_refused_before_anything_is_built():
    """Issue 14: a billion-laughs config hung ``xrfed run`` at 650+ MB. It is refused from the parser's events, fast
    and in little memory, with one line (the old loader built it and dumped a giant repr into the error)."""
    lines = ["name: bomb", "devices: [{id: a, profile: meta_quest_3}]", 'a0: &a0 ["lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines.append("seeds: *a8")
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="alias") as exc:
        ExperimentConfig.from_yaml("\n".join(lines) + "\n")
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    one_line(exc)
    assert seconds < 2.0 and peak < 20 * 2**20, (seconds, peak)


def test_a_few_aliases_still_work():
    text = ("name: anchors\ndevices:\n  - {id: a, profile: meta_quest_3, tasks: &t [object_recognition]}\n"
            "  - {id: b, profile: hololens_2, tasks: *t}\n")
    cfg = ExperimentConfig.from_yaml(text)
    assert [d.tasks for d in cfg.devices] == [["object_recognition"]] * 2


def test_oversized_binary_and_odd_files_are_refused(tmp_path):
    """A config file over the size limit is refused unread (the old loader read any size); a binary or non-UTF-8
    file, a directory, several documents, Python tags: one line each."""
    big = tmp_path / "big.yaml"
    big.write_bytes(b"name: big\n# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    with pytest.raises(ConfigError, match="too large") as exc:
        load_config(big)
    one_line(exc)
    cases = {"bin.yaml": b"\x00\x01\x02", "latin.yaml": b"name: caf\xe9\n", "docs.yaml": b"name: a\n---\nname: b\n",
             "py.yaml": b"name: !!python/object/apply:os.system ['true']\n", "list.yaml": b"- name: x\n",
             "date.yaml": b"name: x\nseed: 2001-13-45\n"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ConfigError) as exc:
            load_config(tmp_path / name)
        one_line(exc)
    for p in (tmp_path, tmp_path / "nosuch.yaml", "a\x00b"):
        with pytest.raises(ConfigError) as exc:
            load_config(p)
        one_line(exc)


# -- good input still works ------------------------------------------------------------------------------------------
def test_shipped_and_full_configs_load_round_trip_and_pass_preflight():
    from federation.cli import preflight

    files = sorted(CONFIGS.glob("**/*.yaml"))
    assert len(files) >= 12
    for f in files:
        cfg = load_config(f)
        assert ExperimentConfig.from_yaml(cfg.to_yaml()) == cfg
        preflight(cfg)
    full = ExperimentConfig.from_dict(_FULL)
    assert ExperimentConfig.from_yaml(full.to_yaml()) == full
    preflight(full)


def test_preflight_refuses_configs_that_cannot_run():
    """What the schema cannot see: the scenario, its avatars, the held-out split of a phase, the checkpoint, the
    LoRA targets -- refused by ``xrfed run``'s validate before any recording."""
    from federation.cli import preflight

    cases = [(("scenario",), "nosuch", "scenario"), (("scenario",), "x" * 4000 + ".yaml", "scenario"),
             (("devices", 0, "avatar"), "zed", r"devices\[0\].avatar"),
             (("eval", "guard_s"), 3600.0, "eval"), (("foundation", "checkpoint"), "/nonexistent/ck", "checkpoint"),
             (("foundation", "scenarios"), ["nosuch"], "foundation.scenarios"),
             (("lora_targets",), ["nosuch_proj"], "lora_targets"), (("lora_targets",), [".*zzz"], "lora_targets"),
             (("name",), "n" * 120, "name")]
    for path, v, needle in cases:
        cfg = ExperimentConfig.from_dict(_with(_FULL, path, v))
        with pytest.raises(Exception) as exc:
            preflight(cfg)
        from bridge.errors import XrfedError

        assert isinstance(exc.value, XrfedError), repr(exc.value)
        assert re.search(needle, one_line(exc)), str(exc.value)


def test_preflight_refuses_an_impossible_split_at_once():
    """A held-out fraction just below 1 with an hour's guard: the split's own message searched for the smallest
    workable episode one step at a time (~10**13 steps: ``xrfed run`` hung). Refused in closed form, at once."""
    from federation.cli import preflight

    cfg = ExperimentConfig.from_dict(_with(_FULL, ("eval",), {"test_fraction": 1 - 1e-9, "guard_s": 3600.0}))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"'eval'.*leaving 0 to train on") as exc:
        preflight(cfg)
    one_line(exc)
    assert time.perf_counter() - t0 < 5.0


# -- defect 2: the CLI -------------------------------------------------------------------------------------------------
def _cli(argv, capsys):
    ran = []
    try:
        code = main(argv, run=lambda a: ran.append(a) or 0)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    return code, ran, err[-1] if err else ""


@pytest.mark.parametrize("argv, needle", [
    (["run", "configs/demo.yaml", "--threads", "0"], "--threads"),
    (["run", "configs/demo.yaml", "--threads", "-3"], "--threads"),
    (["run", "configs/demo.yaml", "--threads", "100000"], "--threads"),
    (["run", "configs/demo.yaml", "--out", "configs/demo.yaml"], "--out"),
    (["run", "configs/nosuch.yaml"], "config"),
    (["run", "configs"], "config"),
    (["run", "configs/demo.yaml", "--resume"], "--resume"),
    (["demo", "--rounds", "0"], "--rounds"),
    (["demo", "--rounds", "10001"], "--rounds"),
    (["demo", "--rounds", "2.5"], "--rounds"),
    (["demo", "--seeds", "-1"], "--seeds"),
    (["demo", "--seeds", "4294967296"], "--seeds"),
    (["demo", "--seeds", "1", "1"], "--seeds"),
    (["demo", "--seeds", *map(str, range(40))], "--seeds"),
    (["demo", "--threads", "0"], "--threads"),
    (["demo", "--config", "/nonexistent.yaml"], "--config"),
    (["compare", "/nonexistent-run"], "RUN"),
    (["compare", ".", "--out", "/"], "--out"),
    (["shift", "--threads", "0"], "--threads"),
    (["shift", "--seeds", "-1"], "--seeds"),
    (["shift", "--seeds", "7", "7"], "--seeds"),
    (["shift", "--configs", "/nonexistent"], "--configs"),
    (["shift", "--json", "/"], "--json"),
    (["shift", "--dims", "Q"], "--dims"),
])
def test_every_flag_is_range_checked_with_one_line_and_exit_2(argv, needle, capsys):
    """Issue 14: ``run --threads 0`` and other flags were accepted or gave tracebacks later. The parser (or the
    command's validate) refuses them: exit 2, one line, nothing run."""
    code, ran, last = _cli(argv, capsys)
    assert code == 2 and not ran, (code, last)
    assert needle in last and len(last) <= MAX_ERROR_CHARS, last


def test_run_validates_the_config_before_any_work(tmp_path, capsys):
    """A config that loads but cannot run (unknown scenario, an avatar missing, a guard longer than a phase) and one
    that does not load: exit 2 with one line from ``validate``; the command's work never starts."""
    for i, raw in enumerate([_with(_FULL, ("scenario",), "nosuch"), _with(_FULL, ("devices", 0, "avatar"), "zed"),
                             _with(_FULL, ("eval", "guard_s"), 3600.0), _with(_FULL, ("dp", "enabled"), "false"),
                             _with(_FULL, ("rounds", "rounds"), 10**9)]):
        p = tmp_path / f"c{i}.yaml"
        p.write_text(yaml.safe_dump(raw))
        code, ran, last = _cli(["run", str(p)], capsys)
        assert code == 2 and not ran and last.startswith("xrfed: error:"), last


def test_good_flags_and_shipped_configs_pass_validation(tmp_path, capsys):
    for argv in (["run", "configs/demo.yaml", "--threads", "2", "--out", str(tmp_path / "r")],
                 ["demo", "--rounds", "1", "--seeds", "0", "5", "--out", str(tmp_path / "d")],
                 ["shift", "--dims", "S", "H", "--seeds", "0", "--threads", "1"],
                 ["compare", str(tmp_path)]):
        code, ran, last = _cli(argv, capsys)
        assert code == 0 and len(ran) == 1, (argv, last)
    demo = ran and _cli(["demo", "--rounds", "3", "--seeds", "4"], capsys)[1][0].experiment
    assert demo.rounds.rounds == 3 and demo.seeds == [4]


# -- the fuzz surface ----------------------------------------------------------------------------------------------
def test_config_yaml_surface_never_crashes():
    from bridge.fuzzing import assert_no_crash
    from federation.config_fuzz import SURFACES

    (surface,) = [s for s in SURFACES if s.name == "config.yaml"]
    result = assert_no_crash(surface, examples=200)
    assert result.accepted >= 20 and result.rejected >= 50, result  # both sides of the loader are exercised
