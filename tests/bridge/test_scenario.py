import pytest
import yaml

from bridge import ScenarioError
from bridge.scenario import load_scenario, parse_scenario, scenario_names


def test_shipped_scenarios_load():
    names = scenario_names()
    assert {"default", "home", "factory", "clinic"} <= set(names)
    sc = load_scenario("default")
    assert len(sc.rooms) >= 3 and len(sc.avatars) >= 6
    assert len({a.device for a in sc.avatars}) == len(sc.avatars)  # every avatar on a different device


def test_load_by_path(write_scenario, tiny_raw):
    sc = load_scenario(write_scenario(tiny_raw))
    assert sc.name == "tiny" and sc.step_dt_s == pytest.approx(0.1)


@pytest.mark.parametrize(
    "mutate, path, needle",
    [
        (lambda r: r["avatars"][1].__setitem__("device", "quest9"), "avatars[1].device", "meta_quest_3"),
        (lambda r: r["rooms"][0].__setitem__("type", "spaceship"), "rooms[0].type", "living_room"),
        (lambda r: r["objects"][0].__setitem__("pos_m", [9.0, 2.0]), "objects[0].pos_m", "outside room"),
        (lambda r: r["objects"][0].__setitem__("category", "unicorn"), "objects[0].category", "sofa"),
        (lambda r: r["rooms"][0].__setitem__("colour", "red"), "rooms[0].colour", "unknown field"),
        (lambda r: r["task_scripts"]["stare"]["segments"][0].__setitem__("look_at", ["ghost"]),
         "task_scripts.stare.segments[0].look_at[0]", "box"),
        (lambda r: r["task_scripts"]["stare"]["segments"][0].__setitem__("commands", [True]),
         "task_scripts.stare.segments[0].commands", "quote"),
        (lambda r: r.__setitem__("lighting_schedule", [{"t_s": 5}, {"t_s": 1}]), "lighting_schedule", "sorted"),
        (lambda r: r["objects"].append(dict(r["objects"][0])), "objects[2].name", "duplicate"),
        (lambda r: r.__setitem__("modality_events", [{"avatar": "u1", "kind": "brain_freeze", "start_s": 1,
                                                      "end_s": 2}]), "modality_events[0].kind", "mic_muted"),
        (lambda r: r.__setitem__("avatars", []), "avatars", "non-empty"),
    ],
)
def test_invalid_scenarios_name_field_value_and_allowed(tiny_raw, mutate, path, needle):
    mutate(tiny_raw)
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(tiny_raw)
    assert exc.value.path == path
    assert needle in str(exc.value)


def test_unknown_scenario_name_lists_shipped_ones():
    with pytest.raises(ScenarioError, match="default"):
        load_scenario("no_such_scenario")


def test_bad_yaml_is_a_scenario_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("rooms: [unclosed")
    with pytest.raises(ScenarioError, match="YAML"):
        load_scenario(p)


def test_digest_changes_with_content(tiny_raw):
    a = parse_scenario(tiny_raw, source_yaml=yaml.safe_dump(tiny_raw))
    tiny_raw["step_hz"] = 20
    b = parse_scenario(tiny_raw, source_yaml=yaml.safe_dump(tiny_raw))
    assert a.digest != b.digest


def test_boolean_fields_take_only_true_or_false(tiny_raw):
    tiny_raw["task_scripts"]["stare"]["loop"] = "no"
    with pytest.raises(ScenarioError, match=r"task_scripts.stare.loop.*true or false"):
        parse_scenario(tiny_raw)
