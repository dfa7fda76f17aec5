"""``xrfed pretrain`` and ``xrfed live``: build the foundation checkpoint; watch the agents predict in the scene."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain", help="train the M3T foundation model on recorded scene data and write a checkpoint",
        description="Trains the base model (multi-task, modality dropout) on a recorded dataset (--data) or on a "
                    "fresh recording of --scenario, and writes model.safetensors, config.json and MODEL_CARD.md. "
                    "Without --out the checkpoint goes to the reproducible cache ($XRFED_CACHE or "
                    "~/.cache/xrfed/checkpoints/<key>) and is reused when it exists.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="recorded dataset directory (from `xrfed record`)")
    src.add_argument("--scenario", default="default", help="record this scenario first (default: default)")
    p.add_argument("--out", help="checkpoint directory (default: the cache)")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "base"], help="model size (default small)")
    p.add_argument("--steps", type=int, default=250, help="optimiser steps (default 250)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    p.add_argument("--record-steps", type=int, default=240, help="scene steps to record with --scenario (240)")
    p.add_argument("--experts", type=int, default=None, help="mixture-of-experts feed-forward with N experts")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--rebuild", action="store_true", help="rebuild a cached checkpoint")
    p.set_defaults(func=_run_pretrain)

    lv = sub.add_parser(
        "live", help="run a scene with one agent per device and watch predictions in a local web page",
        description="Runs the embedded scene; every device's agent predicts on each frame and the prediction goes "
                    "back into the scene. Open the printed URL: per device RGB with gaze and label, depth, audio "
                    "level, predictions and latency, with lighting and modality-mute controls.",
    )
    lv.add_argument("scenario", nargs="?", default="default", help="scenario name or YAML path (default: default)")
    lv.add_argument("--checkpoint", help="checkpoint directory (default: the cached foundation checkpoint)")
    lv.add_argument("--preset", default="small", choices=["tiny", "small", "base"],
                    help="preset of the cached checkpoint when --checkpoint is not given (default small)")
    lv.add_argument("--port", type=int, default=8765, help="HTTP port on 127.0.0.1 (default 8765)")
    lv.add_argument("--steps", type=int, default=None, help="stop after N scene steps (default: run until Ctrl-C)")
    lv.add_argument("--hz", type=float, default=5.0, help="scene steps per second (default 5)")
    lv.add_argument("--size", type=int, default=None, help="render width=height in pixels")
    lv.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    lv.set_defaults(func=_run_live)


def _run_pretrain(args: argparse.Namespace) -> int:
    from .pretrain import PretrainConfig, foundation_checkpoint, pretrain

    cfg = PretrainConfig(preset=args.preset, steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                         seed=args.seed, scenario=args.scenario or "default", record_steps=args.record_steps,
                         num_experts=args.experts)
    if args.data:
        out = Path(args.out) if args.out else Path(args.data) / "checkpoint"
        facts = pretrain(args.data, out, cfg, log=print)
        print(f"held-out accuracy: {facts['heldout_accuracy']}")
    elif args.out:
        import tempfile

        from .pretrain import PRETRAIN_SEED_OFFSET, record_dataset

        with tempfile.TemporaryDirectory() as tmp:
            record_dataset(cfg.scenario, Path(tmp) / "data", steps=cfg.record_steps,
                           seed=cfg.seed + PRETRAIN_SEED_OFFSET, progress=True, guard_s=cfg.guard_s)
            facts = pretrain(Path(tmp) / "data", args.out, cfg, log=print)
        out = Path(args.out)
        print(f"held-out accuracy: {facts['heldout_accuracy']}")
    else:
        out = foundation_checkpoint(cfg, progress=True, log=print, rebuild=args.rebuild)
    print(f"wrote {out}")
    return 0


def _run_live(args: argparse.Namespace) -> int:
    from bridge.registry import make_backend

    from .checkpoint import load_checkpoint
    from .live import LiveSession, serve
    from .pretrain import PretrainConfig, foundation_checkpoint

    ckpt = args.checkpoint or foundation_checkpoint(PretrainConfig(preset=args.preset, scenario=args.scenario),
                                                    progress=True, log=print)
    model = load_checkpoint(ckpt)
    size = (args.size, args.size) if args.size else None
    with make_backend("embedded", args.scenario, seed=args.seed, render_size=size) as env:
        session = LiveSession(env, model, seed=args.seed)
        serve(session, port=args.port, steps=args.steps, step_hz=args.hz,
              on_ready=lambda addr: print(f"xrfed live: open http://{addr[0]}:{addr[1]}/  (Ctrl-C to stop)",
                                          flush=True))
    return 0
