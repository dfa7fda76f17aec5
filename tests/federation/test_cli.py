import argparse

from federation import cli
from federation.config import AggregatorConfig, DeviceConfig, ExperimentConfig, RoundsConfig
from federation.runner import ExperimentRunner
from federation.synthetic import SyntheticClient


def parser():
    p = argparse.ArgumentParser(prog="xrfed")
    cli.register(p.add_subparsers(dest="command", required=True))
    return p


def test_register_adds_run_compare_demo():
    args = parser().parse_args(["run", "configs/demo.yaml", "--out", "runs/x", "--resume"])
    assert args.func is cli.run_experiment and args.resume and args.out == "runs/x"
    assert parser().parse_args(["compare", "a", "b"]).runs == ["a", "b"]
    assert parser().parse_args(["demo", "--rounds", "2"]).func is cli.run_demo
    assert cli.DEMO_CONFIG.is_file()


def test_compare_prints_runs_side_by_side(tmp_path, capsys):
    for paradigm in ("centralized", "decentralized"):
        cfg = ExperimentConfig(name=f"r-{paradigm}", devices=[DeviceConfig("a", "meta_quest_3"),
                                                              DeviceConfig("b", "hololens_2")],
                               aggregator=AggregatorConfig("fedavg"), phases=1,
                               rounds=RoundsConfig(paradigm=paradigm, rounds=2, local_steps=2, radio_range_m=5.0))
        facs = {d: (lambda d=d, s=s: SyntheticClient(d, "meta_quest_3", seed=s)) for s, d in enumerate("ab")}
        ExperimentRunner(cfg, tmp_path / paradigm, client_factories=facs,
                         positions_fn=lambda r, ph: {"a": (0, 0, 1.6), "b": (1, 0, 1.6)}, progress=False).run()
    out = tmp_path / "cmp.md"
    args = parser().parse_args(["compare", str(tmp_path / "centralized"), str(tmp_path / "decentralized"),
                                "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    lines = printed.strip().splitlines()
    assert lines[0].startswith("| run | paradigm |") and len(lines) == 4
    assert "r-decentralized" in lines[3] and out.read_text().strip() == printed.strip()
