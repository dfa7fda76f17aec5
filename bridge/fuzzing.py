"""Property-based fuzzing of every surface that reads bytes from outside (``xrfed bench fuzz``).

A :class:`Surface` is one place where hostile input enters xrfed: stream messages, the stand-in player's
side-channel messages, ``xrfed live`` HTTP requests, scenario YAML, experiment configs, checkpoints, datasets, CLI
argument vectors. It pairs a hypothesis strategy (inputs: valid ones, mutated ones and garbage) with a ``feed``
function that hands one input to the real code path. The contract every surface must keep:

- ``feed`` returns (the input was accepted) or raises an :class:`~bridge.errors.XrfedError` (it was rejected with
  a clear message). Any other exception -- ``IndexError``, ``struct.error``, ``RecursionError``, ``MemoryError``,
  a crashed server -- is a **crash**, and a crash is a bug.
- a surface whose code runs inside a server (a subscriber, the player, the live page) gets its server from
  ``session()`` and must leave it serving: the feed checks the server still answers after each input.

The tests run each surface with a few hundred examples (:func:`assert_no_crash`); ``xrfed bench fuzz`` runs at
least 10 000 per surface, each surface in a fresh process so its peak RSS is its own, and writes inputs tried,
rejections, crashes (must be 0) and peak RSS as JSON.

Packages contribute surfaces through the ``xrfed.fuzz`` entry-point group (``name = "module:SURFACES"``), so this
module does not know the packages built on the bridge.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import functools
import json
import multiprocessing as mp
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from .errors import XrfedError

__all__ = ["Surface", "FuzzResult", "BYTE_DAMAGES", "byte_damages", "damage_bytes", "json_values", "stateless", "run_surface", "assert_no_crash", "surfaces", "memory_probes",
           "peak_rss_bytes", "add_bench_arguments", "run_fuzz_bench", "strategies", "pick", "ints", "index",
           "tree_paths", "tree_get", "tree_set"]

#: Examples per surface in ``xrfed bench fuzz`` (the issue's floor).
BENCH_EXAMPLES = 10_000
#: ``xrfed bench fuzz``: an input that takes longer than this is a hang, and a hang is a crash.
EXAMPLE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Surface:
    """One hostile-input surface: ``strategy()`` builds the hypothesis strategy, ``session()`` yields ``feed``."""

    name: str
    description: str
    strategy: Callable[[], Any]
    session: Callable[[], contextlib.AbstractContextManager[Callable[[Any], None]]]
    #: exception types besides XrfedError that count as a clean rejection (e.g. SystemExit(2) for argparse)
    rejections: tuple[type[BaseException], ...] = ()


def strategies() -> Any:
    """``hypothesis.strategies``, imported when a surface first builds its strategy (hypothesis is a dev extra)."""
    from hypothesis import strategies as st

    return st


@functools.cache
def pick(options: tuple[Any, ...]) -> Any:
    """``sampled_from(options)``, built once per option tuple (building strategies inside a draw is what costs
    time)."""
    return strategies().sampled_from(options)


@functools.cache
def ints(lo: int, hi: int) -> Any:
    """``integers(lo, hi)``, built once per range."""
    return strategies().integers(lo, hi)


def index(draw: Any, n: int) -> int:
    """An index in ``range(n)`` (n >= 1) drawn from one cached strategy."""
    return int(draw(ints(0, 1 << 20))) % n


#: the byte-level damages :func:`damage_bytes` applies to a file
BYTE_DAMAGES = ("flip", "ff", "truncate", "extend", "replace", "zero", "empty")


@functools.cache
def byte_damages(kinds: tuple[str, ...] = BYTE_DAMAGES, max_run: int = 64) -> Any:
    """(kind, position fraction, run length 1..max_run, payload) of one byte-level damage (:func:`damage_bytes`)."""
    st = strategies()
    return st.tuples(st.sampled_from(kinds), st.floats(0.0, 1.0), st.integers(1, max_run), st.binary(max_size=32))


def damage_bytes(data: bytes, op: tuple[str, float, int, bytes]) -> bytes:
    """``data`` with one damage of :func:`byte_damages` applied: a flipped bit, a run of 0xFF or 0x00 written over,
    cut short, extended, replaced by ``payload``, or emptied."""
    kind, where, n, payload = op
    pos = min(len(data), int(where * len(data)))
    if kind == "flip" and data:
        pos = min(pos, len(data) - 1)
        return data[:pos] + bytes([data[pos] ^ (1 << (n % 8))]) + data[pos + 1:]
    if kind in ("ff", "zero"):
        return data[:pos] + (b"\xff" if kind == "ff" else b"\x00") * n + data[pos + n:]
    if kind == "truncate":
        return data[:pos]
    if kind == "extend":
        return data + payload + b"\xff" * n
    if kind == "replace":
        return payload
    return b"" if kind == "empty" else data


def json_values(absurd: tuple[Any, ...]) -> Any:
    """Small JSON trees whose leaves are ``absurd`` values, integers, floats and short strings (not cached:
    ``absurd`` may hold lists; build it once, in a surface's cached strategy)."""
    st = strategies()
    scalars = st.one_of(st.sampled_from(absurd), st.integers(), st.floats(), st.text(max_size=8))
    return st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                     st.dictionaries(st.text(max_size=6), c, max_size=3)),
                        max_leaves=6)


def tree_paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every node's path (keys and indices) in a tree of dicts and lists, the root first."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from tree_paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from tree_paths(v, (*prefix, i))


def tree_get(node: Any, path: tuple[Any, ...]) -> Any:
    """The node at ``path``."""
    for k in path:
        node = node[k]
    return node


def tree_set(root: Any, path: tuple[Any, ...], value: Any) -> Any:
    """``root`` with the node at ``path`` replaced (the root itself when ``path`` is empty)."""
    if not path:
        return value
    tree_get(root, path[:-1])[path[-1]] = value
    return root


def stateless(feed: Callable[[Any], None]) -> Callable[[], contextlib.AbstractContextManager[Callable[[Any], None]]]:
    """A ``session`` for surfaces with nothing to start: yields ``feed`` itself."""

    @contextlib.contextmanager
    def session() -> Iterator[Callable[[Any], None]]:
        yield feed

    return session


@dataclass
class FuzzResult:
    """What one surface did under fuzzing."""

    surface: str
    examples: int = 0
    accepted: int = 0
    rejected: int = 0
    crashes: int = 0
    crash_examples: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def peak_rss_bytes() -> int:
    """This process's peak resident set size, in bytes.

    Linux's ``VmHWM`` (the high-water mark of this process image). Not ``getrusage().ru_maxrss``: Linux carries that
    across ``exec`` from the forked parent, so a child of a 1 GB test process would report 1 GB before doing anything.
    Elsewhere ``ru_maxrss`` is the best there is.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def run_surface(surface: Surface, *, examples: int, seed: int = 0, progress: bool = False,
                keep_crashes: int = 5, example_timeout_s: float | None = None) -> FuzzResult:
    """Feed ``examples`` generated inputs to ``surface``; crashes are counted (not raised) with their inputs.

    ``example_timeout_s``: a watchdog for processes of their own (``xrfed bench fuzz``): an input that hangs longer
    (a C library looping on damaged data cannot be interrupted from Python) ends the process with every thread's
    traceback on stderr, which the bench counts as a crash.
    """
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from tqdm import tqdm

    result = FuzzResult(surface.name)
    ok: tuple[type[BaseException], ...] = (XrfedError, *surface.rejections)
    t0 = time.perf_counter()
    bar = tqdm(total=examples, desc=f"fuzz {surface.name}", unit="input", disable=not progress, leave=False)
    with surface.session() as feed:

        @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @hseed(seed)
        @given(surface.strategy())
        def prop(example: Any) -> None:
            result.examples += 1
            bar.update(1)
            if example_timeout_s is not None:
                faulthandler.dump_traceback_later(example_timeout_s, exit=True)
            try:
                feed(example)
            except ok:
                result.rejected += 1
                return
            except Exception as exc:  # noqa: BLE001 -- a crash is what we are counting
                result.crashes += 1
                if len(result.crash_examples) < keep_crashes:
                    result.crash_examples.append({
                        "input": _short(example), "error": f"{type(exc).__name__}: {exc}"[:500],
                        "where": "".join(traceback.format_tb(exc.__traceback__, limit=-3))[-1500:],
                    })
                return
            result.accepted += 1

        try:
            prop()
        finally:
            if example_timeout_s is not None:
                faulthandler.cancel_dump_traceback_later()
    bar.close()
    result.seconds = round(time.perf_counter() - t0, 3)
    result.peak_rss_mb = round(peak_rss_bytes() / 2**20, 1)
    return result


def assert_no_crash(surface: Surface, *, examples: int = 200, seed: int = 0) -> FuzzResult:
    """Test helper: run ``surface`` and fail with the first crashing inputs if anything crashed."""
    result = run_surface(surface, examples=examples, seed=seed)
    if result.crashes:
        lines = [f"{surface.name}: {result.crashes} of {result.examples} inputs crashed"]
        for c in result.crash_examples:
            lines += [f"  input {c['input']}", f"  -> {c['error']}", c["where"]]
        raise AssertionError("\n".join(lines))
    return result


def surfaces() -> dict[str, Surface]:
    """Every surface registered under the ``xrfed.fuzz`` entry-point group, by name."""
    out: dict[str, Surface] = {}
    for ep in metadata.entry_points(group="xrfed.fuzz"):
        try:
            found = ep.load()
        except ImportError as exc:  # an optional package that is not installed contributes nothing
            if exc.name and (ep.module == exc.name or ep.module.startswith(exc.name + ".")):
                continue
            raise
        for s in found:
            out[s.name] = s
    return out


def memory_probes() -> dict[str, Callable[[], dict[str, Any]]]:
    """Memory tests of the surfaces' modules: a module of the ``xrfed.fuzz`` group may define ``MEMORY_PROBES``
    (name -> function returning at least ``peak_growth_bytes`` and ``cap_bytes``; run in a fresh process)."""
    import importlib

    out: dict[str, Callable[[], dict[str, Any]]] = {}
    for ep in metadata.entry_points(group="xrfed.fuzz"):
        try:
            module = importlib.import_module(ep.module)
        except ImportError as exc:
            if exc.name and (ep.module == exc.name or ep.module.startswith(exc.name + ".")):
                continue
            raise
        out.update(getattr(module, "MEMORY_PROBES", {}))
    return out


def _probe_child(name: str, conn: Any) -> None:
    try:
        res = {"probe": name, **memory_probes()[name]()}
        res["within_cap"] = bool(res["peak_growth_bytes"] <= res["cap_bytes"])
    except BaseException as exc:  # noqa: BLE001 -- the parent reports it
        res = {"probe": name, "error": f"{type(exc).__name__}: {exc}", "within_cap": False}
    conn.send(res)
    conn.close()


def _in_child(ctx: Any, target: Callable[..., None], args: tuple[Any, ...], name: str) -> dict[str, Any]:
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, child))
    proc.start()
    child.close()
    try:
        res: dict[str, Any] = parent.recv()
    except EOFError:
        res = {"surface": name, "error": f"fuzz process died (an input crashed the interpreter or hung longer than "
                                         f"{EXAMPLE_TIMEOUT_S:g} s; its traceback is on stderr)", "crashes": 1,
               "within_cap": False}
    proc.join()
    if proc.exitcode:
        res.setdefault("error", f"fuzz process exited with {proc.exitcode}")
    return res


def _child(name: str, examples: int, seed: int, conn: Any) -> None:
    try:
        res = run_surface(surfaces()[name], examples=examples, seed=seed,
                          example_timeout_s=EXAMPLE_TIMEOUT_S).to_dict()
    except BaseException as exc:  # noqa: BLE001 -- the parent reports it as a failed surface
        res = {"surface": name, "error": f"{type(exc).__name__}: {exc}", "crashes": 1}
    conn.send(res)
    conn.close()


def _surface_name(text: str) -> str:
    known = sorted(surfaces())
    if text not in known:
        raise argparse.ArgumentTypeError(f"unknown surface {text[:80]!r}; known: {', '.join(known)}")
    return text


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import output_file

    p.add_argument("--json", metavar="FILE", type=output_file(), help="write the results as JSON to FILE")
    from .cliargs import int_range

    p.add_argument("--examples", type=int_range(1, 10**8), default=BENCH_EXAMPLES,
                   help=f"inputs per surface (default {BENCH_EXAMPLES})")
    p.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, help="hypothesis seed (default 0)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory probes (flood + zlib bombs)")
    p.add_argument("--surface", action="append", metavar="NAME", type=_surface_name,
                   help="fuzz only this surface (repeatable; default: all)")
    p.add_argument("--list", action="store_true", help="list the surfaces and exit")


def run_fuzz_bench(args: argparse.Namespace) -> int:
    """``xrfed bench fuzz``: every surface in its own process; exit 1 if anything crashed."""
    from tqdm import tqdm

    found = surfaces()
    if args.list:
        for name, s in sorted(found.items()):
            print(f"{name:28s} {s.description}")
        return 0
    names = args.surface or sorted(found)
    unknown = [n for n in names if n not in found]
    if unknown:
        raise XrfedError(f"bench fuzz: unknown surface {unknown[0]!r}; known: {', '.join(sorted(found))}")
    ctx = mp.get_context("spawn")
    results = []
    for name in tqdm(names, desc="fuzz surfaces", unit="surface", disable=not sys.stderr.isatty()):
        res = _in_child(ctx, _child, (name, args.examples, args.seed), name)
        results.append(res)
        print(f"{name:28s} {res.get('examples', 0):6d} inputs  {res.get('rejected', 0):6d} rejected  "
              f"{res.get('crashes', 0):3d} crashes  peak RSS {res.get('peak_rss_mb', 0):7.1f} MB  "
              f"{res.get('seconds', 0):7.1f} s" + (f"  ERROR {res['error']}" if "error" in res else ""))
    total = sum(int(r.get("crashes", 0)) for r in results)
    memory = []
    if not args.no_memory:
        for name in sorted(memory_probes()):
            res = _in_child(ctx, _probe_child, (name,), name)
            memory.append(res)
            print(f"{name:28s} peak growth {res.get('peak_growth_bytes', 0) / 2**20:7.1f} MiB  cap "
                  f"{res.get('cap_bytes', 0) / 2**20:7.1f} MiB  " + ("ok" if res.get("within_cap") else "OVER CAP")
                  + (f"  ERROR {res['error']}" if "error" in res else ""))
    over = sum(1 for m in memory if not m.get("within_cap"))
    doc = {"bench": "fuzz", "examples_per_surface": args.examples, "seed": args.seed, "surfaces": results,
           "total_crashes": total, "memory": memory, "memory_over_cap": over, "python": sys.version.split()[0],
           "cpu_count": os.cpu_count()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
        print(f"wrote {args.json}")
    return 1 if total or over else 0
