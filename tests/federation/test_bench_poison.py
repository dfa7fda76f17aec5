import json

import pytest

from federation import bench_poison as bp
from federation.config import ExperimentConfig, load_config
from federation.errors import CheckpointError
from federation.synthetic import SyntheticClient

IDS = [f"d{i}" for i in range(6)]


def base_config(rounds=2):
    return ExperimentConfig.from_dict({
        "name": "p", "devices": [{"id": i, "profile": "meta_quest_3", "tasks": ["object_recognition"]} for i in IDS],
        "phases": 1, "rounds": {"paradigm": "centralized", "rounds": rounds, "local_steps": 2}})


def factories():
    return {i: (lambda i=i, s=s: SyntheticClient(i, "meta_quest_3", seed=s)) for s, i in enumerate(IDS)}


def test_the_attacker_is_drawn_from_the_seed_and_shared_by_every_run_of_it():
    cfg = base_config()
    picks = [bp.pick_attacker(cfg, s) for s in range(10)]
    assert picks == [bp.pick_attacker(cfg, s) for s in range(10)]  # a function of the seed
    assert len(set(picks)) > 1 and set(picks) <= set(IDS)  # ...that depends on it
    runs = bp.bench_configs(cfg, 3, picks[3])
    assert len(runs) == len(bp.AGGREGATORS) * 4
    attacked = [c for _, cond, c in runs if cond != "clean"]
    assert {tuple(c.attackers()) for c in attacked} == {(picks[3],)}
    assert all(c.attackers() == [] for _, cond, c in runs if cond == "clean")
    assert {c.seed for _, _, c in runs} == {3} and all(c.seeds is None for _, _, c in runs)


def test_clean_and_attacked_configs_differ_in_the_attack_kind_only():
    runs = bp.bench_configs(base_config(), 0, "d1", scale=10.0)
    by_agg: dict[str, dict[str, ExperimentConfig]] = {}
    for agg, cond, cfg in runs:
        by_agg.setdefault(agg, {})[cond] = cfg
    for agg, conds in by_agg.items():
        assert list(conds) == ["clean", "x10", "sign_flip", "label_flip"]
        clean = conds["clean"].to_dict()
        assert conds["clean"].aggregator.name == agg
        for cond, cfg in conds.items():
            d = cfg.to_dict()
            assert {k for k in d if d[k] != clean[k]} == ({"attack"} if cond != "clean" else set())
            assert {k: v for k, v in d["attack"].items() if k != "kind"} == \
                {k: v for k, v in clean["attack"].items() if k != "kind"}
        assert [c.attack.kind for c in conds.values()] == ["none", "scale", "sign_flip", "label_flip"]
    with pytest.raises(Exception, match="not an aggregator of the poisoning bench"):
        bp.bench_configs(base_config(), 0, "d1", aggregators=["fedprox"])


def test_bench_on_synthetic_devices_writes_figures_and_table(tmp_path, monkeypatch):
    import federation.report

    monkeypatch.setattr(federation.report, "write_report", lambda run_dir: None)  # the plots are not the bench's
    lines = []
    res = bp.run_poison(base_config(), [0, 1], tmp_path, aggregators=("fedavg", "median"), log=lines.append,
                        client_factories=factories())
    json.dumps(res, allow_nan=False)  # valid JSON: no NaN
    assert len(res["runs"]) == 2 * 2 * 4 and len(lines) == 16 and lines[-1].startswith("[16/16] seed 1 median")
    for s in (0, 1):
        attacker = res["attackers"][str(s)]
        runs = [r for r in res["runs"] if r["seed"] == s]
        assert {r["attacker"] for r in runs} == {attacker}
        assert all(r["attackers_in_run"] == ([] if r["condition"] == "clean" else [attacker]) for r in runs)
        for r in runs:  # the honest figure leaves the attacker out, clean runs included
            per = r["balanced_accuracy_per_device"]
            assert r["balanced_accuracy_honest"] == pytest.approx(
                sum(v for d, v in per.items() if d != attacker) / 5)
            assert r["balanced_accuracy_all"] == pytest.approx(sum(per.values()) / 6)

    def fig(agg, cond, s):
        return next(r["balanced_accuracy_honest"] for r in res["runs"]
                    if (r["aggregator"], r["condition"], r["seed"]) == (agg, cond, s))

    d = res["results"]["fedavg"]["x10"]["honest"]["difference"]
    per_seed = [fig("fedavg", "x10", s) - fig("fedavg", "clean", s) for s in (0, 1)]
    assert d["values"] == pytest.approx(per_seed) and d["mean"] == pytest.approx(sum(per_seed) / 2)
    assert d["sign_holds"] == all((x < 0) == (d["mean"] < 0) for x in per_seed)
    checks = res["target"]["checks"]
    assert [(c["aggregator"], c["attack"]) for c in checks] == [("median", a) for a in ("x10", "sign_flip",
                                                                                          "label_flip")]
    assert res["target"]["holds"] == all(abs(c["difference"]) <= bp.TARGET_POINTS for c in checks)

    table = bp.markdown_table(res).splitlines()
    assert table[0] == "| aggregator | clean | x10 | sign_flip | label_flip |" and len(table) == 4
    assert table[2].startswith(f"| fedavg | {res['results']['fedavg']['clean']['honest']['mean']:.3f} ± ")
    assert f"{d['mean']:+.3f} ± " in table[2]

    # a second call reuses the finished runs; a run directory of another config is refused
    again = bp.run_poison(base_config(), [0, 1], tmp_path, aggregators=("fedavg", "median"),
                          client_factories=factories())
    assert all(r["reused"] for r in again["runs"]) and again["results"] == res["results"]
    with pytest.raises(CheckpointError, match="different config"):
        bp.run_poison(base_config(rounds=3), [0], tmp_path, aggregators=("fedavg",), client_factories=factories())


def test_cli_registers_the_bench_and_ships_its_config():
    from bridge.cli import build_parser

    args = build_parser().parse_args(["bench", "poison", "--json", "x.json", "--seeds", "4", "5"])
    assert args.func is bp.run_poison_bench and args.seeds == [4, 5] and args.scale == 10.0 and args.out is None
    cfg = load_config(bp.POISON_CONFIG)
    assert len(cfg.devices) == 6 and cfg.rounds.paradigm == "centralized" and cfg.attack.kind == "none"
    for task in {t for d in cfg.devices for t in d.tasks}:  # every head has an honest majority of holders
        assert sum(task in d.tasks for d in cfg.devices) >= 3, task
