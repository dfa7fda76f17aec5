"""SHIFT experiments: one pair of configs per SHIFT dimension, each isolating one xrfed mechanism.

The seed paper names five challenges of federated foundation models in XR (**S**ensor and modality diversity,
**H**ardware heterogeneity, **I**nteractivity and embodied personalization, **F**unctional/task variability,
**T**emporality). Each pair in ``configs/shift/`` is one experiment run twice, with the challenge present in both arms:
once with xrfed's mechanism for it (ON) and once without (control). The two files differ in exactly one config field,
the *factor* (plus ``name`` and comments; ``tests/federation/test_shift.py`` checks it with :func:`config_diff`):

===  ===========================================================  ==========================  ================
dim  challenge (both arms)                                         factor                      ON vs control
===  ===========================================================  ==========================  ================
S    different sensor suites, 30 % modality dropout per device,    ``aggregator.modality_      true vs false
     LoRA on the modality encoders (modality-specific tensors)     aware``
H    LoRA ranks following device memory (8/4/2/1), a round         ``aggregator.name``         exact_lora vs
     deadline the slowest devices miss (:func:`finish_times`)                                  fedit
I    every user's own data (the base experiment)                    ``personal_adapters``       true vs false
F    different task subsets, every task head on every device        ``aggregator.task_aware``   true vs false
     (``share_all_heads``: untrained copies join a task-blind mean)
T    three phases of the scenario's lighting changes and task-     ``continual.method``        replay vs none
     script segments (the same drift in both arms)
===  ===========================================================  ==========================  ================

:func:`run_shift` runs both arms of every pair over the seeds (:func:`federation.runner.run_experiment`, one
directory per arm, finished seed runs kept) and reports per pair the paired difference ON - control of the macro
balanced accuracy on held-out data (:func:`federation.stats.paired_difference`, seed by seed), its 95 % t interval,
whether its sign holds on every seed, and each pair's secondary figures (H: device-rounds that missed the deadline and
the simulated round latency; I: the personalization gain; T: forgetting). ``xrfed shift`` prints it as one table.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ExperimentConfig, load_config
from .errors import CheckpointError, ConfigError

__all__ = ["SHIFT_DIR", "PRIMARY", "SECONDARY", "ShiftPair", "PAIRS", "DIMENSIONS", "config_diff", "FinishTime",
           "finish_times", "stragglers", "pair_figures", "run_shift", "markdown_table", "register", "run_shift_command"]

#: the shipped SHIFT configs, at the repository root
SHIFT_DIR = Path(__file__).resolve().parents[1] / "configs" / "shift"

#: the figure every effect is measured on: macro balanced accuracy of the device models on held-out data, end of run
PRIMARY = "balanced_accuracy"

#: config fields that never count as a difference between two arms
_IGNORED = frozenset({"name", "description"})


def _missed_deadline(s: Mapping[str, Any]) -> float | None:
    """Device-rounds whose update came after the deadline, summed over the run's devices."""
    devices = s.get("devices") or {}
    return float(sum(int(d.get("rounds_missed_deadline", 0)) for d in devices.values())) if devices else None


#: secondary figure -> (label, how to read it from a single-seed summary, unit)
SECONDARY: dict[str, tuple[str, Callable[[Mapping[str, Any]], float | None], str]] = {
    "rounds_missed_deadline": ("missed deadline (device-rounds)", _missed_deadline, ""),
    "mean_round_latency_s": ("round latency", lambda s: s.get("mean_round_latency_s"), " s"),
    "personalization_gain": ("personalization gain", lambda s: s.get("personalization_gain"), ""),
    "mean_forgetting": ("forgetting", lambda s: s.get("mean_forgetting"), ""),
}


@dataclass(frozen=True)
class ShiftPair:
    """One SHIFT dimension: its two config files (in :data:`SHIFT_DIR`), the factor that tells them apart (a dotted
    config path, see :func:`config_diff`), the mechanism it switches and the secondary figures it is read with."""

    dimension: str
    challenge: str
    on: str
    control: str
    factor: str
    mechanism: str
    secondary: tuple[str, ...] = ()

    def load(self, root: str | Path = SHIFT_DIR) -> tuple[ExperimentConfig, ExperimentConfig]:
        """The (ON, control) configs, validated."""
        return load_config(Path(root) / self.on), load_config(Path(root) / self.control)


PAIRS: dict[str, ShiftPair] = {p.dimension: p for p in (
    ShiftPair("S", "sensor and modality diversity", "S-modality.yaml", "S-modality-control.yaml",
              "aggregator.modality_aware",
              "modality-aware aggregation: an encoder's LoRA tensors are averaged only among devices with that sensor"),
    ShiftPair("H", "hardware heterogeneity", "H-hardware.yaml", "H-hardware-control.yaml", "aggregator.name",
              "exact heterogeneous-rank LoRA aggregation (mean of B·A re-factorized per rank) instead of FedIT's "
              "zero-padded factor averages", ("rounds_missed_deadline", "mean_round_latency_s")),
    ShiftPair("I", "interactivity and embodied personalization", "I-personalization.yaml",
              "I-personalization-control.yaml", "personal_adapters",
              "personal adapters (prompt and residual heads) that never leave the device", ("personalization_gain",)),
    ShiftPair("F", "functional/task variability", "F-tasks.yaml", "F-tasks-control.yaml", "aggregator.task_aware",
              "task-aware aggregation: a task head is averaged only among devices that run the task"),
    ShiftPair("T", "temporality and environmental variability", "T-drift.yaml", "T-drift-control.yaml",
              "continual.method", "replay of earlier phases' steps in local training", ("mean_forgetting",)),
)}
DIMENSIONS: tuple[str, ...] = tuple(PAIRS)


# -- config differences ---------------------------------------------------------------------------------------------
def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        for i, v in enumerate(value):
            _flatten(v, f"{path}[{i}]", out)
        out[f"{path}.<len>"] = len(value)
    else:
        out[path] = value


def config_diff(a: ExperimentConfig | Mapping[str, Any], b: ExperimentConfig | Mapping[str, Any]
                ) -> dict[str, tuple[Any, Any]]:
    """Every leaf where two configs differ: dotted path -> (value in ``a``, value in ``b``).

    Mappings are walked (``aggregator.modality_aware``), lists of mappings by index (``devices[2].rank``; a
    different length shows as ``devices.<len>``), other values (numbers, strings, lists of scalars such as
    ``lora_targets``) compare whole. A path present on one side only pairs with None. ``name`` and
    ``description`` are ignored: they label an arm, they do not change it."""
    fa: dict[str, Any] = {}
    fb: dict[str, Any] = {}
    _flatten(a.to_dict() if isinstance(a, ExperimentConfig) else a, "", fa)
    _flatten(b.to_dict() if isinstance(b, ExperimentConfig) else b, "", fb)
    out = {}
    for k in sorted(set(fa) | set(fb)):
        if k.split(".", 1)[0].split("[", 1)[0] in _IGNORED:
            continue
        va, vb = fa.get(k), fb.get(k)
        if va != vb:
            out[k] = (va, vb)
    return out


def _factor_value(cfg: ExperimentConfig, factor: str) -> Any:
    v: Any = cfg.to_dict()
    for part in factor.split("."):
        v = v[part]
    return v


# -- simulated finish times (the deadline) --------------------------------------------------------------------------
@dataclass(frozen=True)
class FinishTime:
    """One device's simulated round: training FLOPs on its profile's sustained GFLOP/s plus the upload of its update
    over its uplink, exactly what :class:`federation.rounds.RoundEngine` compares with ``rounds.deadline_s``."""

    device: str
    profile: str
    local_steps: int
    batch_size: int
    forward_flops: float  # one sample's forward pass, the device's modalities all present
    update_bytes: int  # the shared tensors it sends (LoRA factors at its rank, its task heads)
    compute_s: float
    upload_s: float

    @property
    def total_s(self) -> float:
        return self.compute_s + self.upload_s

    @property
    def train_flops(self) -> float:
        from agents.train import TRAIN_FLOPS_FACTOR

        return TRAIN_FLOPS_FACTOR * self.forward_flops * self.batch_size * self.local_steps


def finish_times(cfg: ExperimentConfig) -> dict[str, FinishTime]:
    """Per device of ``cfg``, its simulated compute + upload time of one round (see :class:`FinishTime`).

    Each device is built as ``xrfed run`` builds it -- the config's model preset, its personalization (method,
    rank, targets, personal modules, shared heads) and tasks -- on an untrained model (the FLOPs and bytes depend on
    the structure only), and its forward FLOPs are counted (:func:`agents.train.forward_flops`) on a batch of
    synthetic frames carrying all of its modalities. One round costs ``TRAIN_FLOPS_FACTOR x forward x batch x
    local_steps`` FLOPs (the batch from :func:`agents.agent.compute_budget`, the steps from ``rounds.local_steps``);
    a step whose batch lacks a modality costs a little less, so these are the times of a full-sensor round."""
    import torch  # noqa: F401  (the agents package needs it; imported here to keep this module light)

    from agents.agent import compute_budget, tasks_for_profile
    from agents.batching import frames_to_batch
    from agents.config import make_config
    from agents.model import M3TModel
    from agents.personalize import PersonalizationConfig, apply_personalization, shared_state, state_nbytes
    from agents.train import TRAIN_FLOPS_FACTOR, forward_flops
    from bridge.devices import get_device
    from bridge.scenario import load_scenario
    from bridge.seeding import forked_torch_seed
    from bridge.stream.synthetic import synthetic_frame

    from .accounting import transfer_time_s

    mcfg = make_config(cfg.model_preset)
    sc = load_scenario(cfg.scenario)
    samples = int(round(sc.audio_hz / sc.step_hz))  # one step of sound at the scene's rate
    out: dict[str, FinishTime] = {}
    for dev in cfg.devices:
        prof = get_device(dev.profile)
        model = M3TModel(mcfg)
        tasks = tuple(dev.tasks) or tasks_for_profile(prof, mcfg.tasks)
        pcfg = PersonalizationConfig(method=cfg.tuning, rank=dev.rank or cfg.lora_rank, alpha=cfg.lora_alpha,
                                     targets=tuple(cfg.lora_targets), personal=cfg.personal_adapters,
                                     share_all_heads=cfg.share_all_heads)
        with forked_torch_seed(0):  # new modules draw from torch's generator; leave the caller's untouched
            info = apply_personalization(model, pcfg, tasks)
        _, batch_size = compute_budget(prof)
        mods = tuple(m for m in prof.modalities if m in mcfg.modalities)
        frames = [synthetic_frame(dev.id, height_px=48, width_px=64, step=i, audio_samples=samples)
                  for i in range(batch_size)]
        batch = frames_to_batch(frames, window=mcfg.window, image_size=mcfg.image_size_px, modalities=mods,
                                audio_steps=mcfg.audio_window)
        fwd = forward_flops(model, batch, tasks)
        nbytes = state_nbytes(shared_state(model, info))
        steps = cfg.rounds.local_steps
        compute_s = TRAIN_FLOPS_FACTOR * fwd * batch_size * steps / (prof.gflops_sustained * 1e9)
        out[dev.id] = FinishTime(dev.id, prof.name, steps, batch_size, fwd, nbytes, compute_s,
                                 transfer_time_s(nbytes, prof.uplink_mbps))
    return out


def stragglers(cfg: ExperimentConfig, times: Mapping[str, FinishTime] | None = None) -> tuple[list[str], list[str]]:
    """(devices that miss ``rounds.deadline_s``, devices that make it) by :func:`finish_times`; no deadline: nobody
    misses."""
    times = finish_times(cfg) if times is None else times
    deadline = cfg.rounds.deadline_s
    missed = [d for d, t in times.items() if deadline is not None and t.total_s > deadline]
    return missed, [d for d in times if d not in missed]


# -- figures --------------------------------------------------------------------------------------------------------
def _est(e: Any) -> dict[str, Any]:
    """An :class:`federation.stats.Estimate` as JSON (NaN becomes null)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in e.to_dict().items()}


def _value(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _compare(on: Mapping[int, float | None], control: Mapping[int, float | None], seeds: Sequence[int]
             ) -> dict[str, Any]:
    """ON and control over the seeds, and their difference paired seed by seed (seeds missing a value on either side
    are left out of the difference)."""
    from .stats import mean_ci, paired_difference

    def known(side: Mapping[int, float | None], which: Sequence[int]) -> list[float]:
        return [v for s in which if (v := side.get(s)) is not None]

    both = [s for s in seeds if on.get(s) is not None and control.get(s) is not None]
    return {"on": _est(mean_ci(known(on, seeds))), "control": _est(mean_ci(known(control, seeds))),
            "difference": _est(paired_difference(known(on, both), known(control, both))),
            "per_seed": {str(s): {"on": on.get(s), "control": control.get(s)} for s in seeds}}


def pair_figures(pair: ShiftPair, seeds: Sequence[int], on: Mapping[int, Mapping[str, Any]],
                 control: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """A pair's figures from its single-seed run summaries (seed -> ``summary.json``): the macro balanced accuracy
    ON, control and ON - control paired over ``seeds``, and the same for each of the pair's secondary figures."""
    def per_seed(runs: Mapping[int, Mapping[str, Any]], get: Callable[[Mapping[str, Any]], Any]) -> dict[int, Any]:
        return {s: _value(get(runs[s])) for s in seeds if s in runs}

    return {
        "primary": {"figure": PRIMARY,
                    **_compare(per_seed(on, lambda s: s.get(PRIMARY)), per_seed(control, lambda s: s.get(PRIMARY)),
                               seeds)},
        "secondary": {name: {"label": SECONDARY[name][0],
                             **_compare(per_seed(on, SECONDARY[name][1]), per_seed(control, SECONDARY[name][1]), seeds)}
                      for name in pair.secondary},
    }


# -- running ----------------------------------------------------------------------------------------------------------
def _run_arm(cfg: ExperimentConfig, run_dir: Path, progress: bool, runner_kw: Mapping[str, Any]) -> bool:
    """Run (or finish) one arm over its seeds into ``run_dir``; True when everything was already there."""
    from .runner import run_experiment

    saved = run_dir / "config.yaml"
    if saved.is_file():
        if ExperimentConfig.from_yaml(saved.read_text()).to_dict() != cfg.to_dict():
            raise CheckpointError(f"{run_dir}: holds a run of a different config (other seeds or an edited "
                                  "configs/shift file?); choose another --out")
        if (run_dir / "summary.json").is_file():
            return True
    run_experiment(cfg, run_dir, resume=saved.is_file(), progress=progress, local_baseline=False, **runner_kw)
    return False


def _seed_summaries(run_dir: Path, seeds: Sequence[int]) -> dict[int, dict[str, Any]]:
    from .rundir import SEED_DIR_PREFIX, read_summary

    return {s: read_summary(run_dir / f"{SEED_DIR_PREFIX}{s}") for s in seeds}


def run_shift(out_dir: str | Path, *, dims: Sequence[str] = DIMENSIONS, seeds: Sequence[int] | None = None,
              root: str | Path = SHIFT_DIR, pairs: Mapping[str, ShiftPair] = PAIRS,
              log: Callable[[str], None] | None = None, progress: bool = False, **runner_kw: Any) -> dict[str, Any]:
    """Run both arms of every pair in ``dims`` into ``out_dir/<dim>/{on,control}`` and return the figures.

    ``seeds`` replaces the configs' own seeds (both arms alike). Arms finished earlier in ``out_dir`` are reused and
    an interrupted one continues (finished seeds kept, the running one from its checkpoint). Before anything runs,
    each pair is checked to differ in exactly its factor. ``runner_kw`` goes to
    :func:`federation.runner.run_experiment` (``torch_threads``; tests pass synthetic ``client_factories``)."""
    unknown = [d for d in dims if d not in pairs]
    if unknown or not dims:
        raise ConfigError("dims", "unknown SHIFT dimension" if unknown else "name at least one dimension",
                          value=unknown or list(dims), allowed=list(pairs))
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise ConfigError("seeds", "must be a non-empty list of distinct seeds", value=list(seeds))
    out = Path(out_dir)
    plan: list[tuple[ShiftPair, str, str, ExperimentConfig]] = []
    for d in dims:
        pair = pairs[d]
        on, control = pair.load(root)
        if seeds is not None:
            on, control = (dataclasses.replace(c, seeds=list(seeds)) for c in (on, control))
        diff = config_diff(on, control)
        if set(diff) != {pair.factor}:
            raise ConfigError(pair.factor, f"SHIFT {d}: {pair.on} and {pair.control} must differ in exactly "
                              f"{pair.factor}", value=sorted(diff))
        if on.seeds is None or on.seeds != control.seeds:
            raise ConfigError("seeds", f"SHIFT {d}: both arms need the same list of seeds", value=[on.seeds, control.seeds])
        plan += [(pair, "on", pair.on, on), (pair, "control", pair.control, control)]

    runs: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    ran = 0
    for i, (pair, arm, fname, cfg) in enumerate(plan):
        rd = out / pair.dimension / arm
        value = _factor_value(cfg, pair.factor)
        if log is not None:
            log(f"[{i + 1}/{len(plan)}] SHIFT {pair.dimension} {arm} ({fname}: {pair.factor} = {_shown(value)}), "
                f"seeds {cfg.seeds} ...")
        t0 = time.perf_counter()
        reused = _run_arm(cfg, rd, progress, runner_kw)
        wall = time.perf_counter() - t0
        assert cfg.seeds is not None
        per_seed = _seed_summaries(rd, cfg.seeds)
        runs.append({"dimension": pair.dimension, "arm": arm, "config": fname, "factor_value": value,
                     "seeds": list(cfg.seeds), "run_dir": f"{pair.dimension}/{arm}",
                     PRIMARY: {str(s): per_seed[s].get(PRIMARY) for s in cfg.seeds},
                     "wall_s": wall, "reused": reused, "_summaries": per_seed})
        if log is not None:
            ran += not reused
            left = len(plan) - i - 1
            eta = f", ~{(time.perf_counter() - t_start) / ran * left / 60:.0f} min left" if ran and left else ""
            vals = " ".join("-" if per_seed[s].get(PRIMARY) is None else f"{per_seed[s][PRIMARY]:.3f}"
                            for s in cfg.seeds)
            log(f"[{i + 1}/{len(plan)}] SHIFT {pair.dimension} {arm}: bal.acc per seed {vals} "
                f"({'reused' if reused else f'{wall:.0f} s'}{eta})")

    results: dict[str, Any] = {}
    for d in dims:
        pair = pairs[d]
        arms = {r["arm"]: r for r in runs if r["dimension"] == d}
        seeds_d = arms["on"]["seeds"]
        results[d] = {
            "challenge": pair.challenge, "mechanism": pair.mechanism, "factor": pair.factor,
            "on": {"config": pair.on, "value": arms["on"]["factor_value"],
                   "sha256": hashlib.sha256((Path(root) / pair.on).read_bytes()).hexdigest()},
            "control": {"config": pair.control, "value": arms["control"]["factor_value"],
                        "sha256": hashlib.sha256((Path(root) / pair.control).read_bytes()).hexdigest()},
            "seeds": seeds_d,
            **pair_figures(pair, seeds_d, arms["on"]["_summaries"], arms["control"]["_summaries"]),
        }
    for r in runs:
        del r["_summaries"]
    return {
        "bench": "shift",
        "figure": "macro balanced accuracy of the device models on their held-out data (the last "
                  "eval.test_fraction of each phase, past the guard gap) at the end of the run, mean over devices "
                  "(summary.json 'balanced_accuracy'); 'difference' is ON minus control paired seed by seed, with "
                  "its 95 % Student-t interval and whether its sign holds on every seed",
        "dimensions": list(dims),
        "results": results,
        "runs": runs,
        "wall_time_s": time.perf_counter() - t_start,
    }


# -- the table ------------------------------------------------------------------------------------------------------
def _num(x: float | None, fmt: str = ".3f", unit: str = "") -> str:
    return "-" if x is None else f"{x:{fmt}}{unit}"


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _arm_cell(value: Any, est: Mapping[str, Any]) -> str:
    text = f"{_shown(value)}: {_num(est['mean'])}"
    if est["lo"] is not None:
        text += f" ± {(est['hi'] - est['lo']) / 2:.3f}"
    return text


def _secondary_cell(name: str, fig: Mapping[str, Any]) -> str:
    label, _, unit = SECONDARY[name]
    fmt = ".1f" if name == "rounds_missed_deadline" else ".3f" if unit else "+.3f"
    text = f"{label}: {_num(fig['on']['mean'], fmt, unit)} vs {_num(fig['control']['mean'], fmt, unit)}"
    diff = fig["difference"]
    if name == "mean_forgetting" and diff["mean"] is not None:
        text += f" (difference {diff['mean']:+.3f}"
        if diff["lo"] is not None:
            text += f", CI [{diff['lo']:+.3f}, {diff['hi']:+.3f}]"
        text += ")"
    return text


def markdown_table(result: Mapping[str, Any]) -> str:
    """One row per SHIFT dimension: the factor, each arm's macro balanced accuracy (mean ± 95 % CI half-width over
    the seeds), the effect ON - control paired over seeds, its 95 % CI, whether its sign holds on every seed, and
    the pair's secondary figures (ON vs control)."""
    lines = ["| dimension | factor | ON | control | effect (ON − control) | 95 % CI | sign on every seed | secondary |",
             "|---|---|---|---|---|---|---|---|"]
    for d, r in result["results"].items():
        p = r["primary"]
        diff = p["difference"]
        ci = "-" if diff["lo"] is None else f"[{diff['lo']:+.3f}, {diff['hi']:+.3f}]"
        effect = "-" if diff["mean"] is None else f"{diff['mean']:+.3f}"
        sign = "-" if diff["mean"] is None else "1 seed" if diff["n"] < 2 else ("yes" if diff["sign_holds"] else "no")
        secondary = "; ".join(_secondary_cell(n, f) for n, f in r["secondary"].items()) or "-"
        lines.append(f"| {d} ({r['challenge']}) | `{r['factor']}` | {_arm_cell(r['on']['value'], p['on'])} | "
                     f"{_arm_cell(r['control']['value'], p['control'])} | {effect} | {ci} | {sign} | {secondary} |")
    return "\n".join(lines)


# -- CLI ----------------------------------------------------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> None:
    """``xrfed shift``: registered by :mod:`federation.cli`."""
    p = subparsers.add_parser(
        "shift", help="the five SHIFT experiments, each with its control, over seeds: one table of effects",
        description="Runs both arms of every SHIFT pair in configs/shift (the same experiment with and without "
                    "xrfed's mechanism for that dimension, differing in one config field) over the seeds and prints "
                    "one Markdown table: the effect ON - control on macro balanced accuracy (held-out data), its "
                    "95 % CI, whether its sign holds on every seed, and each pair's secondary figures.")
    p.add_argument("--dims", nargs="+", default=list(DIMENSIONS), choices=list(DIMENSIONS), metavar="DIM",
                   help="dimensions to run (default: S H I F T)")
    p.add_argument("--seeds", type=int, nargs="+", help="override the configs' seeds (default: theirs, 0 1 2)")
    p.add_argument("--out", metavar="DIR", help="run directories, one per dimension and arm; finished runs found "
                                                "there are reused (default: runs/shift-<timestamp>)")
    p.add_argument("--json", metavar="FILE", help="write the figures here (default: DIR/shift.json)")
    p.add_argument("--configs", metavar="DIR", default=str(SHIFT_DIR), help="where the pairs' configs are "
                                                                           "(default: configs/shift)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar per round (one line per run remains)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the devices (default 1)")
    p.set_defaults(func=run_shift_command)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_shift_command(args: argparse.Namespace) -> int:
    import torch

    from .cli import default_out_dir

    out = Path(args.out) if args.out else default_out_dir("shift")
    _log(f"xrfed shift: dimensions {' '.join(args.dims)}, seeds {args.seeds or 'from the configs'}, runs in {out} "
         "(the first run of a seed also records its scene and, if needed, the foundation checkpoint, once)")
    res = run_shift(out, dims=args.dims, seeds=args.seeds, root=args.configs, log=_log,
                    progress=not args.no_progress, torch_threads=args.threads)
    for d in args.dims:  # where a deadline bites, the simulated finish times it was set against
        on, _ = PAIRS[d].load(args.configs)
        if on.rounds.deadline_s is not None:
            times = finish_times(on)
            res["results"][d]["deadline"] = {"deadline_s": on.rounds.deadline_s,
                                             "finish_s": {dev: t.total_s for dev, t in times.items()},
                                             "missed": stragglers(on, times)[0]}
    res["host"] = {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                   "note": "a shared machine: wall times are indicative only"}
    table = markdown_table(res)
    json_path = Path(args.json) if args.json else out / "shift.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(res, indent=2) + "\n")
    (out / "shift.md").write_text(table + "\n")
    print("SHIFT: each pair is one experiment with and without xrfed's mechanism for that dimension; effect = ON - "
          "control in macro balanced accuracy on held-out data, paired over seeds (95 % Student-t CI).\n")
    print(table)
    print(f"\n{res['wall_time_s'] / 60:.1f} min; wrote {json_path}; run directories in {out}")
    return 0
