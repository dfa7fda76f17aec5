"""``xrfed record``, ``xrfed scenarios``, ``xrfed devices``: headless data generation and what ships with xrfed."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

__all__ = ["register", "record", "GUARD_S"]

#: Default guard gap, seconds, between each episode's training and test parts (``xrfed record --guard-s``).
GUARD_S = 5.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record", help="run a scenario headlessly and write a per-device multimodal HDF5 dataset",
        description="Runs the embedded scene and writes one HDF5 file per device per episode plus manifest.json "
                    "(see docs/dataset.md). SCENARIO is a shipped scenario name or a YAML path.",
    )
    p.add_argument("scenario", help="shipped scenario name (see `xrfed scenarios`) or path to a YAML file")
    p.add_argument("--steps", type=int, default=300, help="steps per episode (default 300 = 30 s at 10 Hz)")
    p.add_argument("--episodes", type=int, default=1, help="episodes, each reset with seed+episode (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--size", type=int, default=None, help="render width=height in pixels (default: scenario's)")
    p.add_argument("--segmentation", action="store_true", help="also render segmentation masks (extra pass)")
    p.add_argument("--no-audio", action="store_true", help="skip audio simulation")
    p.add_argument("--preview", action="store_true", help="write contact sheets next to the data when done")
    p.add_argument("--overwrite", action="store_true", help="replace episode files that already exist in --out")
    p.add_argument("--guard-s", type=float, default=GUARD_S, metavar="S",
                   help=f"seconds before each episode's held-out test part that belong to neither train nor test, so "
                        f"labels that persist across the boundary do not leak (default {GUARD_S:g}; 0 = none; "
                        f"converted to steps at the scenario's step rate)")
    p.set_defaults(func=_run_record)

    s = sub.add_parser("scenarios", help="list, validate or show scenarios",
                       description="Without arguments lists the shipped scenarios; with a name/path validates it.")
    s.add_argument("scenario", nargs="?", help="validate and summarise this scenario")
    s.set_defaults(func=_run_scenarios)

    d = sub.add_parser("devices", help="list the device profiles (Table 1 of the seed paper)")
    d.add_argument("name", nargs="?", help="print one profile in full (JSON)")
    d.set_defaults(func=_run_devices)


def record(scenario: str, *, out: str | Path, steps: int, seed: int = 0, episodes: int = 1,
           size: int | None = None, segmentation: bool = False, audio: bool = True, progress: bool = True,
           overwrite: bool = False, guard_s: float = GUARD_S) -> Path:
    """Record ``episodes`` x ``steps`` of ``scenario`` into ``out``; returns the manifest path.

    Every episode's split holds out its last :data:`~bridge.record.TEST_FRACTION` as test with ``guard_s``
    seconds (rounded to whole steps at the scenario's ``step_hz``) before it in neither set; an episode too short
    for that guard is refused before anything is simulated.
    """
    from tqdm import tqdm

    from .embedded.backend import EmbeddedBackend
    from .errors import DatasetError
    from .record import TEST_FRACTION, DatasetWriter
    from .scenario import load_scenario
    from .splits import temporal_split

    if not (math.isfinite(guard_s) and guard_s >= 0):
        raise DatasetError(f"record: guard_s must be a number of seconds >= 0, got {guard_s!r}")
    sc = load_scenario(scenario)
    guard_steps = round(guard_s * sc.step_hz)
    try:
        temporal_split(steps, TEST_FRACTION, guard_steps)
    except DatasetError as exc:
        raise DatasetError(f"record: a guard of {guard_s:g} s is {guard_steps} steps at {sc.step_hz:g} Hz; {exc} "
                           f"(--guard-s / guard_s)") from None
    out = Path(out)
    manifest = None
    with EmbeddedBackend(sc, seed=seed, render_size=(size, size) if size else None,
                         segmentation=segmentation or None, audio=audio) as env:
        for ep in range(episodes):
            frames = env.reset(seed=seed + ep)
            with DatasetWriter(out, scenario_name=sc.name, scenario_yaml=sc.source_yaml, seed=seed + ep,
                               step_dt_s=env.step_dt_s, devices=env.devices, episode=ep, guard_steps=guard_steps,
                               overwrite=overwrite) as writer:
                bar = tqdm(total=steps, desc=f"record {sc.name} ep{ep}", unit="step", disable=not progress)
                writer.write(frames)
                bar.update(1)
                for _ in range(steps - 1):
                    writer.write(env.step())
                    bar.update(1)
                bar.close()
            manifest = writer.manifest_path
    return Path(manifest) if manifest else out / "manifest.json"


def _run_record(args: argparse.Namespace) -> int:
    if args.steps < 1 or args.episodes < 1:
        raise SystemExit("xrfed record: --steps and --episodes must be >= 1")
    manifest = record(args.scenario, out=args.out, steps=args.steps, seed=args.seed, episodes=args.episodes,
                      size=args.size, segmentation=args.segmentation, audio=not args.no_audio,
                      overwrite=args.overwrite, guard_s=args.guard_s)
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
