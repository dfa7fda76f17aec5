"""The Unity-side C# codec (compiled with Mono) against Python's golden messages, and Python reading C#'s output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bridge.stream.golden import golden_messages, read_container
from bridge.stream.protocol import decode_message

ROOT = Path(__file__).resolve().parents[2] / "unity_project"
GOLDEN = ROOT / "Tests" / "StreamCodec" / "golden"


def test_committed_golden_messages_match_the_python_encoder():
    fresh = golden_messages()
    for name in ("frame_raw", "heartbeat"):  # byte-exact: JSON + raw buffers are deterministic
        assert read_container(GOLDEN / f"{name}.xrfmsg") == fresh[name], name
    # zlib bytes may differ between zlib versions; the decoded arrays may not.
    committed = decode_message(read_container(GOLDEN / "frame_zlib.xrfmsg"))
    now = decode_message(fresh["frame_zlib"])
    assert committed.header == now.header
    assert all(np.array_equal(committed.arrays[k], now.arrays[k]) for k in now.arrays)


@pytest.mark.skipif(shutil.which("mcs") is None or shutil.which("mono") is None,
                    reason="Mono not installed (apt-get install mono-mcs)")
def test_csharp_codec_reads_golden_messages_and_python_reads_its_messages(tmp_path):
    exe = tmp_path / "codec_tests.exe"
    build = subprocess.run(["mcs", "-r:System.Numerics", f"-out:{exe}",
                            str(ROOT / "Assets/XRFed/Streaming/StreamCodec.cs"),
                            str(ROOT / "Assets/XRFed/Codec/CanonicalJson.cs"),  # the one JSON reader/writer
                            str(ROOT / "Tests/StreamCodec/StreamCodecTests.cs")], capture_output=True, text=True,
                           timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    run = subprocess.run(["mono", str(exe), str(GOLDEN), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and " 0 failed" in run.stdout, run.stdout + run.stderr
    expected = decode_message(golden_messages()["frame_raw"]).to_frame()
    for name in ("csharp_raw", "csharp_zlib"):
        msg = decode_message(read_container(tmp_path / f"{name}.xrfmsg"))
        frame = msg.to_frame()
        assert msg.header["publisher"] == "csharp" and frame.step == 3 and frame.labels == expected.labels
        assert np.array_equal(frame.rgb, expected.rgb) and np.array_equal(frame.depth_m, expected.depth_m)
        assert np.array_equal(frame.audio.samples, expected.audio.samples)
        np.testing.assert_array_equal(frame.hands.joints_m, expected.hands.joints_m)
    assert next(d for d in msg.header["parts"] if d["name"] == "depth_m")["encoding"] == "zlib"
    hb = decode_message(read_container(tmp_path / "csharp_heartbeat.xrfmsg"))
    assert hb.kind == "heartbeat" and hb.header["last_seq"] == {"xrfed/quest_0/frame": 7}
