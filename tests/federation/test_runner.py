import json

import pytest

from federation.config import AggregatorConfig, DeviceConfig, DPConfig, ExperimentConfig, RoundsConfig
from federation.errors import CheckpointError
from federation.report import compare_runs
from federation.runner import ExperimentRunner, phase_of_round, read_metrics
from federation.synthetic import SyntheticClient

DEVICES = [("q3", "meta_quest_3", ("rgb", "audio"), ("object_recognition",)),
           ("avp", "apple_vision_pro", ("rgb", "gaze"), ("object_recognition", "intent_prediction")),
           ("rb", "ray_ban_meta", ("rgb",), ("object_recognition",))]


def config(paradigm="centralized", rounds=4, dp=False):
    return ExperimentConfig(
        name="t", devices=[DeviceConfig(i, p, list(t)) for i, p, _, t in DEVICES], phases=2,
        aggregator=AggregatorConfig("fedavg"), dp=DPConfig(enabled=dp, noise_multiplier=0.5),
        rounds=RoundsConfig(paradigm=paradigm, rounds=rounds, local_steps=3, availability=0.9, radio_range_m=3.0))


def factories():
    return {i: (lambda i=i, p=p, m=m, t=t, s=s: SyntheticClient(i, p, modalities=m, tasks=t, seed=s))
            for s, (i, p, m, t) in enumerate(DEVICES)}


POS = {"q3": (0.0, 0.0, 1.6), "avp": (2.0, 0.0, 1.6), "rb": (9.0, 0.0, 1.6)}


def runner(cfg, out, **kw):
    return ExperimentRunner(cfg, out, client_factories=factories(), positions_fn=lambda r, ph: POS,
                            progress=False, **kw)


def deterministic(rows):
    keep = ("accuracy", "balanced_accuracy", "global_balanced_accuracy", "personalization_gain", "train_loss",
            "bytes_sent", "bytes_received", "status", "battery_frac", "comm_joules")
    return [(r["round"], r["links"], r["epsilon"], {d: {k: v[k] for k in keep} for d, v in r["devices"].items()})
            for r in rows]


def test_phase_schedule():
    assert [phase_of_round(r, 5, 2) for r in range(5)] == [0, 0, 0, 1, 1]


def test_run_writes_run_dir_and_report(tmp_path):
    summary = runner(config(paradigm="semi"), tmp_path / "run").run()
    rd = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "baselines.json", "summary.json", "report.md", "report.html",
                 "plots/accuracy.png", "plots/tasks.png", "plots/links.png", "plots/latency.png",
                 "checkpoint/engine.json"):
        assert (rd / name).exists(), name
    assert len(read_metrics(rd)) == 4
    assert set(summary["devices"]) == {"q3", "avp", "rb"}
    assert summary["devices"]["q3"]["forgetting"] is not None
    assert summary["devices"]["avp"]["active_modules"] == 4  # rgb + gaze encoders, two task heads
    assert 0.0 <= summary["devices"]["q3"]["mia_auc"] <= 1.0
    report = (rd / "report.md").read_text()
    assert "| q3 |" in report
    # the result stands next to its baselines on the same held-out data
    for b in ("pretrained", "majority", "persistence"):
        assert summary["baselines"][b]["balanced_accuracy"] is not None
        assert summary["devices"]["q3"]["baselines"][b]["balanced_accuracy"] is not None
    assert "majority class of the device" in report and "label persistence" in report
    table = compare_runs([rd])
    assert "semi" in table.splitlines()[2]


def test_resume_after_kill_reproduces_uninterrupted_run(tmp_path):
    # Prepare: a reference run
    runner(config(dp=True), tmp_path / "a").run()
    ref = read_metrics(tmp_path / "a")

    # Execute: kill during round 2's checkpoint (its metrics line is already written), then resume
    class Killed(ExperimentRunner):
        def _write_checkpoint(self, completed_round):
            if completed_round == 2:
                raise KeyboardInterrupt
            super()._write_checkpoint(completed_round)

    killed = Killed(config(dp=True), tmp_path / "b", client_factories=factories(),
                    positions_fn=lambda r, ph: POS, progress=False)
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    assert len(read_metrics(tmp_path / "b")) == 3  # round 2 logged but not checkpointed
    runner(config(dp=True), tmp_path / "b").run(resume=True)

    # Assert: same rounds once each, same figures
    got = read_metrics(tmp_path / "b")
    assert [r["round"] for r in got] == [0, 1, 2, 3]
    assert deterministic(got) == deterministic(ref)
    sa, sb = (json.loads((tmp_path / x / "summary.json").read_text()) for x in ("a", "b"))
    assert sa["balanced_accuracy"] == sb["balanced_accuracy"] and sa["epsilon"] == sb["epsilon"]
    wall = {"inference_latency_ms"}  # host wall-clock time: the only figure allowed to differ
    assert [{k: v for k, v in d.items() if k not in wall} for d in sa["devices"].values()] == \
        [{k: v for k, v in d.items() if k not in wall} for d in sb["devices"].values()]


def test_stop_and_resume_and_refusals(tmp_path):
    r = runner(config(), tmp_path / "c")
    assert r.run(stop_after=1) is None
    with pytest.raises(CheckpointError, match="already holds a run"):
        runner(config(), tmp_path / "c").run()
    with pytest.raises(CheckpointError, match="different config"):
        runner(config(rounds=5), tmp_path / "c").run(resume=True)
    assert runner(config(), tmp_path / "c").run(resume=True)["rounds"] == 4


def test_seeds_run_once_each_and_report_confidence_intervals(tmp_path):
    from federation.runner import run_experiment
    from federation.stats import mean_ci

    cfg = config(rounds=2).__class__.from_dict({**config(rounds=2).to_dict(), "seeds": [0, 1, 2]})
    summary = run_experiment(cfg, tmp_path / "m", progress=False, client_factories=factories(),
                             positions_fn=lambda r, ph: POS)
    per_seed = [json.loads((tmp_path / "m" / f"seed-{s}" / "summary.json").read_text()) for s in (0, 1, 2)]
    assert [s["seed"] for s in per_seed] == [0, 1, 2]
    est = mean_ci([s["balanced_accuracy"] for s in per_seed])
    assert summary["kind"] == "multi-seed" and summary["seeds"] == [0, 1, 2]
    assert summary["balanced_accuracy"]["mean"] == pytest.approx(est.mean)
    assert summary["balanced_accuracy"]["lo"] == pytest.approx(est.lo)
    report = (tmp_path / "m" / "report.md").read_text()
    assert "± " in report
    assert "±" in compare_runs([tmp_path / "m"])
    # the same experiment with local-only training runs beside it, and the report puts it next to this run
    local = json.loads((tmp_path / "m" / "local-only" / "summary.json").read_text())
    assert local["paradigm"] == "local" and local["seeds"] == [0, 1, 2]
    lb = summary["local_baseline"]
    assert lb["run"] == "local-only" and lb["balanced_accuracy"] == local["balanced_accuracy"]
    diffs = [a - b for a, b in zip(summary["balanced_accuracy"]["values"], local["balanced_accuracy"]["values"],
                                   strict=True)]
    assert lb["difference"]["mean"] == pytest.approx(sum(diffs) / 3)
    assert "local-only training (same devices and rounds" in report and "Minus local-only training" in report
    # resuming a finished multi-seed run re-runs nothing
    again = run_experiment(cfg, tmp_path / "m", resume=True, progress=False, client_factories=factories(),
                           positions_fn=lambda r, ph: POS)
    assert again == summary


def test_poisoning_is_a_config_option_and_robust_aggregators_resist_it(tmp_path):
    # 1 of 6 synthetic devices boosts its update x50: FedAvg is dragged off, the median and the trimmed mean are not
    devices = [(f"d{i}", "meta_quest_3", ("rgb",), ("object_recognition",)) for i in range(6)]

    def run(agg, attack):
        cfg = ExperimentConfig.from_dict({
            "name": f"p-{agg}", "devices": [{"id": i, "profile": p, "tasks": list(t)} for i, p, _, t in devices],
            "phases": 1, "aggregator": {"name": agg}, "attack": attack,
            "rounds": {"paradigm": "centralized", "rounds": 4, "local_steps": 3}})
        facs = {i: (lambda i=i, s=s: SyntheticClient(i, "meta_quest_3", seed=s)) for s, (i, *_) in enumerate(devices)}
        return ExperimentRunner(cfg, tmp_path / f"{agg}-{attack['kind']}", client_factories=facs,
                                progress=False).run()

    attack = {"kind": "scale", "scale": 50.0, "devices": ["d2"]}
    clean, hit = (run("fedavg", a)["balanced_accuracy"] for a in ({"kind": "none"}, attack))
    assert hit < clean - 0.1
    for agg in ("median", "trimmed_mean"):
        c, h = (run(agg, a)["balanced_accuracy"] for a in ({"kind": "none"}, attack))
        assert h > c - 0.05, agg
    s = run("fedavg", {"kind": "label_flip", "fraction": 0.5})
    assert len(s["attack"]["devices"]) == 3
