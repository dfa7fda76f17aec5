"""Scale benchmark: round time, aggregation time, bytes and memory from 8 to 256 devices, local vs Ray executor.

``xrfed bench scale --json FILE`` runs federated rounds of the synthetic workload (:mod:`federation.synthetic`: a
tiny LoRA model on Gaussian data, so that nothing renders and the figures isolate the federation machinery) for
each device count, executor and aggregator. Every point runs in a process of its own, so its memory figures are
not inflated by earlier points: after the set-up and one warm-up round the driver's resident set is the
*baseline*; before each timed round the peak (``VmHWM``) is reset to the current resident set
(``/proc/self/clear_refs``), and the peak after the round minus the baseline is what the round needed.

Per point and round: wall time, aggregation time (the strategy's ``add`` + ``result``), uplink and downlink
bytes, driver peak RSS and its growth above the baseline; with Ray, how many actor processes hosted the devices
(``--devices-per-actor``, automatic by default: an actor per Ray CPU) and every actor's RSS and PSS (torch's pages
are shared between actors, PSS splits them fairly). Then, per series, the growth exponent of round time and
driver memory in the number of devices (least squares on log-log over the counts from ``--fit-from`` on), what
the fit predicts for 10 000 devices (an extrapolation), and the Ray / local round-time ratio at the smallest count
measured with both. Ray runs on a local Ray started by the point (``--ray-cpus`` CPUs shared by the actors);
counts whose actors would not fit in ``--ray-memory-fraction`` of the available memory (measured per-actor
footprint) are skipped and said so.

What the memory figures measure: under the local executor the devices live in the driver, so its growth is the
devices' own allocations plus the aggregator's; under Ray the driver holds no device, so its peak RSS is the round
engine's and the aggregator's alone -- the driver-memory target is judged on the Ray series.

Targets (issue 15): round time exponent <= 1.1 and driver peak RSS exponent <= 0.5 from 32 to 256 devices;
Ray / local at 8 devices <= 1.5.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_bench_arguments", "run_scale_bench", "measure_point", "loglog_fit", "summarize",
           "EXTRAPOLATE_TO"]

#: the device count the fits are extrapolated to
EXTRAPOLATE_TO = 10_000
_EXECUTORS = ("local", "ray")
_PAGE = 4096
_PEAK_METHOD = ("; VmHWM reset to the current RSS before each round (/proc/self/clear_refs 5); growth = peak - RSS "
                "after a warm-up round, at least one page")


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    from bridge.cli import output_file
    from bridge.cliargs import float_range, int_range

    from .strategies import strategy_names

    parser.add_argument("--json", metavar="FILE", default="bench_scale.json", type=output_file(),
                        help="where to write the figures (a log-log plot goes next to it, .png)")
    parser.add_argument("--devices", type=int_range(2, 4096), nargs="+", default=[8, 32, 64, 128, 256],
                        help="device counts to run")
    parser.add_argument("--executors", choices=_EXECUTORS, nargs="+", default=list(_EXECUTORS),
                        help="executors to compare")
    parser.add_argument("--strategies", choices=strategy_names(), nargs="+", default=["exact_lora", "median"],
                        help="aggregators on the local executor (a streaming one and a buffering one); Ray runs "
                             "the first")
    parser.add_argument("--rounds", type=int_range(1, 1000), default=3, help="timed rounds per point")
    parser.add_argument("--local-steps", type=int_range(1, 1000), default=1, help="local training steps per round")
    parser.add_argument("--width", type=int_range(2, 4096), default=128,
                        help="adapted layer width (in = hidden): the update size grows as width^2 in the "
                             "product space")
    parser.add_argument("--rank", type=int_range(1, 256), default=4, help="LoRA rank of every device")
    parser.add_argument("--fit-from", type=int_range(2, 4096), default=32,
                        help="fit the exponents over the device counts >= this")
    parser.add_argument("--ray-cpus", type=int_range(1, 1024), default=2,
                        help="CPUs of the local Ray the bench starts (the actors share them)")
    parser.add_argument("--devices-per-actor", type=int_range(0, 4096), default=0,
                        help="devices one Ray actor process hosts (0: automatic, an actor per Ray CPU)")
    parser.add_argument("--ray-memory-fraction", type=float_range(0.01, 0.95), default=0.5,
                        help="skip Ray counts whose actors would need more than this fraction of the available "
                             "memory")
    parser.add_argument("--in-process", action="store_true",
                        help="run every point in this process (fast, for tests: the per-round peak is still reset "
                             "before each round, but the baseline carries earlier points' memory)")
    parser.add_argument("--point-timeout-s", type=float_range(10.0, 86_400.0), default=1800.0,
                        help="give up on one point after this many seconds")


# -- memory ------------------------------------------------------------------------------------------------------
def _status_kib(field: str, pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _rss_bytes(pid: int | str = "self") -> int:
    kib = _status_kib("VmRSS", pid)
    return 0 if kib is None else kib * 1024


def _reset_peak() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux >= 4.0); False when the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _pss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _actor_pids() -> list[int]:
    """This process's Ray actor workers: descendants whose title is ``ray::_GroupActor...`` (other Ray clusters on the
    machine are not descendants)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith("ray::") and "Actor" in cmd:
            out.append(pid)
    return sorted(out)


# -- one point (in a process of its own) -----------------------------------------------------------------------
def measure_point(executor: str, devices: int, strategy: str, rounds: int, local_steps: int, width: int,
                  rank: int, ray_cpus: int = 2, devices_per_actor: int = 0) -> dict[str, Any]:
    """Run ``rounds`` timed rounds (after one warm-up round) of ``devices`` synthetic devices; see the module
    docstring for the figures. Meant to run in a fresh process (:func:`_run_point`)."""
    import functools

    import torch

    from .client import LocalExecutor
    from .config import RoundsConfig
    from .rounds import RoundEngine
    from .strategies import make_strategy
    from .synthetic import SyntheticClient

    torch.set_num_threads(1)
    factories = {f"d{i}": functools.partial(SyntheticClient, f"d{i}", "meta_quest_3", modalities=("rgb", "audio"),
                                            rank=rank, hidden=width, in_dim=width, seed=i) for i in range(devices)}
    t0 = time.perf_counter()
    ex: Any
    if executor == "local":
        ex = LocalExecutor([f() for f in factories.values()])
    else:
        import ray

        from .client import RayExecutor

        if not ray.is_initialized():  # a Ray of our own ("local"), never a cluster another user started
            ray.init(address="local", num_cpus=int(ray_cpus), include_dashboard=False, log_to_driver=False,
                     object_store_memory=256 * 1024 * 1024)
        ex = RayExecutor(factories, torch_threads=1, devices_per_actor=devices_per_actor or None)
    setup_s = time.perf_counter() - t0
    try:
        eng = RoundEngine(ex, make_strategy(strategy), RoundsConfig(local_steps=local_steps), seed=0)
        agg_s = [0.0]
        held = [0]
        real = eng.strategy.accumulator

        def timed_accumulator(context=None):  # the strategy's own accumulator, its add/result timed
            acc = real(context)
            add, result = acc.add, acc.result

            def timed_add(update):
                t = time.perf_counter()
                add(update)
                agg_s[0] += time.perf_counter() - t

            def timed_result():
                held[0] = acc.held_updates
                t = time.perf_counter()
                out = result()
                agg_s[0] += time.perf_counter() - t
                return out

            acc.add, acc.result = timed_add, timed_result  # type: ignore[method-assign]
            return acc

        eng.strategy.accumulator = timed_accumulator  # type: ignore[method-assign]
        eng.run_round(0)  # warm-up: first-call allocations, the initial sync
        baseline = _rss_bytes()
        per_round = []
        for r in range(1, rounds + 1):
            reset = _reset_peak()
            agg_s[0] = 0.0
            rec = eng.run_round(r)
            peak = (_status_kib("VmHWM") or 0) * 1024
            per_round.append({
                "round": r, "wall_s": rec.wall_time_s, "aggregation_s": agg_s[0],
                "uplink_bytes": int(rec.links["uplink"]["bytes"]), "downlink_bytes": int(rec.links["downlink"]["bytes"]),
                "participants": rec.counts.get("participant", 0), "updates_held_by_aggregator": held[0],
                "driver_peak_rss_bytes": peak, "driver_rss_growth_bytes": max(0, peak - baseline),
                "peak_reset": reset,
            })
        actors: list[dict[str, int | None]] = []
        groups: list[int] = []
        if executor == "ray":
            actors = [{"rss_bytes": _rss_bytes(p), "pss_bytes": _pss_bytes(p)} for p in _actor_pids()]
            groups = [len(g) for g in ex.groups]
    finally:
        ex.close()
    update_bytes = int(sum(t.numel() * t.element_size() for t in factories["d0"]().shared_state().values()))
    return {"executor": executor, "devices": devices, "strategy": strategy, "setup_s": setup_s,
            "update_bytes": update_bytes, "driver_baseline_rss_bytes": baseline, "rounds": per_round,
            "actors": actors, "devices_per_actor": groups}


def _run_point(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """:func:`measure_point` in a fresh Python process (its own peak RSS); a failure becomes ``{"error": ...}``."""
    code = ("import json, sys; from federation.bench_scale import measure_point; "
            "print('XRFED-POINT ' + json.dumps(measure_point(**json.loads(sys.argv[1]))))")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    try:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                              timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout_s:g} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("XRFED-POINT "):
            return dict(json.loads(line[len("XRFED-POINT "):]))
    tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:] or [f"exit status {proc.returncode}"]
    return {**spec, "error": tail[0][:300]}


# -- fits --------------------------------------------------------------------------------------------------------
def loglog_fit(xs: list[float], ys: list[float]) -> dict[str, float] | None:
    """Least squares of ``log y = log a + b log x``: ``{"exponent": b, "coefficient": a, "points": n}``; None with
    fewer than two distinct x or any non-positive value."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len({x for x, _ in pts}) < 2 or len(pts) != len(xs):
        return None
    lx = [math.log(x) for x, _ in pts]
    ly = [math.log(y) for _, y in pts]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    b = sum((u - mx) * (v - my) for u, v in zip(lx, ly, strict=True)) / sum((u - mx) ** 2 for u in lx)
    return {"exponent": b, "coefficient": math.exp(my - b * mx), "points": float(len(pts))}


def _mean(vals: list[float]) -> float:
    return sum(vals) / len(vals)


def _median(vals: list[float]) -> float:
    v = sorted(vals)
    return v[len(v) // 2] if len(v) % 2 else 0.5 * (v[len(v) // 2 - 1] + v[len(v) // 2])


def _series(points: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in points:
        if "error" in p or "skipped" in p:
            continue
        key = f"{p['executor']}/{p['strategy']}"
        rs = p["rounds"]
        out.setdefault(key, {})[str(p["devices"])] = {
            # medians: on a shared machine one round can be slowed by other jobs
            "round_wall_s": _median([r["wall_s"] for r in rs]),
            "aggregation_s": _median([r["aggregation_s"] for r in rs]),
            "driver_peak_rss_bytes": max(r["driver_peak_rss_bytes"] for r in rs),
            # RSS moves by pages: a growth below one page is one page (and a log-log fit stays defined)
            "driver_rss_growth_bytes": max(_PAGE, *(r["driver_rss_growth_bytes"] for r in rs)),
            "uplink_bytes": _mean([r["uplink_bytes"] for r in rs]),
            "downlink_bytes": _mean([r["downlink_bytes"] for r in rs]),
            "actor_pss_bytes": _mean([a["pss_bytes"] for a in p["actors"] if a["pss_bytes"]]) if p["actors"]
            else None,
        }
    return out


def summarize(points: list[dict[str, Any]], fit_from: int) -> dict[str, Any]:
    """Per series (executor/strategy): the exponents fitted over the counts >= ``fit_from``, their predictions
    for :data:`EXTRAPOLATE_TO` devices, and the Ray / local round-time ratio."""
    series = _series(points)
    fits: dict[str, Any] = {}
    for key, by_n in series.items():
        ns = sorted(int(n) for n in by_n if int(n) >= fit_from)
        f: dict[str, Any] = {"devices": ns}
        for metric in ("round_wall_s", "driver_peak_rss_bytes", "driver_rss_growth_bytes", "aggregation_s"):
            fit = loglog_fit([float(n) for n in ns], [float(by_n[str(n)][metric]) for n in ns])
            f[metric] = fit
            if fit is not None:
                f[f"{metric}_at_{EXTRAPOLATE_TO}_extrapolated"] = fit["coefficient"] * EXTRAPOLATE_TO ** fit["exponent"]
        fits[key] = f
    ratio: dict[str, Any] | None = None
    local = {k.split("/", 1)[1]: v for k, v in series.items() if k.startswith("local/")}
    for key, by_n in series.items():
        if not key.startswith("ray/"):
            continue
        strat = key.split("/", 1)[1]
        common = sorted(set(by_n) & set(local.get(strat, {})), key=int)
        if common:
            n = common[0]
            ratio = {"devices": int(n), "strategy": strat,
                     "ratio": by_n[n]["round_wall_s"] / local[strat][n]["round_wall_s"]}
    return {"series": series, "fits": fits, "ray_over_local": ratio}


def _targets(summary: dict[str, Any], strategies: list[str]) -> dict[str, Any]:
    """The issue's targets on the streaming aggregator's series (the first strategy)."""
    out: dict[str, Any] = {}
    s = strategies[0]
    for ex in _EXECUTORS:
        f = summary["fits"].get(f"{ex}/{s}")
        if not f:
            continue
        t = f.get("round_wall_s")
        # the local executor's devices live in the driver: its growth above the baseline is the devices' own
        # allocations plus the aggregator's; a Ray driver holds no device, its whole peak is the engine's and
        # the aggregator's -- the target is about the latter
        mem_key = "driver_rss_growth_bytes" if ex == "local" else "driver_peak_rss_bytes"
        m = f.get(mem_key)
        g = f.get("driver_rss_growth_bytes")
        out[ex] = {
            "driver_memory_measures": (
                "driver RSS growth above the post-warm-up baseline; the devices live in the driver, so this is "
                "their own allocations plus the aggregator's (reported, not the target)" if ex == "local" else
                "driver peak RSS; the driver holds no device, so this is the round engine and aggregator alone "
                "(the target)"),
            "driver_rss_growth_exponent": None if g is None else g["exponent"],
            "round_time_exponent": None if t is None else t["exponent"],
            "round_time_target_max": 1.1,
            "round_time_met": None if t is None else t["exponent"] <= 1.1,
            "driver_memory_series": mem_key,
            "driver_memory_exponent": None if m is None else m["exponent"],
            "driver_memory_target_max": 0.5,
            "driver_memory_met": None if m is None else m["exponent"] <= 0.5,
            "driver_memory_target_applies": ex == "ray",
        }
    r = summary["ray_over_local"]
    out["ray_over_local"] = None if r is None else {**r, "target_max": 1.5, "met": r["ratio"] <= 1.5}
    return out


def _plot(summary: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, by_n in summary["series"].items():
        ns = sorted(int(n) for n in by_n)
        axes[0].loglog(ns, [by_n[str(n)]["round_wall_s"] for n in ns], "o-", label=key)
        axes[1].loglog(ns, [max(1, by_n[str(n)]["driver_peak_rss_bytes"]) / 2**20 for n in ns], "o-",
                       label=f"{key} peak")
        axes[1].loglog(ns, [max(1, by_n[str(n)]["driver_rss_growth_bytes"]) / 2**20 for n in ns], "x--",
                       label=f"{key} growth")
    axes[0].set(xlabel="devices", ylabel="round wall time (s)", title="round time")
    axes[1].set(xlabel="devices", ylabel="driver RSS (MiB)", title="driver memory (peak, growth over baseline)")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("xrfed bench scale (shared 2-core machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _available_bytes() -> int:
    kib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    kib = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return (kib or 0) * 1024


def run_scale_bench(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    strategies = list(dict.fromkeys(args.strategies))
    devices = sorted(set(args.devices))
    specs: list[dict[str, Any]] = []
    for ex in args.executors:
        for s in (strategies if ex == "local" else strategies[:1]):
            for n in devices:
                specs.append({"executor": ex, "devices": n, "strategy": s, "rounds": args.rounds,
                              "local_steps": args.local_steps, "width": args.width, "rank": args.rank,
                              **({"ray_cpus": args.ray_cpus} if ex == "ray" else {})})
    points: list[dict[str, Any]] = []
    actor_bytes: float | None = None  # the largest measured per-actor footprint (PSS) so far
    bar = tqdm(specs, desc="bench scale", unit="point")
    for spec in bar:
        bar.set_postfix_str(f"{spec['executor']} {spec['strategy']} {spec['devices']} devices")
        if spec["executor"] == "ray":
            spec["devices_per_actor"] = args.devices_per_actor
            if actor_bytes is not None:
                # the automatic rule on the bench's own Ray: an actor per Ray CPU
                per = args.devices_per_actor or -(-spec["devices"] // min(spec["devices"], args.ray_cpus))
                actors = -(-spec["devices"] // per)
                need, budget = actors * actor_bytes, args.ray_memory_fraction * _available_bytes()
                if need > budget:
                    points.append({**spec, "skipped": f"{actors} actors x {actor_bytes / 2**20:.0f} MiB would "
                                                      f"need {need / 2**30:.1f} GiB, over {budget / 2**30:.1f} GiB"})
                    continue
        p = measure_point(**spec) if args.in_process else _run_point(spec, args.point_timeout_s)
        if p.get("actors"):
            pss = [a["pss_bytes"] or a["rss_bytes"] for a in p["actors"]]
            actor_bytes = max(actor_bytes or 0.0, max(float(x) for x in pss if x))
        points.append(p)
    summary = summarize(points, args.fit_from)
    import torch

    out = {
        "host": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                 "note": "measured on a shared 2-core machine (other engineers' jobs ran alongside): absolute "
                         "times are noisy; ratios and exponents measured within this one run are what counts"},
        "workload": {"model": "federation.synthetic.SyntheticClient", "modalities": ["rgb", "audio"],
                     "width": args.width, "rank": args.rank, "local_steps": args.local_steps, "rounds": args.rounds,
                     "strategies": strategies, "ray_cpus": args.ray_cpus,
                     "devices_per_actor": args.devices_per_actor or "automatic (an actor per Ray CPU)",
                     "peak_rss_method": ("this process for every point (--in-process)" if args.in_process
                                         else "a process per point") + _PEAK_METHOD},
        "points": points,
        **summary,
        "fit_from": args.fit_from,
        "extrapolated_to": EXTRAPOLATE_TO,
        "extrapolation_note": f"predictions for {EXTRAPOLATE_TO} devices are extrapolated from the fitted power "
                              "laws, not measured",
        "targets": _targets(summary, strategies),
    }
    path = Path(args.json)
    path.write_text(json.dumps(out, indent=2))
    png = path.with_suffix(".png")
    plotted = _plot(summary, png)
    for p in points:
        if "error" in p or "skipped" in p:
            print(f"{p['executor']} {p['strategy']} {p['devices']}: {p.get('error') or p.get('skipped')}")
    for key, by_n in summary["series"].items():
        row = ", ".join(f"{n}: {v['round_wall_s'] * 1e3:.0f} ms / +{v['driver_rss_growth_bytes'] / 2**20:.1f} MiB"
                        for n, v in sorted(by_n.items(), key=lambda kv: int(kv[0])))
        print(f"{key}: {row}")
    for key, f in summary["fits"].items():
        parts = [f"{m} exponent {f[m]['exponent']:.2f}" for m in ("round_wall_s", "driver_peak_rss_bytes",
                                                                  "driver_rss_growth_bytes") if f.get(m)]
        print(f"{key} fit over {f['devices']}: " + (", ".join(parts) or "fewer than two counts"))
    r = summary["ray_over_local"]
    if r is not None:
        print(f"ray / local at {r['devices']} devices: {r['ratio']:.2f}x (target <= 1.5)")
    print(f"wrote {path}" + (f" and {png}" if plotted else ""))
    return 0
