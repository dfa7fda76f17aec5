"""The SHIFT pairs: each differs in exactly its factor, every mechanism has something to act on, and the table."""

import argparse
import dataclasses
import json
import math

import pytest

from federation import aggregate as agg
from federation import cli, shift
from federation.config import ExperimentConfig
from federation.errors import CheckpointError, ConfigError
from federation.rundir import read_summary
from federation.synthetic import SyntheticClient


@pytest.fixture(scope="module")
def pairs():
    """dimension -> (ON config, control config), loaded and validated from configs/shift."""
    return {d: p.load() for d, p in shift.PAIRS.items()}


# -- the shipped pairs ----------------------------------------------------------------------------------------------
def test_every_shipped_pair_differs_in_exactly_its_factor(pairs):
    expected = {"S": ("aggregator.modality_aware", True, False), "H": ("aggregator.name", "exact_lora", "fedit"),
                "I": ("personal_adapters", True, False), "F": ("aggregator.task_aware", True, False),
                "T": ("continual.method", "replay", "none")}
    assert list(pairs) == list(expected)
    for d, (on, control) in pairs.items():
        factor, v_on, v_control = expected[d]
        assert shift.PAIRS[d].factor == factor
        assert shift.config_diff(on, control) == {factor: (v_on, v_control)}, d
    shipped = {f.name for f in shift.SHIFT_DIR.glob("*.yaml")}
    assert shipped == {f for p in shift.PAIRS.values() for f in (p.on, p.control)}  # no stray or missing file


def test_every_pair_is_the_same_base_experiment(pairs):
    configs = [c for both in pairs.values() for c in both]
    assert len({c.name for c in configs}) == len(configs)
    for c in configs:
        assert (c.scenario, c.model_preset, c.tuning, c.rounds.paradigm) == ("default", "tiny", "lora", "centralized")
        assert c.seeds == [0, 1, 2] and (c.eval.test_fraction, c.eval.guard_s) == (0.25, 5.0)
        assert c.episode_steps * c.phases == 720  # one recording per seed serves every pair
        assert [(d.id, d.profile, d.tasks) for d in c.devices] == \
            [(d.id, d.profile, d.tasks) for d in configs[0].devices]
    assert len({d.profile for d in configs[0].devices}) == 6


def test_config_diff_walks_mappings_and_device_lists_and_ignores_labels():
    a = {"name": "a", "description": "one", "aggregator": {"name": "fedavg", "options": {}},
         "devices": [{"id": "d0", "rank": 2}, {"id": "d1", "rank": None}], "lora_targets": ["q_proj"], "seed": 0}
    b = {"name": "b", "description": "two", "aggregator": {"name": "exact_lora", "options": {}},
         "devices": [{"id": "d0", "rank": 2}, {"id": "d1", "rank": 4}], "lora_targets": ["q_proj", "v_proj"],
         "seed": 0}
    assert shift.config_diff(a, a) == {}
    assert shift.config_diff(a, b) == {"aggregator.name": ("fedavg", "exact_lora"), "devices[1].rank": (None, 4),
                                       "lora_targets": (["q_proj"], ["q_proj", "v_proj"])}
    c = {**a, "devices": [*a["devices"], {"id": "d2", "rank": 1}]}
    assert shift.config_diff(a, c) == {"devices.<len>": (2, 3), "devices[2].id": (None, "d2"),
                                       "devices[2].rank": (None, 1)}


def test_S_gives_every_sensor_its_own_lora_tensors_and_modality_awareness_decides_who_averages_them(pairs):
    from agents.config import make_config
    from agents.model import M3TModel
    from agents.personalize import PersonalizationConfig, apply_personalization, shared_state
    from bridge.devices import get_device

    on, control = pairs["S"]
    assert all(d.modality_dropout == 0.3 for c in (on, control) for d in c.devices)
    suites = {frozenset(get_device(d.profile).modalities) for d in on.devices}
    assert len(suites) >= 4  # different sensor suites
    model = M3TModel(make_config(on.model_preset))
    info = apply_personalization(model, PersonalizationConfig(rank=on.lora_rank, targets=tuple(on.lora_targets)),
                                 ("object_recognition",))
    keys = [k for k in shared_state(model, info) if ".lora_A." in k]
    assert {agg.key_modality(k) for k in keys} - {None} == {"rgb", "depth", "gaze", "pose", "imu", "hands"}
    assert any(k.startswith("blocks.") and ".q_proj." in k for k in keys)  # and the shared backbone
    key = next(k for k in keys if agg.key_modality(k) == "depth")
    glasses = (("rgb", "audio"), ("object_recognition",))  # no depth sensor
    assert on.aggregator.make().holds(key, *glasses) is False
    assert control.aggregator.make().holds(key, *glasses) is True


def test_the_H_deadline_bites_every_round(pairs):
    from agents.train import TRAIN_FLOPS_FACTOR
    from bridge.devices import get_device

    on, control = pairs["H"]
    assert on.rounds.deadline_s == control.rounds.deadline_s is not None
    times = shift.finish_times(on)
    missed, made = shift.stragglers(on, times)
    assert len(missed) >= 1 and len(made) >= 2
    assert max(times[d].total_s for d in made) < on.rounds.deadline_s < min(times[d].total_s for d in missed)
    t = times["emma"]  # the round engine's arithmetic, by hand
    prof = get_device("ray_ban_meta")
    assert t.compute_s == pytest.approx(TRAIN_FLOPS_FACTOR * t.forward_flops * t.batch_size * on.rounds.local_steps
                                        / (prof.gflops_sustained * 1e9))
    assert t.upload_s == pytest.approx(t.update_bytes * 8 / (prof.uplink_mbps * 1e6))
    memory = {d.id: get_device(d.profile).memory_gb for d in on.devices}
    ranks = {d.id: d.rank for d in on.devices}
    assert len(set(ranks.values())) >= 3
    assert all(ranks[a] <= ranks[b] for a in ranks for b in ranks if memory[a] <= memory[b])  # rank follows memory
    no_deadline = dataclasses.replace(on, rounds=dataclasses.replace(on.rounds, deadline_s=None))
    assert shift.stragglers(no_deadline, times) == ([], list(times))


def test_F_puts_every_head_on_every_device_and_task_awareness_decides_who_averages_it(pairs):
    on, control = pairs["F"]
    assert on.share_all_heads and control.share_all_heads
    holders = {t: sum(t in d.tasks for d in on.devices) for d in on.devices for t in d.tasks}
    assert len(holders) >= 4 and all(1 <= n < len(on.devices) for n in holders.values())
    key = "heads.speech_command.proj.weight"
    hugo = (("rgb", "pose", "imu"), ("activity_recognition", "scene_classification"))
    assert on.aggregator.make().holds(key, *hugo) is False
    assert control.aggregator.make().holds(key, *hugo) is True


def test_T_drifts_through_phases_in_both_arms_and_I_switches_personal_modules(pairs):
    on, control = pairs["T"]
    assert on.phases >= 2 and control.phases >= 2 and on.rounds.rounds % on.phases == 0
    on, control = pairs["I"]
    assert (on.personal_adapters, control.personal_adapters) == (True, False)


# -- figures and the table ----------------------------------------------------------------------------------------
def test_pair_figures_pair_the_seeds_by_hand():
    pair = shift.PAIRS["T"]
    on = {0: {"balanced_accuracy": 0.50, "mean_forgetting": 0.10}, 1: {"balanced_accuracy": 0.60, "mean_forgetting": 0.05},
          2: {"balanced_accuracy": 0.70, "mean_forgetting": 0.00}}
    control = {0: {"balanced_accuracy": 0.45, "mean_forgetting": 0.20},
               1: {"balanced_accuracy": 0.50, "mean_forgetting": 0.10},
               2: {"balanced_accuracy": 0.68, "mean_forgetting": None}}
    fig = shift.pair_figures(pair, [0, 1, 2], on, control)
    d = fig["primary"]["difference"]
    assert d["values"] == pytest.approx([0.05, 0.10, 0.02]) and d["mean"] == pytest.approx(0.17 / 3)
    # sd of the differences = sqrt(0.0032667 / 2); t(0.975, 2) = 4.302653
    assert d["hi"] - d["mean"] == pytest.approx(4.302653 * math.sqrt(0.00326667 / 2) / math.sqrt(3), rel=1e-4)
    assert d["sign_holds"] is True and fig["primary"]["on"]["mean"] == pytest.approx(0.6)
    forget = fig["secondary"]["mean_forgetting"]
    assert forget["difference"]["values"] == pytest.approx([-0.10, -0.05])  # seed 2 has no control value
    assert forget["difference"]["sign_holds"] is True and forget["control"]["n"] == 2
    assert forget["per_seed"]["2"] == {"on": 0.0, "control": None}
    mixed = shift.pair_figures(pair, [0, 1], on, {0: {"balanced_accuracy": 0.55}, 1: {"balanced_accuracy": 0.50}})
    assert mixed["primary"]["difference"]["sign_holds"] is False  # -0.05 and +0.10


def _write_pair(root, *, deadline=0.03, extra=None):
    base = {"scenario": "default", "phases": 1, "seeds": [0, 1],
            "devices": [{"id": "a", "profile": "apple_vision_pro"}, {"id": "b", "profile": "meta_quest_3"},
                        {"id": "c", "profile": "ray_ban_meta"}, {"id": "d", "profile": "magic_leap_2"}],
            "rounds": {"paradigm": "centralized", "rounds": 2, "local_steps": 2, "deadline_s": deadline}}
    for fname, name, agg_name in (("x-on.yaml", "x-on", "median"), ("x-control.yaml", "x-control", "fedavg")):
        raw = {**base, "name": name, "aggregator": {"name": agg_name}}
        if extra and fname == "x-on.yaml":
            raw.update(extra)
        (root / fname).write_text(ExperimentConfig.from_dict(raw).to_yaml())
    return {"X": shift.ShiftPair("X", "a test challenge", "x-on.yaml", "x-control.yaml", "aggregator.name",
                                 "a test mechanism", ("rounds_missed_deadline", "mean_round_latency_s"))}


def _factories():
    # 2 GFLOP per round: the Ray-Ban glasses (30 GFLOP/s) take 67 ms, past the 30 ms deadline; the headsets do not,
    # and the median of their three updates is not their mean
    devices = (("a", "apple_vision_pro"), ("b", "meta_quest_3"), ("c", "ray_ban_meta"), ("d", "magic_leap_2"))
    return {d: (lambda d=d, s=s, p=p: SyntheticClient(d, p, seed=s, modalities=("rgb",)))
            for s, (d, p) in enumerate(devices)}


def test_run_shift_on_synthetic_devices_pairs_the_seeds_and_resumes(tmp_path, monkeypatch):
    import federation.report

    monkeypatch.setattr(federation.report, "write_report", lambda run_dir: None)  # plots are not the table's
    pairs = _write_pair(tmp_path)
    lines = []
    res = shift.run_shift(tmp_path / "out", dims=["X"], root=tmp_path, pairs=pairs, log=lines.append,
                          client_factories=_factories())
    json.dumps(res, allow_nan=False)
    assert len(lines) == 4 and lines[-1].startswith("[2/2] SHIFT X control")
    r = res["results"]["X"]
    assert (r["on"]["value"], r["control"]["value"], r["seeds"]) == ("median", "fedavg", [0, 1])
    on = [read_summary(tmp_path / "out" / "X" / "on" / f"seed-{s}")["balanced_accuracy"] for s in (0, 1)]
    control = [read_summary(tmp_path / "out" / "X" / "control" / f"seed-{s}")["balanced_accuracy"] for s in (0, 1)]
    diff = r["primary"]["difference"]
    assert diff["values"] == pytest.approx([a - b for a, b in zip(on, control, strict=True)])
    assert diff["n"] == 2 and all(v != 0 for v in diff["values"])  # the factor changes the figures
    assert diff["sign_holds"] == (all(v > 0 for v in diff["values"]) or all(v < 0 for v in diff["values"]))
    assert r["secondary"]["rounds_missed_deadline"]["on"]["mean"] == 2.0  # the glasses, both rounds
    assert r["secondary"]["mean_round_latency_s"]["control"]["mean"] > 0
    table = shift.markdown_table(res).splitlines()
    assert len(table) == 3 and table[2].startswith("| X (a test challenge) | `aggregator.name` | median: ")
    assert "missed deadline (device-rounds): 2.0 vs 2.0" in table[2]

    again = shift.run_shift(tmp_path / "out", dims=["X"], root=tmp_path, pairs=pairs, client_factories=_factories())
    assert all(run["reused"] for run in again["runs"]) and again["results"] == res["results"]
    with pytest.raises(CheckpointError, match="different config"):
        shift.run_shift(tmp_path / "out", dims=["X"], seeds=[0], root=tmp_path, pairs=pairs,
                        client_factories=_factories())


def test_run_shift_refuses_a_pair_that_differs_in_more_than_its_factor_before_running(tmp_path):
    pairs = _write_pair(tmp_path, extra={"lora_rank": 2})
    with pytest.raises(ConfigError, match="differ in exactly aggregator.name"):
        shift.run_shift(tmp_path / "out", dims=["X"], root=tmp_path, pairs=pairs, client_factories=_factories())
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="unknown SHIFT dimension"):
        shift.run_shift(tmp_path / "out", dims=["Q"])


def test_xrfed_shift_is_registered_with_the_federation_commands():
    p = argparse.ArgumentParser(prog="xrfed")
    cli.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["shift", "--dims", "S", "T", "--seeds", "0", "1", "--out", "runs/s", "--json", "s.json"])
    assert args.func is shift.run_shift_command
    assert (args.dims, args.seeds, args.out, args.json) == (["S", "T"], [0, 1], "runs/s", "s.json")
    assert p.parse_args(["shift"]).dims == list(shift.DIMENSIONS)
