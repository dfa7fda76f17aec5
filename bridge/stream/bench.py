"""Stream protocol throughput vs bare pyzmq and vs the ML-Agents observation path (``xrfed bench stream``).

For 1 and 8 devices at 128x128 and 640x480, raw and compressed (rgb=jpeg, depth=zlib), it measures in one run:

* **ours**: ``Publisher.publish_frames`` (encode + send) in a child process -- a publisher is always another
  process (``xrfed stream``, Kit, Unity) -- and ``Subscriber.recv`` + ``to_frame`` (decode + frame validation) here,
  over TCP on 127.0.0.1, timed from the first received frame to the last;
* **ours, arrays only** (raw rows, ``ratio_vs_pyzmq_arrays``): the same without ``to_frame`` -- the decoded,
  wire-checked arrays of ``Subscriber.recv`` are the product (what a recorder of messages consumes). The difference
  to ``ratio_vs_pyzmq`` is the cost of the frame contract (building and validating the ``DeviceFrame``);
* **bare pyzmq**: the same set-up sending the *same bytes* (the message pre-encoded once) with
  ``send_multipart``/``recv_multipart`` and no work at all; for compressed rows also **bare pyzmq + same codec**:
  that loop plus the codec calls our path makes per frame (Pillow JPEG of rgb, zlib of depth, both ways) -- on
  loopback a codec only costs time, so ``ratio_vs_pyzmq_same_codec`` is what measures the protocol there;
* **ML-Agents**: the Python side of ML-Agents' observation path -- ``UnityRLOutputProto.ParseFromString`` plus
  ``mlagents_envs.rpc_utils.steps_from_proto`` for one agent per device, with RGB as a CHW PNG observation
  (ML-Agents' default camera compression) for "compressed" and as float32 CHW data for "raw", and depth as float
  data. Unity's encoding and the gRPC transfer are *not* counted, which favours ML-Agents.

``ratio_vs_pyzmq`` = our time / bare time (target <= 1.5 for raw frames; compressed frames are held to it against
the same-codec baseline); ``speedup_vs_mlagents`` = our frames/s / ML-Agents
frames/s (target >= 5 at 640x480). Ours and the bare loops run alternately ``repeats`` times per configuration; a
ratio is the median of the ratios of neighbouring runs (all of them are in ``*_runs``), times are medians too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_bench_arguments", "run_stream_bench", "bench_stream"]

_SIZES = ((128, 128), (480, 640))
_DEVICES = (1, 8)


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli import output_file
    from ..cliargs import float_range, int_range

    p.add_argument("--json", dest="json_path", default=None, metavar="FILE", type=output_file(), help="write the figures to FILE")
    p.add_argument("--budget-mb", type=float_range(1.0, 65_536.0), default=1200.0,
                   help="raw megabytes to push per run (sets the number of steps, at most 8000; default 1200)")
    p.add_argument("--quick", action="store_true", help="a tenth of the budget (smoke run)")
    p.add_argument("--repeats", type=int_range(1, 1000), default=5,
                   help="alternating runs of ours and the bare loop per configuration; ratios are their median "
                        "(default 5)")


def run_stream_bench(args: argparse.Namespace) -> int:
    budget = args.budget_mb / (10.0 if args.quick else 1.0)
    if args.repeats < 1:
        raise SystemExit(f"--repeats: expected a positive integer, got {args.repeats}")
    result = bench_stream(budget_mb=budget, repeats=args.repeats)
    text = json.dumps(result, indent=2)
    if args.json_path:
        Path(args.json_path).write_text(text + "\n")
    for r in result["results"]:
        print(f"{r['devices']} dev {r['width_px']}x{r['height_px']} {r['compression']:>10}: "
              f"{r['ours_frames_per_s']:8.1f} frames/s {r['ours_mb_per_s']:8.1f} MB/s  "
              f"ratio_vs_pyzmq {r['ratio_vs_pyzmq']:.2f}  speedup_vs_mlagents {r['speedup_vs_mlagents']:.1f}")
    print(json.dumps(result["summary"]))
    return 0


def _frames(devices: int, h: int, w: int) -> list[Any]:
    from .synthetic import synthetic_frame

    # Rendered-scene-like content without segmentation (the embedded default) and 0.1 s of 16 kHz mono audio.
    return [synthetic_frame(f"dev{i}", height_px=h, width_px=w, segmentation=False, audio_samples=1600,
                            audio_channels=1, seed=i) for i in range(devices)]


def _publisher_process(kind: str, devices: int, h: int, w: int, steps: int, compression: Any, conn: Any) -> None:
    """Child process: bind, wait for the subscriber, publish ``steps`` steps (ours or bare), report the port first."""
    import zmq

    from .protocol import encode_frame
    from .publisher import Publisher, PublisherConfig

    frames = _frames(devices, h, w)
    if kind in ("ours", "ours_arrays"):
        pub = Publisher(PublisherConfig(bind="tcp://127.0.0.1:*", mode="lossless", sndhwm=64,
                                        compression=compression)).open()
        conn.send(pub.endpoint)
        pub.wait_for_subscriber(timeout_s=30.0)
        conn.recv()  # go
        for _ in range(steps):
            pub.publish_frames(frames)
        conn.recv()  # done
        pub.close()
        return
    msgs = [[bytes(memoryview(p)) if i < 2 else p for i, p in
             enumerate(encode_frame(f, seq=0, session="bench", publisher="bench", compression=compression))]
            for f in frames]
    codec = _codec_parts(frames, compression) if kind == "bare_codec" else None
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.linger = 0
    sock.sndhwm = 64
    sock.setsockopt(zmq.XPUB_NODROP, 1)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    conn.send(f"tcp://127.0.0.1:{port}")
    sock.recv()  # the subscription
    conn.recv()
    for _ in range(steps):
        for i, m in enumerate(msgs):
            if codec is not None:  # the codec work of every frame, nothing else
                m = list(m)
                for j, array, enc in codec[i]:
                    m[j] = _encode_same(array, enc, compression)
            sock.send_multipart(m, copy=False)
    conn.recv()
    sock.close(0)
    ctx.term()


def _run(kind: str, devices: int, h: int, w: int, steps: int, compression: Any) -> tuple[float, int]:
    """Seconds from the first to the last received frame, and wire bytes received, with the publisher in another
    process (as ``xrfed stream``, Kit or Unity always are)."""
    import multiprocessing as mp

    import zmq

    from .protocol import Limits
    from .subscriber import Subscriber, SubscriberConfig

    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_publisher_process, args=(kind, devices, h, w, steps, compression, child), daemon=True)
    proc.start()
    try:
        endpoint = parent.recv()
        n = steps * devices
        if kind in ("ours", "ours_arrays"):
            frames = kind == "ours"  # else: the decoded, wire-checked arrays are the product (no DeviceFrame)
            # limits sized to these frames (at most 3.5 MB), so the byte budget allows the bare loop's 64 messages
            limits = Limits(max_message_bytes=16 << 20, max_part_bytes=16 << 20, max_decoded_bytes=64 << 20)
            with Subscriber(SubscriberConfig(connect=(endpoint,), rcvhwm=64, limits=limits)) as sub:
                time.sleep(0.2)
                parent.send("go")
                got, t0 = 0, 0.0
                while got < n:
                    msg = sub.recv(30.0)
                    if msg is None:
                        raise RuntimeError(f"bench: stream stalled after {got}/{n} frames")
                    if not frames or sub.to_frame(msg) is not None:
                        got += 1
                        if got == 1:
                            t0, first = time.perf_counter(), msg.wire_bytes
                dt = time.perf_counter() - t0
                nbytes = sub.stats.bytes - first
        else:
            zctx = zmq.Context()
            sock = zctx.socket(zmq.SUB)
            sock.linger, sock.rcvhwm = 0, 64
            sock.connect(endpoint)
            sock.setsockopt(zmq.SUBSCRIBE, b"xrfed/")
            time.sleep(0.2)
            parent.send("go")
            codec = _codec_parts(_frames(devices, h, w), compression) if kind == "bare_codec" else None
            parts = sock.recv_multipart(copy=False)
            t0, nbytes = time.perf_counter(), 0
            for _ in range(n - 1):
                parts = sock.recv_multipart(copy=False)
                nbytes += sum(len(p) for p in parts)
                if codec is not None:
                    for j, array, enc in codec[0]:
                        _decode_same(parts[j].buffer, enc, array)
            dt = time.perf_counter() - t0
            sock.close(0)
            zctx.term()
        parent.send("done")
        return dt, nbytes
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()


def _codec_parts(frames: list[Any], compression: Any) -> list[list[tuple[int, np.ndarray, str]]]:
    """Per frame: (message part index, array, encoding) of every compressed part, in our message layout."""
    from ..arrays import modality_arrays

    out = []
    for f in frames:
        arrays = modality_arrays(f)  # the message's parts, in its order
        out.append([(2 + i, np.asarray(a), compression.encoding_for(n)) for i, (n, a) in enumerate(arrays.items())
                    if compression.encoding_for(n) != "raw"])
    return out


def _encode_same(a: np.ndarray, enc: str, compression: Any) -> bytes:
    """The very codec call our publisher makes for one part (Pillow JPEG/PNG, zlib), and nothing else."""
    from .protocol import _coded_payload

    return _coded_payload("bench", a, enc, compression)


def _decode_same(buf: Any, enc: str, like: np.ndarray) -> np.ndarray:
    """The codec call our subscriber makes for one part, and nothing else."""
    import io
    import zlib

    if enc == "zlib":
        return np.frombuffer(zlib.decompress(buf), like.dtype).reshape(like.shape)
    from PIL import Image

    with Image.open(io.BytesIO(buf)) as im:
        return np.asarray(im.convert("RGB" if like.ndim == 3 else "L"))


def _mlagents_payload(frames: list[Any], png: bool) -> tuple[bytes, Any]:
    """One step of ``len(frames)`` agents as a serialized UnityRLOutputProto, and the matching BehaviorSpec."""
    import io

    from mlagents_envs.base_env import (
        ActionSpec,
        BehaviorSpec,
        DimensionProperty,
        ObservationSpec,
        ObservationType,
    )
    from mlagents_envs.communicator_objects.agent_info_pb2 import AgentInfoProto
    from mlagents_envs.communicator_objects.observation_pb2 import NONE, PNG, ObservationProto
    from mlagents_envs.communicator_objects.unity_rl_output_pb2 import UnityRLOutputProto
    from PIL import Image

    out = UnityRLOutputProto()
    agents = out.agentInfos["xrfed?team=0"]
    for i, f in enumerate(frames):
        h, w, _ = f.rgb.shape
        info = AgentInfoProto(id=i, reward=0.0, done=False)
        rgb = ObservationProto(shape=[3, h, w], dimension_properties=[1, 2, 2])
        if png:
            buf = io.BytesIO()
            Image.fromarray(f.rgb).save(buf, format="PNG")
            rgb.compressed_data = buf.getvalue()
            rgb.compression_type = PNG
        else:
            rgb.compression_type = NONE
            rgb.float_data.data.extend((f.rgb.transpose(2, 0, 1).astype(np.float32) / 255.0).ravel().tolist())
        depth = ObservationProto(shape=[1, h, w], dimension_properties=[1, 2, 2], compression_type=NONE)
        depth.float_data.data.extend(np.nan_to_num(f.depth_m, posinf=100.0).ravel().tolist())
        vec = ObservationProto(shape=[21], dimension_properties=[0], compression_type=NONE)
        vec.float_data.data.extend([0.1] * 21)  # gaze 8 + pose 7 + imu 6
        info.observations.extend([rgb, depth, vec])
        agents.value.append(info)
    h, w, _ = frames[0].rgb.shape
    spec = BehaviorSpec(
        [ObservationSpec((3, h, w), (DimensionProperty.NONE, DimensionProperty.TRANSLATIONAL_EQUIVARIANCE,
                                     DimensionProperty.TRANSLATIONAL_EQUIVARIANCE), ObservationType.DEFAULT, "rgb"),
         ObservationSpec((1, h, w), (DimensionProperty.NONE, DimensionProperty.TRANSLATIONAL_EQUIVARIANCE,
                                     DimensionProperty.TRANSLATIONAL_EQUIVARIANCE), ObservationType.DEFAULT, "depth"),
         ObservationSpec((21,), (DimensionProperty.NONE,), ObservationType.DEFAULT, "vector")],
        ActionSpec.create_continuous(1),
    )
    return out.SerializeToString(), spec


def _mlagents(frames: list[Any], steps: int, png: bool, max_s: float = 3.0) -> tuple[float, int, str]:
    """Seconds and steps of the ML-Agents Python decode path: ``steps`` steps, or fewer (at least 2) once ``max_s``
    has passed -- at 640x480 one step takes seconds. (0.0, 0, reason) if mlagents_envs is unavailable."""
    try:
        from mlagents_envs.communicator_objects.unity_rl_output_pb2 import UnityRLOutputProto
        from mlagents_envs.rpc_utils import steps_from_proto
    except ImportError as exc:
        return 0.0, 0, f"unavailable: {exc}"
    payload, spec = _mlagents_payload(frames, png)
    t0 = time.perf_counter()
    done = 0
    while done < steps and (done < 2 or time.perf_counter() - t0 < max_s):
        done += 1
        msg = UnityRLOutputProto()
        msg.ParseFromString(payload)
        decision, _terminal = steps_from_proto(msg.agentInfos["xrfed?team=0"].value, spec)
        if decision.obs[0].shape[0] != len(frames):
            raise RuntimeError("bench: ML-Agents decode returned the wrong batch")
    elapsed = time.perf_counter() - t0
    import google.protobuf

    impl = "python"
    try:
        from google.protobuf.internal import api_implementation

        impl = api_implementation.Type()
    except ImportError:
        pass
    return elapsed, done, f"mlagents_envs protobuf {google.protobuf.__version__} ({impl})"


def bench_stream(*, budget_mb: float = 1200.0, sizes: tuple[tuple[int, int], ...] = _SIZES,
                 devices: tuple[int, ...] = _DEVICES, repeats: int = 5) -> dict[str, Any]:
    from .protocol import Compression

    results = []
    ml_note = ""
    for n_dev in devices:
        for h, w in sizes:
            frames = _frames(n_dev, h, w)
            raw_step_mb = sum(f.rgb.nbytes + f.depth_m.nbytes for f in frames) / 1e6
            steps = max(5, min(8000, int(budget_mb / raw_step_mb)))
            ml_steps = max(2, min(200, steps // 10))
            for label, comp in (("raw", Compression()), ("compressed", Compression(rgb="jpeg", depth_m="zlib"))):
                # ours and the baselines alternate, `repeats` times: each ratio compares runs made moments apart,
                # and the median of those ratios is reported (one noisy run cannot decide it)
                runs: dict[str, list[float]] = {"ours": [], "bare": [], "bare_codec": [], "ours_arrays": []}
                for _ in range(repeats):
                    t, ours_bytes = _run("ours", n_dev, h, w, steps, comp)
                    runs["ours"].append(t)
                    runs["bare"].append(_run("bare", n_dev, h, w, steps, comp)[0])
                    if label == "raw":
                        runs["ours_arrays"].append(_run("ours_arrays", n_dev, h, w, steps, comp)[0])
                    if label == "compressed":
                        runs["bare_codec"].append(_run("bare_codec", n_dev, h, w, steps, comp)[0])
                ratios = [o / b for o, b in zip(runs["ours"], runs["bare"], strict=True)]
                codec_ratios = [o / b for o, b in zip(runs["ours"], runs["bare_codec"], strict=False)]
                array_ratios = [o / b for o, b in zip(runs["ours_arrays"], runs["bare"], strict=False)]
                ours_s, bare_s = statistics.median(runs["ours"]), statistics.median(runs["bare"])
                codec_s = statistics.median(runs["bare_codec"]) if codec_ratios else None
                ml_s, ml_done, ml_note = _mlagents(frames, ml_steps, png=(label == "compressed"))
                n = steps * n_dev
                ours_fps = (n - 1) / ours_s  # timed from the first received frame to the last
                ml_fps = (ml_done * n_dev / ml_s) if ml_s > 0 else None
                results.append({
                    "devices": n_dev, "height_px": h, "width_px": w, "compression": label, "steps": steps,
                    "frames": n, "ours_s": round(ours_s, 4), "bare_pyzmq_s": round(bare_s, 4),
                    "ours_frames_per_s": round(ours_fps, 1), "bare_pyzmq_frames_per_s": round((n - 1) / bare_s, 1),
                    "ours_mb_per_s": round(ours_bytes / 1e6 / ours_s, 1),
                    "raw_mb_per_s": round(raw_step_mb / n_dev * ours_fps, 1),
                    "wire_bytes_per_frame": int(ours_bytes / max(n - 1, 1)),
                    "ratio_vs_pyzmq": round(statistics.median(ratios), 3),
                    "ratio_vs_pyzmq_runs": [round(r, 3) for r in ratios],
                    "ratio_vs_pyzmq_arrays": round(statistics.median(array_ratios), 3) if array_ratios else None,
                    "bare_pyzmq_same_codec_s": None if codec_s is None else round(codec_s, 4),
                    "ratio_vs_pyzmq_same_codec": round(statistics.median(codec_ratios), 3) if codec_ratios else None,
                    "ratio_vs_pyzmq_same_codec_runs": [round(r, 3) for r in codec_ratios] or None,
                    "mlagents_steps": ml_done,
                    "mlagents_frames_per_s": None if ml_fps is None else round(ml_fps, 1),
                    "speedup_vs_mlagents": None if ml_fps is None else round(ours_fps / ml_fps, 2),
                })
    raw = [r for r in results if r["compression"] == "raw"]
    comp_rows = [r for r in results if r["ratio_vs_pyzmq_same_codec"] is not None]
    big = [r for r in results if r["height_px"] == 480 and r["speedup_vs_mlagents"] is not None]
    return {
        "benchmark": "stream",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "mlagents_path": f"Python-side decode only (UnityRLOutputProto.ParseFromString + steps_from_proto), "
                         f"{ml_note}; raw = float32 CHW observations, compressed = PNG (ML-Agents' camera default); "
                         f"Unity-side encoding and gRPC transfer not counted",
        "bare_pyzmq": "same bytes, XPUB/SUB over tcp://127.0.0.1, send_multipart/recv_multipart(copy=False) with "
                      "pyzmq's defaults",
        "ours": "Publisher.publish_frames in a child process; Subscriber.recv + to_frame (DeviceFrame validated) here; "
                "ratio_vs_pyzmq_arrays: Subscriber.recv only (decoded, wire-checked arrays)",
        "bare_pyzmq_same_codec": "compressed rows: the bare loop plus the very codec calls ours makes per frame "
                                 "(Pillow JPEG encode/decode of rgb, zlib of depth), so the ratio isolates the "
                                 "protocol from the codec",
        "targets": {"ratio_vs_pyzmq_max": 1.5, "speedup_vs_mlagents_min_640x480": 5.0},
        "results": results,
        "summary": {
            "worst_ratio_vs_pyzmq_raw": max(r["ratio_vs_pyzmq"] for r in raw) if raw else None,
            "worst_ratio_vs_pyzmq_arrays_raw": max(r["ratio_vs_pyzmq_arrays"] for r in raw) if raw else None,
            "worst_ratio_vs_pyzmq_same_codec_compressed": max(r["ratio_vs_pyzmq_same_codec"] for r in comp_rows)
            if comp_rows else None,
            "min_speedup_vs_mlagents_640x480": min(r["speedup_vs_mlagents"] for r in big) if big else None,
        },
    }
