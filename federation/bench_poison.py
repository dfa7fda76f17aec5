"""Poisoning benchmark: every aggregator clean and with one device attacked, on the real XR agents.

``xrfed bench poison --json FILE`` runs the experiment of ``--config`` (default ``configs/poison.yaml``: six devices
of the default scenario, centralized rounds) through :func:`federation.runner.run_experiment` -- the recorded scene,
the cached foundation checkpoint, the real device agents -- under each aggregator of :data:`AGGREGATORS`, once clean
and once under each attack (``scale`` x10, ``sign_flip``, ``label_flip``) with exactly one device attacked. Per seed
the attacker is drawn once, the way the config draws attackers, and pinned through ``attack.devices``: every
aggregator and attack of that seed faces the same device. A clean run and its attacked runs differ in
``attack.kind`` only.

Figures per aggregator and attack, over the seeds: macro balanced accuracy on the held-out data, averaged over the
*honest* devices (the attacker excluded from clean runs too, so both sides cover the same devices) and over all
devices; the attacked-minus-clean difference paired over seeds with its 95 % t interval and whether its sign holds
on every seed (:func:`federation.stats.paired_difference`); and the target: the median and the trimmed mean stay
within :data:`TARGET_POINTS` of their clean accuracy under every attack (on the honest devices' mean).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import AttackConfig, ExperimentConfig
from .errors import CheckpointError, ConfigError, FederationError

__all__ = ["AGGREGATORS", "ROBUST", "TARGET_POINTS", "POISON_CONFIG", "attack_conditions", "pick_attacker",
           "bench_configs", "run_poison", "markdown_table", "add_bench_arguments", "run_poison_bench"]

#: the bench's default experiment, shipped at the repository root
POISON_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "poison.yaml"

#: aggregator -> its options; the trimmed mean drops one value at each end and Krum expects one Byzantine device,
#: matching the one attacker
AGGREGATORS: dict[str, dict[str, Any]] = {
    "fedavg": {},
    "exact_lora": {},
    "median": {},
    "trimmed_mean": {"trim": 1},
    "krum": {"num_byzantine": 1},
}
#: the aggregators the target is about
ROBUST = ("median", "trimmed_mean")
#: the target: a robust aggregator's honest-device accuracy moves by at most this much under attack
TARGET_POINTS = 0.05
CLEAN = "clean"


def attack_conditions(scale: float = 10.0) -> dict[str, str]:
    """Column name -> attack kind: ``clean`` (kind none) and the three attacks, the scaling one named ``x<scale>``."""
    return {CLEAN: "none", f"x{scale:g}": "scale", "sign_flip": "sign_flip", "label_flip": "label_flip"}


def pick_attacker(cfg: ExperimentConfig, seed: int) -> str:
    """The one attacking device of ``seed``: drawn from the seed as the config draws ``attack.fraction`` attackers."""
    n = len(cfg.devices)
    if n < 2:
        raise ConfigError("devices", "the poisoning bench needs at least two devices (one attacker, one honest)",
                          value=n)
    drawn = dataclasses.replace(cfg.with_seed(seed), attack=AttackConfig(kind="scale", fraction=1 / n)).attackers()
    assert len(drawn) == 1, drawn  # round(1/n * n) == 1
    return drawn[0]


def bench_configs(base: ExperimentConfig, seed: int, attacker: str, *, aggregators: Sequence[str] = tuple(AGGREGATORS),
                  scale: float = 10.0) -> list[tuple[str, str, ExperimentConfig]]:
    """(aggregator, condition, config) of every run of one seed. Within an aggregator the configs differ in
    ``attack.kind`` only: the clean run already names the attacker and the scale, which it does not use."""
    out = []
    for agg in aggregators:
        if agg not in AGGREGATORS:
            raise ConfigError("aggregators", "not an aggregator of the poisoning bench", value=agg,
                              allowed=list(AGGREGATORS))
        cfg = dataclasses.replace(base.with_seed(seed), name=f"{base.name}-{agg}",
                                  aggregator=dataclasses.replace(base.aggregator, name=agg,
                                                                 options=dict(AGGREGATORS[agg])),
                                  attack=AttackConfig(kind="none", fraction=0.0, scale=float(scale),
                                                      devices=[attacker]))
        for cond, kind in attack_conditions(scale).items():
            out.append((agg, cond, dataclasses.replace(cfg, attack=dataclasses.replace(cfg.attack, kind=kind))))
    return out


def _mean(vals: Sequence[float | None]) -> float | None:
    v = [float(x) for x in vals if x is not None and not math.isnan(float(x))]
    return sum(v) / len(v) if v else None


def _run_one(cfg: ExperimentConfig, run_dir: Path, runner_kw: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The run's summary, and whether a finished run with the same config was found in ``run_dir`` instead."""
    from .rundir import read_summary
    from .runner import run_experiment

    saved = run_dir / "config.yaml"
    if saved.is_file():
        if ExperimentConfig.from_yaml(saved.read_text()).to_dict() != cfg.to_dict():
            raise CheckpointError(f"{run_dir}: holds a run of a different config; choose another --out")
        if (run_dir / "summary.json").is_file():
            return read_summary(run_dir), True
    summary = run_experiment(cfg, run_dir, resume=saved.is_file(), progress=False, local_baseline=False,
                             **runner_kw)
    assert summary is not None
    return summary, False


def _figures(summary: Mapping[str, Any], attacker: str) -> dict[str, Any]:
    devices = summary["devices"]
    honest = [d for d in devices if d != attacker]
    return {
        "balanced_accuracy_all": summary["balanced_accuracy"],
        "balanced_accuracy_honest": _mean([devices[d]["balanced_accuracy"] for d in honest]),
        "global_balanced_accuracy_honest": _mean([devices[d]["global_balanced_accuracy"] for d in honest]),
        "balanced_accuracy_per_device": {d: v["balanced_accuracy"] for d, v in devices.items()},
    }


def _est(e: Any) -> dict[str, Any]:
    """An :class:`federation.stats.Estimate` as JSON (NaN bounds of a single seed become null)."""
    d = e.to_dict()
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def run_poison(base: ExperimentConfig, seeds: Sequence[int], out_dir: str | Path, *,
               aggregators: Sequence[str] = tuple(AGGREGATORS), scale: float = 10.0,
               log: Callable[[str], None] | None = None, **runner_kw: Any) -> dict[str, Any]:
    """Run every aggregator clean and under each attack on every seed into ``out_dir/seed-<s>/<agg>/<condition>``
    (finished runs found there are reused) and return the bench's figures (see the module docstring).
    ``runner_kw`` goes to :func:`federation.runner.run_experiment` (tests pass synthetic ``client_factories``)."""
    from .stats import mean_ci, paired_difference

    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError("seeds", "must be a non-empty list of distinct seeds", value=list(seeds))
    out = Path(out_dir)
    conds = attack_conditions(scale)
    attackers = {s: pick_attacker(base, s) for s in seeds}
    plan = [(s, agg, cond, cfg) for s in seeds
            for agg, cond, cfg in bench_configs(base, s, attackers[s], aggregators=aggregators, scale=scale)]
    runs: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    ran = 0
    for i, (s, agg, cond, cfg) in enumerate(plan):
        t0 = time.perf_counter()
        summary, reused = _run_one(cfg, out / f"seed-{s}" / agg / cond, runner_kw)
        wall = time.perf_counter() - t0
        expected = [] if cond == CLEAN else [attackers[s]]
        if list(summary["attack"]["devices"]) != expected:
            raise FederationError(f"seed {s} {agg} {cond}: the run's attackers are {summary['attack']['devices']}, "
                                  f"expected {expected}")
        rec = {"seed": s, "aggregator": agg, "condition": cond, "attack": conds[cond], "attacker": attackers[s],
               "attackers_in_run": list(summary["attack"]["devices"]), **_figures(summary, attackers[s]),
               "wall_s": wall, "reused": reused}
        runs.append(rec)
        if log is not None:
            ran += not reused
            elapsed = time.perf_counter() - t_start
            left = len(plan) - i - 1
            eta = f", ~{elapsed / ran * left / 60:.0f} min left" if ran and left else ""
            honest = rec["balanced_accuracy_honest"]
            log(f"[{i + 1}/{len(plan)}] seed {s} {agg} {cond} (attacker {attackers[s]}): honest bal.acc "
                f"{'-' if honest is None else f'{honest:.3f}'}, all {rec['balanced_accuracy_all']:.3f} "
                f"({'reused' if reused else f'{wall:.0f} s'}{eta})")

    def per_seed(agg: str, cond: str, key: str) -> list[float]:
        by_seed = {r["seed"]: r[key] for r in runs if r["aggregator"] == agg and r["condition"] == cond}
        return [float("nan") if by_seed[s] is None else float(by_seed[s]) for s in seeds]

    results: dict[str, Any] = {}
    for agg in aggregators:
        row: dict[str, Any] = {CLEAN: {}}
        for figure in ("honest", "all"):
            row[CLEAN][figure] = _est(mean_ci(per_seed(agg, CLEAN, f"balanced_accuracy_{figure}")))
        for cond in conds:
            if cond == CLEAN:
                continue
            row[cond] = {}
            for figure in ("honest", "all"):
                key = f"balanced_accuracy_{figure}"
                hit, clean = per_seed(agg, cond, key), per_seed(agg, CLEAN, key)
                row[cond][figure] = {"attacked": _est(mean_ci(hit)), "difference": _est(paired_difference(hit, clean))}
        results[agg] = row

    checks = []
    for agg in (a for a in ROBUST if a in aggregators):
        for cond in conds:
            if cond == CLEAN:
                continue
            d = results[agg][cond]["honest"]["difference"]
            checks.append({"aggregator": agg, "attack": cond, "difference": d["mean"], "lo": d["lo"], "hi": d["hi"],
                           "within": abs(d["mean"]) <= TARGET_POINTS,
                           "ci_within": d["lo"] is not None and -TARGET_POINTS <= d["lo"] and d["hi"] <= TARGET_POINTS})
    return {
        "bench": "poison",
        "target": {"statement": f"median and trimmed_mean within {TARGET_POINTS} of their clean macro balanced "
                                "accuracy (mean over the honest devices and the seeds) under every attack, with 1 of "
                                f"{len(base.devices)} devices attacked",
                   "holds": all(c["within"] for c in checks) if checks else None,
                   "holds_at_ci": all(c["ci_within"] for c in checks) if checks else None,
                   "checks": checks},
        "seeds": list(seeds),
        "attackers": {str(s): a for s, a in attackers.items()},
        "aggregators": {a: AGGREGATORS[a] for a in aggregators},
        "conditions": {c: ({"kind": k, "scale": float(scale)} if k == "scale" else {"kind": k})
                       for c, k in conds.items()},
        "figure": "macro balanced accuracy on the held-out data at the end of the run (summary.json); 'honest': mean "
                  "over the devices other than the seed's attacker, 'all': mean over every device; 'difference': "
                  "attacked minus clean, paired over seeds, with its 95 % t interval",
        "config": dataclasses.replace(base, seeds=list(seeds)).to_dict(),
        "results": results,
        "runs": runs,
        "wall_time_s": time.perf_counter() - t_start,
    }


def _cell(e: Mapping[str, Any], *, signed: bool) -> str:
    if e["mean"] is None or math.isnan(e["mean"]):
        return "-"
    text = f"{e['mean']:+.3f}" if signed else f"{e['mean']:.3f}"
    if e["lo"] is not None:
        text += f" ± {(e['hi'] - e['lo']) / 2:.3f}"
    if signed and e.get("sign_holds"):
        text += " ✓"
    return text


def markdown_table(result: Mapping[str, Any], figure: str = "honest") -> str:
    """Aggregators as rows, attacks as columns: the clean accuracy, then each attack's paired difference to it
    (mean ± 95 % CI half-width over seeds; ✓: the difference has that sign on every seed)."""
    conds = list(result["conditions"])
    lines = ["| aggregator | " + " | ".join(conds) + " |", "|---" * (len(conds) + 1) + "|"]
    for agg, row in result["results"].items():
        cells = [_cell(row[CLEAN][figure], signed=False)]
        cells += [_cell(row[c][figure]["difference"], signed=True) for c in conds if c != CLEAN]
        lines.append(f"| {agg} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    from bridge.cli import existing_file, output_dir, output_file, seed_arg
    from bridge.cliargs import float_range, int_range

    parser.add_argument("--json", metavar="FILE", default="bench_poison.json", type=output_file(), help="where to write the figures")
    parser.add_argument("--config", default=str(POISON_CONFIG), type=existing_file("config"),
                        help="the experiment (default: configs/poison.yaml); its aggregator and attack are replaced")
    parser.add_argument("--seeds", type=seed_arg(), nargs="+", help="seeds (default: the config's seeds, else 0 1 2)")
    parser.add_argument("--rounds", type=int_range(1, 10_000), help="override the config's number of rounds")
    parser.add_argument("--scale", type=float_range(-1e6, 1e6), default=10.0, help="the scaling attack's factor (default 10)")
    parser.add_argument("--out", metavar="DIR", type=output_dir(),
                        help="keep the runs here, one per seed/aggregator/condition; finished runs found there are "
                             "reused (default: a temporary directory, removed afterwards)")
    parser.add_argument("--threads", type=int_range(1, 256), default=1, help="torch intra-op threads for the devices (default 1)")


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_poison_bench(args: argparse.Namespace) -> int:
    import torch

    from .config import load_config

    cfg = load_config(args.config)
    if args.rounds:
        cfg = dataclasses.replace(cfg, rounds=dataclasses.replace(cfg.rounds, rounds=args.rounds))
    seeds = list(args.seeds or cfg.seeds or [0, 1, 2])
    n_runs = len(seeds) * len(AGGREGATORS) * len(attack_conditions(args.scale))
    _log(f"bench poison: {cfg.name}, {len(cfg.devices)} devices, {cfg.rounds.rounds} rounds, seeds {seeds}: "
         f"{n_runs} runs (the first run of a seed also records its scene, once, into the cache)")
    with tempfile.TemporaryDirectory(prefix="xrfed-poison-") as tmp:
        res = run_poison(cfg, seeds, args.out or tmp, scale=args.scale, log=_log, torch_threads=args.threads)
    res["host"] = {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                   "note": "a shared machine: wall times are indicative only"}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    print("Macro balanced accuracy, mean over the honest devices (clean) and attacked minus clean, paired over "
          f"seeds {seeds} (± 95 % CI half-width; ✓ = same sign on every seed):\n")
    print(markdown_table(res, "honest"))
    print("\nThe same over all devices, the attacker included:\n")
    print(markdown_table(res, "all"))
    t = res["target"]
    verdict = "holds" if t["holds"] else "does NOT hold"
    print(f"\ntarget ({t['statement']}): {verdict}" + ("" if t["holds_at_ci"] == t["holds"] else
                                                      f" (at the 95 % CI bounds: {'holds' if t['holds_at_ci'] else 'not'})"))
    for c in t["checks"]:
        if not c["within"]:
            print(f"  {c['aggregator']} {c['attack']}: {c['difference']:+.3f}")
    print(f"{res['wall_time_s'] / 60:.1f} min; wrote {args.json}")
    return 0
