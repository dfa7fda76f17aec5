"""Every C# script of unity_project compiles -- without a Unity Editor -- against a reference assembly of the API
surface it uses (unity_project/Tests/ApiSurface: declarations only, each signature checked against the ML-Agents
C# sources, Unity's scripting reference and NetMQ's sources), assembly by assembly as Unity builds them:

* ``XRFed.Codec`` (Codec/XRFed.Codec.asmdef, ``noEngineReferences``): the .NET class library only;
* ``Assembly-CSharp``: every runtime script outside an .asmdef folder, against UnityEngine, ML-Agents, OpenXR, Codec;
* ``Assembly-CSharp-Editor``: the ``Editor`` folders, plus UnityEditor;
* ``XRFed.Streaming`` (Streaming/XRFed.Streaming.asmdef, define constraint ``XRFED_NETMQ``): only with NetMQ.

A script calling a method that does not exist, or passing wrong argument types, fails the build (the negative tests
prove the surface is strict). Skipped only when Mono's ``mcs`` is missing (``apt-get install mono-mcs``).
"""

from __future__ import annotations

import calendar
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2] / "unity_project"
ASSETS = ROOT / "Assets"
SURFACE = ROOT / "Tests" / "ApiSurface"

pytestmark = pytest.mark.skipif(shutil.which("mcs") is None,
                                reason="Mono's C# compiler is missing (apt-get install mono-mcs mono-runtime)")

# Reference assemblies: name -> (source, references). C# 7.x with `default` literals: mcs's newest language level.
_SURFACE = {
    "UnityEngine": ("UnityEngine.cs", []),
    "Unity.XR.OpenXR": ("Unity.XR.OpenXR.cs", ["UnityEngine"]),
    "Unity.ML-Agents": ("Unity.ML-Agents.cs", ["UnityEngine"]),
    "UnityEditor": ("UnityEditor.cs", ["UnityEngine"]),
    "NetMQ": ("NetMQ.cs", []),
    "AsyncIO": ("AsyncIO.cs", []),
}
_RUNTIME_REFS = ["XRFed.Codec", "UnityEngine", "Unity.ML-Agents", "Unity.XR.OpenXR"]


def _mcs(out: Path, sources: list[Path], refs: list[Path], *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = ["mcs", "-nologo", "-target:library", "-langversion:experimental", f"-out:{out}",
           *(f"-r:{r}" for r in refs), *extra, *(str(s) for s in sources)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _asmdef_dirs() -> dict[Path, dict]:
    return {p.parent: json.loads(p.read_text()) for p in ASSETS.rglob("*.asmdef")}


def _sources(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.cs"))


def _assembly_csharp_sources(editor: bool) -> list[Path]:
    """Scripts Unity puts in Assembly-CSharp(-Editor): outside every .asmdef folder, split by an ``Editor`` folder."""
    owned = list(_asmdef_dirs())
    out = []
    for p in sorted(ASSETS.rglob("*.cs")):
        if any(d in p.parents for d in owned):
            continue
        if ("Editor" in p.relative_to(ASSETS).parts[:-1]) == editor:
            out.append(p)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The reference assemblies and XRFed.Codec, compiled once for this module."""
    out = tmp_path_factory.mktemp("unity_refs")
    dlls: dict[str, Path] = {}
    for name, (src, refs) in _SURFACE.items():
        dlls[name] = out / f"{name}.dll"
        r = _mcs(dlls[name], [SURFACE / src], [dlls[x] for x in refs])
        assert r.returncode == 0, f"reference assembly {name} does not compile:\n{r.stdout}{r.stderr}"
    dlls["XRFed.Codec"] = out / "XRFed.Codec.dll"
    r = _mcs(dlls["XRFed.Codec"], _sources(ASSETS / "XRFed" / "Codec"), [], "-r:System.Numerics")
    assert r.returncode == 0, r.stdout + r.stderr
    return dlls


def test_asmdefs_say_what_the_build_below_assumes():
    dirs = {d.relative_to(ASSETS).as_posix(): a for d, a in _asmdef_dirs().items()}
    assert set(dirs) == {"XRFed/Codec", "XRFed/Streaming"}, dirs
    codec, streaming = dirs["XRFed/Codec"], dirs["XRFed/Streaming"]
    assert codec["name"] == "XRFed.Codec" and codec["noEngineReferences"] is True
    assert streaming["name"] == "XRFed.Streaming" and streaming["references"] == ["XRFed.Codec"]
    assert streaming["defineConstraints"] == ["XRFED_NETMQ"]
    assert codec["autoReferenced"] and streaming["autoReferenced"]


def test_runtime_and_editor_scripts_compile_without_netmq(built, tmp_path):
    # Prepare: Assembly-CSharp sees XRFed.Codec and the packages, never NetMQ (XRFED_NETMQ undefined)
    runtime = _assembly_csharp_sources(editor=False)
    editor = _assembly_csharp_sources(editor=True)
    assert len(runtime) >= 14 and [p.name for p in editor] == ["ScenarioSceneBuilder.cs"]
    assert not any("Streaming" in p.parts for p in runtime)
    # Execute
    rt = _mcs(tmp_path / "Assembly-CSharp.dll", runtime, [built[r] for r in _RUNTIME_REFS])
    assert rt.returncode == 0, rt.stdout + rt.stderr
    ed = _mcs(tmp_path / "Assembly-CSharp-Editor.dll", editor,
              [built[r] for r in _RUNTIME_REFS] + [built["UnityEditor"], tmp_path / "Assembly-CSharp.dll"])
    # Assert: both build; runtime scripts do not reach for UnityEditor (it was not referenced)
    assert ed.returncode == 0, ed.stdout + ed.stderr


def test_streaming_compiles_with_netmq_and_only_with_it(built, tmp_path):
    sources = _sources(ASSETS / "XRFed" / "Streaming")
    base = [built["XRFed.Codec"], built["UnityEngine"]]
    with_netmq = _mcs(tmp_path / "XRFed.Streaming.dll", sources, base + [built["NetMQ"], built["AsyncIO"]],
                      "-define:XRFED_NETMQ")
    assert with_netmq.returncode == 0, with_netmq.stdout + with_netmq.stderr
    # Without NetMQ the assembly cannot build: this is why its .asmdef has the XRFED_NETMQ define constraint
    without = _mcs(tmp_path / "nope.dll", sources, base)
    assert without.returncode != 0 and "NetMQ" in without.stdout + without.stderr


def test_codec_needs_no_unityengine(built):
    # XRFed.Codec compiled with the class library alone (the fixture): noEngineReferences holds
    text = "\n".join(p.read_text() for p in _sources(ASSETS / "XRFed" / "Codec"))
    assert "using UnityEngine" not in text and built["XRFed.Codec"].exists()


_BAD = {
    "missing_method": ("CS1061", "var c = new UnityEngine.GameObject(\"x\").AddComponent<UnityEngine.Camera>(); "
                                 "c.RenderWithReplacementShader(UnityEngine.Shader.Find(\"s\"), \"RenderType\");"),
    "wrong_argument_type": ("CS1503", "var s = Unity.MLAgents.Sensors.ObservationSpec.Visual(\"2\", 84, 84);"),
    "old_overload": ("CS1501", "var spec = new Unity.MLAgents.Sensors.CompressionSpec();"
                               " var t = Unity.MLAgents.Sensors.ObservationSpec.Visual(84, 84);"),
    "wrong_out_type": ("CS1503", "var d = new UnityEngine.XR.InputDevice(); float f; "
                                 "d.TryGetFeatureValue(UnityEngine.XR.OpenXR.Features.Interactions.EyeTrackingUsages"
                                 ".gazePosition, out f);"),
}
_GOOD = ("var c = new UnityEngine.GameObject(\"x\").AddComponent<UnityEngine.Camera>(); "
         "c.RenderWithShader(UnityEngine.Shader.Find(\"s\"), \"RenderType\"); "
         "var s = Unity.MLAgents.Sensors.ObservationSpec.Visual(2, 84, 84); "
         "var d = new UnityEngine.XR.InputDevice(); UnityEngine.Vector3 v; "
         "d.TryGetFeatureValue(UnityEngine.XR.OpenXR.Features.Interactions.EyeTrackingUsages.gazePosition, out v);")


def _probe(tmp_path: Path, body: str, built: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    src = tmp_path / "Probe.cs"
    src.write_text("public static class Probe { public static void Run() { " + body + " } }\n")
    return _mcs(tmp_path / "Probe.dll", [src], [built[r] for r in _RUNTIME_REFS])


def test_a_correct_probe_compiles(built, tmp_path):
    # The control for the negative tests below: the same calls, spelled right, build
    r = _probe(tmp_path, _GOOD, built)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("case", sorted(_BAD))
def test_a_script_calling_what_does_not_exist_fails_the_build(built, tmp_path, case):
    code, body = _BAD[case]
    r = _probe(tmp_path, body, built)
    assert r.returncode != 0 and f"error {code}" in r.stdout + r.stderr, (case, r.stdout + r.stderr)


_UNITY_BASES = {"MonoBehaviour", "Agent", "SensorComponent", "ScriptableObject"}


def test_one_monobehaviour_per_file_named_after_its_class():
    # Unity binds a script component to the file (MonoScript) named after the class; other classes are lost on reload
    decl = re.compile(r"^\s*(?:public\s+|internal\s+)?(?:sealed\s+|abstract\s+|static\s+)*class\s+(\w+)\s*(?::\s*(\w+))?",
                      re.M)
    bases: dict[str, str | None] = {}
    where: dict[str, Path] = {}
    for p in ASSETS.rglob("*.cs"):
        for name, base in decl.findall(p.read_text()):
            bases[name], where[name] = base or None, p

    def is_component(name: str) -> bool:
        seen = set()
        while name in bases and name not in seen:
            seen.add(name)
            base = bases[name]
            if base in _UNITY_BASES:
                return True
            name = base or ""
        return False

    components = sorted(n for n in bases if is_component(n))
    assert {"XRAvatarAgent", "XRAvatarSensors", "XRFedObject", "XRFedLight", "DepthSensor"} - set(components) == \
        {"DepthSensor"}, components  # DepthSensor is an ISensor, not a component
    wrong = [(n, where[n].name) for n in components if where[n].stem != n]
    assert not wrong, f"MonoBehaviours in files named after other classes: {wrong}"


def test_no_null_coalescing_on_unity_objects():
    # `??` skips Unity's overloaded == (destroyed / missing components are "fake null")
    pattern = re.compile(r"(GetComponent\w*|Find\w*ObjectByType|FindObjectOfType)\s*<[^>]+>\s*\(\)\s*\?\?")
    hits = [(p.name, m.group(0)) for p in ASSETS.rglob("*.cs") for m in pattern.finditer(p.read_text())]
    assert not hits, hits


def _python_depth_codes(depth_m: np.ndarray) -> np.ndarray:
    """The Python encoding: round half to even of float64(depth) * 1000, clamped to [0, 65535], NaN -> 65535."""
    v = np.rint(depth_m.astype(np.float64) * 1000.0)
    v = np.where(np.isnan(v), 65535.0, v)
    return np.clip(v, 0, 65535).astype(np.int64)


def test_depth_png_codes_match_python_and_headpose_and_unix_time(tmp_path):
    # Prepare: depths built from integers only (k / 1000, half-millimetres, powers of two), plus the edge cases
    ks = np.array([0, 1, 499, 500, 501, 1234, 4095, 65534, 65535, 70000, 123456], dtype=np.int64)
    exact = ks.astype(np.float32) / np.float32(1000)
    halves = (np.array([1, 3, 2469, 131067], dtype=np.float32) / np.float32(2000))  # x.5 mm as nearest float32
    pow2 = np.ldexp(np.float32(1), np.arange(-12, 7)).astype(np.float32)
    pow2 = np.concatenate([pow2, pow2 * np.float32(3)])  # 0.1875 m = 187.5 mm, a tie
    special = np.array([-1.0, -0.0, np.inf, -np.inf, np.nan, 65.5345, 65.5344, 1e-4], dtype=np.float32)
    depth = np.concatenate([exact, halves, pow2, special]).astype("<f4")
    (tmp_path / "depth.bin").write_bytes(depth.tobytes())
    exe = tmp_path / "sensor_codec.exe"
    build = subprocess.run(["mcs", "-nologo", "-r:System.Numerics", f"-out:{exe}",
                            str(ROOT / "Tests" / "SensorCodec" / "SensorCodecTests.cs"),
                            *(str(p) for p in _sources(ASSETS / "XRFed" / "Codec"))],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    if shutil.which("mono") is None:
        pytest.skip("mono (apt-get install mono-runtime) is needed to run the compiled codec test")
    # Execute
    run = subprocess.run(["mono", str(exe), str(tmp_path / "depth.bin")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [ln.split() for ln in run.stdout.splitlines()]
    rows = [list(map(int, ln[2:])) for ln in lines if ln[0] == "depth"]
    # Assert: the C# code, its R/G/B bytes and Python's integers agree pixel for pixel
    want = _python_depth_codes(depth)
    assert [r[0] for r in rows] == want.tolist()
    assert [(r[1], r[2], r[3]) for r in rows] == [(int(v) >> 8, int(v) & 0xFF, 0) for v in want]
    # ... and the stand-in player's encoder (bridge/unity/observations.py) where the contract defines depth (not NaN)
    from bridge.unity import observations

    py_encode = getattr(observations, "depth_to_millimetres", None)
    if py_encode is not None:
        ok = ~np.isnan(depth)
        assert py_encode(depth[ok]).astype(np.int64).tolist() == want[ok].tolist()
    assert want[:len(ks)].tolist() == [0, 1, 499, 500, 501, 1234, 4095, 65534, 65535, 65535, 65535]
    assert rows[5][1:] == [4, 210, 0]  # 1.234 m = 1234 mm = 0x04D2
    fin = np.isfinite(depth) & (depth >= 0) & (depth < 65.5345)
    # Quantization bound 0.5 mm, in millimetres (float32 * 1000 is exact in float64); ties go to even: 62.5 -> 62
    assert np.all(np.abs(want[fin] - depth[fin].astype(np.float64) * 1000.0) <= 0.5)
    assert want[depth == np.float32(0.0625)].tolist() == [62] and want[depth == np.float32(0.1875)].tolist() == [188]
    assert next(ln for ln in lines if ln[0] == "size_check")[1:5] == ["expected", str(2 * len(depth)), "depths,", "got"]
    # Unix time: 2026-01-01T00:00:00Z, not ticks since year 1
    unix = int(next(ln for ln in lines if ln[0] == "unix_ns")[1])
    assert unix == calendar.timegm((2026, 1, 1, 0, 0, 0)) * 10**9
    # Head poses: the quaternion's rotation has the head axes (right, up, -forward in xrfed's frame) as columns
    for key, pos, cols in (("pose_north", (1, 3, 2), ((1, 0, 0), (0, 0, 1), (0, -1, 0))),
                           ("pose_east", (0, 0, 1.5), ((0, -1, 0), (0, 0, 1), (-1, 0, 0)))):
        p = [float(x) for x in next(ln for ln in lines if ln[0] == key)[1:]]
        assert p[:3] == list(pos)
        w, x, y, z = p[3:]
        r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                      [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                      [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
        np.testing.assert_allclose(r, np.array(cols, dtype=float).T, atol=1e-6)
        assert math.isclose(w * w + x * x + y * y + z * z, 1.0, rel_tol=1e-6)
