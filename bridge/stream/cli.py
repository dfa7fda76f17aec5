"""``xrfed stream``: publish a scenario's embedded scene as a stream-protocol ZeroMQ stream.

Any consumer that speaks ``docs/stream-protocol.md`` can read it -- ``make_backend("zmq", ADDR)``, a viewer, a recorder
on another machine. The stream paces itself to the scenario's step rate unless ``--rate-hz 0``.

Every flag is range-checked by argparse (a bad one is a one-line usage error). Binding a non-loopback address
without ``--curve-keys`` is refused unless ``--allow-insecure-remote`` is given (then a warning goes to stderr), and a
CURVE secret key file that group or others may access is refused (``chmod 600 FILE``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..cliargs import float_range, int_range, is_loopback, name_arg

__all__ = ["register", "run", "publish_backend", "check_bind_security"]


_Z85 = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


def _endpoint(text: str) -> str:
    """``tcp://HOST:PORT`` (PORT 1-65535, or ``*`` for any free port) or ``ipc://PATH``."""
    scheme, sep, rest = text.partition("://")
    if scheme == "ipc" and sep and rest:
        return text
    host, colon, port = rest.rpartition(":")
    if scheme != "tcp" or not sep or not colon or not host:
        raise argparse.ArgumentTypeError(f"expected tcp://HOST:PORT (e.g. tcp://127.0.0.1:5560) or ipc://PATH, "
                                         f"got {text[:80]!r}")
    if port != "*" and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise argparse.ArgumentTypeError(f"port must be between 1 and 65535 (or * for any free port), got "
                                         f"{port[:20]!r}")
    return text


def _bind_host(endpoint: str) -> str | None:
    """The host of a ``tcp://`` endpoint (None for ``ipc://``, which never leaves the machine)."""
    scheme, _, rest = endpoint.partition("://")
    return rest.rpartition(":")[0] if scheme == "tcp" else None


def _render_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(x, 10) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 128x128, got {text[:40]!r}") from None
    if not (8 <= h <= 4096 and 8 <= w <= 4096):
        raise argparse.ArgumentTypeError(f"H and W must be between 8 and 4096, got {h}x{w}")
    return h, w


def _z85_key(text: str) -> str:
    if len(text) != 40 or not set(text) <= _Z85:
        raise argparse.ArgumentTypeError(f"expected a 40-character Z85 CURVE public key, got {text[:60]!r}")
    return text


def _compression(text: str) -> str:
    from ..errors import BridgeError
    from .protocol import Compression

    try:
        Compression.parse(text)
    except BridgeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stream", help="publish a scenario's embedded scene over ZeroMQ (stream protocol v1)",
        description="Run the embedded scene of SCENARIO and publish every device's frame per step as a multipart "
                    "ZeroMQ message (docs/stream-protocol.md). Consume it with make_backend('zmq', ADDR). A bind "
                    "address other than loopback needs --curve-keys (or --allow-insecure-remote).")
    p.add_argument("scenario", metavar="SCENARIO", help="shipped scenario name or path to a scenario YAML")
    p.add_argument("--bind", required=True, metavar="ADDR", type=_endpoint,
                   help="ZeroMQ endpoint to bind, e.g. tcp://127.0.0.1:5560 (tcp://0.0.0.0:5560 for the network: "
                        "needs --curve-keys)")
    p.add_argument("--steps", type=int_range(0, 10**9), default=0, help="steps to publish (0 = until interrupted)")
    p.add_argument("--rate-hz", type=float_range(0.0, 10_000.0), default=None,
                   help="steps per wall-clock second, 0-10000 (default: the scenario's step_hz, real time; 0 = as "
                        "fast as possible)")
    p.add_argument("--mode", choices=("latest", "lossless"), default="latest",
                   help="latest: drop for slow subscribers (live viewing); lossless: block instead (recording)")
    p.add_argument("--compress", default="none", type=_compression, metavar="SPEC",
                   help="per-part encodings, e.g. 'rgb=jpeg,depth_m=zlib,jpeg_quality=85' (default: all raw)")
    p.add_argument("--publisher-id", default="xrfed-embedded", type=name_arg("publisher id"),
                   help="publisher name in topics and headers")
    p.add_argument("--render-size", default=None, metavar="HxW", type=_render_size,
                   help="override the scenario's render size, e.g. 128x128 (8-4096 each)")
    p.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, help="scene seed")
    p.add_argument("--max-avatars", type=int_range(1, 1024), default=None, help="publish only the first N avatars")
    p.add_argument("--no-audio", action="store_true", help="skip room acoustics (faster)")
    p.add_argument("--wait-subscriber", type=float_range(0.0, 3600.0), default=0.0, metavar="S",
                   help="wait up to S seconds (0-3600) for a first subscriber before the first step")
    p.add_argument("--curve-keys", default=None, metavar="FILE",
                   help="this publisher's CURVE key file (zmq.auth.create_certificates format, mode 0600): "
                        "encrypt the stream")
    p.add_argument("--allow-key", action="append", default=None, metavar="Z85", type=_z85_key,
                   help="with --curve-keys: a subscriber public key allowed to connect (repeatable; default any)")
    p.add_argument("--allow-insecure-remote", action="store_true",
                   help="bind a non-loopback address without CURVE anyway: anyone on the network can read the "
                        "stream (a warning is printed)")
    p.set_defaults(func=run)


def check_bind_security(bind: str, *, curve: bool, allow_insecure_remote: bool) -> None:
    """Refuse to publish unencrypted on a non-loopback address unless ``allow_insecure_remote`` (then warn on
    stderr). ``ipc://`` endpoints never leave the machine."""
    from ..errors import BridgeError

    host = _bind_host(bind)
    if curve or host is None or is_loopback(host):
        return
    if not allow_insecure_remote:
        raise BridgeError(f"--bind {bind}: {host} is not a loopback address, and without CURVE anyone who can reach "
                          f"it reads the stream; give --curve-keys FILE (or --allow-insecure-remote to publish "
                          f"unencrypted anyway)")
    print(f"xrfed stream: WARNING: publishing unencrypted on {bind}; anyone who can reach {host} can read the "
          f"stream (use --curve-keys FILE)", file=sys.stderr, flush=True)


def publish_backend(backend: Any, publisher: Any, *, steps: int, rate_hz: float, seed: int = 0,
                    log_every_s: float = 5.0, quiet: bool = False) -> int:
    """Reset ``backend`` and publish its frames for ``steps`` steps (0 = forever) at ``rate_hz`` (0 = flat out).

    Returns the number of steps published. Heartbeats go out while the loop waits for the next step.
    """
    period = 1.0 / rate_hz if rate_hz > 0 else 0.0
    frames = backend.reset(seed=seed)
    n, t0, last_log = 0, time.monotonic(), time.monotonic()
    while True:
        publisher.publish_frames(frames)
        n += 1
        if steps and n >= steps:
            break
        now = time.monotonic()
        if not quiet and now - last_log >= log_every_s:
            last_log = now
            print(f"xrfed stream: {n} steps, {publisher.stats.bytes / 1e6:.1f} MB, "
                  f"{n / (now - t0):.1f} steps/s", flush=True)
        if period:
            target = t0 + n * period
            while (left := target - time.monotonic()) > 0:
                publisher.heartbeat(force=False)
                time.sleep(min(left, 0.05))
        frames = backend.step()
    publisher.heartbeat(force=True)
    return n


def run(args: argparse.Namespace) -> int:
    from ..errors import BridgeError
    from ..registry import make_backend
    from .protocol import Compression
    from .publisher import Publisher, PublisherConfig
    from .security import CurveConfig, load_key_file

    curve = None
    if args.curve_keys:
        public, secret = load_key_file(args.curve_keys)  # refuses a secret key file others may read
        if secret is None:
            raise BridgeError(f"--curve-keys {args.curve_keys}: the file has no secret-key (use the .key_secret file)")
        curve = CurveConfig(public, secret, allowed_keys=tuple(args.allow_key) if args.allow_key else None)
    elif args.allow_key:
        raise BridgeError("--allow-key needs --curve-keys (an allow-list only exists with CURVE)")
    check_bind_security(args.bind, curve=curve is not None, allow_insecure_remote=args.allow_insecure_remote)
    backend = make_backend("embedded", args.scenario, seed=args.seed, render_size=args.render_size,
                           max_avatars=args.max_avatars, audio=not args.no_audio)
    cfg = PublisherConfig(bind=args.bind, publisher_id=args.publisher_id, mode=args.mode,
                          compression=Compression.parse(args.compress), curve=curve)
    with backend, Publisher(cfg, step_dt_s=backend.step_dt_s) as pub:
        print(f"xrfed stream: publishing {len(backend.devices)} device(s) of {args.scenario!r} on {pub.endpoint}",
              flush=True)
        if args.wait_subscriber > 0 and not pub.wait_for_subscriber(timeout_s=args.wait_subscriber):
            print("xrfed stream: no subscriber yet; publishing anyway", flush=True)
        rate = (1.0 / backend.step_dt_s) if args.rate_hz is None else args.rate_hz
        n = publish_backend(backend, pub, steps=args.steps, rate_hz=rate, seed=args.seed)
        print(f"xrfed stream: done, {n} steps, {pub.stats.messages} messages, {pub.stats.bytes / 1e6:.1f} MB",
              flush=True)
    return 0
