"""Golden messages: small, deterministic stream messages that the C# codec (unity_project) is tested against.

``python -m bridge.stream.golden DIR`` writes them. Each ``*.xrfmsg`` file is a test container, not a wire format:
a little-endian uint32 part count, then per part a uint32 length and the bytes.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .protocol import Compression, encode_frame, encode_heartbeat
from .synthetic import synthetic_frame

__all__ = ["golden_messages", "write_container", "read_container", "write_golden"]

GOLDEN_SENT_NS = 1_700_000_000_123_456_789


def golden_messages() -> dict[str, list[bytes]]:
    """name -> message parts. The frame is 8x6 with two 16-sample audio channels: every modality, a few KB."""
    frame = synthetic_frame("quest_0", height_px=8, width_px=6, step=3, audio_samples=16)
    out = {}
    for name, comp in (("frame_raw", Compression()),
                       ("frame_zlib", Compression(depth_m="zlib", segmentation="zlib", audio="zlib"))):
        out[name] = [bytes(memoryview(p)) for p in encode_frame(frame, seq=7, session="0123456789abcdef",
                                                                 publisher="golden", compression=comp,
                                                                 sent_ns=GOLDEN_SENT_NS)]
    out["heartbeat"] = encode_heartbeat(publisher="golden", session="0123456789abcdef",
                                        seqs={"xrfed/quest_0/frame": 7},
                                        devices=[{"device_id": "quest_0", "user_id": "user_quest_0",
                                                  "profile": "meta_quest_3"}],
                                        step_dt_s=0.1, sent_ns=GOLDEN_SENT_NS, hb_seq=2)
    return out


def write_container(path: str | Path, parts: Sequence[Any]) -> None:
    blobs = [bytes(memoryview(p)) for p in parts]
    data = struct.pack("<I", len(blobs)) + b"".join(struct.pack("<I", len(b)) + b for b in blobs)
    Path(path).write_bytes(data)


def read_container(path: str | Path) -> list[bytes]:
    data = Path(path).read_bytes()
    (n,), off, parts = struct.unpack_from("<I", data, 0), 4, []
    for _ in range(n):
        (size,) = struct.unpack_from("<I", data, off)
        parts.append(data[off + 4: off + 4 + size])
        off += 4 + size
    if off != len(data):
        raise ValueError(f"{path}: {len(data) - off} trailing bytes")
    return parts


def write_golden(directory: str | Path) -> list[Path]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, parts in golden_messages().items():
        write_container(d / f"{name}.xrfmsg", parts)
        paths.append(d / f"{name}.xrfmsg")
    return paths


if __name__ == "__main__":
    for p in write_golden(sys.argv[1] if len(sys.argv) > 1 else "unity_project/Tests/StreamCodec/golden"):
        print(p)
