"""Hostile-input surface of the command line (``xrfed bench fuzz``; see :mod:`bridge.fuzzing`).

``cli.argv``: argument vectors for every (sub)command the ``xrfed.commands`` and ``xrfed.benches`` groups register --
each command with a few of its own flags (and unknown ones), given hostile values: negative, zero, NaN, infinities,
huge and fractional numbers, empty strings, path separators, NUL and control characters, non-existent and special
paths. Each vector goes through :func:`bridge.cli.main` with the ``run`` hook, so parsing and every command's
``validate`` run for real while the command's work does not.

The contract: the CLI either accepts the vector (exit 0; ``--help`` too) or refuses it with exit status 2 and ONE
error line on stderr (argparse's usage lines may precede it) -- never a traceback, never another status.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
from collections.abc import Callable, Iterator
from typing import Any

from .errors import BridgeError
from .fuzzing import Surface

__all__ = ["SURFACES", "CliRefused"]


class CliRefused(BridgeError):
    """The CLI refused an argument vector the way it should (exit 2, one error line)."""


_HOSTILE = ("-1", "0", "-32", "1", "2", "7", "nan", "NaN", "inf", "-inf", "1e12", "1e400", "96.7", "0.5", "-0.0",
            "abc", "", " ", "a/b", "../x", "x\x00y", "\x1b[2J", "é", "9" * 400, "true", "none", "0x10", "1_000",
            "127.0.0.1", "tcp://0.0.0.0:5555", "tcp://127.0.0.1:0", "tcp://127.0.0.1:5560", "/nonexistent/x",
            "/tmp", "/dev/null", "-", "--", "default", "home", "rotation", "configs/demo.yaml", "128x128", "0x0",
            "rgb", "quest_0", "1,2,3", "1,,2", "tiny", "small", "lora")


@functools.cache
def _commands() -> tuple[tuple[tuple[str, ...], tuple[tuple[str, ...], ...], int], ...]:
    """(path, option strings of each flag, number of positionals) of every leaf command."""
    from .cli import command_parsers

    out = []
    for path, parser in command_parsers().items():
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            continue  # not a leaf: it needs a subcommand
        flags = tuple(tuple(a.option_strings) for a in parser._actions
                      if a.option_strings and not isinstance(a, argparse._HelpAction))
        positionals = sum(1 for a in parser._actions if not a.option_strings)
        out.append((path, flags, positionals))
    return tuple(out)


def _argv() -> Any:
    from hypothesis import strategies as st

    commands = _commands()
    values = st.one_of(st.sampled_from(_HOSTILE), st.text(max_size=12))

    @st.composite
    def build(draw: Any) -> list[str]:
        path, flags, positionals = draw(st.sampled_from(commands))
        argv = list(path)
        for _ in range(draw(st.integers(0, positionals + 1))):
            argv.append(draw(values))
        for _ in range(draw(st.integers(0, 4))):
            if flags and draw(st.integers(0, 9)):
                opt = draw(st.sampled_from(draw(st.sampled_from(flags))))
            else:
                opt = draw(st.sampled_from(("--nosuch", "-x", "--help", "--seed")))
            argv.append(opt)
            if draw(st.integers(0, 5)):  # usually a value; sometimes none (a missing argument)
                argv.append(draw(values))
        return argv

    return build()


def _noop(args: argparse.Namespace) -> int:
    return 0


def _feed(argv: list[str]) -> None:
    from .cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv, run=_noop)
        except SystemExit as exc:  # argparse: 0 after --help, 2 after a usage error
            status = exc.code if isinstance(exc.code, int) else 1
    text = err.getvalue()
    if "Traceback" in text:
        raise AssertionError(f"a traceback for {argv!r}: {text[-500:]}")
    if status == 0:
        return
    if status != 2:
        raise AssertionError(f"exit status {status} for {argv!r}: {text[-300:]}")
    errors = [line for line in text.splitlines() if ": error: " in line]
    if len(errors) != 1 or not text.rstrip("\n").splitlines()[-1].startswith(errors[0][:20]):
        raise AssertionError(f"not one error line for {argv!r}: {text[-500:]!r}")
    raise CliRefused(errors[0][:300])


@contextlib.contextmanager
def _session() -> Iterator[Callable[[Any], None]]:
    yield _feed


SURFACES: list[Surface] = [
    Surface("cli.argv", "argument vectors for every xrfed command with hostile flag values -> parse + validate "
                        "(exit 0, or exit 2 with one error line)", _argv, _session),
]
