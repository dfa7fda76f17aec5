"""Flower benchmark: per-round wall time and bytes of one experiment on xrfed's runner, Flower's simulation engine
and Flower's deployment engine (a local SuperLink and one SuperNode per device).

``xrfed bench flower --json FILE`` runs the same synthetic experiment (``--devices`` tiny LoRA devices of mixed
profiles and ranks, ``--rounds`` centralized rounds, exact LoRA aggregation, one seed) three ways, in one process
and one sitting, and writes per engine: the wall time of every round (``RoundRecord.wall_time_s``: train messages
out to evaluation in), the mean over rounds after the first (the first also discovers the devices and, on Flower,
starts the workers), the whole run's wall time, xrfed's payload bytes per round (uplink/downlink, identical on all
engines) and the bytes of the Flower arrays that crossed (``.npy`` serialization: headers included); the ratios
Flower / xrfed of the steady per-round wall time; and whether the simulation's learning figures equal the runner's.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["add_bench_arguments", "run_flower_bench", "measure"]

_PROFILES = (("meta_quest_3", None), ("apple_vision_pro", 2), ("ray_ban_meta", None), ("hololens_2", 2),
             ("magic_leap_2", None), ("xreal_air", 2))


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    from bridge.cli import output_file
    from bridge.cliargs import int_range

    parser.add_argument("--json", metavar="FILE", default="bench_flower.json", type=output_file(),
                        help="where to write the figures")
    parser.add_argument("--devices", type=int_range(2, 6), default=3, help="devices (one Flower node each)")
    parser.add_argument("--rounds", type=int_range(2, 100), default=4, help="centralized rounds per engine")
    parser.add_argument("--local-steps", type=int_range(1, 10_000), default=3, help="local training steps per round")
    parser.add_argument("--no-deployment", action="store_true", help="skip the deployment engine (local processes)")


def _config(devices: int, rounds: int, local_steps: int) -> Any:
    from ..config import ExperimentConfig

    devs = [{"id": f"d{i}", "profile": p, "tasks": ["object_recognition"], **({"rank": r} if r else {})}
            for i, (p, r) in enumerate(_PROFILES[:devices])]
    return ExperimentConfig.from_dict({"name": "bench-flower", "devices": devs, "phases": 1,
                                       "aggregator": {"name": "exact_lora"},
                                       "rounds": {"rounds": rounds, "local_steps": local_steps}})


def _engine(rows: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    walls = [float(r["wall_time_s"]) for r in rows]
    steady = walls[1:] or walls
    out = {"round_wall_s": walls, "steady_round_wall_s": sum(steady) / len(steady), "run_wall_s": wall_s,
           "bytes_per_round": {lt: sum(r["links"][lt]["bytes"] for r in rows) / len(rows)
                               for lt in ("uplink", "downlink")}}
    if rows and "flower_uplink_bytes" in rows[0]["diagnostics"]:
        out["flower_array_bytes_per_round"] = {
            "uplink": sum(r["diagnostics"]["flower_uplink_bytes"] for r in rows) / len(rows),
            "downlink": sum(r["diagnostics"]["flower_downlink_bytes"] for r in rows) / len(rows)}
    return out


def _learning(rows: list[dict[str, Any]]) -> list[Any]:
    keep = ("status", "accuracy", "balanced_accuracy", "train_loss", "bytes_sent", "bytes_received")
    return [(r["round"], r["links"], {d: {k: v[k] for k in keep} for d, v in r["devices"].items()}) for r in rows]


def measure(devices: int, rounds: int, local_steps: int, deployment: bool = True) -> dict[str, Any]:
    import torch

    from ..runner import ExperimentRunner, read_metrics
    from .client_app import device_factories
    from .server_app import run_simulation

    cfg = _config(devices, rounds, local_steps)
    out: dict[str, Any] = {"host": {"python": platform.python_version(), "torch": torch.__version__,
                                    "flwr": __import__("flwr").__version__},
                           "experiment": {"devices": devices, "rounds": rounds, "local_steps": local_steps,
                                          "aggregator": "exact_lora", "paradigm": "centralized"}}
    with tempfile.TemporaryDirectory(prefix="xrfed-bench-flower-") as tmp:
        t0 = time.perf_counter()
        ExperimentRunner(cfg, Path(tmp) / "xrfed", client_factories=device_factories(cfg, "synthetic"),
                         progress=False).run()
        ref = read_metrics(Path(tmp) / "xrfed")
        out["xrfed_runner"] = _engine(ref, time.perf_counter() - t0)
        sim = run_simulation(cfg, devices="synthetic", num_cpus=2, client_cpus=1.0)
        rows = [r.to_json() for r in sim.records]
        out["flower_simulation"] = _engine(rows, sim.wall_s)
        out["simulation_figures_identical"] = _learning(rows) == _learning(ref)
        base = out["xrfed_runner"]["steady_round_wall_s"]
        out["ratio_simulation_vs_xrfed"] = out["flower_simulation"]["steady_round_wall_s"] / base
        if deployment:
            from .deploy import LocalFederation

            exp, rec = Path(tmp) / "exp.yaml", Path(tmp) / "records.json"
            exp.write_text(cfg.to_yaml())
            app = Path(__file__).resolve().parents[2] / "examples" / "flower_app"
            t0 = time.perf_counter()
            with LocalFederation([d.id for d in cfg.devices], Path(tmp) / "fed") as fed:
                fed.run(app, {"config": str(exp), "devices": "synthetic", "out": str(rec)}, timeout_s=1800)
            drows = json.loads(rec.read_text())["rounds"]
            out["flower_deployment"] = _engine(drows, time.perf_counter() - t0)
            out["deployment_figures_identical"] = _learning(drows) == _learning(ref)
            out["ratio_deployment_vs_xrfed"] = out["flower_deployment"]["steady_round_wall_s"] / base
    return out


def run_flower_bench(args: argparse.Namespace) -> int:
    res = measure(args.devices, args.rounds, args.local_steps, deployment=not args.no_deployment)
    Path(args.json).write_text(json.dumps(res, indent=2))
    for name in ("xrfed_runner", "flower_simulation", "flower_deployment"):
        if name in res:
            e = res[name]
            print(f"{name}: {e['steady_round_wall_s'] * 1e3:.0f} ms/round after the first "
                  f"(first {e['round_wall_s'][0]:.2f} s, run {e['run_wall_s']:.1f} s), "
                  f"uplink {e['bytes_per_round']['uplink']:.0f} B/round")
    print(f"simulation / xrfed: {res['ratio_simulation_vs_xrfed']:.1f}x, figures identical: "
          f"{res['simulation_figures_identical']}")
    if "ratio_deployment_vs_xrfed" in res:
        print(f"deployment / xrfed: {res['ratio_deployment_vs_xrfed']:.1f}x, figures identical: "
              f"{res['deployment_figures_identical']}")
    print(f"wrote {args.json}")
    return 0
