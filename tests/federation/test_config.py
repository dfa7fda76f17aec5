from pathlib import Path

import pytest

from federation.config import DeviceConfig, ExperimentConfig, RoundsConfig, load_config
from federation.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def minimal(**kw):
    raw = {"name": "x", "devices": [{"id": "a", "profile": "meta_quest_3", "tasks": ["object_recognition"]}]}
    raw.update(kw)
    return raw


def test_yaml_round_trip():
    cfg = ExperimentConfig.from_dict(minimal(rounds={"paradigm": "semi", "clusters": [["a"]]}, lora_alpha=16))
    again = ExperimentConfig.from_yaml(cfg.to_yaml())
    assert again == cfg
    assert again.rounds.paradigm == "semi" and again.lora_alpha == 16.0


def test_unknown_paradigm_names_field_and_allowed():
    with pytest.raises(ConfigError, match=r"'rounds.paradigm'.*'star'.*centralized.*semi.*decentralized"):
        ExperimentConfig.from_dict(minimal(rounds={"paradigm": "star"}))


def test_unknown_field_lists_fields():
    with pytest.raises(ConfigError, match=r"'rounds.round'.*unknown field.*allowed.*'rounds'"):
        ExperimentConfig.from_dict(minimal(rounds={"round": 3}))


def test_device_validation():
    with pytest.raises(ConfigError, match=r"devices\[0\].profile.*quest9"):
        ExperimentConfig.from_dict({"name": "x", "devices": [{"id": "a", "profile": "quest9"}]})
    with pytest.raises(ConfigError, match=r"xreal_air has none of the modalities that carry 'speech_command'"):
        ExperimentConfig(name="x", devices=[DeviceConfig("a", "xreal_air", ["speech_command"])])
    with pytest.raises(ConfigError, match="unique"):
        ExperimentConfig(name="x", devices=[DeviceConfig("a", "meta_quest_3"), DeviceConfig("a", "meta_quest_3")])


def test_participation_range_and_unknown_aggregator():
    with pytest.raises(ConfigError, match=r"rounds.participation.*\(0, 1\]"):
        ExperimentConfig.from_dict(minimal(rounds={"participation": 1.5}))
    with pytest.raises(ConfigError, match=r"'aggregator.name'.*'fedprox'.*allowed.*exact_lora"):
        ExperimentConfig.from_dict(minimal(aggregator={"name": "fedprox"}))


def test_dp_combinations_follow_the_registries():
    # central DP: a server adds the noise to a sum
    with pytest.raises(ConfigError, match="dp.mode.*needs a server.*allowed: \\['local'\\]"):
        ExperimentConfig.from_dict(minimal(dp={"enabled": True}, rounds={"paradigm": "decentralized"}))
    with pytest.raises(ConfigError, match="dp.mode.*krum.*allowed: \\['local', 'central with fedavg'"):
        ExperimentConfig.from_dict(minimal(dp={"enabled": True}, aggregator={"name": "krum"}))
    with pytest.raises(ConfigError, match="rounds.cluster_aggregation.*allowed: \\['tree'\\]"):
        ExperimentConfig.from_dict(minimal(dp={"enabled": True}, rounds={"paradigm": "semi",
                                                                         "cluster_aggregation": "consensus"}))
    with pytest.raises(ConfigError, match="dp.enabled.*nothing leaves a device"):
        ExperimentConfig.from_dict(minimal(dp={"enabled": True}, rounds={"paradigm": "local"}))
    # local DP works with every aggregator and every communicating paradigm
    for agg in ("krum", "median", "trimmed_mean"):
        ExperimentConfig.from_dict(minimal(dp={"enabled": True, "mode": "local"}, aggregator={"name": agg}))
    ExperimentConfig.from_dict(minimal(dp={"enabled": True, "mode": "local"}, rounds={"paradigm": "decentralized"}))
    # gossip averages
    with pytest.raises(ConfigError, match="aggregator.name.*consensus.*allowed: \\['fedavg', 'fedit', 'exact_lora'\\]"):
        ExperimentConfig.from_dict(minimal(aggregator={"name": "median"}, rounds={"paradigm": "decentralized"}))


def test_strict_types_no_truthy_strings():
    with pytest.raises(ConfigError, match="dp.enabled.*true or false"):
        ExperimentConfig.from_dict(minimal(dp={"enabled": "false"}))
    with pytest.raises(ConfigError, match="personal_adapters.*true or false"):
        ExperimentConfig.from_dict(minimal(personal_adapters="no"))
    with pytest.raises(ConfigError, match="rounds.rounds.*integer"):
        ExperimentConfig.from_dict(minimal(rounds={"rounds": True}))
    with pytest.raises(ConfigError, match="seed.*integer"):
        ExperimentConfig.from_dict(minimal(seed="abc"))
    with pytest.raises(ConfigError, match="seeds.*repeat"):
        ExperimentConfig.from_dict(minimal(seeds=[1, 1]))


def test_trimmed_mean_must_trim_at_the_configured_device_count():
    devs = [{"id": f"d{i}", "profile": "meta_quest_3"} for i in range(6)]
    with pytest.raises(ConfigError, match="trims nothing with 6 devices"):
        ExperimentConfig.from_dict(minimal(devices=devs, aggregator={"name": "trimmed_mean",
                                                                     "options": {"trim_fraction": 0.1}}))
    ExperimentConfig.from_dict(minimal(devices=devs, aggregator={"name": "trimmed_mean"}))


def test_explicit_clusters_must_name_devices():
    with pytest.raises(ConfigError, match="rounds.clusters.*do not exist"):
        ExperimentConfig.from_dict(minimal(rounds={"clusters": [["a", "zz"]]}))


def test_shipped_configs_validate():
    files = sorted(CONFIGS.glob("**/*.yaml"))
    assert len(files) >= 11  # demo + 5 SHIFT dimensions x (on, control)
    for f in files:
        cfg = load_config(f)
        assert cfg.devices, f
    demo = load_config(CONFIGS / "demo.yaml")
    assert len(demo.devices) >= 6 and demo.phases >= 2
    assert len({d.profile for d in demo.devices}) >= 6


def test_rounds_config_defaults_validate():
    RoundsConfig().validate("rounds")
    with pytest.raises(ConfigError, match="rounds.local_steps"):
        RoundsConfig(local_steps=0).validate("rounds")


def test_scene_positions_and_avatar_mapping():
    from bridge.scenario import load_scenario
    from federation.scene import avatar_positions_m, device_avatars

    sc = load_scenario("default")
    demo = load_config(CONFIGS / "demo.yaml")
    mapping = device_avatars(demo, sc)
    assert mapping["ava"] == "ava"
    pos = avatar_positions_m(sc, mapping)
    ava = next(a for a in sc.avatars if a.name == "ava")
    room = sc.room(ava.start_room)
    assert pos["ava"][:2] == pytest.approx((room.origin_m[0] + ava.start_pos_m[0], room.origin_m[1] + ava.start_pos_m[1]))
    assert pos["ava"][2] == pytest.approx(0.93 * ava.user.height_m)
    bad = ExperimentConfig(name="x", devices=[DeviceConfig("zed", "meta_quest_3", ["object_recognition"])])
    with pytest.raises(ConfigError, match=r"devices\[0\].avatar.*'zed'.*allowed"):
        device_avatars(bad, sc)
