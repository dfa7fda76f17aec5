"""``xrfed stream``: publish a scenario's embedded scene as a stream-protocol ZeroMQ stream.

Any consumer that speaks ``docs/stream-protocol.md`` can read it -- ``make_backend("zmq", ADDR)``, a viewer, a recorder
on another machine. The stream paces itself to the scenario's step rate unless ``--rate-hz 0``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

__all__ = ["register", "run", "publish_backend"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stream", help="publish a scenario's embedded scene over ZeroMQ (stream protocol v1)",
        description="Run the embedded scene of SCENARIO and publish every device's frame per step as a multipart "
                    "ZeroMQ message (docs/stream-protocol.md). Consume it with make_backend('zmq', ADDR).")
    p.add_argument("scenario", metavar="SCENARIO", help="shipped scenario name or path to a scenario YAML")
    p.add_argument("--bind", required=True, metavar="ADDR",
                   help="ZeroMQ endpoint to bind, e.g. tcp://127.0.0.1:5560 (tcp://0.0.0.0:5560 for the network: "
                        "use --curve-keys then)")
    p.add_argument("--steps", type=int, default=0, help="steps to publish (0 = until interrupted)")
    p.add_argument("--rate-hz", type=float, default=None,
                   help="steps per wall-clock second (default: the scenario's step_hz, real time; 0 = as fast as possible)")
    p.add_argument("--mode", choices=("latest", "lossless"), default="latest",
                   help="latest: drop for slow subscribers (live viewing); lossless: block instead (recording)")
    p.add_argument("--compress", default="none", metavar="SPEC",
                   help="per-part encodings, e.g. 'rgb=jpeg,depth_m=zlib,jpeg_quality=85' (default: all raw)")
    p.add_argument("--publisher-id", default="xrfed-embedded", help="publisher name in topics and headers")
    p.add_argument("--render-size", default=None, metavar="HxW", help="override the scenario's render size, e.g. 128x128")
    p.add_argument("--seed", type=int, default=0, help="scene seed")
    p.add_argument("--max-avatars", type=int, default=None, help="publish only the first N avatars")
    p.add_argument("--no-audio", action="store_true", help="skip room acoustics (faster)")
    p.add_argument("--wait-subscriber", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for a first subscriber before the first step")
    p.add_argument("--curve-keys", default=None, metavar="FILE",
                   help="this publisher's CURVE key file (zmq.auth.create_certificates format): encrypt the stream")
    p.add_argument("--allow-key", action="append", default=None, metavar="Z85",
                   help="with --curve-keys: a subscriber public key allowed to connect (repeatable; default any)")
    p.set_defaults(func=run)


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
        public, secret = load_key_file(args.curve_keys)
        if secret is None:
            raise BridgeError(f"--curve-keys {args.curve_keys}: the file has no secret-key (use the .key_secret file)")
        curve = CurveConfig(public, secret, allowed_keys=tuple(args.allow_key) if args.allow_key else None)
    render = None
    if args.render_size:
        try:
            h, w = (int(x) for x in args.render_size.lower().split("x"))
        except ValueError:
            raise BridgeError(f"--render-size: expected HxW such as 128x128, got {args.render_size!r}") from None
        render = (h, w)
    backend = make_backend("embedded", args.scenario, seed=args.seed, render_size=render,
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
