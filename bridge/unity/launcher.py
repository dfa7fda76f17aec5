"""Make the stand-in player startable like a Unity build: ``UnityEnvironment(file_name=...)`` runs it.

On Linux ``UnityEnvironment`` resolves ``file_name`` to ``file_name.x86_64`` and starts it with Unity's player
arguments (``--mlagents-port N``, ``-logFile PATH``, ``-nographics -batchmode``). :func:`write_launcher` writes
such an executable: a two-line shell script that runs :func:`main` with this interpreter, which reads those
arguments (plus xrfed's own: scenario, size, seed, ...) and serves the scene until the client closes.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["write_launcher", "add_player_arguments", "check_player_arguments", "build_player", "main"]


def _profiles(text: str) -> tuple[str, ...]:
    """``--synthetic``: 1-64 comma-separated device profile names, each known."""
    from ..cliargs import NAME_RE
    from ..devices import get_device
    from ..errors import XrfedError

    names = tuple(t.strip() for t in text.split(","))
    if not text.strip() or len(names) > 64 or not all(NAME_RE.match(n) for n in names):
        raise argparse.ArgumentTypeError(f"expected 1 to 64 comma-separated device profile names, got {text[:80]!r}")
    for n in names:
        try:
            get_device(n)
        except XrfedError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def _host(text: str) -> str:
    """``--host``: a host name or IP address (whether it may be remote is checked with --allow-remote)."""
    from ..errors import XrfedError
    from .player import check_host

    try:
        check_host(text, True, "host")
    except XrfedError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_player_arguments(p: argparse.ArgumentParser) -> None:
    """The scene/player options shared by ``xrfed player`` and the launcher (every value range-checked)."""
    from ..cli import int_list, scenario_arg, seed_arg
    from ..cliargs import float_range, int_range

    p.add_argument("scenario", nargs="?", default="default", type=scenario_arg,
                   help="shipped scenario name or YAML path served by the embedded scene (default: default)")
    p.add_argument("--seed", type=seed_arg(), default=None, help="scene seed (default: the client's seed)")
    p.add_argument("--size", type=int_range(4, 2048), default=None,
                   help="render width=height in pixels, 4-2048 (default: scenario's)")
    p.add_argument("--max-avatars", type=int_range(1, 64), default=None, help="serve only the first N avatars (1-64)")
    p.add_argument("--no-audio", action="store_true", help="skip audio simulation in the embedded scene")
    p.add_argument("--synthetic", metavar="PROFILES", type=_profiles, default=None,
                   help="serve synthetic frames instead of the embedded scene, one device per comma-separated "
                        "profile (no renderer; for checking a client set-up)")
    p.add_argument("--decision-period", type=int_range(0, 1000), default=1,
                   help="scene steps per decision, 0-1000, as Unity's DecisionRequester (default 1)")
    p.add_argument("--max-episode-steps", type=int_range(0, 10**9), default=0,
                   help="interrupt the agents after N decisions and reset, as Agent.MaxStep (default 0 = never)")
    p.add_argument("--continuous-actions", type=int_range(0, 256), default=0,
                   help="continuous actions per agent, 0-256 (default 0)")
    p.add_argument("--discrete-branches", type=int_list(1, 1024, max_items=32), default=None,
                   help="comma-separated discrete branch sizes, each 1-1024 (default none)")
    p.add_argument("--connect-timeout", type=float_range(0.0, 86400.0), default=60.0,
                   help="seconds to wait for the Python side to listen (default 60; 0 = forever)")
    p.add_argument("--host", type=_host, default="127.0.0.1",
                   help="address of the UnityEnvironment (default 127.0.0.1); the link has no TLS or "
                        "authentication, so another address needs --allow-remote")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host that is not loopback (prints a warning)")


def check_player_arguments(args: argparse.Namespace) -> None:
    """What the parser cannot check alone: a non-loopback --host needs --allow-remote (raises BackendError)."""
    from .player import check_host

    check_host(args.host, args.allow_remote, "--host")


def remote_warning(args: argparse.Namespace) -> None:
    """Warn on stderr when the player talks to a non-loopback host (only possible with --allow-remote)."""
    from ..cliargs import is_loopback

    if not is_loopback(args.host):
        print(f"xrfed player: warning: connecting to {args.host} without TLS or authentication: anyone on the "
              "network path can read the frames and drive the scene", file=sys.stderr)


def build_player(args: argparse.Namespace, port: int) -> Any:
    """A :class:`StandInPlayer` for parsed :func:`add_player_arguments` options."""
    from ..backend import SimBackend
    from .player import PlayerConfig, StandInPlayer

    backend: SimBackend
    if args.synthetic:
        from .synthetic import SyntheticBackend, SyntheticConfig

        size = (args.size, args.size) if args.size else (84, 84)
        backend = SyntheticBackend(SyntheticConfig(profiles=tuple(args.synthetic), render_size=size),
                                   seed=args.seed or 0)
    else:
        from ..embedded.backend import EmbeddedBackend

        backend = EmbeddedBackend(args.scenario, seed=args.seed or 0,
                                  render_size=(args.size, args.size) if args.size else None,
                                  audio=not args.no_audio, max_avatars=args.max_avatars)
    branches = tuple(args.discrete_branches or ())
    cfg = PlayerConfig(port=port, decision_period=args.decision_period, max_episode_steps=args.max_episode_steps,
                       continuous_actions=args.continuous_actions, discrete_branches=branches,
                       connect_timeout_s=args.connect_timeout or None, host=args.host,
                       allow_remote=args.allow_remote)
    return StandInPlayer(backend, cfg, seed=args.seed)


def write_launcher(directory: str | os.PathLike[str], *, name: str = "XRFedPlayer", args: Sequence[str] = (),
                   python: str | None = None) -> Path:
    """Write ``<directory>/<name>.x86_64``; ``UnityEnvironment(file_name=<directory>/<name>)`` then starts it.

    ``args`` are player options (see ``xrfed player --help``), e.g. ``["home", "--size", "84"]``.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    exe = d / f"{name}.x86_64"
    cmd = " ".join(shlex.quote(a) for a in (python or sys.executable, "-m", "bridge.unity.launcher", *args))
    exe.write_text(f'#!/bin/sh\n# xrfed stand-in Unity player (written by `xrfed player --write-launcher`)\n'
                   f'exec {cmd} "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of a launched player: Unity's player arguments plus xrfed's player options."""
    from ..cliargs import int_range
    from ..errors import XrfedError

    p = argparse.ArgumentParser(prog="XRFedPlayer", description="xrfed stand-in Unity player (launched build)")
    add_player_arguments(p)
    p.add_argument("--mlagents-port", type=int_range(1, 65535), default=None,
                   help="port of the UnityEnvironment (Unity's flag)")
    p.add_argument("-logFile", "-logfile", dest="log_file", default=None, type=_log_file,
                   help="write the player log here ('-' = stderr)")
    p.add_argument("-nographics", action="store_true", help="accepted for Unity compatibility (always headless)")
    p.add_argument("-batchmode", action="store_true", help="accepted for Unity compatibility")
    args = p.parse_args(argv)
    try:
        check_player_arguments(args)
    except XrfedError as exc:
        print(f"XRFedPlayer: error: {exc}", file=sys.stderr)
        return 2
    remote_warning(args)
    logging.basicConfig(level=logging.INFO, filename=args.log_file if args.log_file not in (None, "-") else None,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.mlagents_port is None:
        # A Unity player without --mlagents-port runs in inference mode: nothing to serve.
        print("XRFedPlayer: no --mlagents-port given; nothing to connect to", file=sys.stderr)
        return 2
    try:
        player = build_player(args, args.mlagents_port)
    except XrfedError as exc:
        print(f"XRFedPlayer: error: {exc}", file=sys.stderr)
        return 2
    return player.run()


def _log_file(text: str) -> str:
    from ..cli import output_file

    return text if text == "-" else output_file("log file")(text)


if __name__ == "__main__":
    sys.exit(main())
