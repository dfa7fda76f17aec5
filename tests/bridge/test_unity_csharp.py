"""Python and C# agree byte for byte: golden messages are current, and the C# codec (compiled with Mono's mcs)
re-encodes every one of them exactly and evaluates the lighting schedule like the embedded scene."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.unity.codec import golden_messages, lighting_samples, write_golden

ROOT = Path(__file__).resolve().parents[2] / "unity_project"
GOLDEN = ROOT / "Tests" / "SideChannelCodec" / "golden"


def test_committed_golden_messages_are_what_python_writes_now():
    expected = {**golden_messages(), "lighting_samples": lighting_samples()}
    on_disk = {p.stem: p.read_bytes() for p in GOLDEN.glob("*.json")}
    stale = sorted(name for name in expected if on_disk.get(name) != expected[name])
    assert not stale, (f"golden messages out of date: {stale}; regenerate with python -c \"from bridge.unity.codec "
                       f"import write_golden; write_golden('{GOLDEN.relative_to(ROOT.parent)}')\"")


@pytest.mark.skipif(shutil.which("mcs") is None or shutil.which("mono") is None,
                    reason="Mono (apt-get install mono-mcs mono-runtime) is needed to compile the C# codec")
def test_csharp_codec_reproduces_golden_bytes(tmp_path):
    golden = tmp_path / "golden"
    write_golden(golden)
    sources = sorted(str(p) for p in (ROOT / "Assets" / "XRFed" / "Codec").glob("*.cs"))
    exe = tmp_path / "codec_test.exe"
    build = subprocess.run(["mcs", "-nologo", "-r:System.Numerics", f"-out:{exe}",
                            str(ROOT / "Tests" / "SideChannelCodec" / "Program.cs"), *sources],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    run = subprocess.run(["mono", str(exe), str(golden)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 failures" in run.stdout and "ok   load_scenario_default" in run.stdout


@pytest.mark.skipif(shutil.which("mcs") is None or shutil.which("mono") is None, reason="needs Mono")
def test_csharp_codec_catches_a_changed_byte(tmp_path):
    # The C# program must fail when Python's bytes change (a test that cannot fail is a defect).
    write_golden(tmp_path)
    p = tmp_path / "reset.json"
    p.write_bytes(p.read_bytes().replace(b'"seed":42', b'"seed": 42'))
    sources = sorted(str(s) for s in (ROOT / "Assets" / "XRFed" / "Codec").glob("*.cs"))
    exe = tmp_path / "t.exe"
    subprocess.run(["mcs", "-nologo", "-r:System.Numerics", f"-out:{exe}",
                    str(ROOT / "Tests" / "SideChannelCodec" / "Program.cs"), *sources], check=True, timeout=120)
    run = subprocess.run(["mono", str(exe), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "FAIL reset: differs at byte 8" in run.stdout
