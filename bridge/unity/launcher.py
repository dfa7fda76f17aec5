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

__all__ = ["write_launcher", "add_player_arguments", "build_player", "main"]


def add_player_arguments(p: argparse.ArgumentParser) -> None:
    """The scene/player options shared by ``xrfed player`` and the launcher."""
    p.add_argument("scenario", nargs="?", default="default",
                   help="shipped scenario name or YAML path served by the embedded scene (default: default)")
    p.add_argument("--seed", type=int, default=None, help="scene seed (default: the client's seed)")
    p.add_argument("--size", type=int, default=None, help="render width=height in pixels (default: scenario's)")
    p.add_argument("--max-avatars", type=int, default=None, help="serve only the first N avatars")
    p.add_argument("--no-audio", action="store_true", help="skip audio simulation in the embedded scene")
    p.add_argument("--synthetic", metavar="PROFILES", default=None,
                   help="serve synthetic frames instead of the embedded scene, one device per comma-separated "
                        "profile (no renderer; for checking a client set-up)")
    p.add_argument("--decision-period", type=int, default=1,
                   help="scene steps per decision, as Unity's DecisionRequester (default 1)")
    p.add_argument("--max-episode-steps", type=int, default=0,
                   help="interrupt the agents after N decisions and reset, as Agent.MaxStep (default 0 = never)")
    p.add_argument("--continuous-actions", type=int, default=0, help="continuous actions per agent (default 0)")
    p.add_argument("--discrete-branches", default="", help="comma-separated discrete branch sizes (default none)")
    p.add_argument("--connect-timeout", type=float, default=60.0,
                   help="seconds to wait for the Python side to listen (default 60; 0 = forever)")


def build_player(args: argparse.Namespace, port: int) -> Any:
    """A :class:`StandInPlayer` for parsed :func:`add_player_arguments` options."""
    from ..backend import SimBackend
    from .player import PlayerConfig, StandInPlayer

    backend: SimBackend
    if args.synthetic:
        from .synthetic import SyntheticBackend, SyntheticConfig

        size = (args.size, args.size) if args.size else (84, 84)
        backend = SyntheticBackend(SyntheticConfig(profiles=tuple(args.synthetic.split(",")), render_size=size),
                                   seed=args.seed or 0)
    else:
        from ..embedded.backend import EmbeddedBackend

        backend = EmbeddedBackend(args.scenario, seed=args.seed or 0,
                                  render_size=(args.size, args.size) if args.size else None,
                                  audio=not args.no_audio, max_avatars=args.max_avatars)
    branches = tuple(int(b) for b in args.discrete_branches.split(",") if b.strip())
    cfg = PlayerConfig(port=port, decision_period=args.decision_period, max_episode_steps=args.max_episode_steps,
                       continuous_actions=args.continuous_actions, discrete_branches=branches,
                       connect_timeout_s=args.connect_timeout or None)
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
    p = argparse.ArgumentParser(prog="XRFedPlayer", description="xrfed stand-in Unity player (launched build)")
    add_player_arguments(p)
    p.add_argument("--mlagents-port", type=int, default=None, help="port of the UnityEnvironment (Unity's flag)")
    p.add_argument("-logFile", "-logfile", dest="log_file", default=None, help="write the player log here")
    p.add_argument("-nographics", action="store_true", help="accepted for Unity compatibility (always headless)")
    p.add_argument("-batchmode", action="store_true", help="accepted for Unity compatibility")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, filename=args.log_file if args.log_file not in (None, "-") else None,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.mlagents_port is None:
        # A Unity player without --mlagents-port runs in inference mode: nothing to serve.
        print("XRFedPlayer: no --mlagents-port given; nothing to connect to", file=sys.stderr)
        return 2
    player = build_player(args, args.mlagents_port)
    return player.run()


if __name__ == "__main__":
    sys.exit(main())
