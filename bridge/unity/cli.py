"""``xrfed player``: serve an xrfed scene as a Unity player to any ``UnityEnvironment`` client."""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    from ..cli import output_dir, output_file
    from ..cliargs import int_range
    from .launcher import add_player_arguments, check_player_arguments

    p = sub.add_parser(
        "player", help="serve a scene as a stand-in Unity player over the ML-Agents gRPC protocol",
        description="Connects to a UnityEnvironment (mlagents-envs) listening on --port, as the Unity Editor does "
                    "in Play mode, and serves the embedded scene (or synthetic frames) until the client closes. "
                    "Start the Python side first: UnityEnvironment(file_name=None) listens on 5004. With "
                    "--write-launcher DIR it instead writes DIR/XRFedPlayer.x86_64, so "
                    "UnityEnvironment(file_name='DIR/XRFedPlayer') starts the player like a build.",
    )
    add_player_arguments(p)
    p.add_argument("--port", type=int_range(1, 65535), default=5004,
                   help="ML-Agents port, 1-65535 (default 5004, like the Editor)")
    p.add_argument("--write-launcher", metavar="DIR", type=output_dir(), default=None,
                   help="write DIR/XRFedPlayer.x86_64 (with the other options baked in) and exit")
    p.add_argument("--export-scenario", metavar="FILE", type=output_file(), default=None,
                   help="write SCENARIO as JSON for the Unity Editor's XRFed > Build Scene From Scenario menu and exit")
    p.set_defaults(func=run, validate=check_player_arguments)


def run(args: argparse.Namespace) -> int:
    from .launcher import build_player, remote_warning, write_launcher

    remote_warning(args)
    if args.export_scenario:
        from pathlib import Path

        from ..scenario import load_scenario
        from .codec import canonical_json, scene_export

        out = Path(args.export_scenario)
        out.write_text(canonical_json(scene_export(load_scenario(args.scenario))))
        print(f"wrote {out}; in Unity: XRFed > Build Scene From Scenario... and pick it")
        return 0
    if args.write_launcher:
        baked = [args.scenario]
        for flag, value in (("--seed", args.seed), ("--size", args.size), ("--max-avatars", args.max_avatars),
                            ("--synthetic", ",".join(args.synthetic) if args.synthetic else None),
                            ("--decision-period", args.decision_period),
                            ("--max-episode-steps", args.max_episode_steps),
                            ("--continuous-actions", args.continuous_actions),
                            ("--discrete-branches", ",".join(map(str, args.discrete_branches or ())) or None),
                            ("--connect-timeout", args.connect_timeout), ("--host", args.host)):
            if value is not None:
                baked += [flag, str(value)]
        baked += [flag for flag, on in (("--no-audio", args.no_audio), ("--allow-remote", args.allow_remote)) if on]
        exe = write_launcher(args.write_launcher, args=baked)
        print(f"wrote {exe}\nuse: UnityEnvironment(file_name={str(exe.with_suffix(''))!r}, worker_id=0)")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    player = build_player(args, args.port)
    print(f"xrfed player: serving {player.scene_name!r} to a UnityEnvironment on port {args.port} (Ctrl-C quits)")
    try:
        return player.run()
    except KeyboardInterrupt:
        return 130
