"""The ``xrfed`` command line: a thin dispatcher above every package.

Subcommands come from the ``xrfed.commands`` entry-point group (``name = "module:register"``; ``register(subparsers)``
adds one or more subcommands), benchmarks from ``xrfed.benches`` (``kind = "module:run_function"``; the module
defines ``add_bench_arguments(parser)`` and its docstring's first line is the kind's help). Both groups are declared
in pyproject.toml, so this module names none of the packages built on the bridge. Plug-ins keep heavy imports inside
their ``run`` functions, and a benchmark module is imported only when ``xrfed bench`` is used, so ``xrfed --help``
stays fast.

A command sets ``func`` (does the work) and may set ``validate`` (checks what the parser cannot -- a config that
loads, flags that must agree -- and raises an :class:`~bridge.errors.XrfedError`, before any work starts) with
``set_defaults``. :func:`main` runs ``validate`` then ``func``; its ``run`` hook replaces ``func`` only, which is how
the CLI fuzzer (:mod:`bridge.cli_fuzz`) exercises parsing and validation of the heavy commands without running them.

Every user error ends in ONE line on stderr and exit status 2: parser errors (after argparse's usage lines),
:class:`~bridge.errors.XrfedError`, and OS errors on a path the user named. Ctrl-C exits 130.

The argparse types for paths (:func:`existing_file`, :func:`existing_dir`, :func:`output_file`, :func:`output_dir`),
scenarios (:func:`scenario_arg`), seeds (:func:`seed_arg`) and comma-separated integers (:func:`int_list`) live
here beside :mod:`bridge.cliargs`' numeric ones.
"""

from __future__ import annotations

import argparse
import functools
import os
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from typing import Any

__all__ = ["main", "build_parser", "command_parsers", "COMMANDS_GROUP", "BENCHES_GROUP", "MAX_SEED",
           "existing_file", "existing_dir", "output_file", "output_dir", "scenario_arg", "seed_arg", "int_list",
           "one_line"]

#: entry-point group of subcommand plug-ins: ``name = "module:register"``
COMMANDS_GROUP = "xrfed.commands"
#: entry-point group of benchmarks: ``kind = "module:run_function"`` (the module defines ``add_bench_arguments``)
BENCHES_GROUP = "xrfed.benches"
#: the largest seed a flag accepts (seeds are offset per episode/run and must stay below 2**32 for NumPy)
MAX_SEED = 2**31 - 1


# -- one-line messages ----------------------------------------------------------------------------------------------
def one_line(message: str) -> str:
    """``message`` on one line: newlines and other control characters escaped (hostile text cannot add lines)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose error is one line, and whose arguments may be added on first use (``populate``)."""

    def __init__(self, *args: Any, populate: Callable[[argparse.ArgumentParser], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._populate = populate

    def populate(self) -> argparse.ArgumentParser:
        """Add the deferred arguments now (idempotent); returns the parser."""
        if self._populate is not None:
            fill, self._populate = self._populate, None
            fill(self)
        return self

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self.populate()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.populate()
        return super().format_help()

    def format_usage(self) -> str:
        self.populate()
        return super().format_usage()

    def error(self, message: str) -> Any:
        super().error(one_line(message))


# -- argparse types -------------------------------------------------------------------------------------------------
def _show(text: str) -> str:
    return repr(text) if len(text) <= 120 else repr(text[:120]) + f"... ({len(text)} characters)"


def _stat(text: str, what: str) -> os.stat_result | None:
    """``os.stat(text)``, or None when nothing is there; an unusable path is an ArgumentTypeError."""
    if not text:
        raise argparse.ArgumentTypeError(f"{what}: expected a path, got an empty string")
    try:
        return os.stat(text)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (ValueError, OSError) as exc:  # NUL, unencodable characters, name too long, no permission, loops
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise argparse.ArgumentTypeError(f"{what} {_show(text)}: {reason}") from None


def existing_file(what: str = "file") -> Callable[[str], str]:
    """A path to an existing regular file (returned as given)."""

    def parse(text: str) -> str:
        st = _stat(text, what)
        if st is None:
            raise argparse.ArgumentTypeError(f"{what} {_show(text)}: no such file")
        if not stat.S_ISREG(st.st_mode):
            raise argparse.ArgumentTypeError(f"{what} {_show(text)}: not a regular file")
        return text

    parse.__name__ = what
    return parse


def existing_dir(what: str = "directory") -> Callable[[str], str]:
    """A path to an existing directory (returned as given)."""

    def parse(text: str) -> str:
        st = _stat(text, what)
        if st is None:
            raise argparse.ArgumentTypeError(f"{what} {_show(text)}: no such directory")
        if not stat.S_ISDIR(st.st_mode):
            raise argparse.ArgumentTypeError(f"{what} {_show(text)}: not a directory")
        return text

    parse.__name__ = what
    return parse


def _nearest_existing(text: str, what: str) -> tuple[str, os.stat_result]:
    """The path itself or its nearest existing ancestor, with its stat."""
    path = os.path.abspath(text) if text else text
    while True:
        st = _stat(path, what)
        if st is not None:
            return path, st
        parent = os.path.dirname(path)
        if parent == path:  # pragma: no cover -- the root exists
            raise argparse.ArgumentTypeError(f"{what} {_show(text)}: no existing parent directory")
        path = parent


def output_dir(what: str = "output directory") -> Callable[[str], str]:
    """A directory to write into: it exists, or can be created (its nearest existing ancestor is a directory)."""

    def parse(text: str) -> str:
        _stat(text, what)  # refuses empty, NUL, unencodable
        path, st = _nearest_existing(text, what)
        if not stat.S_ISDIR(st.st_mode):
            where = "is" if path == os.path.abspath(text) else f"is inside {_show(path)}, which is"
            raise argparse.ArgumentTypeError(f"{what} {_show(text)} {where} not a directory")
        return text

    parse.__name__ = what
    return parse


def output_file(what: str = "output file") -> Callable[[str], str]:
    """A file to write: not a directory, and its directory exists."""

    def parse(text: str) -> str:
        st = _stat(text, what)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise argparse.ArgumentTypeError(f"{what} {_show(text)} is a directory")
        parent = os.path.dirname(os.path.abspath(text))
        pst = _stat(parent, what)
        if pst is None or not stat.S_ISDIR(pst.st_mode):
            raise argparse.ArgumentTypeError(f"{what} {_show(text)}: directory {_show(parent)} does not exist")
        return text

    parse.__name__ = what
    return parse


def scenario_arg(text: str) -> str:
    """A shipped scenario name (``xrfed scenarios``) or the path of an existing YAML file."""
    from .cliargs import NAME_RE
    from .scenario import scenario_names

    if NAME_RE.match(text) and not text.endswith((".yaml", ".yml")) and text in scenario_names():
        return text
    st = _stat(text, "scenario")
    if st is None:
        raise argparse.ArgumentTypeError(f"no shipped scenario or file {_show(text)}; shipped: "
                                         f"{', '.join(scenario_names())}")
    if not stat.S_ISREG(st.st_mode):
        raise argparse.ArgumentTypeError(f"scenario {_show(text)}: not a regular file")
    return text


scenario_arg.__name__ = "scenario"


def seed_arg() -> Callable[[str], int]:
    """A seed: a whole number in [0, :data:`MAX_SEED`]."""
    from .cliargs import int_range

    return int_range(0, MAX_SEED)


def int_list(lo: int, hi: int, *, max_items: int = 16) -> Callable[[str], list[int]]:
    """Comma-separated whole numbers, each in ``[lo, hi]``, 1 to ``max_items`` of them (``"1,4,8"``)."""
    from .cliargs import int_range

    one = int_range(lo, hi)

    def parse(text: str) -> list[int]:
        parts = text.split(",")
        if not text.strip() or len(parts) > max_items:
            raise argparse.ArgumentTypeError(f"expected 1 to {max_items} comma-separated whole numbers between "
                                             f"{lo} and {hi}, got {_show(text)}")
        return [one(p.strip()) for p in parts]

    parse.__name__ = "list of int"
    return parse


# -- the parser -----------------------------------------------------------------------------------------------------
@functools.cache
def _entry_points(group: str) -> tuple[metadata.EntryPoint, ...]:
    """The group's entry points, first of each name (discovery order: the declared order within a distribution)."""
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=group):
        found.setdefault(ep.name, ep)
    return tuple(found.values())


def _load(ep: metadata.EntryPoint) -> Any | None:
    """``ep.load()``, or None when the plug-in's own package is not installed (an optional part left out)."""
    try:
        return ep.load()
    except ImportError as exc:
        if exc.name and (ep.module == exc.name or ep.module.startswith(exc.name + ".")):
            return None
        raise


def _add_bench(ep: metadata.EntryPoint, run: Callable[..., Any], parser: argparse.ArgumentParser) -> None:
    module = sys.modules[run.__module__]
    module.add_bench_arguments(parser)
    parser.set_defaults(func=run)


def _add_bench_kinds(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="bench_kind", metavar="KIND", required=True)
    for ep in _entry_points(BENCHES_GROUP):
        run = _load(ep)
        if run is None:
            continue
        doc = (sys.modules[run.__module__].__doc__ or ep.name).strip()
        kinds.add_parser(ep.name, help=doc.splitlines()[0], description=doc.split("\n\n")[0],
                         populate=functools.partial(_add_bench, ep, run))


def build_parser() -> argparse.ArgumentParser:
    """The ``xrfed`` parser with every registered subcommand (benchmark kinds are added when ``bench`` is used)."""
    parser = _Parser(
        prog="xrfed",
        description="xrfed: simulate XR devices, record their multimodal data, and personalize a shared multi-modal "
                    "multi-task foundation model across them in federated rounds.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for ep in _entry_points(COMMANDS_GROUP):
        register = _load(ep)
        if register is not None:
            register(sub)
    sub.add_parser("bench", help="run a benchmark and write its figures as JSON",
                   description="Benchmarks measure speed and memory targets as ratios against a bare baseline "
                               "measured in the same run.",
                   populate=_add_bench_kinds)
    return parser


def command_parsers(parser: argparse.ArgumentParser | None = None) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every (sub)command's parser by its path, e.g. ``("bench", "sim")``, deferred arguments added; ``()`` is the
    root. For tests and the fuzzer, which go through every flag."""
    root = parser or build_parser()
    out: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(path: tuple[str, ...], p: argparse.ArgumentParser) -> None:
        if isinstance(p, _Parser):
            p.populate()
        out[path] = p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk((*path, name), child)

    walk((), root)
    return out


# -- running --------------------------------------------------------------------------------------------------------
def _user_strings(args: argparse.Namespace | None) -> Iterator[str]:
    for value in vars(args or argparse.Namespace()).values():
        if isinstance(value, str) and value:
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, str) and v)


def _user_path(exc: OSError, args: argparse.Namespace | None) -> str | None:
    """The path of ``exc`` when it is one the user named (or lies inside or above one), else None."""
    named = []
    for s in _user_strings(args):
        try:
            named.append(os.path.abspath(s))
        except ValueError:
            continue
    for raw in (exc.filename, exc.filename2):
        if not isinstance(raw, (str, bytes, os.PathLike)):
            continue
        try:
            path = os.path.abspath(os.fsdecode(raw))
        except ValueError:
            continue
        for n in named:
            try:
                common = os.path.commonpath([path, n])
            except ValueError:
                continue
            if common in (path, n):
                return os.fsdecode(raw)
    return None


def _fail(message: str) -> int:
    print(f"xrfed: error: {one_line(message)}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None, *,
         run: Callable[[argparse.Namespace], int | None] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), validate, run; returns the exit status.

    ``run``, when given, is called with the parsed and validated arguments instead of the command's ``func``
    (the fuzzer's hook: parse and validate everything, run only what is cheap). Parser errors and ``--help`` raise
    SystemExit (2 and 0) as argparse does.
    """
    from .errors import XrfedError

    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        validate = getattr(args, "validate", None)
        if validate is not None:
            validate(args)
        return int((run or args.func)(args) or 0)
    except KeyboardInterrupt:
        print("xrfed: interrupted", file=sys.stderr)
        return 130
    except XrfedError as exc:
        return _fail(str(exc))
    except BrokenPipeError:  # `xrfed devices | head -1`: the reader left; nothing to report
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- so the interpreter's final flush stays quiet
        except OSError:
            pass
        return 1
    except OSError as exc:
        path = _user_path(exc, args)
        if path is None:
            raise  # not about a path the user named: an internal error, with its traceback
        return _fail(f"{exc.strerror or type(exc).__name__}: {path}")


if __name__ == "__main__":
    sys.exit(main())
