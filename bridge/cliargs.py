"""Range-checked argparse types: a bad flag is a one-line usage error (exit 2), never a traceback later.

Use them for every numeric or name-like flag::

    p.add_argument("--size", type=int_range(16, 1024), ...)
    p.add_argument("--hz", type=float_range(0.1, 1000.0), ...)
    p.add_argument("--device", type=name_arg("device id"), ...)

argparse turns the ``ArgumentTypeError`` into ``xrfed CMD: error: argument --size: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
from collections.abc import Callable

__all__ = ["int_range", "float_range", "name_arg", "NAME_RE", "is_loopback"]

#: names that become file names, dataset groups or URL parts: no path separators, no control characters
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _bounds(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"between {_num(lo)} and {_num(hi)}"
    if lo is not None:
        return f">= {_num(lo)}"
    if hi is not None:
        return f"<= {_num(hi)}"
    return "of any size"


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An ``int`` flag in ``[lo, hi]`` (either bound may be None)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number {_bounds(lo, hi)}, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {_bounds(lo, hi)}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def float_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Callable[[str], float]:
    """A finite ``float`` flag in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); NaN and inf are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {_bounds(lo, hi)}, got {text!r}") from None
        bad = not math.isfinite(value)
        if lo is not None:
            bad = bad or value < lo or (lo_open and value == lo)
        if hi is not None:
            bad = bad or value > hi
        if bad:
            what = f"> {lo:g}" if lo_open and hi is None else _bounds(lo, hi)
            if lo_open and hi is not None:
                what = f"> {lo:g} and <= {hi:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {what}, got {text!r}")
        return value

    parse.__name__ = "float"
    return parse


def name_arg(what: str) -> Callable[[str], str]:
    """A name (device id, run name): letters, digits, ``_ . -``, 1-64 characters, no path separators."""

    def parse(text: str) -> str:
        if not NAME_RE.match(text):
            raise argparse.ArgumentTypeError(
                f"{what} must be 1-64 letters, digits, '_', '.' or '-' (starting with a letter or digit), "
                f"got {text[:80]!r}")
        return text

    parse.__name__ = what
    return parse


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
