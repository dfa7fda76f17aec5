"""Headless variant: open an exported scenario stage in Isaac Sim and stream its avatar cameras.

Run with Isaac Sim's Python:  ./python.sh stream_headless.py --usd home.usda --xrfed-root /path/to/xrfed \\
    --endpoint tcp://127.0.0.1:5561 --steps 600
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--usd", required=True, help="stage written by bridge/omniverse/usd_export.py")
    ap.add_argument("--xrfed-root", default="", help="xrfed checkout (for bridge.stream.protocol)")
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5561")
    ap.add_argument("--steps", type=int, default=0, help="steps to publish (0 = until interrupted)")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--rate-hz", type=float, default=10.0)
    ap.add_argument("--compress", default="rgb=jpeg,depth_m=zlib,segmentation=zlib")
    args = ap.parse_args()

    try:
        from isaacsim import SimulationApp  # Isaac Sim >= 4
    except ImportError:
        from omni.isaac.kit import SimulationApp  # older Isaac Sim
    app = SimulationApp({"headless": True})
    try:
        import omni.usd

        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        from xrfed.omniverse.streamer import AvatarStreamer, StreamSettings, ensure_xrfed_importable

        ensure_xrfed_importable(args.xrfed_root)
        omni.usd.get_context().open_stage(os.path.abspath(args.usd))
        for _ in range(10):  # let the stage load and the renderer warm up
            app.update()
        streamer = AvatarStreamer(StreamSettings(endpoint=args.endpoint, width_px=args.width, height_px=args.height,
                                                 rate_hz=args.rate_hz, compress=args.compress))
        print(f"xrfed: streaming {streamer.device_ids} on {args.endpoint}", flush=True)
        sent = 0
        while app.is_running() and (args.steps == 0 or sent < args.steps):
            app.update()
            sent += int(streamer.tick())
        streamer.close()
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
