"""The ``xrfed`` command line: one entry point, subcommands contributed by each package.

Each plug-in module exposes ``register(subparsers)``; heavy imports happen inside the subcommand's ``run``, so
``xrfed --help`` stays fast and works without optional extras. ``xrfed bench KIND`` dispatches to the benchmark of
the package that owns KIND.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

#: plug-in modules contributing subcommands (missing optional ones are skipped)
PLUGINS = (
    "bridge.cli_sim",
    "bridge.cli_data",
    "bridge.unity.cli",
    "bridge.stream.cli",
    "agents.cli",
    "federation.cli",
)

#: ``xrfed bench KIND``: KIND -> (module, function adding arguments, function running it)
BENCHES = {
    "sim": ("bridge.embedded.bench", "add_bench_arguments", "run_sim_bench"),
    "inference": ("agents.bench", "add_bench_arguments", "run_inference_bench"),
    "round": ("federation.bench", "add_bench_arguments", "run_round_bench"),
    "poison": ("federation.bench_poison", "add_bench_arguments", "run_poison_bench"),
    "bridge": ("bridge.unity.bench", "add_bench_arguments", "run_bridge_bench"),
    "stream": ("bridge.stream.bench", "add_bench_arguments", "run_stream_bench"),
    "fuzz": ("bridge.fuzzing", "add_bench_arguments", "run_fuzz_bench"),
}


def _bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and write its figures as JSON",
                       description="Benchmarks measure speed and memory targets as ratios against a bare baseline "
                                   "measured in the same run.")
    kinds = p.add_subparsers(dest="bench_kind", metavar="KIND", required=True)
    for kind, (mod, add, run) in BENCHES.items():
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        bp = kinds.add_parser(kind, help=(m.__doc__ or kind).strip().splitlines()[0])
        getattr(m, add)(bp)
        bp.set_defaults(func=getattr(m, run))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xrfed",
        description="xrfed: simulate XR devices, record their multimodal data, and personalize a shared multi-modal "
                    "multi-task foundation model across them in federated rounds.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in PLUGINS:
        try:
            m = importlib.import_module(mod)
        except ImportError as exc:
            if exc.name and mod.startswith(exc.name):
                continue  # optional plug-in not present
            raise
        m.register(sub)
    _bench_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import XrfedError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except XrfedError as exc:
        print(f"xrfed: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
