"""Addresses of remote services -- a Ray cluster, a Flower SuperLink -- and one-line reasons for their failures.

One place for what the recorder (``xrfed record --executor ray``), the federation's Ray executor and its config, and
the Flower deployment helpers all check before they connect: the address's form, whether anything answers on it
(Ray's own client retries an unreachable GCS for minutes; a SuperNode retries forever), and the line a Ray failure
is reported in. Callers raise their own package's error with the reason.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["RAY_ADDRESS_FORMS", "RAY_CONNECT_TIMEOUT_S", "RAY_LOOPBACK_ENV", "parse_host_port", "ray_address_problem",
           "ray_address_refusal", "tcp_refusal", "ray_failure_summary", "ray_version_mismatch", "init_ray"]

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


# -- Ray --------------------------------------------------------------------------------------------------------------
#: seconds to wait for a TCP connection to a given Ray address before calling it unreachable (Ray's own client
#: retries an unreachable GCS for minutes)
RAY_CONNECT_TIMEOUT_S = 5.0
#: Ray's switch between multi-node clusters and a loopback-only node; "0" keeps every Ray port on 127.0.0.1
RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: how Ray says a driver and a cluster run different versions (``ray._private.utils.check_version_info``)
_VERSION_MISMATCH_RE = re.compile(
    r"Version mismatch: The cluster was started with:\s*Ray: (?P<cluster_ray>\S+)\s*Python: (?P<cluster_py>\S+)\s*"
    r"This process on .*? was started with:\s*Ray: (?P<my_ray>\S+)\s*Python: (?P<my_py>\S+)", re.S)


def ray_address_refusal(address: str, *, connect: bool = True,
                        timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> str | None:
    """One line on why ``address`` cannot be a Ray cluster to join -- malformed, or (with ``connect``) nothing
    accepts a TCP connection on it within ``timeout_s`` -- or None."""
    problem = ray_address_problem(address)
    if problem is not None:
        return f"Ray address {address[:80]!r}: {problem}"
    hp = parse_host_port(address, schemes=("ray://",))
    if connect and hp is not None:
        reason = tcp_refusal(*hp, timeout_s)
        if reason is not None:
            return f"cannot reach a Ray cluster at {address!r}: {reason}"
    return None


def ray_version_mismatch(text: str, address: str | None) -> str | None:
    """Ray's multi-line version-mismatch report as one line (None when ``text`` is not one)."""
    m = _VERSION_MISMATCH_RE.search(text)
    if m is None:
        return None
    where = "the Ray cluster" if address is None else f"the Ray cluster at {address!r}"
    return (f"Ray version mismatch: {where} runs Ray {m['cluster_ray']} on Python {m['cluster_py']}, this driver "
            f"Ray {m['my_ray']} on Python {m['my_py']}; install the same Ray and Python on every machine")


def init_ray(address: str | None, fail: Callable[[str], Exception], **init_kw: Any) -> tuple[Any, bool]:
    """The ``ray`` module, initialised, and whether this call started it; a process already connected keeps its
    connection.

    ``address`` goes to ``ray.init`` as it is (None or ``"local"``: a node started here, bound to 127.0.0.1 when Ray
    was not imported before). Ray missing, a Ray that cannot start or be joined, and a version mismatch raise
    ``fail(one line)``."""
    if address in (None, "local") and "ray" not in sys.modules:
        # Ray binds a local node's GCS, raylet and object store to the machine's network address, reachable from
        # the network and without authentication; this switch (read when Ray is imported, inherited by Ray's
        # processes) keeps a single-machine run on loopback.
        os.environ.setdefault(RAY_LOOPBACK_ENV, "0")
    try:
        ray = importlib.import_module("ray")
    except ImportError:
        raise fail("Ray is not installed: pip install 'xrfed[ray]' (scripts/setup.sh installs it)") from None
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=address, **init_kw)
    except Exception as exc:  # Ray raises assorted types (ConnectionError, RuntimeError, ValueError)
        where = ("start a local Ray" if address in (None, "local")
                 else f"connect to the Ray cluster at {address!r}")
        raise fail(ray_version_mismatch(str(exc), address)
                   or f"cannot {where}: {ray_failure_summary(exc)}") from exc
    return ray, True
