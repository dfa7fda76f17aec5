"""Hostile-input surface of recorded datasets on disk (``xrfed bench fuzz``; see :mod:`bridge.fuzzing`).

* ``dataset.hdf5``: a real tiny dataset -- two devices (every modality on one, rgb + audio on the other), six
  steps of 6 x 4 pixels, written by the real :class:`~bridge.record.DatasetWriter` once per process -- copied for
  every input and damaged: HDF5 bytes flipped, overwritten with 0xFF, truncated, extended or replaced; at the h5py
  level datasets and groups deleted or replaced by ones of the wrong dtype or shape, huge declared shapes and
  chunks (allocated lazily by HDF5, so they cost nothing until a reader trusts them), NaN/inf/out-of-range values
  in present rows and labels, hostile attributes, external and soft links; ``manifest.json`` fields lying about
  files and steps, path traversal (``../../x``), hostile types; files deleted, replaced by directories or by
  symbolic links out of the dataset. The feed reads it as every reader does: ``xrfed dataset info``'s summary,
  :func:`~bridge.record.read_device_file` of every file, :class:`~bridge.dataset.XRDataset` with every item built
  and collated (default options, then the options the agents train with), and ``xrfed preview``'s contact sheets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .fuzzing import Surface, byte_damages, damage_bytes, json_values
from .fuzzing import strategies as _st

__all__ = ["SURFACES", "base_dataset", "build_base_dataset"]

BASE_STEPS = 6
_FILES = ("episode_000/avp.h5", "episode_000/rb.h5")
#: datasets and groups of a device file (targets of the h5py-level damage)
_NAMES = ("step", "sim_time_s", "wall_time_ns", "camera_fov_y_deg", "active_tasks", "room", "events", "rgb",
          "depth_m", "segmentation", "gaze", "gaze_valid", "audio", "pose", "imu", "hands", "hands_valid",
          "lighting", "present", "present/rgb", "present/depth", "present/audio", "present/gaze", "labels",
          "labels/speech_command", "labels/scene_classification")
_ATTRS = ("device_id", "user_id", "profile", "audio_hz", "camera_fov_y_deg", "step_dt_s", "classes", "tasks")
_ABSURD: tuple[Any, ...] = (0, -1, 1, 99, 2**31, 2**62, -(2**40), 0.5, 1e308, float("nan"), float("inf"),
                            -float("inf"), True, "", "x", "../../x", "a\nb", [], [1, 2], ["a"], {"a": 1}, None)


# ---------------------------------------------------------------------------------------------------------------
# the base dataset
def build_base_dataset(out: str | Path) -> Path:
    """Write the base dataset into ``out`` with the real writer."""
    from .backend import DeviceInfo
    from .record import DatasetWriter
    from .stream.synthetic import synthetic_frame
    from .tasks import COMMANDS, ROOM_TYPES

    devices = (DeviceInfo("avp", "alice", "apple_vision_pro"), DeviceInfo("rb", "bob", "ray_ban_meta"))
    with DatasetWriter(out, scenario_name="fuzz", scenario_yaml="name: fuzz\n", seed=0, step_dt_s=0.1,
                       devices=devices) as w:
        for s in range(BASE_STEPS):
            frames = {}
            for d in devices:
                f = synthetic_frame(d.device_id, height_px=6, width_px=4, step=s, audio_channels=2,
                                    audio_samples=32, segmentation=d.device_id == "avp")
                f = dataclasses.replace(f, user_id=d.user_id, profile=d.profile, room="kitchen",
                                        labels={"speech_command": COMMANDS[s % len(COMMANDS)],
                                                "scene_classification": ROOM_TYPES[s % len(ROOM_TYPES)]})
                if d.device_id == "rb":
                    f = f.without("depth", "gaze", "pose", "imu", "hands")
                if d.device_id == "avp" and s == 2:
                    f = f.without("gaze", "audio")
                frames[d.device_id] = f
            w.write(frames)
    return Path(out)


@functools.cache
def base_dataset() -> Path:
    """The base dataset, built once per process in a temporary directory (removed at exit)."""
    import atexit

    root = Path(tempfile.mkdtemp(prefix="xrfed-fuzz-ds-"))
    atexit.register(shutil.rmtree, root, True)
    return build_base_dataset(root / "ds")


# ---------------------------------------------------------------------------------------------------------------
# strategies


#: (dtype, row shape) of replacement datasets; "huge" ones are declared, never written (HDF5 allocates lazily)
_REPLACEMENTS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("float64", ()), ("int8", ()), ("bool", ()), ("uint16", (3,)), ("float32", (8,)), ("float32", (2, 26, 3)),
    ("uint8", (6, 4, 3)), ("uint8", (6, 4, 4)), ("float32", (6, 4)), ("float32", (5000, 4)),
    ("float32", (2, 32)), ("int32", (6, 4)), ("str", ()), ("compound", ()), ("float16", (7,)),
)


@functools.cache
def _h5_ops() -> Any:
    """One h5py-level damage: (kind, target, option, value)."""
    st = _st()
    names = st.sampled_from(_NAMES)
    return st.one_of(
        st.tuples(st.just("delete"), names, st.just(0), st.just(None)),
        st.tuples(st.just("replace"), names, st.integers(0, len(_REPLACEMENTS) - 1),
                  st.sampled_from((0, 1, 5, 6, 7, 1000))),
        st.tuples(st.just("huge"), names, st.sampled_from((10**6, 10**9, 2**40)), st.booleans()),
        st.tuples(st.just("values"), names, st.integers(0, 5),
                  st.sampled_from((float("nan"), float("inf"), -float("inf"), -5.0, 999.0, 1e30, -1.0))),
        st.tuples(st.just("attr"), st.sampled_from(("/",) + _NAMES[:2] + ("labels/speech_command", "active_tasks")),
                  st.sampled_from(_ATTRS), st.sampled_from(_ABSURD + (np.arange(3), np.array([b"x"] * 200)))),
        st.tuples(st.just("link"), names, st.sampled_from(("external", "soft_self", "soft_other", "soft_missing")),
                  st.just(None)),
        st.tuples(st.just("resize"), names, st.integers(0, 20), st.just(None)),
    )


def _replacement(h5: Any, name: str, index: int, rows: int) -> None:
    import h5py

    dtype, row = _REPLACEMENTS[index]
    if dtype == "str":
        h5.create_dataset(name, data=np.array(["x"] * rows, dtype=object), dtype=h5py.string_dtype())
    elif dtype == "compound":
        h5.create_dataset(name, shape=(rows,), dtype=np.dtype([("a", "f4"), ("b", "i4")]))
    else:
        h5.create_dataset(name, data=np.ones((rows, *row), dtype=dtype))


def _h5_damage(path: Path, op: tuple[str, str, Any, Any]) -> None:
    import h5py

    kind, name, opt, value = op
    with h5py.File(path, "r+") as h5:
        n = int(h5["step"].shape[0]) if "step" in h5 else BASE_STEPS
        if kind == "attr":
            obj = h5[name] if name in h5 else h5
            obj.attrs[opt] = value if value is not None else "null"
            return
        if name not in h5 and kind not in ("replace", "huge", "link"):
            return
        if kind == "delete":
            del h5[name]
        elif kind == "replace":
            if name in h5:
                del h5[name]
            _replacement(h5, name, opt, value if value != 6 else n)
        elif kind == "huge":
            if name in h5:
                del h5[name]
            row = (4096, 4096, 3) if value else ()
            h5.create_dataset(name, shape=(opt if not value else n, *row), maxshape=(None, *row),
                              chunks=(min(opt, 64) if value else 1 << 16, *row), dtype="uint8")
        elif kind == "values":
            ds = h5[name]
            if isinstance(ds, h5py.Dataset) and ds.shape and ds.dtype.kind in "fiub" and ds.size <= 1 << 20:
                arr = ds[...]
                flat = arr.reshape(-1)
                if flat.size:
                    with np.errstate(all="ignore"):
                        flat[opt % flat.size] = np.asarray(value).astype(arr.dtype) if arr.dtype.kind != "f" \
                            else value
                    ds[...] = arr
        elif kind == "link":
            if name in h5:
                del h5[name]
            if opt == "external":
                h5[name] = h5py.ExternalLink("../../outside.h5", "/step")
            elif opt == "soft_self":
                h5[name] = h5py.SoftLink("/" + name)
            elif opt == "soft_other":
                h5[name] = h5py.SoftLink("/step")
            else:
                h5[name] = h5py.SoftLink("/nowhere")
        elif kind == "resize":
            ds = h5[name]
            if isinstance(ds, h5py.Dataset) and ds.chunks is not None and ds.shape:
                ds.resize(opt, axis=0)


def _json_edit(doc: Any, path: list[Any], value: Any, delete: bool) -> Any:
    if not path or not isinstance(doc, (dict, list)) or not doc:
        return value
    keys = list(doc) if isinstance(doc, dict) else list(range(len(doc)))
    k = path[0] if path[0] in keys else keys[zlib.crc32(str(path[0]).encode()) % len(keys)]
    if len(path) == 1 or not isinstance(doc[k], (dict, list)) or not doc[k]:
        if delete and isinstance(doc, dict):
            del doc[k]
        else:
            doc[k] = value
        return doc
    doc[k] = _json_edit(doc[k], path[1:], value, delete)
    return doc


@functools.cache
def _manifest_ops() -> Any:
    st = _st()
    keys = st.sampled_from(["clients", "files", "path", "n_steps", "split", "train", "test", "guard", "episode",
                            "tasks", "speech_command", "client_id", "modalities", "label_counts", "format_version",
                            "step_dt_s", "scenario", "episodes", "guard_steps", 0, 1])
    values = st.one_of(json_values(_ABSURD), st.sampled_from(["../../x.h5", "/etc/passwd", "episode_000/../../x.h5",
                                                        "episode_000/rb.h5", "episode_000", "", "a\x00b.h5",
                                                        [0, 10**9], [5, 2], [-1, 3]]))
    return st.tuples(st.lists(st.one_of(keys, st.integers(0, 4)), min_size=1, max_size=5), values, st.booleans())


@functools.cache
def _damages() -> Any:
    st = _st()
    files = st.sampled_from(_FILES)
    return st.one_of(
        st.tuples(files, st.just("bytes"), byte_damages(("flip", "ff", "truncate", "extend", "replace", "zero"), 256)),
        st.tuples(files, st.just("h5"), _h5_ops()),
        st.tuples(files, st.just("h5"), _h5_ops()),
        st.tuples(st.just("manifest.json"), st.just("json"), _manifest_ops()),
        st.tuples(st.just("manifest.json"), st.just("bytes"), byte_damages(("flip", "ff", "truncate", "extend", "replace", "zero"), 256)),
        st.tuples(st.sampled_from(_FILES + ("manifest.json",)),
                  st.sampled_from(("delete", "directory", "symlink_out", "symlink_dev")), st.just(None)),
    )


def _dataset_inputs() -> Any:
    return _st().lists(_damages(), min_size=1, max_size=3)


# ---------------------------------------------------------------------------------------------------------------
# the feed
def _apply(root: Path, damage: tuple[str, str, Any]) -> None:
    rel, kind, op = damage
    path = root / rel
    if not path.is_file() or path.is_symlink():
        return
    if kind == "bytes":
        path.write_bytes(damage_bytes(path.read_bytes(), op))
    elif kind == "h5":
        with contextlib.suppress(Exception):  # a file an earlier damage made unopenable stays as it is
            _h5_damage(path, op)
    elif kind == "json":
        keys, value, delete = op
        try:
            doc = json.loads(path.read_bytes())
        except ValueError:
            return
        path.write_text(json.dumps(_json_edit(doc, keys, value, delete)))
    elif kind == "delete":
        path.unlink()
    elif kind == "directory":
        path.unlink()
        path.mkdir()
    elif kind == "symlink_out":
        path.unlink()
        path.symlink_to(root.parent / "outside.h5")
    elif kind == "symlink_dev":
        path.unlink()
        path.symlink_to("/dev/zero")


def read_everything(root: Path, preview_dir: Path | None = None) -> None:
    """Read a dataset as every reader does: the info summary, every file's frames, every item of XRDataset
    (default options and the agents' training options) collated, and the preview's contact sheets."""
    from .cli_data import format_info
    from .dataset import XRDataset, collate_frames
    from .record import dataset_file, load_manifest, read_device_file

    manifest = load_manifest(root)
    format_info(manifest)
    for c in manifest["clients"]:
        for f in c["files"]:
            for _ in read_device_file(dataset_file(root, f["path"])):
                pass
    for kw in ({}, {"window": 2, "image_size": (8, 8), "audio_channels": 1, "audio_steps": 2}):
        for cid in [c["client_id"] for c in manifest["clients"]]:
            ds = XRDataset(root, clients=[cid], split="all", **kw)  # type: ignore[arg-type]
            try:
                items = [ds[i] for i in range(len(ds))]
                if items:
                    collate_frames(items)
            finally:
                ds.close()
    if preview_dir is not None:
        from .preview import write_preview

        shutil.rmtree(preview_dir, ignore_errors=True)
        write_preview(root, preview_dir, n=2)


@contextlib.contextmanager
def _dataset_session() -> Iterator[Callable[[Any], None]]:
    base = base_dataset()
    with tempfile.TemporaryDirectory(prefix="xrfed-fuzz-ds-") as tmp:
        work, out = Path(tmp) / "ds", Path(tmp) / "preview"

        def feed(damages: list[tuple[str, str, Any]]) -> None:
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(base, work)
            for d in damages:
                _apply(work, d)
            read_everything(work, out)

        yield feed


# ---------------------------------------------------------------------------------------------------------------
SURFACES: list[Surface] = [
    Surface("dataset.hdf5", "a real tiny recorded dataset damaged at the byte, h5py and manifest level (wrong "
                            "dtypes/shapes, huge declared shapes, NaN, links, path traversal) -> info, "
                            "read_device_file, XRDataset items + collate, preview", _dataset_inputs,
            _dataset_session),
]
