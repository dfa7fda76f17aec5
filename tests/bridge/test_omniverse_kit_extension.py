"""The parts of the Omniverse Kit extension that run without Kit: the instance-id segmentation -> xrfed object-id
mapping (over a real USD stage written by bridge.omniverse.usd_export, with the prim paths Replicator's
``instance_id_segmentation_fast`` annotator labels), the scripted gaze it enables, and extension.toml's Python
requirements against what the extension's modules really import."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib

EXT = Path(__file__).resolve().parents[2] / "bridge" / "omniverse" / "kit_extension" / "xrfed.omniverse"
STREAMER = EXT / "xrfed" / "omniverse" / "streamer.py"


def _streamer():
    # The module file alone: the package's __init__ imports the Kit entry point (carb, omni.ext), which needs Kit
    spec = importlib.util.spec_from_file_location("xrfed_kit_streamer", STREAMER)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def stage():
    pytest.importorskip("pxr", reason="usd-core (pxr) is needed to build the scenario's USD stage")
    from bridge.omniverse.usd_export import build_stage

    return build_stage("default")


def test_instance_ids_map_to_object_ids_through_the_prims_ancestors(stage):
    # Prepare: the object ids usd_export wrote, and instance ids as Replicator labels them -- the rendered Geom
    # below each object's Xform, and structure (walls, floor) that is no object
    st = _streamer()
    assert st.SEGMENTATION_ANNOTATOR == "instance_id_segmentation_fast"
    object_ids = st.prim_object_ids(stage)
    assert len(object_ids) >= 3 and sorted(object_ids.values()) == list(range(len(object_ids)))
    geoms = sorted(str(p.GetPath()) for p in stage.Traverse() if p.GetName() == "Geom"
                   and str(p.GetParent().GetPath()) in object_ids)
    walls = sorted(str(p.GetPath()) for p in stage.Traverse() if p.GetName().startswith("Wall"))
    assert len(geoms) == len(object_ids) and walls
    id_to_labels = {str(10 + i): path for i, path in enumerate(geoms)}  # Replicator's keys are strings
    id_to_labels[str(99)] = walls[0]
    # Execute
    lut = st.instance_object_lut(id_to_labels, object_ids)
    image = np.zeros((4, 6), dtype=np.uint32)  # 0: background (no instance)
    image[1, 1:3] = 10
    image[2, 4] = 11
    image[3, :] = 99
    seg = st.object_segmentation(image, lut)
    # Assert: each Geom pixel carries its parent object's id; walls and background are -1
    want_10 = object_ids[geoms[0].rsplit("/", 1)[0]]
    want_11 = object_ids[geoms[1].rsplit("/", 1)[0]]
    assert seg.dtype == np.int32 and seg.shape == (4, 6)
    assert seg[1, 1] == seg[1, 2] == want_10 and seg[2, 4] == want_11
    assert (seg[3] == -1).all() and seg[0, 0] == -1 and 99 not in lut
    assert lut == {10 + i: object_ids[g.rsplit("/", 1)[0]] for i, g in enumerate(geoms)}


def test_the_mapped_segmentation_gives_a_gaze_the_semantic_one_never_did(stage):
    st = _streamer()
    object_ids = st.prim_object_ids(stage)
    geom = next(str(p.GetPath()) for p in stage.Traverse() if p.GetName() == "Geom")
    seg = st.object_segmentation(np.full((8, 8), 7, dtype=np.uint32), st.instance_object_lut({"7": geom}, object_ids))
    depth = np.full((8, 8), 2.0, dtype=np.float32)
    gaze = st.scripted_gaze(depth, seg, 90.0)
    assert gaze is not None and gaze.shape == (8,) and gaze[5] == pytest.approx(2.0) and gaze[7] == 1.0
    # The old path: semantic ids whose labels are classes, not prim paths -> nothing maps -> no gaze at all
    none = st.object_segmentation(np.full((8, 8), 7, dtype=np.uint32), st.instance_object_lut({}, object_ids))
    assert st.scripted_gaze(depth, none, 90.0) is None


@pytest.mark.parametrize(("labels", "image", "match"), [
    ({"x": "/World/A"}, np.zeros((2, 2), np.uint32), "integer instance id"),
    ({"3": "World/A"}, np.zeros((2, 2), np.uint32), "absolute prim path for instance id 3"),
    ({"3": {"class": "mug"}}, np.zeros((2, 2), np.uint32), "absolute prim path"),
    ({}, np.zeros((2, 2, 4), np.uint8), r"\(H, W\) integer instance-id image, got shape \(2, 2, 4\)"),
    ({}, np.zeros((2, 2), np.float32), "dtype float32"),
])
def test_bad_annotator_output_is_refused_with_the_field_named(labels, image, match):
    st = _streamer()
    with pytest.raises(ValueError, match=match):
        st.object_segmentation(image, st.instance_object_lut(labels, {"/World/A": 0}))


_KIT_PROVIDES = {"numpy"}  # Kit's bundled Python packages the extension relies on
_CHECKOUT = {"xrfed"}      # bridge/ itself: the checkout named by the xrfed_root setting, not a pip requirement
_LAZY = ["zmq"]            # imported inside AvatarStreamer.__init__ (with Kit's omni.* modules)


def test_extension_toml_requires_every_package_its_modules_import():
    # Prepare: the requirements as Kit's pip API reads them
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    toml = tomllib.loads((EXT / "config" / "extension.toml").read_text())
    required = {canonicalize_name(Requirement(r).name) for r in toml["python"]["pipapi"]["requirements"]}
    # Execute: import what the extension imports (its streamer module and bridge.stream.protocol) in a fresh
    # interpreter and list the distributions behind every third-party module that got loaded
    code = f"""
import importlib.metadata as md, importlib.util, json, sys
base = set(sys.modules)
spec = importlib.util.spec_from_file_location("s", {str(STREAMER)!r})
mod = importlib.util.module_from_spec(spec); sys.modules["s"] = mod; spec.loader.exec_module(mod)
mod.ensure_xrfed_importable("")
for name in {_LAZY!r}:
    __import__(name)
dists = md.packages_distributions()
tops = {{m.split(".")[0] for m in set(sys.modules) - base}}
print(json.dumps(sorted({{d for t in tops if t not in sys.stdlib_module_names for d in dists.get(t, [])}})))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=EXT.parents[3])
    assert out.returncode == 0, out.stderr
    imported = {canonicalize_name(d) for d in json.loads(out.stdout)}
    # Assert: PyYAML (bridge's scenarios and profiles) and pyzmq are among them, and all are required or Kit's own
    assert {"pyyaml", "pyzmq", "numpy"} <= imported, imported
    missing = imported - required - _KIT_PROVIDES - _CHECKOUT
    assert not missing, f"extension.toml [python.pipapi] requirements lack {sorted(missing)}"
    assert "omni.replicator.core" in toml["dependencies"]
