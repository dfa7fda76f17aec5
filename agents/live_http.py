"""The HTTP side of ``xrfed live``: a small hardened server for the viewer page (standard library only).

Every byte a client sends is hostile until checked. :class:`LiveServer` reads each request itself, within
:class:`HttpLimits`, before any of it is acted on:

* the request line (<= ``max_request_line_bytes``, else 414), the headers (each line, their count and their total
  bytes bounded, else 431) and the body (``Content-Length`` <= ``max_body_bytes``, else 413; no chunked bodies,
  411) are refused before they are read whole; malformed syntax is 400, and one request is served per connection;
* the ``Host`` header must name the server: the bound address, ``localhost``, ``127.0.0.1`` or ``[::1]`` (or a name
  given in ``allowed_hosts``) with the bound port, else 403 -- a page on another site that re-points its own DNS
  name at 127.0.0.1 ("DNS rebinding") cannot read or drive the viewer;
* a request whose ``Origin`` is not the server's own (``http://`` + its Host) is 403, and so is a state-changing
  request a browser marks as cross-site (``Sec-Fetch-Site``); scene controls are ``POST /control`` only (405 for
  other methods), so a page elsewhere cannot trigger them with an image or a link either;
* every control parameter is checked (:data:`CONTROL_PARAMETERS`): a bad one is 400 with one line naming the
  parameter, the value and what is allowed, and the scene never sees it;
* unknown paths are 404, unknown query parameters 400; a handler exception is a 500 that is counted
  (:class:`LiveServerStats`) and logged, and the server keeps serving; at most ``max_connections`` requests are
  handled at once (503 beyond that), and a client that stalls is dropped after ``timeout_s``.

Endpoints: ``GET /`` (the page), ``GET /state.json`` (per device state, and the server's counters),
``GET /tile/<device>.png?t=<ms>`` (one device's tile, a snapshot PNG; ``t`` is the page's cache buster),
``GET /tile/<device>.png?view=rgb|depth&t=<ms>`` (that modality's image at the frame's resolution, which the page
shows; 404 when the frame lacks it), ``POST /control`` with
``intensity`` (0-10, relative), ``lights_on`` (1/0, true/false, on/off), ``mute`` / ``unmute`` (``DEVICE:MODALITY``)
in the query string or a form-encoded body.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from .errors import AgentError

if TYPE_CHECKING:
    from .live import LiveSession

__all__ = ["LiveServer", "LiveServerStats", "HttpLimits", "LiveRequestError", "CONTROL_PARAMETERS",
           "TILE_PARAMETERS", "MAX_INTENSITY", "LOOPBACK_HOSTS", "PAGE"]

_log = logging.getLogger("xrfed.live")

#: the largest lighting intensity a control may set (relative to the scenario's nominal 1.0; the scenario's own
#: lighting keyframes allow the same range)
MAX_INTENSITY = 10.0
#: host names the server always answers to (with its port)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
#: the parameters of ``POST /control`` and what each allows (quoted in 400 messages)
CONTROL_PARAMETERS = {
    "intensity": f"a finite number between 0 and {MAX_INTENSITY:g}",
    "lights_on": "1, 0, true, false, on or off",
    "mute": "DEVICE:MODALITY",
    "unmute": "DEVICE:MODALITY",
}
#: the query parameters of ``GET /tile/DEVICE.png``
TILE_PARAMETERS = {
    "t": "the page's cache buster, 1-20 digits",
    "view": "rgb or depth (one modality's image at the frame's resolution; without it, the whole tile)",
}
_TRUE, _FALSE = ("1", "true", "on"), ("0", "false", "off")
_NUMBER = re.compile(r"[+-]?(\d{1,20}(\.\d{0,20})?|\.\d{1,20})([eE][+-]?\d{1,4})?")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_TARGET = re.compile(r"/[\x21-\x7e]*")
_DIGITS = re.compile(r"\d{1,20}")
_METHODS = ("GET", "HEAD", "POST")


class LiveRequestError(AgentError, ValueError):
    """A request to the live viewer was refused; ``status`` is the HTTP status it gets (4xx)."""

    def __init__(self, message: str, status: int = 400, *, allow: str | None = None):
        self.status, self.allow = status, allow
        super().__init__(message)


def show(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (control characters are escaped by repr: one line)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(str(value))} characters)"


@dataclass(frozen=True)
class HttpLimits:
    """What one request may cost the server; anything beyond is refused before it is read whole."""

    max_request_line_bytes: int = 4096
    max_header_line_bytes: int = 8192
    max_headers: int = 64
    max_header_bytes: int = 32 * 1024
    max_body_bytes: int = 4096
    max_query_fields: int = 16
    #: requests handled at once (each holds a thread); more get 503 at once
    max_connections: int = 32
    #: a client that sends nothing for this long is dropped (socket timeout)
    timeout_s: float = 10.0
    #: after answering, read and discard up to this much of what the client still sends (a refused request may not
    #: have been read to its end), so it sees the answer instead of a connection reset ("lingering close")
    drain_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise AgentError(f"HttpLimits.{f.name}: expected a positive number, got {show(v)}")


@dataclass
class LiveServerStats:
    """What the server has seen: requests by status, refused connections, handler exceptions (500s)."""

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    refused_connections: int = 0
    last_error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, status: int) -> None:
        with self._lock:
            self.requests += 1
            self.by_status[status] += 1

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self.requests, "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                    "errors": self.errors, "refused_connections": self.refused_connections,
                    "last_error": self.last_error}


@dataclass
class _Request:
    method: str
    path: str
    query: str
    headers: dict[str, list[str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name, [])
        if len(values) > 1:
            raise LiveRequestError(f"header {name}: given {len(values)} times, allowed once")
        return values[0] if values else None


# -- values -------------------------------------------------------------------------------------------------------
def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None (JSON has no NaN; the page's JSON.parse would reject the answer)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _query(text: str, allowed: dict[str, str], limits: HttpLimits) -> dict[str, str]:
    """Parse a query string (or form body): every name known, none repeated, UTF-8 only."""
    if not text:
        return {}
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, encoding="utf-8", errors="strict",
                          max_num_fields=limits.max_query_fields)
    except UnicodeDecodeError:
        raise LiveRequestError(f"query {show(text)}: not UTF-8 after percent-decoding") from None
    except ValueError:
        raise LiveRequestError(f"query {show(text)}: malformed (expected name=value pairs joined by '&', at most "
                               f"{limits.max_query_fields})") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            known = ", ".join(f"{k} ({v})" for k, v in allowed.items()) or "none"
            raise LiveRequestError(f"unknown parameter {show(name)}; allowed: {known}")
        if name in out:
            raise LiveRequestError(f"parameter {name}: given twice, allowed once")
        out[name] = value
    return out


def parse_controls(params: dict[str, str]) -> dict[str, Any]:
    """The keyword arguments of :meth:`LiveSession.control` from ``/control``'s parameters (strings), checked for
    syntax; :meth:`LiveSession.control` checks ranges and names."""
    if not params:
        raise LiveRequestError(f"no control given; allowed: {', '.join(CONTROL_PARAMETERS)}")
    kw: dict[str, Any] = {}
    if "intensity" in params:
        text = params["intensity"]
        if not _NUMBER.fullmatch(text):
            raise LiveRequestError(f"intensity: expected {CONTROL_PARAMETERS['intensity']}, got {show(text)}")
        kw["intensity"] = float(text)
    if "lights_on" in params:
        text = params["lights_on"].lower()
        if text not in _TRUE + _FALSE:
            raise LiveRequestError(f"lights_on: expected {CONTROL_PARAMETERS['lights_on']}, "
                                   f"got {show(params['lights_on'])}")
        kw["lights_on"] = text in _TRUE
    for k in ("mute", "unmute"):
        if k in params:
            dev, sep, mod = params[k].rpartition(":")
            if not sep or not dev or not mod:
                raise LiveRequestError(f"{k}: expected {CONTROL_PARAMETERS[k]}, got {show(params[k])}")
            kw[k] = (dev, mod)
    return kw


# -- the server ---------------------------------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    live: LiveServer

    def server_bind(self) -> None:  # HTTPServer's looks the host name up (socket.getfqdn): not needed, can be slow
        import socketserver

        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.live._slots.acquire(blocking=False):
            with self.live.stats._lock:
                self.live.stats.refused_connections += 1
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n"
                                b"Retry-After: 1\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (it would have released the slot)
            self.live._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.live._slots.release()


class _Server6(_Server):
    address_family = socket.AF_INET6


class LiveServer:
    """The viewer's HTTP server for a :class:`~agents.live.LiveSession` (see the module docstring).

    ``lock`` is held while the session is read (state, tiles): the same lock the scene steps under. ``start()``
    serves on a background thread; ``close()`` stops and releases the port. Also a context manager.
    """

    def __init__(self, session: LiveSession, *, host: str = "127.0.0.1", port: int = 8765,
                 allowed_hosts: tuple[str, ...] | list[str] = (), limits: HttpLimits | None = None,
                 lock: threading.Lock | None = None):
        self.session = session
        self.limits = limits or HttpLimits()
        self.lock = lock or threading.Lock()
        self.stats = LiveServerStats()
        self._slots = threading.BoundedSemaphore(self.limits.max_connections)
        self._waiting, self._waiting_lock = 0, threading.Lock()
        self._extra_hosts = tuple(h.lower() for h in allowed_hosts)
        server_cls = _Server6 if ":" in host else _Server
        try:
            self._httpd = server_cls((host.strip("[]"), port), _handler_class(self))
        except OSError as exc:  # port in use, address not on this machine, name that does not resolve
            raise AgentError(f"live: cannot serve on {host}:{port}: {exc.strerror or exc}") from None
        self._httpd.live = self
        self._thread: threading.Thread | None = None
        bound = str(self._httpd.server_address[0])
        self.host = f"[{bound}]" if ":" in bound else bound
        self.port = int(self._httpd.server_address[1])
        wildcard = bound in ("0.0.0.0", "::")
        names = [*LOOPBACK_HOSTS, *([] if wildcard else [self.host.lower()]), *self._extra_hosts]
        self.allowed_hosts = tuple(dict.fromkeys(names))
        self._host_values = frozenset([f"{h}:{self.port}" for h in self.allowed_hosts]
                                      + (list(self.allowed_hosts) if self.port == 80 else []))

    @contextmanager
    def session_lock(self) -> Iterator[None]:
        """Hold ``lock`` (the session is read under it), counted as waiting until it is held: see
        :meth:`yield_to_requests`."""
        with self._waiting_lock:
            self._waiting += 1
        try:
            self.lock.acquire()
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        try:
            yield
        finally:
            self.lock.release()

    def yield_to_requests(self, max_s: float = 0.1) -> None:
        """Called by the stepping loop between steps, with ``lock`` released: wait (at most ``max_s`` seconds)
        until every request waiting for the lock has had it. A lock is not fair: a loop that steps flat out (a step
        longer than 1/hz, e.g. on a loaded machine) takes it back at once, and the page would never get a state or
        an image."""
        end = time.monotonic() + max_s
        while self._waiting and time.monotonic() < end:
            time.sleep(0.001)

    @property
    def address(self) -> tuple[str, int]:
        return str(self._httpd.server_address[0]), self.port

    @property
    def url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(self.host, self.host)  # a wildcard bind: loopback
        return f"http://{host}:{self.port}/"

    def start(self) -> LiveServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="xrfed-live-http", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checks -----------------------------------------------------------------------------------------------
    def check_host(self, req: _Request) -> str:
        """The request's Host, if it names this server (403 otherwise; 400 when missing)."""
        host = req.header("host")
        if host is None:
            raise LiveRequestError("header Host: missing; allowed: " + self._allowed_text())
        if host.lower() not in self._host_values:
            raise LiveRequestError(f"header Host: {show(host)} is not this server; allowed: {self._allowed_text()}",
                                   403)
        return host.lower()

    def _allowed_text(self) -> str:
        return ", ".join(f"{h}:{self.port}" for h in self.allowed_hosts)

    @staticmethod
    def check_origin(req: _Request, host: str) -> None:
        """A browser's Origin must be this server's own; a state-changing request must not be cross-site."""
        origin = req.header("origin")
        if origin is not None and origin.lower() != f"http://{host}":
            raise LiveRequestError(f"header Origin: {show(origin)} is not this server's origin http://{host}", 403)
        if req.method == "POST":
            site = req.header("sec-fetch-site")
            if site is not None and site.lower() not in ("same-origin", "none"):
                raise LiveRequestError(f"header Sec-Fetch-Site: {show(site)}: controls are taken from this "
                                       f"server's own page only", 403)

    # -- routes -----------------------------------------------------------------------------------------------
    def route(self, req: _Request) -> tuple[int, str, bytes]:
        """(status, content type, body) for a request whose framing, Host and Origin were checked."""
        path = req.path
        if path == "/":
            self._only(req, ("GET", "HEAD"))
            _query(req.query, {}, self.limits)
            return 200, "text/html; charset=utf-8", PAGE.encode()
        if path == "/state.json":
            self._only(req, ("GET", "HEAD"))
            _query(req.query, {}, self.limits)
            with self.session_lock():
                state = self.session.state()
            state["server"] = self.stats.to_dict()
            return 200, "application/json", json.dumps(_finite(state), allow_nan=False).encode()
        if path.startswith("/tile/") and path.endswith(".png"):
            self._only(req, ("GET", "HEAD"))
            q = _query(req.query, TILE_PARAMETERS, self.limits)
            if "t" in q and not _DIGITS.fullmatch(q["t"]):
                raise LiveRequestError(f"parameter t: expected 1-20 digits, got {show(q['t'])}")
            from .live import VIEWS, render_tile, render_view

            if "view" in q and q["view"] not in VIEWS:
                raise LiveRequestError(f"parameter view: expected {TILE_PARAMETERS['view']}, got {show(q['view'])}")
            try:
                dev = unquote(path[len("/tile/"):-len(".png")], errors="strict")
            except UnicodeDecodeError:
                raise LiveRequestError(f"path {show(path)}: not UTF-8 after percent-decoding") from None
            with self.session_lock():  # the frame and prediction objects; a step replaces them, never edits them
                f, p = self.session.frames.get(dev), self.session.predictions.get(dev)
                agent = self.session.agents.get(dev)
                known = ", ".join(self.session.frames)
            if f is None:
                raise LiveRequestError(f"unknown device {show(dev)}; known: {known}", 404)
            if "view" not in q:
                return 200, "image/png", render_tile(f, p, device_modalities=agent.modalities if agent else None)
            png = render_view(f, q["view"])
            if png is None:
                raise LiveRequestError(f"device {dev}: no {q['view']} in frame {f.step} (muted, or not on the "
                                       f"device)", 404)
            return 200, "image/png", png
        if path == "/control":
            self._only(req, ("POST",))
            params = _query(req.query, CONTROL_PARAMETERS, self.limits)
            if req.body:
                ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
                if ctype not in ("", "application/x-www-form-urlencoded"):
                    raise LiveRequestError(f"header Content-Type: {show(ctype)}; allowed: "
                                           f"application/x-www-form-urlencoded", 415)
                try:
                    text = req.body.decode("ascii")
                except UnicodeDecodeError:
                    raise LiveRequestError("body: not ASCII (form-encode it)") from None
                for k, v in _query(text, CONTROL_PARAMETERS, self.limits).items():
                    if k in params:
                        raise LiveRequestError(f"parameter {k}: given twice, allowed once")
                    params[k] = v
            self.session.control(**parse_controls(params))
            return 200, "text/plain; charset=utf-8", b"ok\n"
        raise LiveRequestError(f"no such path {show(path)}; paths: /, /state.json, /tile/DEVICE.png, /control", 404)

    @staticmethod
    def _only(req: _Request, methods: tuple[str, ...]) -> None:
        if req.method not in methods:
            raise LiveRequestError(f"method {req.method} not allowed on {req.path}; allowed: {', '.join(methods)}",
                                   405, allow=", ".join(methods))


def _handler_class(live: LiveServer) -> type[BaseHTTPRequestHandler]:
    limits = live.limits

    class Handler(BaseHTTPRequestHandler):
        timeout = limits.timeout_s
        protocol_version = "HTTP/1.0"  # one request per connection: nothing of a refused request is left to parse
        server_version = "xrfed-live"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
            pass

        def handle(self) -> None:
            self._started = False
            try:
                self._handle()
            except OSError:  # the client went away, or stalled past the timeout: nothing to answer
                pass

        def _handle(self) -> None:
            self.command, self.request_version = "", "HTTP/1.0"
            try:
                req = self._read()
                if req is None:
                    return
                host = live.check_host(req)
                if req.method not in _METHODS:
                    raise LiveRequestError(f"method {show(req.method)} not allowed; allowed: {', '.join(_METHODS)}",
                                           405, allow=", ".join(_METHODS))
                live.check_origin(req, host)
                self._read_body(req)
                status, ctype, body = live.route(req)
            except LiveRequestError as exc:
                self._reply(exc.status, "text/plain; charset=utf-8", (_one_line(str(exc)) + "\n").encode(),
                            allow=exc.allow)
                return
            except TimeoutError:
                self._reply(408, "text/plain; charset=utf-8", b"request timed out\n")
                return
            except OSError:
                raise
            except Exception as exc:  # noqa: BLE001 -- a bug in a handler is a counted 500, never a dead server
                with live.stats._lock:
                    live.stats.errors += 1
                    live.stats.last_error = _one_line(f"{type(exc).__name__}: {exc}")[:300]
                _log.exception("xrfed live: internal error answering %s", _one_line(self.requestline)[:200])
                if not self._started:
                    self._reply(500, "text/plain; charset=utf-8", b"internal error (logged)\n")
                return
            self._reply(status, ctype, body)

        # -- reading --------------------------------------------------------------------------------------
        def _read(self) -> _Request | None:
            self.requestline = ""
            raw = self.rfile.readline(limits.max_request_line_bytes + 1)
            if not raw:
                return None  # connected and closed without a request
            if len(raw) > limits.max_request_line_bytes:
                raise LiveRequestError(f"request line longer than {limits.max_request_line_bytes} bytes", 414)
            if not raw.endswith(b"\n"):
                raise LiveRequestError("request line: incomplete (no line end)")
            line = raw.decode("latin-1").rstrip("\r\n")
            self.requestline = line
            words = line.split(" ")
            if len(words) != 3:
                raise LiveRequestError(f"request line {show(line)}: expected METHOD SP TARGET SP HTTP-VERSION")
            method, target, version = words
            if not _TOKEN.fullmatch(method):
                raise LiveRequestError(f"request line: bad method {show(method)}")
            if version not in ("HTTP/1.0", "HTTP/1.1"):
                raise LiveRequestError(f"request line: HTTP version {show(version)}; allowed: HTTP/1.0, HTTP/1.1")
            if not _TARGET.fullmatch(target):
                raise LiveRequestError(f"request target {show(target)}: expected a path starting with '/' "
                                       f"(printable ASCII, percent-encoded)")
            self.command, self.path, self.request_version = method, target, version
            headers = self._read_headers()
            path, _, query = target.partition("?")
            if "#" in target:
                raise LiveRequestError(f"request target {show(target)}: a fragment ('#') is not sent to servers")
            return _Request(method, path, query, headers)

        def _read_headers(self) -> dict[str, list[str]]:
            headers: dict[str, list[str]] = {}
            total = n = 0
            while True:
                raw = self.rfile.readline(limits.max_header_line_bytes + 1)
                if len(raw) > limits.max_header_line_bytes:
                    raise LiveRequestError(f"a header line is longer than {limits.max_header_line_bytes} bytes", 431)
                if not raw.endswith(b"\n"):
                    raise LiveRequestError("headers: incomplete (the connection ended before the blank line)")
                if raw in (b"\r\n", b"\n"):
                    return headers
                total, n = total + len(raw), n + 1
                if n > limits.max_headers or total > limits.max_header_bytes:
                    raise LiveRequestError(f"headers: more than {limits.max_headers} lines or "
                                           f"{limits.max_header_bytes} bytes", 431)
                line = raw.decode("latin-1").rstrip("\r\n")
                name, sep, value = line.partition(":")
                if not sep or not _TOKEN.fullmatch(name):
                    raise LiveRequestError(f"header line {show(line)}: expected NAME: VALUE")
                value = value.strip(" \t")
                if any(c < " " and c != "\t" or c == "\x7f" for c in value):
                    raise LiveRequestError(f"header {name}: control characters in the value")
                headers.setdefault(name.lower(), []).append(value)

        def _read_body(self, req: _Request) -> None:
            if req.header("transfer-encoding") is not None:
                raise LiveRequestError("header Transfer-Encoding: not supported; send Content-Length", 411)
            lengths = set(req.headers.get("content-length", []))
            if not lengths:
                return
            text = lengths.pop()
            if lengths or not _DIGITS.fullmatch(text):
                raise LiveRequestError(f"header Content-Length: expected one whole number, got "
                                       f"{show(req.headers['content-length'])}")
            n = int(text)
            if n > limits.max_body_bytes:
                raise LiveRequestError(f"body of {n} bytes; allowed at most {limits.max_body_bytes}", 413)
            if req.method != "POST":
                return  # nothing to read from a GET: the lingering close discards it
            body = self.rfile.read(n)
            if len(body) != n:
                raise LiveRequestError(f"body: {len(body)} bytes arrived, Content-Length said {n}")
            req.body = body

        # -- answering ------------------------------------------------------------------------------------
        def _reply(self, status: int, ctype: str, body: bytes, *, allow: str | None = None) -> None:
            live.stats.count(status)
            self._started = True
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Content-Security-Policy", "frame-ancestors 'none'")
            self.send_header("Connection", "close")
            if allow:
                self.send_header("Allow", allow)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
            self._linger()

        def _linger(self) -> None:
            """Half-close, then discard what the client still sends (bounded) until it closes: closing a socket
            with unread data resets the connection, and the client would lose the answer (a refused request may
            not have been read to its end). A well-behaved client closes as soon as it has the answer."""
            try:
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(min(2.0, limits.timeout_s))
                left = limits.drain_bytes
                while left > 0:
                    chunk = self.connection.recv(min(65536, left))
                    if not chunk:
                        break
                    left -= len(chunk)
            except OSError:
                pass

    return Handler


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>xrfed live</title><link rel="icon" href="data:,">
<style>body{font-family:sans-serif;background:#111;color:#ddd;margin:8px}button,select{margin:2px}
#bar{margin:4px 0 8px}#err{color:#f77}.keys{color:#888;font-size:12px}
.dev{display:inline-block;margin:4px;padding:6px 8px;background:#1a1a1a;border:1px solid #333;vertical-align:top}
.cap{margin-bottom:4px}.cap span{margin-right:14px}.cap .id{font-weight:bold}.cap .profile,.cap .lux{color:#aaa}
.row{display:flex;gap:8px;align-items:flex-start}
.view{position:relative;width:192px;min-height:144px;background:#222;overflow:hidden}
.view img{width:192px;height:auto;display:block;image-rendering:pixelated}
.view .absent{position:absolute;inset:0;display:flex;align-items:center;justify-content:center;color:#e66}
.view .absent.none{color:#888}
.gaze{position:absolute;width:12px;height:12px;margin:-8px 0 0 -8px;border:2px solid #f33;border-radius:50%}
.glabel{position:absolute;color:#ff0;font-size:12px;text-shadow:0 0 3px #000;white-space:nowrap}
.vcap{font-size:11px;color:#999;text-align:center;margin-top:2px}
.audio{width:48px}.meter{position:relative;width:12px;height:144px;background:#222;margin:0 auto}
.level{position:absolute;bottom:0;left:0;right:0;background:#5c5}.audio.off .meter{background:#2a1a1a}
table.pred{border-collapse:collapse;font-size:12px;margin-top:6px}.pred th,.pred td{padding:1px 8px 1px 0;
text-align:left}.pred th{color:#999;font-weight:normal}.pred td.hit{color:#7d7}.pred td.miss{color:#e99}
.lat,.present{font-size:12px;margin-top:4px}.present{color:#999}</style></head><body>
<h3>xrfed live <span id="ms"></span></h3>
<div id="bar">lighting <button id="b_dim" onclick="ctl('intensity=0.1')">dim</button><button id="b_normal"
onclick="ctl('intensity=1.0')">normal</button><button id="b_off" onclick="ctl('lights_on=0')">off</button><button
id="b_on" onclick="ctl('lights_on=1')">on</button>
&nbsp; mute <select id="dev"></select><select id="mod"><option>audio</option><option>rgb</option>
<option>depth</option><option>gaze</option><option>hands</option><option>imu</option><option>pose</option></select>
<button id="b_mute" onclick="m('mute')">mute</button><button id="b_unmute" onclick="m('unmute')">unmute</button>
<span class="keys">&nbsp; keys: d dim, n normal, o off, l on</span> <span id="err"></span></div><div id="grid"></div>
<script>
const $=(e,s)=>e.querySelector(s),err=t=>{document.getElementById('err').textContent=t};
async function ctl(q){try{const r=await fetch('/control?'+q,{method:'POST'});err(r.ok?'':await r.text())}
catch(e){err('server not answering')}}
function m(k){ctl(k+'='+encodeURIComponent(document.getElementById('dev').value+':'+document.getElementById('mod').value))}
const KEYS={d:'intensity=0.1',n:'intensity=1.0',o:'lights_on=0',l:'lights_on=1'};
document.onkeydown=e=>{if(KEYS[e.key])ctl(KEYS[e.key])};
const TILE='<div class="cap"><span class="id"></span> <span class="profile"></span> <span class="step"></span> '+
'<span class="lux"></span></div><div class="row"><div><div class="view rgb"><img alt="rgb"><div class="gaze"></div>'+
'<div class="glabel"></div><div class="absent"></div></div><div class="vcap">RGB, gaze, predicted label</div></div>'+
'<div><div class="view depth"><img alt="depth"><div class="absent"></div></div><div class="vcap">depth 0-10 m</div>'+
'</div><div class="audio"><div class="meter"><div class="level"></div></div><div class="vcap db"></div></div></div>'+
'<table class="pred"><thead><tr><th>task</th><th>predicted</th><th>conf.</th><th>true</th></tr></thead><tbody>'+
'</tbody></table><div class="lat"></div><div class="present"></div>';
const n1=x=>x===null||x===undefined?'?':x.toFixed(1),pct=x=>Math.min(100,Math.max(0,x*100))+'%';
function view(e,id,d,mod){const v=$(e,'.view.'+mod),img=$(v,'img'),a=$(v,'.absent'),on=d.present.includes(mod),
own=d.modalities.includes(mod);if(on&&!img.busy&&img.want!==d.step){const step=d.step;img.busy=true;img.want=step;
img.onload=()=>{img.busy=false;img.dataset.step=step};img.onerror=()=>{img.busy=false};
img.src='/tile/'+encodeURIComponent(id)+'.png?view='+mod+'&t='+Date.now()}
img.style.display=on?'':'none';a.style.display=on?'none':'';a.className=own?'absent':'absent none';
a.textContent=on?'':own?mod+' muted':'no '+mod+' sensor';return on}
function show(e,id,d){$(e,'.id').textContent=id;$(e,'.profile').textContent=d.profile;
$(e,'.step').textContent='step '+d.step;$(e,'.lux').textContent=d.lux===null?'':d.lux.toFixed(0)+' lux';
const rgb=view(e,id,d,'rgb');view(e,id,d,'depth');
const g=$(e,'.gaze'),gl=$(e,'.glabel'),uv=d.gaze_uv,t=d.shown_task;let x=0.5,y=0.5;
if(rgb&&uv){x=Math.min(1,Math.max(0,uv[0]));y=Math.min(1,Math.max(0,uv[1]))}
g.style.display=rgb&&uv?'':'none';g.style.left=pct(x);g.style.top=pct(y);
gl.style.display=rgb&&t?'':'none';gl.textContent=t?d.prediction[t]+' '+d.confidence[t].toFixed(2):'';
const W=192,H=$(e,'.view.rgb').clientHeight||W,lw=gl.offsetWidth||0,gx=x*W,gy=y*H;/* right of the marker if it fits, else left */
gl.style.left=Math.max(0,gx+10+lw<=W?gx+10:gx-10-lw)+'px';gl.style.top=Math.max(0,Math.min(H-16,gy-8))+'px';
const au=$(e,'.audio'),on=d.audio_dbfs!==null;au.className=on?'audio':'audio off';
$(e,'.level').style.height=on?pct((d.audio_dbfs+80)/80):'0%';
$(e,'.db').textContent=on?d.audio_dbfs.toFixed(0)+' dBFS':d.modalities.includes('audio')?'audio muted':'no audio';
const tb=$(e,'tbody');tb.textContent='';for(const [k,l] of Object.entries(d.prediction)){
const tr=document.createElement('tr'),tru=d.labels_true[k];
for(const [c,cls] of [[k,''],[l,tru===undefined?'':tru===l?'hit':'miss'],[d.confidence[k].toFixed(2),''],
[tru===undefined?'?':tru,'']]){const td=document.createElement('td');td.textContent=c;td.className=cls;
tr.appendChild(td)}tb.appendChild(tr)}
$(e,'.lat').textContent=d.skipped?'prediction skipped (device busy)':'latency '+n1(d.latency_ms)+
' ms (device estimate '+n1(d.device_latency_ms)+' ms)';
$(e,'.present').textContent='present: '+(d.present.join(', ')||'none')+(d.muted.length?'  |  muted: '+
d.muted.join(', '):'')}
function render(s){window.xrfedState=s;
document.getElementById('ms').textContent='scene step '+s.steps+', '+(s.step_ms||0).toFixed(0)+' ms per step';
const g=document.getElementById('grid'),sel=document.getElementById('dev');
for(const [id,d] of Object.entries(s.devices)){let e=document.getElementById('d_'+id);
if(!e){e=document.createElement('div');e.className='dev';e.id='d_'+id;e.dataset.device=id;e.innerHTML=TILE;
g.appendChild(e);const o=document.createElement('option');o.textContent=id;sel.appendChild(o)}show(e,id,d)}}
let down=false;
async function tick(){let s=null;try{s=await (await fetch('/state.json')).json()}catch(e){down=true;
err('server not answering')}if(s){if(down){down=false;err('')}try{render(s)}catch(e){err('page error: '+e)}}
setTimeout(tick,300)}tick();
</script></body></html>"""
