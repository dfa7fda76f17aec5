"""``xrfed run``, ``xrfed compare``, ``xrfed demo`` and ``xrfed shift``: the federation package's CLI plug-in.

(``xrfed bench round`` is dispatched by the lead's CLI to :mod:`federation.bench`.) Heavy imports happen inside
the ``run`` and ``validate`` functions so ``xrfed --help`` stays fast.

Every flag is range-checked by the parser (:mod:`bridge.cliargs`, :mod:`bridge.cli` types): a bad value exits 2
with one line. A command that reads an experiment config has a ``validate`` step that loads it, applies the
flags' overrides and runs :func:`preflight` -- the scenario resolves, every device has an avatar, the held-out
split fits in a phase, the foundation checkpoint or scenes exist, the LoRA targets name layers of the model --
before any recording or training starts.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.cli import existing_dir, existing_file, output_dir, output_file, seed_arg
from bridge.cliargs import int_range

__all__ = ["register", "run_experiment", "run_compare", "run_demo", "default_out_dir", "preflight", "validate_run",
           "validate_compare", "validate_demo", "validate_shift", "DEMO_CONFIG", "MAX_THREADS", "MAX_RUNS"]

#: the demo's config, shipped at the repository root
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
#: the most torch intra-op threads a flag accepts
MAX_THREADS = 256
#: the most run directories ``xrfed compare`` puts side by side
MAX_RUNS = 64


def default_out_dir(name: str) -> Path:
    """``runs/<name>-<UTC timestamp>`` under the current directory."""
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def _threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int_range(1, MAX_THREADS), default=1,
                   help=f"torch intra-op threads for the simulated devices, 1-{MAX_THREADS} (default 1)")


def _seeds(p: argparse.ArgumentParser, help: str) -> None:
    from .config import MAX_SEEDS

    p.add_argument("--seeds", type=seed_arg(), nargs="+", metavar="SEED",
                   help=f"{help}; 1-{MAX_SEEDS} distinct seeds in [0, 2**31-1]")


def register(subparsers: argparse._SubParsersAction) -> None:
    from .config import MAX_ROUNDS

    p = subparsers.add_parser(
        "run", help="run a federated experiment from a YAML config into a run directory",
        description="Run a whole experiment (scenario, devices, model, tuning, paradigm, aggregator, rounds, DP) "
                    "with a progress display per round. Writes metrics.jsonl, a checkpoint every round, "
                    "summary.json and report.md/report.html with plots.")
    p.add_argument("config", type=existing_file("config"), help="experiment YAML (see configs/)")
    p.add_argument("--out", metavar="DIR", type=output_dir("run directory"),
                   help="run directory (default: runs/<name>-<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    p.add_argument("--ray-address", metavar="ADDR", type=_ray_address,
                   help="run the devices as actors on the Ray cluster at ADDR (host:port of 'ray start --head', "
                        "ray://host:port or auto); overrides the config's ray.address and implies executor ray")
    _threads(p)
    p.set_defaults(func=run_experiment, validate=validate_run)

    c = subparsers.add_parser(
        "compare", help="put finished runs side by side (the Table 7 trade-offs)",
        description="Print one Markdown table with accuracy, personalization gain, bytes per link type, device "
                    "energy, round latency, epsilon, forgetting and membership-inference AUC of each run.")
    c.add_argument("runs", nargs="+", metavar="RUN", help=f"run directories (at most {MAX_RUNS})")
    c.add_argument("--out", metavar="FILE", type=output_file("table file"),
                   help="also write the table to this Markdown file")
    c.set_defaults(func=run_compare, validate=validate_compare)

    d = subparsers.add_parser(
        "demo", help="the default scenario: local-only, centralized, semi- and decentralized rounds, compared",
        description="Runs the demo config (heterogeneous devices, changing lighting, task scripts) with local-only "
                    "training and under the three coordination paradigms of the seed paper's Fig. 3, over the "
                    "config's seeds, and prints one comparison table (mean ± 95 % CI, baselines on the same "
                    "held-out data) and each paradigm's paired difference to local-only; the reports and plots "
                    "stay in the run directory it names.")
    d.add_argument("--config", type=existing_file("config"), default=str(DEMO_CONFIG),
                   help="demo config (default: configs/demo.yaml)")
    d.add_argument("--out", metavar="DIR", type=output_dir("run directory"),
                   help="parent run directory (default: runs/demo-<timestamp>)")
    d.add_argument("--rounds", type=int_range(1, MAX_ROUNDS), help=f"override the number of rounds (1-{MAX_ROUNDS})")
    _seeds(d, "override the config's seeds (e.g. --seeds 0 1 2)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    _threads(d)
    d.set_defaults(func=run_demo, validate=validate_demo)

    from . import shift

    shift.register(subparsers)  # xrfed shift: the SHIFT pairs of configs/shift
    _harden_shift(subparsers.choices["shift"])


def _harden_shift(p: argparse.ArgumentParser) -> None:
    """Range-check ``xrfed shift``'s flags (declared in :mod:`federation.shift`) and give it a ``validate``."""
    from .config import MAX_SEEDS

    types: dict[str, Callable[[str], Any]] = {
        "seeds": seed_arg(), "threads": int_range(1, MAX_THREADS), "out": output_dir("run directory"),
        "json": output_file("JSON file"), "configs": existing_dir("configs directory")}
    for action in p._actions:
        if action.dest in types:
            action.type = types[action.dest]
            if action.dest == "seeds":
                action.help = f"{action.help}; 1-{MAX_SEEDS} distinct seeds in [0, 2**31-1]"
    p.set_defaults(validate=validate_shift)


def _ray_address(text: str) -> str:
    """``--ray-address``: host:port, ray://host:port, auto or local (the config's ``ray.address`` rule)."""
    from .config import check_ray_address
    from .errors import ConfigError

    try:
        check_ray_address(text, "--ray-address")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"expected host:port, ray://host:port, 'auto' or 'local' (a port in "
                                         f"1..65535), got {exc.value!r}") from None
    return text


def _with_flags(cfg: Any, args: argparse.Namespace) -> Any:
    """``cfg`` with ``xrfed run``'s overrides: ``--ray-address`` joins that cluster with the ray executor."""
    address = getattr(args, "ray_address", None)
    return cfg if address is None else cfg.with_executor("ray", address=address)


# -- validate: everything the parser cannot check, before any work ----------------------------------------------------
def _flag_error(flag: str, message: str) -> Exception:
    from .errors import FederationError

    return FederationError(f"{flag}: {message}")


def _check_seeds(seeds: list[int] | None) -> None:
    from .config import MAX_SEEDS

    if seeds is None:
        return
    if len(seeds) > MAX_SEEDS:
        raise _flag_error("--seeds", f"at most {MAX_SEEDS} seeds (got {len(seeds)})")
    if len(set(seeds)) != len(seeds):
        raise _flag_error("--seeds", f"must not repeat a seed (got {sorted(seeds)[:8]})")


@functools.cache
def _shipped_scenario(name: str) -> Any:
    from bridge.scenario import load_scenario

    return load_scenario(name)


def _scenario(name_or_path: str, where: str) -> Any:
    """A scenario by name (cached: shipped files do not change under a run) or by path (read every time)."""
    from bridge.cliargs import NAME_RE
    from bridge.errors import XrfedError
    from bridge.scenario import load_scenario, scenario_names

    from .errors import ConfigError

    try:
        if NAME_RE.fullmatch(name_or_path) and name_or_path in scenario_names() and not Path(name_or_path).exists():
            return _shipped_scenario(name_or_path)
        return load_scenario(name_or_path)
    except OSError as exc:  # a path too long, a directory, no permission
        raise ConfigError(where, f"cannot read the scenario: {exc.strerror or type(exc).__name__}",
                          value=name_or_path[:120]) from None
    except XrfedError as exc:  # the scenario's own error, said of the config field that names it
        text = str(exc)
        raise ConfigError(where, text if len(text) <= 260 else text[:257] + "...") from None


@functools.cache
def _linear_names(preset: str) -> tuple[str, ...]:
    """The full names of the ``nn.Linear`` modules of the preset's model (built on the meta device: no memory)."""
    import torch
    from torch import nn

    from agents.config import make_config
    from agents.model import M3TModel

    with torch.device("meta"):
        model = M3TModel(make_config(preset))
    return tuple(n for n, m in model.named_modules() if isinstance(m, nn.Linear))


def _check_targets(cfg: Any) -> None:
    """Every LoRA target names (or matches) an ``nn.Linear`` of the model, as :func:`agents.personalize` will ask."""
    import re

    from .config import _MODULE_RE
    from .errors import ConfigError

    if cfg.tuning != "lora":
        return
    linear = _linear_names(cfg.model_preset)
    for i, t in enumerate(cfg.lora_targets):
        if _MODULE_RE.fullmatch(t):
            hit = any(n == t or n.endswith(f".{t}") for n in linear)
        else:
            pattern = re.compile(t)
            hit = any(pattern.fullmatch(n) for n in linear)
        if not hit:
            raise ConfigError(f"lora_targets[{i}]", f"matches no linear layer of the {cfg.model_preset} model",
                              value=t, allowed=sorted({n.rsplit(".", 1)[-1] for n in linear}))


def _check_split(n: int, test_fraction: float, guard: int) -> None:
    """Each phase of ``n`` steps keeps at least one training step before its guard and held-out steps.

    Computed in closed form (the held-out count rounds half up, as :func:`bridge.splits.temporal_split` does)
    before ``temporal_split`` is called: its message searches for the smallest workable episode step by step,
    which a hostile fraction near 1 turns into billions of steps."""
    import math

    from bridge.errors import DatasetError
    from bridge.splits import temporal_split

    from .errors import ConfigError

    n_test = math.floor(n * test_fraction + 0.5)
    if n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    n_test = max(0, min(n_test, n))
    train = n - n_test - (guard if n_test else 0)
    if train < 1:
        raise ConfigError("eval", f"a phase of episode_steps={n} holds {n_test} held-out steps (test_fraction "
                          f"{test_fraction:g}) and a guard of {guard} steps, leaving {max(train, 0)} to train on; "
                          "shorten eval.guard_s or lengthen episode_steps")
    try:
        temporal_split(n, test_fraction, guard)
    except DatasetError as exc:
        raise ConfigError("eval", f"a phase of episode_steps={n} cannot be split: "
                          f"{str(exc).removeprefix('temporal_split: ')[:200]}") from None


def preflight(cfg: Any) -> None:
    """Check that ``cfg`` (an :class:`~federation.config.ExperimentConfig`) can run, without recording or training.

    The scenario loads and has an avatar for every device; each phase of ``episode_steps`` steps leaves training
    steps after the held-out part and the guard; the foundation checkpoint directory or scenes exist; the LoRA
    targets match layers of the model; and the objects the run builds first (strategy, paradigm, DP wrapper,
    per-device personalization, agent and pretraining configs) construct. Raises an :class:`XrfedError`.
    """
    from agents.agent import AgentConfig
    from agents.personalize import PersonalizationConfig
    from agents.pretrain import PretrainConfig
    from bridge.seeding import derive_seed

    from .config import PARADIGMS
    from .errors import ConfigError
    from .paradigms import make_paradigm
    from .runner import with_paradigm
    from .scene import device_avatars
    from .strategies import DifferentialPrivacy

    sc = _scenario(cfg.scenario, "scenario")
    device_avatars(cfg, sc)
    _check_split(cfg.episode_steps, cfg.eval.test_fraction, int(round(cfg.eval.guard_s * sc.step_hz)))
    f = cfg.foundation
    if f.checkpoint:
        try:
            ck = Path(f.checkpoint).expanduser()
            found = (ck / "config.json").is_file()
        except (OSError, RuntimeError) as exc:  # a name too long; ~user of no such user
            raise ConfigError("foundation.checkpoint", f"unusable path ({type(exc).__name__})",
                              value=f.checkpoint[:120]) from None
        if not found:
            raise ConfigError("foundation.checkpoint", "not a checkpoint directory (no config.json in it)",
                              value=str(ck)[:120])
    else:
        for i, s in enumerate(f.scenarios or ()):
            _scenario(s, f"foundation.scenarios[{i}]")
        PretrainConfig(preset=cfg.model_preset, scenarios=tuple(f.scenarios or (cfg.scenario,)), steps=f.steps,
                       record_steps=f.record_steps, batch_size=f.batch_size, learning_rate=f.learning_rate,
                       seed=f.seed, guard_s=f.guard_s).model_config()
    _check_targets(cfg)
    for paradigm in PARADIGMS:  # the local-only baseline and ``xrfed demo`` run these derived configs
        with_paradigm(cfg, paradigm)
    strategy = cfg.aggregator.make()
    if cfg.dp.enabled:
        DifferentialPrivacy(strategy, clip_norm=cfg.dp.clip_norm, noise_multiplier=cfg.dp.noise_multiplier,
                            mode=cfg.dp.mode)
    make_paradigm(cfg.rounds.paradigm)
    cfg.attackers()
    for dev in cfg.devices:
        PersonalizationConfig(method=cfg.tuning, rank=dev.rank or cfg.lora_rank, alpha=cfg.lora_alpha,
                              targets=tuple(cfg.lora_targets), personal=cfg.personal_adapters,
                              personal_heads=cfg.personal_heads, share_all_heads=cfg.share_all_heads)
        AgentConfig(seed=derive_seed(cfg.seed, "device", dev.id), continual=cfg.continual.method,
                    ewc_strength=cfg.continual.ewc_strength, replay_capacity=cfg.continual.replay_capacity)


def validate_run(args: argparse.Namespace) -> None:
    from .config import load_config

    if args.resume and not args.out:
        raise _flag_error("--resume", "needs --out, the run directory to continue")
    if args.resume and not Path(args.out).is_dir():
        raise _flag_error("--resume", f"--out {args.out[:120]!r} is not an existing run directory")
    cfg = _with_flags(load_config(args.config), args)
    preflight(cfg)
    args.experiment = cfg


def validate_compare(args: argparse.Namespace) -> None:
    if len(args.runs) > MAX_RUNS:
        raise _flag_error("RUN", f"at most {MAX_RUNS} run directories (got {len(args.runs)})")
    check = existing_dir("run directory")
    for run in args.runs:
        try:
            check(run)
        except argparse.ArgumentTypeError as exc:
            raise _flag_error("RUN", str(exc)) from None


def _demo_config(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from .config import load_config

    cfg = load_config(args.config)
    if args.rounds:
        cfg = replace(cfg, rounds=replace(cfg.rounds, rounds=args.rounds))
    if args.seeds:
        cfg = replace(cfg, seeds=list(args.seeds))
    return cfg


def validate_demo(args: argparse.Namespace) -> None:
    from .config import PARADIGMS
    from .runner import with_paradigm

    _check_seeds(args.seeds)
    cfg = _demo_config(args)
    for paradigm in PARADIGMS:  # the demo runs each: every derived config must be valid too
        with_paradigm(cfg, paradigm)
    preflight(cfg)
    args.experiment = cfg


def validate_shift(args: argparse.Namespace) -> None:
    from .shift import PAIRS

    _check_seeds(args.seeds)
    for d in args.dims:
        for cfg in PAIRS[d].load(args.configs):
            preflight(cfg)


def run_experiment(args: argparse.Namespace) -> int:
    from .config import load_config
    from .errors import ConfigError
    from .runner import run_experiment as run

    cfg = getattr(args, "experiment", None) or _with_flags(load_config(args.config), args)
    if args.resume and not args.out:
        raise ConfigError("--out", "--resume needs the run directory to continue")
    out = Path(args.out) if args.out else default_out_dir(cfg.name)
    summary = run(cfg, out, resume=args.resume, progress=not args.no_progress, torch_threads=args.threads)
    if summary is not None:
        from .report import compare_runs

        print(compare_runs([out]))
        print(f"\nreport: {out / 'report.md'}  (HTML: {out / 'report.html'})")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from .report import compare_runs

    table = compare_runs(args.runs)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


def versus_local(dirs: dict[str, Path]) -> str:
    """Markdown lines: each federated paradigm minus local-only, paired over the seeds (macro balanced accuracy)."""
    from .rundir import read_summary
    from .stats import paired_difference

    if "local" not in dirs:
        return ""

    def per_seed(rd: Path) -> dict[int, float]:
        s = read_summary(rd)
        b = s["balanced_accuracy"]
        if isinstance(b, dict):
            return dict(zip(s["seeds"], b["values"], strict=True))
        return {int(s["seed"]): float(b) if b is not None else float("nan")}

    base = per_seed(dirs["local"])
    lines = ["| paradigm | minus local-only (macro balanced accuracy) | 95 % CI | sign on every seed |",
             "|---|---|---|---|"]
    for name, rd in dirs.items():
        if name == "local":
            continue
        mine = per_seed(rd)
        seeds = sorted(set(mine) & set(base))  # paired seed by seed
        est = paired_difference([mine[x] for x in seeds], [base[x] for x in seeds])
        ci = "-" if est.n < 2 else f"[{est.lo:+.3f}, {est.hi:+.3f}]"
        lines.append(f"| {name} | {est.mean:+.3f} | {ci} | {'yes' if est.sign_holds else 'no'} |")
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> int:
    from .config import PARADIGMS
    from .report import compare_runs, write_comparison
    from .runner import run_experiment as run
    from .runner import with_paradigm

    cfg = getattr(args, "experiment", None) or _demo_config(args)
    parent = Path(args.out) if args.out else default_out_dir("demo")
    t0 = time.perf_counter()
    dirs: dict[str, Path] = {}
    for paradigm in PARADIGMS:  # local first: every federated paradigm's report reads it as its local-only baseline
        run(with_paradigm(cfg, paradigm), parent / paradigm, progress=not args.no_progress,
            torch_threads=args.threads, local_dir=parent / "local")
        dirs[paradigm] = parent / paradigm
    table = compare_runs(list(dirs.values()))
    paired = versus_local(dirs)
    write_comparison(parent, dirs, paired)
    print(table + ("\n\n" + paired if paired else ""))
    print(f"\n{time.perf_counter() - t0:.0f} s; open {parent / 'comparison.html'} (plot, tables, each paradigm's "
          f"report)")
    print(f"run directory: {parent}", file=sys.stderr)
    return 0
