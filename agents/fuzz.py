"""Hostile-input surfaces of the agents package (``xrfed bench fuzz``; see :mod:`bridge.fuzzing`).

* ``live.http``: raw HTTP requests over a real socket to ONE ``xrfed live`` server (:class:`~agents.live.LiveServer`
  around a :class:`~agents.live.LiveSession` of :data:`FUZZ_SCENARIO` -- two devices, 32x32 renders -- and an
  untrained tiny model), started once per session. Requests are valid ones (every endpoint the page uses) under
  mutation: methods, paths, query strings with NaN/inf/negative/huge/unicode/missing values and repeated
  parameters, bad or missing Host and Origin, cross-site fetch metadata, lying or oversized Content-Length,
  chunked bodies, huge and numerous headers, bare-LF line ends, and garbage bytes.

The feed sends one request, reads the whole answer, then checks the server still answers a good request. A 2xx
answer is an acceptance (after an accepted control the scene must still step: a control that breaks the next step
is what used to end ``xrfed live``), a 4xx a rejection (:class:`LiveRejected`), and a 5xx, no answer, a broken
answer or a server that stopped answering is a crash.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from bridge.fuzzing import Surface
from bridge.fuzzing import pick as _pick
from bridge.fuzzing import strategies as _st

from .errors import AgentError

__all__ = ["SURFACES", "FUZZ_SCENARIO", "LiveRejected", "http_exchange"]

#: the smallest real scene: one room, two objects, two avatars (the tests' tiny scene)
FUZZ_SCENARIO: dict[str, Any] = {
    "name": "fuzz-live",
    "step_hz": 10,
    "audio_hz": 16000,
    "render": {"width_px": 32, "height_px": 32},
    "rooms": [{"name": "lab", "type": "office", "origin_m": [0, 0], "size_m": [6, 5, 2.7]}],
    "objects": [
        {"name": "box", "category": "crate", "room": "lab", "pos_m": [4.0, 2.5]},
        {"name": "plant", "category": "plant", "room": "lab", "pos_m": [4.0, 0.8]},
    ],
    "lights": [{"name": "l0", "room": "lab", "pos_m": [3, 2.5, 2.6]}],
    "lighting_schedule": [{"t_s": 0, "intensity": 1.0}],
    "task_scripts": {"stare": {"segments": [{"duration_s": 100, "activity": "idle", "look_at": ["box"]}]}},
    "avatars": [
        {"name": "u1", "device": "apple_vision_pro", "start_room": "lab", "start_pos_m": [1.5, 2.5],
         "start_yaw_deg": 0, "script": "stare"},
        {"name": "u2", "device": "ray_ban_meta", "start_room": "lab", "start_pos_m": [1.0, 1.0],
         "start_yaw_deg": 0, "script": "stare"},
    ],
}
_DEVICES = tuple(f"{a['name']}-{a['device']}" for a in FUZZ_SCENARIO["avatars"])
#: placeholder for the server's port in generated requests (the port is known only once the server runs)
_PORT = b"@PORT@"
#: the largest request the strategy builds: below the server's drain budget, so every request gets its answer
_MAX_REQUEST_BYTES = 256 * 1024


class LiveRejected(AgentError):
    """The live server refused a request with a 4xx answer (a clean rejection)."""


# ---------------------------------------------------------------------------------------------------------------
# one exchange over a socket
def http_exchange(port: int, request: bytes, *, timeout_s: float = 20.0) -> bytes:
    """Send ``request`` to 127.0.0.1:``port``, half-close, and return everything the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        try:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered early and closed: its answer is still to be read
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def _status(answer: bytes) -> tuple[int, bytes, bytes]:
    """(status, header block, body) of an HTTP/1.x answer; AssertionError when it is not one."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ", 2)
    if not sep or len(parts) < 2 or parts[0] not in (b"HTTP/1.0", b"HTTP/1.1") or not parts[1].isdigit():
        raise AssertionError(f"not an HTTP answer: {answer[:200]!r}")
    return int(parts[1]), head, body


# ---------------------------------------------------------------------------------------------------------------
# strategies (built lazily: hypothesis is a dev dependency)


_METHODS = ("GET", "GET", "GET", "POST", "POST", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT",
            "PATCH", "get", "G\x00T", "", "GET GET", "\u00c4\u00d6")
_PATHS = ("/", "/state.json", f"/tile/{_DEVICES[0]}.png", f"/tile/{_DEVICES[1]}.png", "/control", "/control",
          "/control", "/control/", "/favicon.ico", "//control", "/../../etc/passwd", "/tile/.png", "/tile/%ff.png",
          "/tile/%2e%2e%2fstate.json.png", "/tile/nosuch.png", "/tile/u1%3Aapple.png", "*",
          "http://evil.example/control", "", "/%00", "/state.json#x", "/state.json/", "/STATE.JSON", "/tile/",
          "/\u00e9t\u00e9", "/control?", "/ control")
_PARAMS = ("intensity", "intensity", "lights_on", "mute", "unmute", "t", "x", "", "intensity[]", "Intensity",
           "mute\u00e9")
_VALUES = ("nan", "NaN", "-nan", "inf", "-inf", "Infinity", "-5", "-0", "0", "0.5", "10", "10.0000001", "1e308",
           "1e-308", "1e999", "", " 1", "1_0", "0x10", "\u0661", "9" * 400, "1" * 21, "1.5e", ".5", "5.",
           "true", "false", "on", "off", "yes", "1", "0", "2",
           f"{_DEVICES[0]}:rgb", f"{_DEVICES[1]}:audio", "nosuchdevice:rgb", f"{_DEVICES[0]}:nosuch", ":", "a:b:c",
           f"{_DEVICES[0]}:", ":rgb", f"{_DEVICES[0]}:rgb:rgb", "dev/../x:rgb", "\u00e9:\u00e9", "\x00:\x00",
           "1733100000000")
_VERSIONS = ("HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1x", "", "http/1.1",
             "HTTP/1.1 extra")
_HOSTS = (b"127.0.0.1:" + _PORT, b"127.0.0.1:" + _PORT, b"127.0.0.1:" + _PORT, b"localhost:" + _PORT,
          b"[::1]:" + _PORT, b"LOCALHOST:" + _PORT, b"evil.example:" + _PORT, b"127.0.0.1", b"127.0.0.1:1",
          b"127.0.0.1:" + _PORT + b"0", b"", b"127.0.0.1.nip.io:" + _PORT, b"0.0.0.0:" + _PORT, b"\xff:" + _PORT)
_ORIGINS = (None, None, b"http://127.0.0.1:" + _PORT, b"http://localhost:" + _PORT, b"http://evil.example",
            b"null", b"http://127.0.0.1:1", b"https://127.0.0.1:" + _PORT, b"", b"http://127.0.0.1:" + _PORT + b"/")
_FETCH_SITES = (None, None, b"same-origin", b"cross-site", b"same-site", b"none", b"\x7f")
_JUNK_HEADERS = (b"X-Empty:", b"NoColon", b" folded: continuation", b"\tfolded", b"Bad Name: x", b"X: a\x01b",
                 b"Content-Type: text/plain", b"Content-Type: application/x-www-form-urlencoded",
                 b"Expect: 100-continue", b"Connection: keep-alive", b"\xc3\xa9: \xc3\xa9", b": empty-name",
                 b"X-Forwarded-Host: evil.example", b"Cookie: a=b")


@functools.cache
def _text() -> Any:
    st = _st()
    return st.text(max_size=16)


_GOOD_VALUES = {"intensity": ("0", "0.1", "1.0", "2.5", "10", "1e0"),
                "lights_on": ("0", "1", "true", "false", "on", "OFF")}
_MODALITY_NAMES = ("rgb", "depth", "gaze", "audio", "pose", "imu", "hands")
_FIELDS = ("method", "path", "query", "version", "host", "origin", "site", "body", "headers", "eol")


def _hostile_query(draw: Any) -> str:
    st = _st()
    if draw(_pick((0, 0, 0, 1))):
        return str(draw(st.one_of(_pick(("%", "&&", "=", "a=%zz", "=1", "intensity", "intensity=1&", "&" * 40,
                                         "t=1&" * 20, "%ff=1", "intensity=%ff")), _text())))
    pairs = []
    for _ in range(draw(_pick((0, 1, 1, 1, 2, 2, 3, 5)))):
        name = draw(st.one_of(_pick(_PARAMS), _text())) if draw(_pick((0, 0, 0, 1))) else draw(_pick(_PARAMS))
        value = draw(st.one_of(_pick(_VALUES), _text())) if draw(_pick((0, 0, 0, 1))) else draw(_pick(_VALUES))
        enc = draw(_pick(("quote", "quote", "quote", "raw", "plus")))
        if enc == "quote":
            pairs.append(f"{quote(name, safe='')}={quote(value, safe='')}")
        elif enc == "plus":
            pairs.append(f"{name}={value}".replace(" ", "+"))
        else:
            pairs.append(f"{name}={value}")
    return "&".join(pairs)


def _good_controls(draw: Any) -> str:
    names = [n for n in ("intensity", "lights_on", "mute", "unmute") if draw(_pick((0, 1)))] or ["intensity"]
    pairs = []
    for n in names:
        if n in _GOOD_VALUES:
            value = draw(_pick(_GOOD_VALUES[n]))
        else:
            value = f"{draw(_pick(_DEVICES))}:{draw(_pick(_MODALITY_NAMES))}"
        pairs.append(f"{n}={quote(value, safe='')}")
    return "&".join(pairs)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _requests() -> Any:
    st = _st()

    @st.composite
    def build(draw: Any) -> bytes:
        """A valid request of the page (any endpoint), with some fields (none to all) made hostile."""
        route = draw(_pick(("page", "state", "tile", "control", "control", "control")))
        n_bad = draw(_pick((0, 0, 1, 1, 1, 2, 3, len(_FIELDS))))
        bad = set(draw(st.permutations(_FIELDS))[:n_bad])
        method = {"page": "GET", "state": "GET", "tile": "GET", "control": "POST"}[route]
        if route != "control" and draw(_pick((0, 0, 0, 1))):
            method = "HEAD"
        if "method" in bad:
            method = draw(st.one_of(_pick(_METHODS), _text()))
        path = {"page": "/", "state": "/state.json", "tile": f"/tile/{draw(_pick(_DEVICES))}.png",
                "control": "/control"}[route]
        if "path" in bad:
            path = draw(_pick(_PATHS)) if draw(_pick((0, 0, 0, 1))) == 0 else "/" + draw(_text())
        query = {"tile": f"t={draw(st.integers(0, 10**13))}", "control": _good_controls(draw)}.get(route, "")
        body = b""
        if route == "control" and draw(_pick((0, 1))):
            body, query = query.encode(), ""  # the controls as a form body
        if "query" in bad:
            query = _hostile_query(draw)
        target = path + ("?" + query if query else "")
        version = draw(_pick(_VERSIONS)) if "version" in bad else draw(_pick(("HTTP/1.1", "HTTP/1.0")))
        eol = draw(_pick((b"\n", b"\r", b"\r\n\r\n", b"\n\r"))) if "eol" in bad else draw(_pick((b"\r\n", b"\n")))
        lines = [_utf8(f"{method} {target} {version}".rstrip(" ") if version else f"{method} {target}")]
        if "host" in bad:
            lines += [b"Host: " + draw(_pick(_HOSTS))] * draw(_pick((1, 1, 1, 0, 2)))
        else:
            lines.append(b"Host: " + draw(_pick(_HOSTS[:6])))
        origin = draw(_pick(_ORIGINS)) if "origin" in bad else draw(_pick(_ORIGINS[:3]))
        if origin is not None:
            lines.append(b"Origin: " + origin)
        site = draw(_pick(_FETCH_SITES)) if "site" in bad else draw(_pick((None, b"same-origin")))
        if site is not None:
            lines.append(b"Sec-Fetch-Site: " + site)
        cl = "right"
        if "body" in bad:
            kind = draw(_pick(("keep", "form", "binary", "big")))
            if kind == "form":
                body = _utf8(_hostile_query(draw))
            elif kind == "binary":
                body = draw(st.binary(max_size=64))
            elif kind == "big":
                body = b"x" * draw(_pick((4096, 4097, 100_000)))
            cl = draw(_pick(("right", "none", "short", "long", "negative", "text", "huge", "twice", "twice_diff",
                             "chunked")))
        n = len(body)
        if cl == "right" and body:
            lines.append(b"Content-Length: %d" % n)
        elif cl == "short":
            lines.append(b"Content-Length: %d" % max(0, n - 1))
        elif cl == "long":
            lines.append(b"Content-Length: %d" % (n + 5))
        elif cl == "negative":
            lines.append(b"Content-Length: -1")
        elif cl == "text":
            lines.append(b"Content-Length: 1e3")
        elif cl == "huge":
            lines.append(b"Content-Length: " + b"9" * 30)
        elif cl == "twice":
            lines += [b"Content-Length: %d" % n] * 2
        elif cl == "twice_diff":
            lines += [b"Content-Length: %d" % n, b"Content-Length: %d" % (n + 1)]
        elif cl == "chunked":
            lines.append(b"Transfer-Encoding: chunked")
            body = b"%x\r\n" % n + body + b"\r\n0\r\n\r\n"
        if body and draw(_pick((0, 1))):
            lines.append(b"Content-Type: application/x-www-form-urlencoded")
        if "headers" in bad:
            for _ in range(draw(_pick((0, 1, 1, 2)))):
                lines.append(draw(_pick(_JUNK_HEADERS)))
            big = draw(_pick((None, "long_value", "many", "long_line")))
            if big == "long_value":
                lines.append(b"X-Big: " + b"a" * draw(_pick((100, 8180, 8200, 40_000))))
            elif big == "many":
                lines += [b"X-%d: v" % i for i in range(draw(_pick((60, 63, 64, 200))))]
            elif big == "long_line":
                lines[0] = lines[0] + b"&pad=" + b"p" * draw(_pick((4000, 5000, 70_000)))
        raw = eol.join(lines) + eol + eol + body
        return raw[:_MAX_REQUEST_BYTES]

    @st.composite
    def mutated(draw: Any) -> bytes:
        raw = bytearray(draw(build()))
        for _ in range(draw(_pick((1, 1, 2, 4)))):
            op = draw(_pick(("flip", "truncate", "insert", "delete")))
            i = draw(st.integers(0, max(0, len(raw) - 1)))
            if op == "flip" and raw:
                raw[i] ^= 1 << draw(st.integers(0, 7))
            elif op == "truncate":
                del raw[i:]
            elif op == "insert":
                raw[i:i] = draw(st.binary(min_size=1, max_size=8))
            elif raw:
                del raw[i]
        return bytes(raw)

    garbage = st.one_of(st.binary(max_size=512), _pick((b"", b"\r\n", b"\r\n\r\n", b"GET", b"GET / HTTP/1.1",
                                                          b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                                                          b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")))
    return st.one_of(build(), build(), build(), build(), mutated(), garbage)


# ---------------------------------------------------------------------------------------------------------------
# the session: one real server
@contextlib.contextmanager
def _http_session() -> Iterator[Callable[[bytes], None]]:
    import torch

    from bridge.registry import make_backend
    from bridge.scenario import parse_scenario

    from .config import make_config
    from .live import LiveServer, LiveSession
    from .model import M3TModel

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only contend with the server's
    with contextlib.ExitStack() as stack, make_backend("embedded", parse_scenario(FUZZ_SCENARIO), seed=0, audio=True) as env:
        stack.callback(torch.set_num_threads, threads)
        session = LiveSession(env, M3TModel(make_config("tiny")))
        with LiveServer(session, port=0) as server:
            port = server.port
            good = b"GET /state.json HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port

            def alive() -> None:
                try:
                    answer = http_exchange(port, good)
                except OSError as exc:
                    raise AssertionError(f"the live server stopped answering: {type(exc).__name__}: {exc}") from exc
                status, _, body = _status(answer)
                if status != 200 or not body.startswith(b"{"):
                    raise AssertionError(f"a good request got {status}: {body[:200]!r}")
                if server.stats.errors:
                    raise AssertionError(f"the server counted {server.stats.errors} internal errors: "
                                         f"{server.stats.last_error}")

            def feed(example: bytes) -> None:
                request = example.replace(_PORT, str(port).encode())
                answer = http_exchange(port, request)
                if session.pending_controls:  # a control reached the scene: its next step must still work
                    with server.lock:
                        session.step()
                alive()
                if not answer:
                    if request.strip(b"\r\n"):
                        raise AssertionError("no answer to a non-empty request")
                    raise LiveRejected("empty request: connection closed without an answer")
                status, _, body = _status(answer)
                if 200 <= status < 300:
                    return
                if 400 <= status < 500:
                    raise LiveRejected(f"HTTP {status}: {body[:200].decode('utf-8', 'replace').strip()}")
                raise AssertionError(f"HTTP {status}: {body[:300]!r}")

            alive()
            yield feed


SURFACES = [
    Surface("live.http", "raw HTTP requests (mutated methods, paths, queries, Host/Origin, sizes, garbage) to one "
                         "xrfed live server over a real socket; it must keep answering a good request",
            _requests, _http_session),
]
