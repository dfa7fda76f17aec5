"""Addresses of remote services -- a Ray cluster, a Flower SuperLink -- and one-line reasons for their failures.

One place for what the recorder (``xrfed record --executor ray``), the federation's Ray executor and its config, and
the Flower deployment helpers all check before they connect: the address's form, whether anything answers on it
(Ray's own client retries an unreachable GCS for minutes; a SuperNode retries forever), and the line a Ray failure
is reported in. Callers raise their own package's error with the reason.
"""

from __future__ import annotations

import re
import socket

__all__ = ["RAY_ADDRESS_FORMS", "parse_host_port", "ray_address_problem", "tcp_refusal", "ray_failure_summary"]

#: a host name, an IPv4 address or a bracketed IPv6 address
_HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]{0,252}")
#: the forms of a Ray address, as an error message names them
RAY_ADDRESS_FORMS = "host:port, ray://host:port, 'auto' or 'local' (a port in 1..65535)"


def parse_host_port(address: str, *, schemes: tuple[str, ...] = ()) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` (``[v6]:port`` too), optionally after one of ``schemes`` (``"ray://"``);
    None when the text is not that: no port, a port outside 1..65535, a host that is not a name or an address."""
    for scheme in schemes:
        if address.startswith(scheme):
            address = address[len(scheme):]
            break
    host, sep, port = address.rpartition(":")
    if (not sep or _HOST_RE.fullmatch(host) is None or not port.isdigit() or len(port) > 5
            or not 1 <= int(port) <= 65535):
        return None
    return host.strip("[]"), int(port)


def ray_address_problem(address: str) -> str | None:
    """Why ``address`` is not a Ray address (None when it is one; ``auto`` and ``local`` are resolved by Ray)."""
    if address in ("auto", "local") or parse_host_port(address, schemes=("ray://",)) is not None:
        return None
    return f"expected {RAY_ADDRESS_FORMS}"


def tcp_refusal(host: str, port: int, timeout_s: float) -> str | None:
    """Why nothing accepts a TCP connection on ``host:port`` within ``timeout_s`` (None: something does)."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    return None


def ray_failure_summary(exc: BaseException) -> str:
    """One line about a Ray failure, naming the remote code's own exception where Ray wraps one."""
    cause = getattr(exc, "cause", None)  # a failed call: Ray's RayTaskError carries the original exception
    if isinstance(cause, BaseException):
        exc = cause
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if getattr(exc, "actor_init_failed", False) and lines:
        return lines[-1]  # a failed __init__ arrives as text only; the traceback's last line is "Type: message"
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
