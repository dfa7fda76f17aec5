"""``xrfed pretrain`` and ``xrfed live``: build the foundation checkpoint; watch the agents predict in the scene.

Every flag is range-checked by argparse (a bad value is a one-line usage error, exit 2); what the parser cannot
check (a recipe that must agree with its preset, a bind address) is checked by ``validate`` before any work.
``xrfed live`` serves on 127.0.0.1; another address needs ``--allow-remote`` (then a warning goes to stderr), and
the page answers only to the bound address, loopback names and the ``--allow-host`` names.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.cli import existing_dir, output_dir, scenario_arg, seed_arg
from bridge.cliargs import float_range, int_range, is_loopback
from bridge.recording import MAX_STEPS

from .errors import AgentError

if TYPE_CHECKING:
    from .pretrain import PretrainConfig

__all__ = ["register", "host_arg", "check_live_bind", "MAX_PRETRAIN_STEPS", "MAX_LIVE_HZ"]

#: optimiser steps a pretraining run may ask for
MAX_PRETRAIN_STEPS = 1_000_000
#: scene steps per second ``xrfed live`` may ask for (a step takes tens of ms: more only runs flat out)
MAX_LIVE_HZ = 1000.0
_PRESETS = ("tiny", "small", "base")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def host_arg(text: str) -> str:
    """A host to bind or to accept in the Host header: an IPv4/IPv6 address (IPv6 with or without brackets) or a
    DNS name (letters, digits, '-', dot-separated labels, <= 253 characters). Returned lower-case, IPv6 bracketed."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        name = text.lower().rstrip(".")
        if 0 < len(name) <= 253 and all(_LABEL.fullmatch(part) for part in name.split(".")):
            return name
        raise argparse.ArgumentTypeError(f"expected an IP address or a host name (letters, digits, '-' and '.'), "
                                         f"got {text[:80]!r}") from None
    return f"[{ip.compressed}]" if ip.version == 6 else ip.compressed


host_arg.__name__ = "host"


def check_live_bind(host: str, *, allow_remote: bool, warn: bool = True) -> None:
    """Refuse a non-loopback bind address without ``allow_remote`` (the page has no authentication); with it, print
    a warning on stderr (when ``warn``)."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise AgentError(f"live --host {host}: not a loopback address, and the viewer has no authentication (anyone "
                         f"who can reach it can watch the scene and change its lighting); give --allow-remote to "
                         f"serve on it anyway")
    if warn:
        print(f"xrfed live: WARNING: serving on {host}, which is not a loopback address: anyone who can reach it "
              f"can watch the scene and change its lighting (the page has no authentication)", file=sys.stderr,
              flush=True)


def _check_can_bind(host: str, port: int) -> None:
    """Fail at once, not after a checkpoint build that can take minutes, when ``host:port`` cannot be served on."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            raise AgentError(f"live: cannot serve on {host}:{port}: {exc.strerror or exc}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain", help="train the M3T foundation model on recorded scene data and write a checkpoint",
        description="Trains the base model (multi-task, modality dropout) on recorded datasets (--data) or on "
                    "fresh recordings of one or more --scenario, and writes model.safetensors, config.json and "
                    "MODEL_CARD.md (held-out figures per task against the majority class, and the tasks it claims). "
                    "Without --out the checkpoint goes to the reproducible cache ($XRFED_CACHE or "
                    "~/.cache/xrfed/checkpoints/<key>) and is reused when it exists.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", nargs="+", metavar="DIR", type=existing_dir("dataset directory"),
                     help="recorded dataset directories (from `xrfed record`)")
    src.add_argument("--scenario", action="append", metavar="NAME", type=scenario_arg,
                     help="record this scenario first; repeat for several (default: default)")
    p.add_argument("--out", type=output_dir("checkpoint directory"), help="checkpoint directory (default: the cache)")
    p.add_argument("--preset", default="small", choices=_PRESETS, help="model size (default small)")
    p.add_argument("--steps", type=int_range(1, MAX_PRETRAIN_STEPS), default=600,
                   help=f"optimiser steps, 1-{MAX_PRETRAIN_STEPS} (default 600)")
    p.add_argument("--batch-size", type=int_range(1, 4096), default=32, help="batch size, 1-4096 (default 32)")
    p.add_argument("--lr", type=float_range(0.0, 1.0, lo_open=True), default=2e-3,
                   help="peak learning rate, > 0 and <= 1 (default 2e-3)")
    p.add_argument("--record-steps", type=int_range(1, MAX_STEPS), default=400,
                   help=f"scene steps to record per --scenario, 1-{MAX_STEPS} (400)")
    p.add_argument("--experts", type=int_range(2, 64), default=None,
                   help="mixture-of-experts feed-forward with N experts, 2-64 (each token goes to 2 of them)")
    p.add_argument("--seed", type=seed_arg(), default=0, help="random seed (default 0)")
    p.add_argument("--rebuild", action="store_true", help="rebuild a cached checkpoint")
    p.set_defaults(func=_run_pretrain, validate=_validate_pretrain)

    lv = sub.add_parser(
        "live", help="run a scene with one agent per device and watch predictions in a local web page",
        description="Runs the embedded scene; every device's agent predicts on each frame and the prediction goes "
                    "back into the scene. Open the printed URL: per device RGB with gaze and label, depth, audio "
                    "level, predictions and latency, with lighting and modality-mute controls.",
    )
    lv.add_argument("scenario", nargs="?", default="default", type=scenario_arg,
                    help="scenario name or YAML path (default: default)")
    lv.add_argument("--checkpoint", type=existing_dir("checkpoint directory"),
                    help="checkpoint directory (default: the cached foundation checkpoint)")
    lv.add_argument("--preset", default="small", choices=_PRESETS,
                    help="preset of the cached checkpoint when --checkpoint is not given (default small)")
    lv.add_argument("--host", type=host_arg, default="127.0.0.1",
                    help="address to serve on (default 127.0.0.1; another address needs --allow-remote)")
    lv.add_argument("--port", type=int_range(0, 65535), default=8765,
                    help="HTTP port, 0-65535 (default 8765; 0 = any free port)")
    lv.add_argument("--allow-remote", action="store_true",
                    help="serve on a non-loopback --host: anyone who can reach it can watch and change the scene "
                         "(a warning is printed)")
    lv.add_argument("--allow-host", action="append", type=host_arg, default=None, metavar="NAME",
                    help="also answer requests whose Host header names NAME (e.g. this machine's DNS name when "
                         "serving with --allow-remote; repeatable)")
    lv.add_argument("--steps", type=int_range(1, 10**9), default=None,
                    help="stop after N scene steps (default: run until Ctrl-C)")
    lv.add_argument("--hz", type=float_range(0.0, MAX_LIVE_HZ, lo_open=True), default=5.0,
                    help=f"scene steps per second, > 0 and <= {MAX_LIVE_HZ:g} (default 5)")
    lv.add_argument("--size", type=int_range(16, 2048), default=None, help="render width=height in pixels, 16-2048")
    lv.add_argument("--seed", type=seed_arg(), default=0, help="random seed (default 0)")
    lv.set_defaults(func=_run_live, validate=_validate_live)


def _pretrain_config(args: argparse.Namespace) -> PretrainConfig:
    from .pretrain import PretrainConfig

    return PretrainConfig(preset=args.preset, steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                          seed=args.seed, scenarios=tuple(args.scenario or ("default",)),
                          record_steps=args.record_steps, num_experts=args.experts)


def _validate_pretrain(args: argparse.Namespace) -> None:
    from .config import make_config  # light (agents.pretrain imports torch)

    make_config(args.preset, **({} if args.experts is None else {"num_experts": args.experts}))  # the preset with --experts: a ConfigError names what does not fit


def _validate_live(args: argparse.Namespace) -> None:
    check_live_bind(args.host, allow_remote=args.allow_remote, warn=False)  # the warning comes when it runs


def _run_pretrain(args: argparse.Namespace) -> int:
    from .pretrain import foundation_checkpoint, pretrain

    cfg = _pretrain_config(args)
    if args.data:
        out = Path(args.out) if args.out else Path(args.data[0]) / "checkpoint"
        facts = pretrain(args.data, out, cfg, log=print, progress=True)
    elif args.out:
        import tempfile

        from .pretrain import PRETRAIN_SEED_OFFSET, record_dataset

        with tempfile.TemporaryDirectory() as tmp:
            dirs = [record_dataset(name, Path(tmp) / f"{i}", steps=cfg.record_steps,
                                   seed=cfg.seed + PRETRAIN_SEED_OFFSET + i, progress=True, guard_s=cfg.guard_s)
                    for i, name in enumerate(cfg.scenarios)]
            facts = pretrain(dirs, args.out, cfg, log=print, progress=True)
        out = Path(args.out)
    else:
        out = foundation_checkpoint(cfg, progress=True, log=print, rebuild=args.rebuild)
        from .checkpoint import read_card_facts

        facts = read_card_facts(out)
    print(f"held-out macro balanced accuracy {facts['heldout_macro_balanced_accuracy']:.3f}; claimed tasks: "
          f"{', '.join(facts['claimed_tasks']) or 'none'} (see {Path(out) / 'MODEL_CARD.md'})")
    print(f"wrote {out}")
    return 0


def _run_live(args: argparse.Namespace) -> int:
    from bridge.registry import make_backend

    from .checkpoint import load_checkpoint
    from .live import LiveSession, serve
    from .pretrain import PretrainConfig, foundation_checkpoint

    check_live_bind(args.host, allow_remote=args.allow_remote)
    _check_can_bind(args.host, args.port)
    ckpt = args.checkpoint or foundation_checkpoint(PretrainConfig(preset=args.preset, scenarios=(args.scenario,)),
                                                    progress=True, log=print)
    model = load_checkpoint(ckpt)
    size = (args.size, args.size) if args.size else None
    with make_backend("embedded", args.scenario, seed=args.seed, render_size=size) as env:
        session = LiveSession(env, model, seed=args.seed)
        serve(session, host=args.host, port=args.port, steps=args.steps, step_hz=args.hz,
              allowed_hosts=tuple(args.allow_host or ()),
              on_ready=lambda server: print(f"xrfed live: open {server.url}  (Ctrl-C to stop)", flush=True))
    return 0
