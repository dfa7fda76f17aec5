"""``xrfed preview`` and ``xrfed dataset info``: look at a recorded dataset without writing code."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register", "format_info", "MAX_PREVIEW_STEPS"]

#: most steps a contact sheet samples (``xrfed preview --n``): 64 columns are a 12 000-pixel-wide sheet
MAX_PREVIEW_STEPS = 64


def register(sub: argparse._SubParsersAction) -> None:
    from .cli import existing_dir, output_dir
    from .cliargs import int_range

    p = sub.add_parser(
        "preview", help="write contact sheets (and optional GIFs) of a recorded dataset",
        description="Writes one contact sheet per device file (RGB with the gaze point, depth in false colour, "
                    "audio waveform with RMS, step/room/labels/lux/events), one overview per episode with all "
                    "devices side by side, and with --gif an animated GIF per device.",
    )
    p.add_argument("dataset_dir", metavar="DATASET_DIR", type=existing_dir("dataset directory"),
                   help="directory holding manifest.json")
    p.add_argument("--out", default=None, type=output_dir(), help="output directory (default: DATASET_DIR/preview)")
    p.add_argument("--n", type=int_range(1, MAX_PREVIEW_STEPS), default=8,
                   help=f"steps sampled per contact sheet, 1-{MAX_PREVIEW_STEPS} (default 8)")
    p.add_argument("--gif", action="store_true", help="also write an animated GIF of RGB + gaze per device")
    p.set_defaults(func=_run_preview, validate=_check_dataset)

    d = sub.add_parser("dataset", help="inspect recorded datasets",
                       description="Summaries of datasets written by `xrfed record` (see docs/dataset.md).")
    dsub = d.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    info = dsub.add_parser("info", help="print the manifest summary: clients, steps, splits, label histograms",
                           description="Prints each client (device, user, profile, modalities), its files with "
                                       "step counts and train/test rows, and per-task label histograms.")
    info.add_argument("dataset_dir", metavar="DIR", type=existing_dir("dataset directory"),
                      help="directory holding manifest.json")
    info.set_defaults(func=_run_info, validate=_check_dataset)


def _check_dataset(args: argparse.Namespace) -> None:
    """Before any work: the directory holds a readable manifest (a DatasetError names what is wrong)."""
    from .record import load_manifest

    load_manifest(args.dataset_dir)


def _run_preview(args: argparse.Namespace) -> int:
    from .preview import write_preview

    out = Path(args.out) if args.out else Path(args.dataset_dir) / "preview"
    for path in write_preview(args.dataset_dir, out, n=args.n, gif=args.gif):
        print(path)
    return 0


def format_info(manifest: dict[str, Any]) -> str:
    """The human-readable summary printed by ``xrfed dataset info``."""
    lines = [
        f"scenario {manifest['scenario']}  format {manifest['format_version']}  step_dt_s {manifest['step_dt_s']}  "
        f"episodes {len(manifest.get('episodes', []))}  clients {len(manifest['clients'])}",
    ]
    totals: dict[str, dict[str, int]] = {t: {} for t in manifest["tasks"]}
    for c in manifest["clients"]:
        n = sum(f["n_steps"] for f in c["files"])
        rows = {part: sum(f["split"][part][1] - f["split"][part][0] for f in c["files"] if part in f["split"])
                for part in ("train", "guard", "test")}  # 1.0 manifests have no guard
        lines.append(f"  {c['client_id']}: user {c['user_id']}, profile {c['profile']}, "
                     f"modalities {','.join(c['modalities'])}; {n} steps ({rows['train']} train, "
                     + (f"{rows['guard']} guard, " if rows["guard"] else "") + f"{rows['test']} test)")
        for f in c["files"]:
            guard = f["split"].get("guard", [0, 0])
            lines.append(f"    {f['path']}: {f['n_steps']} steps, train rows {f['split']['train']}, "
                         + (f"guard rows {guard}, " if guard[1] > guard[0] else "")
                         + f"test rows {f['split']['test']}")
            for task, counts in f.get("label_counts", {}).items():
                for cls, k in counts.items():
                    totals.setdefault(task, {})[cls] = totals.get(task, {}).get(cls, 0) + k
    lines.append("label histograms (all clients, all steps):")
    for task, counts in totals.items():
        if not counts:
            lines.append(f"  {task}: no labels")
            continue
        order = manifest["tasks"].get(task, [])
        ranked = sorted(counts.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
        lines.append(f"  {task}: " + ", ".join(f"{cls}={k}" for cls, k in ranked))
    return "\n".join(lines)


def _run_info(args: argparse.Namespace) -> int:
    from .record import load_manifest

    print(format_info(load_manifest(args.dataset_dir)))
    return 0
