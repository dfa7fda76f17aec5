"""``xrfed run``, ``xrfed compare`` and ``xrfed demo``: the federation package's CLI plug-in.

(``xrfed bench round`` is dispatched by the lead's CLI to :mod:`federation.bench`.) Heavy imports happen inside
the ``run`` functions so ``xrfed --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["register", "run_experiment", "run_compare", "run_demo", "default_out_dir", "DEMO_CONFIG"]

#: the demo's config, shipped at the repository root
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def default_out_dir(name: str) -> Path:
    """``runs/<name>-<UTC timestamp>`` under the current directory."""
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="run a federated experiment from a YAML config into a run directory",
        description="Run a whole experiment (scenario, devices, model, tuning, paradigm, aggregator, rounds, DP) "
                    "with a progress display per round. Writes metrics.jsonl, a checkpoint every round, "
                    "summary.json and report.md/report.html with plots.")
    p.add_argument("config", help="experiment YAML (see configs/)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<name>-<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the simulated devices (default 1)")
    p.set_defaults(func=run_experiment)

    c = subparsers.add_parser(
        "compare", help="put finished runs side by side (the Table 7 trade-offs)",
        description="Print one Markdown table with accuracy, personalization gain, bytes per link type, device "
                    "energy, round latency, epsilon, forgetting and membership-inference AUC of each run.")
    c.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    c.add_argument("--out", metavar="FILE", help="also write the table to this Markdown file")
    c.set_defaults(func=run_compare)

    d = subparsers.add_parser(
        "demo", help="the default scenario: local-only, centralized, semi- and decentralized rounds, compared",
        description="Runs the demo config (heterogeneous devices, changing lighting, task scripts) with local-only "
                    "training and under the three coordination paradigms of the seed paper's Fig. 3, over the "
                    "config's seeds, and prints one comparison table (mean ± 95 % CI, baselines on the same "
                    "held-out data) and each paradigm's paired difference to local-only; the reports and plots "
                    "stay in the run directory it names.")
    d.add_argument("--config", default=str(DEMO_CONFIG), help="demo config (default: configs/demo.yaml)")
    d.add_argument("--out", metavar="DIR", help="parent run directory (default: runs/demo-<timestamp>)")
    d.add_argument("--rounds", type=int, help="override the number of rounds")
    d.add_argument("--seeds", type=int, nargs="+", help="override the config's seeds (e.g. --seeds 0 1 2)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the simulated devices (default 1)")
    d.set_defaults(func=run_demo)

    from . import shift

    shift.register(subparsers)  # xrfed shift: the SHIFT pairs of configs/shift


def run_experiment(args: argparse.Namespace) -> int:
    from .config import load_config
    from .errors import ConfigError
    from .runner import run_experiment as run

    cfg = load_config(args.config)
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
    from dataclasses import replace

    from .config import PARADIGMS, load_config
    from .report import compare_runs, write_comparison
    from .runner import run_experiment as run
    from .runner import with_paradigm

    cfg = load_config(args.config)
    if args.rounds:
        cfg = replace(cfg, rounds=replace(cfg.rounds, rounds=args.rounds))
    if args.seeds:
        cfg = replace(cfg, seeds=list(args.seeds))
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
