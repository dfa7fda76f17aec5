"""``xrfed pretrain`` and ``xrfed live``: build the foundation checkpoint; watch the agents predict in the scene."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


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
    src.add_argument("--data", nargs="+", metavar="DIR", help="recorded dataset directories (from `xrfed record`)")
    src.add_argument("--scenario", action="append", metavar="NAME",
                     help="record this scenario first; repeat for several (default: default)")
    p.add_argument("--out", help="checkpoint directory (default: the cache)")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "base"], help="model size (default small)")
    p.add_argument("--steps", type=int, default=600, help="optimiser steps (default 600)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    p.add_argument("--record-steps", type=int, default=400, help="scene steps to record per --scenario (400)")
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
                         seed=args.seed, scenarios=tuple(args.scenario or ("default",)),
                         record_steps=args.record_steps, num_experts=args.experts)
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

    ckpt = args.checkpoint or foundation_checkpoint(PretrainConfig(preset=args.preset, scenarios=(args.scenario,)),
                                                    progress=True, log=print)
    model = load_checkpoint(ckpt)
    size = (args.size, args.size) if args.size else None
    with make_backend("embedded", args.scenario, seed=args.seed, render_size=size) as env:
        session = LiveSession(env, model, seed=args.seed)
        serve(session, port=args.port, steps=args.steps, step_hz=args.hz,
              on_ready=lambda addr: print(f"xrfed live: open http://{addr[0]}:{addr[1]}/  (Ctrl-C to stop)",
                                          flush=True))
    return 0
