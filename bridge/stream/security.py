"""CurveZMQ for streams that leave the machine: key pairs, and the socket set-up shared by publisher and subscriber.

The side that **binds** is the CURVE server; the side that **connects** is the client. A client pins the server's
public key (``server_key``), so it only talks to that server. A server may hold an allow-list of client public keys
(``allowed_keys``), checked by a ZAP authenticator; an unknown key fails the handshake and no message from it is
ever delivered. Both topologies occur: ``xrfed stream --bind`` (publisher = server, subscribers pin its key), and a
workstation bridge that binds while Quest/Android players connect to it (subscriber = server with an allow-list of
publisher keys).
"""

from __future__ import annotations

import abc
import enum
import os
import stat
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..errors import BridgeError, TransportError

__all__ = ["CurveConfig", "generate_keypair", "load_key_file", "SecuredSocket"]


def generate_keypair() -> tuple[str, str]:
    """A new CURVE key pair ``(public, secret)`` as 40-character Z85 strings."""
    import zmq

    public, secret = zmq.curve_keypair()
    return public.decode(), secret.decode()


_KEY_FILE_MAX_BYTES = 64 * 1024  # a zmq.auth certificate is a few hundred bytes


def load_key_file(path: str | Path) -> tuple[str, str | None]:
    """Read a key file written by ``zmq.auth.create_certificates`` (``public-key``/``secret-key`` lines).

    A file holding a ``secret-key`` must be private to its owner (no group or other permission bits, e.g. mode
    0600); one that others may read is refused, saying how to fix it, before the secret is used.
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(_KEY_FILE_MAX_BYTES + 1)
        text = raw.decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise BridgeError(f"CURVE key file {p}: cannot read it ({exc})") from None
    if len(raw) > _KEY_FILE_MAX_BYTES:
        raise BridgeError(f"CURVE key file {p}: larger than {_KEY_FILE_MAX_BYTES} bytes, not a key file")
    public = secret = None
    for line in text.splitlines():
        key, _, value = line.strip().partition("=")
        value = value.strip().strip('"')
        if key.strip() == "public-key":
            public = value
        elif key.strip() == "secret-key":
            secret = value
    if public is None:
        raise BridgeError(f"CURVE key file {path}: no 'public-key = \"...\"' line")
    if secret is not None:
        _check_private(p)
    return public, secret


def _check_private(path: Path) -> None:
    """Refuse a secret key file that anyone but its owner may read, write or run (POSIX permission bits)."""
    if os.name != "posix":
        return  # Windows ACLs are not mode bits; nothing to check this way
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise BridgeError(f"CURVE secret key file {path} is accessible to group/others (mode {mode:04o}); "
                          f"make it private: chmod 600 {path}")


def _check_key(name: str, key: str | bytes | None) -> str | None:
    if key is None:
        return None
    k = key.decode() if isinstance(key, bytes) else str(key)
    if len(k) != 40:
        raise BridgeError(f"CurveConfig.{name}: expected a 40-character Z85 key, got {len(k)} characters")
    return k


@dataclass(frozen=True)
class CurveConfig:
    """This endpoint's CURVE key pair, plus the peer check for its role.

    ``server_key``: the binding peer's public key, required when this side connects. ``allowed_keys``: client
    public keys accepted when this side binds (``None`` = any client that completes the handshake, i.e.
    encryption without an allow-list).
    """

    public_key: str
    secret_key: str
    server_key: str | None = None
    allowed_keys: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_key", _check_key("public_key", self.public_key))
        object.__setattr__(self, "secret_key", _check_key("secret_key", self.secret_key))
        object.__setattr__(self, "server_key", _check_key("server_key", self.server_key))
        if self.allowed_keys is not None:
            object.__setattr__(self, "allowed_keys", tuple(_check_key("allowed_keys[]", k) for k in self.allowed_keys))


@dataclass
class _AllowList:
    """ZAP credentials provider: accepts the listed keys and counts the rest."""

    keys: frozenset[str]
    denied: int = 0
    denied_keys: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def callback(self, domain: str, key: bytes) -> bool:
        k = key.decode() if isinstance(key, bytes) else str(key)
        if k in self.keys:
            return True
        with self._lock:
            self.denied += 1
            if len(self.denied_keys) < 16:
                self.denied_keys.append(k)
        return False


def _same_endpoint(configured: str, reported: str) -> bool:
    """Whether a monitor event's endpoint is ``configured`` (libzmq may report a host name resolved: then the
    transport and port decide)."""
    if configured == reported:
        return True
    scheme, _, rest = configured.partition("://")
    r_scheme, _, r_rest = reported.partition("://")
    return scheme == r_scheme == "tcp" and rest.rpartition(":")[2] == r_rest.rpartition(":")[2]


def _monitor_events() -> int:
    import zmq

    return (zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class SecuredSocket:
    """Owns a zmq context + one socket (+ a ZAP authenticator when binding with an allow-list).

    Each publisher/subscriber gets its own context because a ZAP handler is per context: two endpoints in one
    process (as in tests) must not share one allow-list.
    """

    def __init__(self, socket_type: int, *, bind: str | None, connect: Sequence[str], curve: CurveConfig | None,
                 options: dict[int, Any], monitor: bool = False):
        import zmq

        if (bind is None) == (not connect):
            raise BridgeError(f"give exactly one of bind= or connect=, got bind={bind!r} connect={list(connect)!r}")
        self.ctx = zmq.Context()
        self.auth: Any = None
        self.allow: _AllowList | None = None
        self._monitor: Any = None
        self._connect = tuple(connect)
        try:
            self.sock = self.ctx.socket(socket_type)
            self.sock.setsockopt(zmq.LINGER, 0)
            for opt, value in options.items():
                self.sock.setsockopt(opt, value)
            if monitor:  # before bind/connect, so no event is missed
                self._monitor = self.sock.get_monitor_socket(_monitor_events())
            if curve is not None:
                self.sock.curve_secretkey = curve.secret_key.encode()
                self.sock.curve_publickey = curve.public_key.encode()
                if bind is not None:
                    if curve.allowed_keys is not None:
                        from zmq.auth.thread import ThreadAuthenticator

                        self.allow = _AllowList(frozenset(curve.allowed_keys))
                        self.auth = ThreadAuthenticator(self.ctx)
                        self.auth.start()
                        self.auth.configure_curve_callback(domain="*", credentials_provider=self.allow)
                    self.sock.curve_server = True
                else:
                    if curve.server_key is None:
                        raise BridgeError("CurveConfig.server_key: a connecting side must pin the server's public key")
                    self.sock.curve_serverkey = curve.server_key.encode()
            if bind is not None:
                self.sock.bind(bind)
                self.endpoint: str = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
            else:
                for ep in connect:
                    self.sock.connect(ep)
                self.endpoint = ",".join(connect)
        except zmq.ZMQError as exc:
            self.close()
            from ..errors import TransportError

            raise TransportError(f"zmq socket set-up failed (bind={bind!r}, connect={list(connect)!r}): {exc}") \
                from exc
        except BaseException:
            self.close()
            raise

    @property
    def denied_keys(self) -> int:
        return self.allow.denied if self.allow is not None else 0

    def poll_events(self) -> Counter[str]:
        """Connection events since the last call (``monitor=True`` only), by kind: ``disconnects`` (a peer went
        away -- or sent a part larger than ``ZMQ_MAXMSGSIZE``, which ZeroMQ answers by dropping the connection) and
        ``handshake_failures`` (e.g. a CURVE key that does not match).

        ZeroMQ does not reconnect an endpoint it dropped for a protocol error such as an oversized part, so every
        connect endpoint that lost its connection is connected afresh here (one that is merely down is retried by
        ZeroMQ anyway; connecting again only restarts its timer).
        """
        import zmq
        from zmq.utils.monitor import parse_monitor_message

        out: Counter[str] = Counter()
        if self._monitor is None:
            return out
        dropped: set[str] = set()
        while True:
            try:
                frames = self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                event = parse_monitor_message(frames)
            except Exception:  # noqa: BLE001 -- a malformed event comes from libzmq, never from a peer; skip it
                continue
            if event["event"] == zmq.EVENT_DISCONNECTED:
                out["disconnects"] += 1
                endpoint = event.get("endpoint", b"")
                dropped.add(endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else str(endpoint))
            else:
                out["handshake_failures"] += 1
        for ep in self._connect:
            if any(_same_endpoint(ep, d) for d in dropped):
                try:
                    self.sock.disconnect(ep)
                except zmq.ZMQError:
                    pass  # already gone
                self.sock.connect(ep)
        return out

    def close(self) -> None:
        sock = getattr(self, "sock", None)
        if self._monitor is not None:
            if sock is not None and not sock.closed:
                sock.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
        if sock is not None and not sock.closed:
            sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        if not self.ctx.closed:
            self.ctx.term()


class SocketState(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


_E = TypeVar("_E", bound="SocketEndpoint")


class SocketEndpoint(abc.ABC):
    """The lifecycle a stream publisher and subscriber share: ``open()`` (or ``with``) makes the socket once,
    ``close()`` ends it for good (idempotent), and using it outside that window is a clear error."""

    _role = "endpoint"  # for messages: "publisher" / "subscriber"

    def __init__(self) -> None:
        self._state = SocketState.UNOPENED
        self._sock: SecuredSocket | None = None

    @abc.abstractmethod
    def _make_socket(self) -> SecuredSocket:
        """The configured socket, bound or connected (called once, by ``open``)."""

    def _opened(self) -> None:  # noqa: B027 - an optional hook, empty by design
        """Called once the socket exists."""

    @property
    def state(self) -> SocketState:
        return self._state

    @property
    def endpoint(self) -> str:
        """The bound endpoint with the real port (after ``open``), or the connect endpoints."""
        return self._open_sock().endpoint

    @property
    def denied_keys(self) -> int:
        """Handshakes refused by the CURVE allow-list (binding side with ``allowed_keys`` only)."""
        return self._sock.denied_keys if self._sock is not None else 0

    def open(self: _E) -> _E:
        if self._state is SocketState.CLOSED:
            raise TransportError(f"{self._role}: open() after close()")
        if self._state is SocketState.UNOPENED:
            self._sock = self._make_socket()
            self._state = SocketState.OPEN
            self._opened()
        return self

    def close(self) -> None:
        """Close the socket and its context. Idempotent."""
        if self._sock is not None:
            self._sock.close()
        self._state = SocketState.CLOSED

    def __enter__(self: _E) -> _E:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_sock(self) -> SecuredSocket:
        if self._state is not SocketState.OPEN or self._sock is None:
            raise TransportError(f"{self._role} is {self._state.value}; call open() first"
                                 if self._state is SocketState.UNOPENED else f"{self._role} used after close()")
        return self._sock
