"""``xrfed record``, ``xrfed scenarios``, ``xrfed devices``: headless data generation and what ships with xrfed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cli import output_dir, scenario_arg, seed_arg
from .cliargs import float_range, int_range
from .recording import EXECUTORS, GUARD_S, MAX_EPISODES, MAX_GUARD_S, MAX_STEPS, MAX_WORKERS

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record", help="run a scenario headlessly and write a per-device multimodal HDF5 dataset",
        description="Runs the embedded scene and writes one HDF5 file per device per episode plus manifest.json "
                    "(see docs/dataset.md). SCENARIO is a shipped scenario name or a YAML path.",
    )
    p.add_argument("scenario", type=scenario_arg,
                   help="shipped scenario name (see `xrfed scenarios`) or path to a YAML file")
    p.add_argument("--steps", type=int_range(1, MAX_STEPS), default=300,
                   help=f"steps per episode, 1-{MAX_STEPS} (default 300 = 30 s at 10 Hz)")
    p.add_argument("--episodes", type=int_range(1, MAX_EPISODES), default=1,
                   help=f"episodes, each reset with seed+episode, 1-{MAX_EPISODES} (default 1)")
    p.add_argument("--seed", type=seed_arg(), default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True, type=output_dir(), help="output directory")
    p.add_argument("--size", type=int_range(16, 2048), default=None,
                   help="render width=height in pixels, 16-2048 (default: the scenario's)")
    p.add_argument("--segmentation", action="store_true", help="also render segmentation masks (extra pass)")
    p.add_argument("--no-audio", action="store_true", help="skip audio simulation")
    p.add_argument("--preview", action="store_true", help="write contact sheets next to the data when done")
    p.add_argument("--overwrite", action="store_true", help="replace episode files that already exist in --out")
    p.add_argument("--guard-s", type=float_range(0.0, MAX_GUARD_S), default=GUARD_S, metavar="S",
                   help=f"seconds before each episode's held-out test part that belong to neither train nor test, so "
                        f"labels that persist across the boundary do not leak (default {GUARD_S:g}; 0 = none; "
                        f"converted to steps at the scenario's step rate)")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="where to simulate: local = this process, episode after episode (default); ray = episodes "
                        "sharded across Ray workers, same files and manifest (see docs/dataset.md)")
    p.add_argument("--ray-address", type=_ray_address, default=None, metavar="ADDR",
                   help="with --executor ray: join the Ray cluster at host:port (or ray://host:port, auto); default: "
                        "start a local Ray bound to 127.0.0.1. --out must be on a filesystem every node mounts")
    p.add_argument("--workers", type=int_range(1, MAX_WORKERS), default=None, metavar="N",
                   help=f"with --executor ray: Ray workers, one CPU each, 1-{MAX_WORKERS} (default: the free CPUs "
                        f"of the cluster, at most one per episode)")
    p.set_defaults(func=_run_record, validate=_check_record)

    s = sub.add_parser("scenarios", help="list, validate or show scenarios",
                       description="Without arguments lists the shipped scenarios; with a name/path validates it.")
    s.add_argument("scenario", nargs="?", type=scenario_arg, help="validate and summarise this scenario")
    s.set_defaults(func=_run_scenarios)

    d = sub.add_parser("devices", help="list the device profiles (Table 1 of the seed paper)")
    d.add_argument("name", nargs="?", help="print one profile in full (JSON)")
    d.set_defaults(func=_run_devices)


def _ray_address(text: str) -> str:
    """``--ray-address``: host:port, ray://host:port, auto or local (whether it answers is checked at run time)."""
    from .errors import TransportError
    from .record_ray import check_ray_address

    try:
        check_ray_address(text, connect=False)
    except TransportError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


_ray_address.__name__ = "Ray address"


def _check_record(args: argparse.Namespace) -> None:
    from .recording import check_recording

    check_recording(args.scenario, steps=args.steps, episodes=args.episodes, seed=args.seed, size=args.size,
                    guard_s=args.guard_s, executor=args.executor, ray_address=args.ray_address,
                    workers=args.workers)


def _run_record(args: argparse.Namespace) -> int:
    from .recording import record

    manifest = record(args.scenario, out=args.out, steps=args.steps, seed=args.seed, episodes=args.episodes,
                      size=args.size, segmentation=args.segmentation, audio=not args.no_audio,
                      overwrite=args.overwrite, guard_s=args.guard_s, executor=args.executor,
                      ray_address=args.ray_address, workers=args.workers)
    print(f"wrote {manifest}")
    if args.preview:
        from .preview import write_preview

        for p in write_preview(args.out, Path(args.out) / "preview"):
            print(f"preview: {p}")
    return 0


def _run_scenarios(args: argparse.Namespace) -> int:
    from .scenario import load_scenario, scenario_names

    if not args.scenario:
        for n in scenario_names():
            sc = load_scenario(n)
            print(f"{n:10s} {len(sc.rooms)} rooms, {len(sc.objects):2d} objects, {len(sc.avatars)} avatars  "
                  f"{sc.description}")
        return 0
    sc = load_scenario(args.scenario)
    print(f"{sc.name}: valid. {sc.description}")
    print(f"  step {sc.step_hz:g} Hz, audio {sc.audio_hz} Hz, render {sc.render.width_px}x{sc.render.height_px}")
    for r in sc.rooms:
        print(f"  room {r.name} ({r.type}) {r.size_m[0]:g} x {r.size_m[1]:g} x {r.size_m[2]:g} m, doors {list(r.doors)}")
    for a in sc.avatars:
        print(f"  avatar {a.name} wears {a.device}, script {a.script}")
    return 0


def _run_devices(args: argparse.Namespace) -> int:
    from .devices import device_names, get_device

    if args.name:
        print(json.dumps(get_device(args.name).to_dict(), indent=2))
        return 0
    print(f"{'profile':24s} {'type':14s} {'modalities':44s} {'compute':>7s} {'mem GB':>6s} {'uplink uJ/bit':>13s}")
    for n in device_names():
        d = get_device(n)
        print(f"{n:24s} {d.type:14s} {','.join(d.modalities):44s} {d.relative_compute:7.2f} {d.memory_gb:6.0f} "
              f"{d.uplink_uj_per_bit:13.3f}")
    return 0
