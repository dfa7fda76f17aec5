"""ML-Agents bridge throughput: steps/s and per-step latency through the stand-in player + real UnityEnvironment.

For each device count and image size the same embedded scene runs twice: in-process (``EmbeddedBackend.step``)
and served by the stand-in player in a launched subprocess (as a Unity build would be), read through
:class:`UnityBackend` (mlagents-envs 1.1.0; the protobuf implementation in use is recorded). The two are timed in
alternating blocks of five steps, so both see the same load on a shared machine. ``overhead_ms_per_step`` is the
difference of the means: what the ML-Agents path costs on top of simulating the scene;
``fraction_of_embedded_steps_per_s`` is the ML-Agents path's steps/s over the embedded scene's (issue 17's target:
>= 0.5 at 8 devices 128 x 128, >= 0.6 at 1 device 84 x 84).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_bench_arguments", "run_bridge_bench", "bench_bridge"]


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli import int_list, output_file, scenario_arg, seed_arg
    from ..cliargs import int_range

    p.add_argument("--json", required=True, type=output_file(), help="write the figures to this JSON file")
    p.add_argument("--scenario", default="default", type=scenario_arg, help="scenario (default: default)")
    p.add_argument("--devices", default=[1, 8], type=int_list(1, 64, max_items=8),
                   help="comma-separated device counts, each 1-64 (default 1,8)")
    p.add_argument("--sizes", default=[84, 128], type=int_list(16, 2048, max_items=8),
                   help="comma-separated square image sizes, each 16-2048 (default 84,128)")
    p.add_argument("--steps", type=int_range(1, 100_000), default=30,
                   help="measured steps per configuration, 1-100000 (default 30)")
    p.add_argument("--warmup", type=int_range(0, 10_000), default=5, help="unmeasured steps first (default 5)")
    p.add_argument("--seed", type=seed_arg(), default=0, help="scene seed (default 0)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _interleaved(steps_a: Any, steps_b: Any, warmup: int, steps: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-step seconds of ``steps_a`` and ``steps_b``, measured in alternating blocks of ``block`` steps.

    On a shared machine the load changes from second to second; alternating blocks exposes both paths to the same
    load, so their ratio holds even when the absolute figures drift."""
    for _ in range(warmup):
        steps_a()
        steps_b()
    out_a, out_b = np.empty(steps), np.empty(steps)
    for start in range(0, steps, block):
        for fn, out in ((steps_a, out_a), (steps_b, out_b)):
            for i in range(start, min(start + block, steps)):
                t0 = time.perf_counter()
                fn()
                out[i] = time.perf_counter() - t0
    return out_a, out_b


def _summary(dt: np.ndarray) -> dict[str, float]:
    return {"steps_per_s": float(len(dt) / dt.sum()), "ms_per_step_mean": float(1e3 * dt.mean()),
            "ms_per_step_p50": float(1e3 * np.percentile(dt, 50)), "ms_per_step_p95": float(1e3 * np.percentile(dt, 95))}


def _one(scenario: str, n: int, size: int, steps: int, warmup: int, seed: int, workdir: Path) -> dict[str, Any]:
    from ..backend import ShowPrediction
    from ..embedded.backend import EmbeddedBackend
    from .backend import UnityBackend
    from .launcher import write_launcher

    exe = write_launcher(workdir, name=f"bench_{n}_{size}",
                         args=[scenario, "--size", str(size), "--max-avatars", str(n)])
    embedded = EmbeddedBackend(scenario, seed=seed, render_size=(size, size), max_avatars=n)
    unity = UnityBackend(str(exe.with_suffix("")), base_port=_free_port(), timeout_wait_s=120, seed=seed)
    try:
        embedded.reset(seed=seed)
        devices = len(embedded.devices)
        frames = unity.reset(seed=seed)
        first = next(iter(frames))

        def step() -> None:
            # One prediction overlay per step, so the round trip frame -> prediction -> scene is measured too.
            unity.step([ShowPrediction(first, "object_recognition", "mug", 0.9)])

        emb, ml = _interleaved(embedded.step, step, warmup, steps, block=5)
        rtt = list(unity.stats.frame_to_scene_ms)
    finally:
        unity.close()
        embedded.close()
    return {
        "devices": devices, "size_px": size, "steps": steps,
        "embedded_in_process": _summary(emb), "mlagents_path": _summary(ml),
        "overhead_ms_per_step": float(1e3 * (ml.mean() - emb.mean())),
        "ratio_vs_embedded": float(ml.mean() / emb.mean()),
        "fraction_of_embedded_steps_per_s": float(emb.mean() / ml.mean()),
        "frame_to_scene_ms_p50": float(np.percentile(rtt, 50)) if rtt else None,
    }


def bench_bridge(*, scenario: str = "default", devices: tuple[int, ...] = (1, 8), sizes: tuple[int, ...] = (84, 128),
                 steps: int = 30, warmup: int = 5, seed: int = 0) -> dict[str, Any]:
    """Run every (devices, size) configuration; returns the JSON-ready figures."""
    import mlagents_envs

    load_start = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="xrfed-bench-bridge-") as tmp:
        for n in devices:
            for size in sizes:
                results.append(_one(scenario, n, size, steps, warmup, seed, Path(tmp)))
    from google.protobuf.internal import api_implementation

    return {
        "benchmark": "bridge", "scenario": scenario, "results": results,
        "environment": {"python": sys.version.split()[0], "platform": platform.platform(),
                        "mlagents_envs": mlagents_envs.__version__,
                        "protobuf_implementation": api_implementation.Type(),
                        "load_average_1m": [load_start, os.getloadavg()[0]],
                        "cpu_count": os.cpu_count()},
    }


def run_bridge_bench(args: argparse.Namespace) -> int:
    out = bench_bridge(scenario=args.scenario, devices=tuple(args.devices), sizes=tuple(args.sizes), steps=args.steps,
                       warmup=args.warmup, seed=args.seed)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    for r in out["results"]:
        print(f"{r['devices']} devices {r['size_px']}px: embedded {r['embedded_in_process']['steps_per_s']:.1f} "
              f"steps/s, ML-Agents path {r['mlagents_path']['steps_per_s']:.1f} steps/s "
              f"({r['mlagents_path']['ms_per_step_mean']:.1f} ms/step, +{r['overhead_ms_per_step']:.1f} ms, "
              f"{100 * r['fraction_of_embedded_steps_per_s']:.0f}% of embedded)")
    print(f"wrote {args.json} (1-minute load average {out['environment']['load_average_1m'][0]:.1f} at the start, "
          f"{out['environment']['load_average_1m'][1]:.1f} at the end, {out['environment']['cpu_count']} CPUs)")
    return 0
