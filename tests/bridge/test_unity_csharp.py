"""Python and C# agree byte for byte: golden messages are current, and the C# codec (compiled with Mono's mcs)
re-encodes every one of them exactly and evaluates the lighting schedule like the embedded scene.

Portability rule for golden data (here and in bridge/stream/golden.py): every committed value is built by exact
arithmetic -- integers, integer mantissas scaled by powers of two (``np.ldexp``), one correctly rounded division,
decimal literals. Never from ``**``/``exp``/``log``/``sin``/``cos`` or Gaussian draws: numpy computes those with SIMD
kernels picked per CPU (AVX-512, AVX2, NEON) that differ in the last bit, so the golden file would be right on one
machine and stale on the next. A float that does come from such a function is compared with a tolerance (as the C#
lighting check does), or used only in a comparison far from its threshold (the flicker test below).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
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


def golden_digests() -> str:
    """sha256 of every byte-exact golden payload (side channel and stream; zlib output is left out, it may vary
    with the zlib version), one ``name digest`` line each."""
    from bridge.stream.golden import golden_messages as stream_golden

    parts = {**golden_messages(), "lighting_samples": lighting_samples()}
    parts.update({f"stream/{k}": b"".join(v) for k, v in stream_golden().items() if k != "frame_zlib"})
    return "\n".join(f"{name} {hashlib.sha256(parts[name]).hexdigest()}" for name in sorted(parts))


def _simd_targets() -> list[str]:
    """The CPU features numpy dispatches to on this machine (``NPY_DISABLE_CPU_FEATURES`` accepts only these)."""
    from numpy._core import _multiarray_umath as umath

    return [f for f in umath.__cpu_dispatch__ if umath.__cpu_features__.get(f)]


@pytest.mark.skipif(not _simd_targets(), reason="numpy dispatches to no SIMD extension on this CPU")
def test_golden_bytes_do_not_depend_on_numpys_simd_kernels():
    # Prepare: numpy limited to its baseline kernels in a fresh process
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(_simd_targets())}
    code = "from tests.bridge.test_unity_csharp import golden_digests; print(golden_digests())"
    # Execute
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                         cwd=ROOT.parent)
    # Assert: the same bytes as with the best kernels for this CPU (the old 10.0 ** x sweep was an ulp off on AVX-512)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == golden_digests()


def test_lighting_samples_stay_clear_of_the_flicker_threshold():
    # The one transcendental behind a golden file: a flickering room dims while sin(2 pi f t) < -0.3. A last-bit
    # difference in sin must not be able to flip that comparison at any sampled time.
    from bridge.embedded.lighting import LightingSchedule
    from bridge.scenario import load_scenario

    sc = load_scenario("default")
    times = sorted({s["t_s"] for s in json.loads(lighting_samples())})
    flicker_hz = [k.flicker_hz for k in sc.lighting_schedule if k.flicker_hz > 0]
    assert flicker_hz and times, "no flickering room or no samples: this test would check nothing"
    for f in flicker_hz:
        for t in times:
            assert abs(math.sin(2 * math.pi * f * t) + 0.3) > 1e-6, (f, t)
    assert LightingSchedule(sc).at("kitchen", 45.2).intensity < LightingSchedule(sc).at("kitchen", 45.05).intensity


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
