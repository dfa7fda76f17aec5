"""Recording :class:`~bridge.frame.DeviceFrame` streams to disk: one HDF5 file per device per episode + a manifest.

Layout (documented for plain-h5py users in ``docs/dataset.md``)::

    <out>/manifest.json                  clients, files, steps, train/guard/test partitions, tasks and classes
    <out>/episode_000/<device_id>.h5     one device, one episode; every dataset has the step axis T first

Array names, shapes and dtypes are those of :mod:`bridge.arrays` (the one flat layout shared with streams and
models) with a leading step axis. A modality absent at a step keeps its row at the fill value and
``present/<modality>`` False at that row -- readers must honour ``present``; a fill row is never data.

The writer streams: every file grows along T step by step (resizable, chunked, compressed datasets) and holds at
most a small block of pending rows in memory, so an episode of any length fits. Files are written under a
``.partial`` name and renamed when closed, so a crashed run never leaves a file that looks complete.

The train/test pre-partition is *temporal* (:func:`bridge.splits.temporal_split`): the last ``test_fraction`` of
every episode is held out. Neighbouring frames are near-duplicates (same view, same label), so a random split would
put almost the same frame on both sides and measure memorisation; a temporal split tests on later, unseen data, as a
deployed device would face. Labels also persist for seconds across the boundary, so the ``guard_steps`` rows before
the test part belong to neither set (:func:`bridge.splits.label_persistence_steps` measures how long labels last).

Reading treats every file as hostile: :func:`load_manifest` checks the manifest's structure, types, ranges and paths
(no file outside the dataset: :func:`dataset_file`), :func:`check_device_file` a device file's layout before any array
is read (dtypes, shapes within :data:`MAX_IMAGE_SIDE_PX` and friends, chunk sizes, hard links only, label ranges),
:func:`check_row` each present row's values; anything wrong is a one-line :class:`~bridge.errors.DatasetError`
naming the file.
"""

from __future__ import annotations

import enum
import json
import math
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from .arrays import arrays_to_frame, frame_to_arrays
from .backend import DeviceInfo
from .errors import DatasetError, UnknownNameError
from .frame import DeviceFrame
from .recording import MAX_EPISODES, MAX_STEPS
from .splits import temporal_split
from .tasks import MODALITIES, TASKS

__all__ = [
    "FORMAT_VERSION",
    "PRESENCE_KEYS",
    "TEST_FRACTION",
    "UNITS",
    "ClientInfo",
    "DatasetWriter",
    "WriterState",
    "read_device_file",
    "load_manifest",
    "dataset_file",
    "check_device_file",
    "check_row",
    "read_rows",
    "FileLayout",
    "MAX_MANIFEST_BYTES",
    "MAX_IMAGE_SIDE_PX",
    "MAX_CHUNK_BYTES",
    "MAX_DATASET_STEPS",
    "manifest_clients",
    "episode_file_name",
    "temporal_split",
    "MANIFEST_NAME",
    "check_joins",
    "merge_manifest",
    "write_manifest",
]

#: Version of the on-disk format (file attr ``xrfed_format_version`` and manifest ``format_version``). 1.1 added
#: the guard gap (manifest ``guard_steps``, a ``guard`` range in every file's ``split``); 1.0 manifests still load.
FORMAT_VERSION = "1.1"
MANIFEST_NAME = "manifest.json"
#: Default fraction of every episode held out as test (its last part).
TEST_FRACTION = 0.2

#: Keys of the ``present/`` group: the modalities plus the two optional non-modality arrays.
PRESENCE_KEYS: tuple[str, ...] = MODALITIES + ("segmentation", "lighting")

#: Dataset name -> unit and frame of reference (written as the JSON file attr ``units``).
UNITS: dict[str, str] = {
    "rgb": "sRGB uint8 [H, W, 3], row 0 at the top",
    "depth_m": "metres along the camera optical axis (not ray length); inf = no hit within the far plane",
    "segmentation": "object id (index into the scenario's objects); -1 = structure or background",
    "gaze": "head frame (+x right, +y up, -z forward): yaw_rad, pitch_rad, origin_m x/y/z, vergence_depth_m, "
            "pupil_diameter_mm, confidence [0, 1]",
    "gaze_valid": "eye tracker validity flag",
    "audio": "full scale 1.0, [channels, samples] covering [sim_time_s - step_dt_s, sim_time_s) at audio_hz",
    "pose": "world frame (z up), position metres x/y/z, orientation unit quaternion w/x/y/z head -> world",
    "imu": "head frame: specific force m/s^2 x/y/z (includes gravity reaction), angular velocity rad/s x/y/z",
    "hands": "head frame metres, [left, right] x 26 OpenXR XR_EXT_hand_tracking joints x (x, y, z)",
    "hands_valid": "[left, right] hand tracked and in view",
    "lighting": "intensity (relative to nominal 1.0), illuminance_lux, color_temperature_k, lights_on (0/1)",
    "step": "integer step index",
    "sim_time_s": "simulated seconds at the end of the step",
    "wall_time_ns": "host clock when the frame was produced, nanoseconds (latency measurement only)",
    "camera_fov_y_deg": "vertical camera field of view, degrees; NaN = not reported",
    "labels/<task>": "class index into the attr 'classes'; -1 = no label",
    "active_tasks": "bool per task in the attr 'tasks'",
    "room": "room name; empty string = unknown",
    "events": "comma-joined modality events in force (e.g. mic_muted); empty string = none",
}

#: Per-step array columns: name -> (dtype, fill value, presence key, kind). Kind picks the chunking.
_COLUMNS: dict[str, tuple[Any, Any, str, str]] = {
    "rgb": (np.uint8, 0, "rgb", "image"),
    "depth_m": (np.float32, np.nan, "depth", "image"),
    "segmentation": (np.int32, -1, "segmentation", "image"),
    "gaze": (np.float32, np.nan, "gaze", "series"),
    "gaze_valid": (np.bool_, False, "gaze", "series"),
    "audio": (np.float32, np.nan, "audio", "series"),
    "pose": (np.float32, np.nan, "pose", "series"),
    "imu": (np.float32, np.nan, "imu", "series"),
    "hands": (np.float32, np.nan, "hands", "series"),
    "hands_valid": (np.bool_, False, "hands", "series"),
    "lighting": (np.float32, np.nan, "lighting", "series"),
}

_FLUSH_ROWS = 32  # pending steps before a flush: bounds memory while keeping h5py calls few
_FLUSH_BYTES = 8 << 20
_CHUNK_TARGET_BYTES = 64 << 10  # ~64 KiB chunks for series: a random-access read decompresses little


def episode_file_name(episode: int, device_id: str) -> str:
    """Relative path of one device's file for one episode (``episode_000/<device_id>.h5``)."""
    return f"episode_{episode:03d}/{device_id}.h5"


@dataclass(frozen=True)
class ClientInfo:
    """One federated client of a recorded dataset: the device it stands for and its wearer."""

    client_id: str
    device_id: str
    user_id: str
    profile: str
    role: str = "device"


class WriterState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


def _compression_kwargs(compression: str | None) -> dict[str, Any]:
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4}
    if compression == "lzf":
        return {"compression": "lzf"}
    if compression in (None, "none"):
        return {}
    raise DatasetError(f"compression: expected 'gzip', 'lzf' or 'none', got {compression!r}")


def _profile_json(profile: str) -> tuple[str, tuple[str, ...] | None]:
    """The profile's full JSON and modalities, or ``("{}", None)`` for a profile the registry does not know."""
    from .devices import get_device

    try:
        prof = get_device(profile)
    except UnknownNameError:
        return "{}", None
    return json.dumps(prof.to_dict(), default=str), tuple(prof.modalities)


class _Column:
    """One resizable dataset along T with a block of pending rows (written on flush, absent rows never written)."""

    def __init__(self, parent: Any, name: str, dtype: Any, fill: Any, row_shape: tuple[int, ...], kind: str,
                 comp: dict[str, Any]):
        import h5py

        self.name, self.row_shape = name, tuple(row_shape)
        if dtype is str:
            self.dtype = h5py.string_dtype()
            self.ds = parent.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(256,), dtype=self.dtype)
        else:
            self.dtype = np.dtype(dtype)
            row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * self.dtype.itemsize)
            chunk_rows = 1 if kind == "image" else int(min(1024, max(1, _CHUNK_TARGET_BYTES // row_bytes)))
            self.ds = parent.create_dataset(
                name, shape=(0, *row_shape), maxshape=(None, *row_shape), chunks=(chunk_rows, *row_shape),
                dtype=self.dtype, fillvalue=fill, shuffle=bool(comp) and self.dtype.itemsize > 1, **comp)
        self.pending: list[tuple[int, Any]] = []
        self.pending_bytes = 0

    def add(self, row_index: int, value: Any, where: str) -> None:
        if self.dtype is not None and not isinstance(value, str):
            arr = np.asarray(value)
            if arr.shape != self.row_shape:
                raise DatasetError(f"{where}: dataset {self.name!r} has rows of shape {self.row_shape}, "
                                   f"this step's row has shape {arr.shape} (shapes must stay fixed per file)")
            value = arr.astype(self.dtype, copy=False)
            self.pending_bytes += arr.nbytes
        self.pending.append((row_index, value))

    def flush(self, n_rows: int) -> None:
        if self.ds.shape[0] != n_rows:
            self.ds.resize(n_rows, axis=0)
        i = 0
        rows = self.pending
        while i < len(rows):  # write each run of consecutive rows with one call
            j = i + 1
            while j < len(rows) and rows[j][0] == rows[j - 1][0] + 1:
                j += 1
            start = rows[i][0]
            if isinstance(rows[i][1], str):
                self.ds[start:start + j - i] = np.array([r[1] for r in rows[i:j]], dtype=object)
            else:
                self.ds[start:start + j - i] = np.stack([r[1] for r in rows[i:j]])
            i = j
        self.pending = []
        self.pending_bytes = 0


class _DeviceFile:
    """The open ``.partial`` HDF5 file of one device for one episode."""

    def __init__(self, path: Path, info: DeviceInfo, comp: dict[str, Any], attrs: dict[str, Any]):
        import h5py

        self.path, self.info, self.comp = path, info, comp
        self.partial = path.with_name(path.name + ".partial")
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.h5 = h5py.File(self.partial, "w")
        except OSError as exc:
            raise DatasetError(f"cannot create {self.partial}: {exc}") from exc
        for k, v in attrs.items():
            self.h5.attrs[k] = v
        self.n = 0
        self.last_step: int | None = None
        self.first_step: int | None = None
        self.audio_hz: int | None = None
        self.camera_fov_y_deg: float | None = None
        self.label_counts = {t: [0] * TASKS[t].num_classes for t in TASKS}
        self.present_counts = dict.fromkeys(PRESENCE_KEYS, 0)
        self.columns: dict[str, _Column] = {}
        h5 = self.h5
        self.fixed: dict[str, _Column] = {
            "step": _Column(h5, "step", np.int64, -1, (), "series", comp),
            "sim_time_s": _Column(h5, "sim_time_s", np.float64, np.nan, (), "series", comp),
            "wall_time_ns": _Column(h5, "wall_time_ns", np.int64, 0, (), "series", comp),
            "camera_fov_y_deg": _Column(h5, "camera_fov_y_deg", np.float64, np.nan, (), "series", comp),
            "active_tasks": _Column(h5, "active_tasks", np.bool_, False, (len(TASKS),), "series", comp),
            "room": _Column(h5, "room", str, "", (), "series", comp),
            "events": _Column(h5, "events", str, "", (), "series", comp),
        }
        self.fixed["active_tasks"].ds.attrs["tasks"] = list(TASKS)
        pres, labs = h5.create_group("present"), h5.create_group("labels")
        for key in PRESENCE_KEYS:
            self.fixed[f"present/{key}"] = _Column(pres, key, np.bool_, False, (), "series", comp)
        for task, spec in TASKS.items():
            col = _Column(labs, task, np.int16, -1, (), "series", comp)
            col.ds.attrs["classes"] = list(spec.classes)
            self.fixed[f"labels/{task}"] = col

    def pending_bytes(self) -> int:
        return sum(c.pending_bytes for c in self.columns.values())

    def check(self, frame: DeviceFrame) -> dict[str, Any]:
        """Validate ``frame`` against this file without changing it; returns its flat arrays.

        The writer checks every device's frame before appending any, so a rejected step leaves all files at
        the same length.
        """
        where = f"{self.info.device_id} step {frame.step}"
        if self.last_step is not None and frame.step <= self.last_step:
            raise DatasetError(f"{where}: steps must increase within an episode file (previous step "
                               f"{self.last_step}); start a new DatasetWriter (episode) after a reset")
        bad_events = [e for e in frame.events if "," in e]
        if bad_events:
            raise DatasetError(f"{where}: event names must not contain ',' (they are stored comma-joined): "
                               f"{bad_events}")
        arr = frame_to_arrays(frame)
        for name, col in self.columns.items():
            if name in arr and np.shape(arr[name]) != col.row_shape:
                raise DatasetError(f"{where}: dataset {name!r} has rows of shape {col.row_shape}, this step's "
                                   f"row has shape {np.shape(arr[name])} (shapes must stay fixed per file)")
        if "audio_hz" in arr and self.audio_hz is not None and int(arr["audio_hz"]) != self.audio_hz:
            raise DatasetError(f"{where}: audio_hz changed from {self.audio_hz} to {arr['audio_hz']} within one "
                               f"file")
        return arr

    def add(self, frame: DeviceFrame, arr: dict[str, Any]) -> None:
        """Append ``frame`` (already validated by :meth:`check`, which produced ``arr``)."""
        where = f"{self.info.device_id} step {frame.step}"
        t = self.n
        present = dict(arr["present"])
        present["segmentation"] = "segmentation" in arr
        present["lighting"] = "lighting" in arr
        for name, (dtype, fill, _pkey, kind) in _COLUMNS.items():
            if name not in arr:
                continue
            col = self.columns.get(name)
            if col is None:
                row = np.asarray(arr[name])
                col = self.columns[name] = _Column(self.h5, name, dtype, fill, row.shape, kind, self.comp)
            col.add(t, arr[name], where)
        if "audio_hz" in arr:
            self.audio_hz = int(arr["audio_hz"])
        if frame.camera_fov_y_deg is not None and self.camera_fov_y_deg is None:
            self.camera_fov_y_deg = float(frame.camera_fov_y_deg)
        f = self.fixed
        f["step"].add(t, frame.step, where)
        f["sim_time_s"].add(t, frame.sim_time_s, where)
        f["wall_time_ns"].add(t, frame.wall_time_ns, where)
        f["camera_fov_y_deg"].add(t, np.nan if frame.camera_fov_y_deg is None else frame.camera_fov_y_deg, where)
        f["active_tasks"].add(t, np.array([task in frame.active_tasks for task in TASKS]), where)
        f["room"].add(t, frame.room or "", where)
        f["events"].add(t, ",".join(frame.events), where)
        for key in PRESENCE_KEYS:
            f[f"present/{key}"].add(t, bool(present[key]), where)
            self.present_counts[key] += int(bool(present[key]))
        for task in TASKS:
            idx = arr["labels"].get(task, -1)
            f[f"labels/{task}"].add(t, idx, where)
            if idx >= 0:
                self.label_counts[task][idx] += 1
        self.n += 1
        self.last_step = frame.step
        if self.first_step is None:
            self.first_step = frame.step

    def flush(self) -> None:
        for col in (*self.columns.values(), *self.fixed.values()):
            col.flush(self.n)

    def finish(self) -> None:
        self.flush()
        a = self.h5.attrs
        a["audio_hz"] = int(self.audio_hz or 0)
        if self.camera_fov_y_deg is not None:
            a["camera_fov_y_deg"] = self.camera_fov_y_deg
        a["n_steps"] = self.n
        a["complete"] = True
        self.h5.close()
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        try:
            self.h5.close()
        finally:
            self.partial.unlink(missing_ok=True)


class DatasetWriter:
    """Writes one episode of every device, step by step; ``close`` finalises the files and merges the manifest.

    Several writers (one per episode) may share ``out_dir``: each ``close`` merges its episode into
    ``manifest.json``. An existing episode file is replaced only with ``overwrite=True`` (a silent overwrite
    would lose recorded data). The split of every episode (:func:`temporal_split`) holds out its last
    ``test_fraction`` with ``guard_steps`` rows before it in neither set; all episodes of one directory share
    one guard, and an episode too short for it is refused at ``close`` (its files are discarded).
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, scenario_name: str, scenario_yaml: str, seed: int,
                 step_dt_s: float, devices: Sequence[DeviceInfo], episode: int = 0, compression: str = "gzip",
                 test_fraction: float = TEST_FRACTION, guard_steps: int = 0,
                 extra_attrs: dict[str, Any] | None = None, overwrite: bool = False):
        if not devices:
            raise DatasetError("DatasetWriter: expected at least one device, got none")
        ids = [d.device_id for d in devices]
        if len(set(ids)) != len(ids):
            raise DatasetError(f"DatasetWriter: device ids must be unique, got {ids}")
        if not (0.0 <= test_fraction < 1.0):
            raise DatasetError(f"DatasetWriter: test_fraction must be in [0, 1), got {test_fraction}")
        if not (math.isfinite(step_dt_s) and step_dt_s > 0):
            raise DatasetError(f"DatasetWriter: step_dt_s must be a positive number, got {step_dt_s}")
        if episode < 0:
            raise DatasetError(f"DatasetWriter: episode must be >= 0, got {episode}")
        if isinstance(guard_steps, bool) or not isinstance(guard_steps, (int, np.integer)) or guard_steps < 0:
            raise DatasetError(f"DatasetWriter: guard_steps must be an integer >= 0, got {guard_steps!r}")
        comp = _compression_kwargs(compression)
        self.out_dir = Path(out_dir)
        self.scenario_name, self.scenario_yaml = scenario_name, scenario_yaml
        self.seed, self.step_dt_s, self.episode = int(seed), float(step_dt_s), int(episode)
        self.test_fraction, self.guard_steps = float(test_fraction), int(guard_steps)
        if self.manifest_path.exists():  # before recording: an episode that cannot join the manifest is refused now
            self._check_joins(load_manifest(self.manifest_path))
        self.devices = tuple(devices)
        self.extra_attrs = dict(extra_attrs or {})
        self._state = WriterState.OPEN
        self._files: dict[str, _DeviceFile] = {}
        self._profiles: dict[str, tuple[str, ...] | None] = {}
        try:
            for d in self.devices:
                path = self.out_dir / episode_file_name(self.episode, d.device_id)
                if path.exists() and not overwrite:
                    raise DatasetError(f"{path} already exists; choose another output directory or episode, "
                                       f"or pass overwrite=True")
                profile_json, profile_mods = _profile_json(d.profile)
                self._profiles[d.device_id] = profile_mods
                attrs = {
                    "xrfed_format_version": FORMAT_VERSION,
                    "device_id": d.device_id, "user_id": d.user_id, "client_id": d.device_id,
                    "profile": d.profile, "profile_json": profile_json,
                    "scenario": scenario_name, "scenario_yaml": scenario_yaml,
                    "seed": self.seed, "episode": self.episode, "step_dt_s": self.step_dt_s,
                    "units": json.dumps(UNITS), "complete": False,
                }
                for k, v in self.extra_attrs.items():
                    attrs[k] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v, default=str)
                self._files[d.device_id] = _DeviceFile(path, d, comp, attrs)
        except BaseException:
            for f in self._files.values():
                f.discard()
            raise

    # -- lifecycle -----------------------------------------------------------------------------------
    @property
    def state(self) -> WriterState:
        return self._state

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / MANIFEST_NAME

    @property
    def n_steps(self) -> int:
        return next(iter(self._files.values())).n if self._files else 0

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._state is WriterState.CLOSED:
            return
        if exc_type is not None and self.n_steps == 0:
            self._discard()  # nothing worth keeping; let the original exception propagate
            return
        self.close()  # keep what was recorded before an interruption

    def write(self, frames: Mapping[str, DeviceFrame]) -> None:
        """Append one step: ``frames`` maps every device id of ``devices`` to its frame for this step."""
        if self._state is WriterState.CLOSED:
            raise DatasetError("DatasetWriter: write() after close()")
        missing = [d for d in self._files if d not in frames]
        unknown = [d for d in frames if d not in self._files]
        if missing or unknown:
            raise DatasetError(f"DatasetWriter.write: expected frames for devices {list(self._files)}; "
                               f"missing {missing}, unknown {unknown}")
        for device_id, frame in frames.items():
            info = self._files[device_id].info
            if (frame.device_id, frame.user_id, frame.profile) != (info.device_id, info.user_id, info.profile):
                raise DatasetError(
                    f"DatasetWriter.write: frame under key {device_id!r} is for device {frame.device_id!r} "
                    f"(user {frame.user_id!r}, profile {frame.profile!r}); expected {info}")
        checked = {device_id: self._files[device_id].check(frame) for device_id, frame in frames.items()}
        for device_id, frame in frames.items():
            self._files[device_id].add(frame, checked[device_id])
        files = self._files.values()
        if self.n_steps % _FLUSH_ROWS == 0 or sum(f.pending_bytes() for f in files) >= _FLUSH_BYTES:
            for f in files:
                f.flush()

    def close(self) -> Path:
        """Finalise every file (rename from ``.partial``) and merge this episode into the manifest; idempotent."""
        if self._state is WriterState.CLOSED:
            return self.manifest_path
        if self.n_steps == 0:
            self._discard()
            raise DatasetError("DatasetWriter.close: no steps were written; nothing recorded")
        try:
            temporal_split(self.n_steps, self.test_fraction, self.guard_steps)
        except DatasetError as exc:
            self._discard()
            raise DatasetError(f"DatasetWriter.close: episode {self.episode} discarded: {exc}") from None
        try:
            for f in self._files.values():
                f.finish()
        except BaseException:
            self._discard()
            raise
        self._state = WriterState.CLOSED
        self._merge_manifest()
        return self.manifest_path

    def _discard(self) -> None:
        for f in self._files.values():
            if f.partial.exists():
                f.discard()
        self._state = WriterState.CLOSED

    # -- manifest ------------------------------------------------------------------------------------
    def _file_entry(self, f: _DeviceFile) -> dict[str, Any]:
        return {
            "path": episode_file_name(self.episode, f.info.device_id),
            "episode": self.episode,
            "seed": self.seed,
            "n_steps": f.n,
            "first_step": f.first_step,
            "last_step": f.last_step,
            "split": temporal_split(f.n, self.test_fraction, self.guard_steps),
            "present_counts": dict(f.present_counts),
            "label_counts": {t: {c: n for c, n in zip(TASKS[t].classes, counts, strict=True) if n}
                             for t, counts in f.label_counts.items()},
        }

    def _check_joins(self, m: Mapping[str, Any]) -> None:
        """Refuse to add this episode to manifest ``m`` of another scenario or with another guard."""
        check_joins(m, self.manifest_path, scenario_name=self.scenario_name, guard_steps=self.guard_steps)

    def episode_manifest(self) -> dict[str, Any]:
        """The manifest of this episode alone (what :func:`merge_manifest` folds into a directory's manifest)."""
        m = _new_manifest(scenario_name=self.scenario_name, seed=self.seed, step_dt_s=self.step_dt_s,
                          test_fraction=self.test_fraction, guard_steps=self.guard_steps)
        m["episodes"].append({"episode": self.episode, "seed": self.seed, "n_steps": self.n_steps})
        for device_id, f in self._files.items():
            info = f.info
            observed = [k for k in MODALITIES if f.present_counts[k]]
            m["clients"].append({
                **asdict(ClientInfo(device_id, device_id, info.user_id, info.profile)),
                "modalities": list(self._profiles[device_id] or observed),
                "files": [self._file_entry(f)],
            })
        m["clients"].sort(key=lambda c: c["client_id"])
        return m

    def _merge_manifest(self) -> None:
        path = self.manifest_path
        write_manifest(path, merge_manifest(load_manifest(path) if path.exists() else None,
                                            self.episode_manifest(), path))


def check_joins(m: Mapping[str, Any], path: Any, *, scenario_name: str, guard_steps: int) -> None:
    """Refuse to add an episode of ``scenario_name`` with ``guard_steps`` to manifest ``m`` (read from ``path``) of
    another scenario or with another guard: one scenario and one guard per output directory."""
    if m.get("scenario") != scenario_name:
        raise DatasetError(f"{path} holds scenario {m.get('scenario')!r}; this writer records "
                           f"{scenario_name!r} -- use one output directory per scenario")
    if int(m.get("guard_steps", 0)) != guard_steps:
        raise DatasetError(f"{path} holds episodes with a guard of {int(m.get('guard_steps', 0))} steps; this "
                           f"writer's guard is {guard_steps} -- one guard per output directory")


def _new_manifest(*, scenario_name: str, seed: int, step_dt_s: float, test_fraction: float,
                  guard_steps: int) -> dict[str, Any]:
    return {
        "format": "xrfed-dataset",
        "format_version": FORMAT_VERSION,
        "scenario": scenario_name,
        "seed": seed,
        "step_dt_s": step_dt_s,
        "test_fraction": test_fraction,
        "guard_steps": guard_steps,
        "guard_s": round(guard_steps * step_dt_s, 9),
        "split_policy": _split_policy(test_fraction, guard_steps, step_dt_s),
        "tasks": {t: list(spec.classes) for t, spec in TASKS.items()},
        "modalities": list(MODALITIES),
        "episodes": [],
        "clients": [],
    }


def merge_manifest(base: Mapping[str, Any] | None, new: Mapping[str, Any], path: Any) -> dict[str, Any]:
    """Fold the episodes of manifest ``new`` (one episode's, from :meth:`DatasetWriter.episode_manifest`) into
    ``base`` (a directory's manifest, None for an empty directory) and return the result; ``base`` is not changed.

    An episode already in ``base`` is replaced; a client seen for the first time keeps ``new``'s modalities. Folding
    one-episode manifests in episode order gives the manifest a serial recording writes (the distributed recorder
    relies on it). ``path`` names the directory's manifest in errors.
    """
    if base is None:
        m = {k: v for k, v in new.items() if k not in ("episodes", "clients")}
        m["episodes"], m["clients"] = [], []
    else:
        check_joins(base, path, scenario_name=new["scenario"], guard_steps=int(new["guard_steps"]))
        m = json.loads(json.dumps(base))  # a deep copy of plain JSON
        m["format_version"] = FORMAT_VERSION  # this episode's entries carry the guard range
        m.setdefault("guard_steps", 0)  # a 1.0 manifest: no guard (check_joins allowed only guard 0)
        m.setdefault("guard_s", 0.0)
    for ep in new["episodes"]:
        m["episodes"] = [e for e in m["episodes"] if e["episode"] != ep["episode"]]
        m["episodes"].append(dict(ep))
    m["episodes"].sort(key=lambda e: e["episode"])
    clients = {c["client_id"]: c for c in m["clients"]}
    for nc in new["clients"]:
        c = clients.setdefault(nc["client_id"], {**{k: v for k, v in nc.items() if k != "files"}, "files": []})
        for entry in nc["files"]:
            c["files"] = [e for e in c["files"] if e["episode"] != entry["episode"]]
            c["files"].append(dict(entry))
        c["files"].sort(key=lambda e: e["episode"])
    m["clients"] = sorted(clients.values(), key=lambda c: c["client_id"])
    return m


def write_manifest(path: Path, m: Mapping[str, Any]) -> None:
    """Write manifest ``m`` to ``path`` atomically (a ``.tmp`` file renamed over it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(m, indent=2) + "\n")
    os.replace(tmp, path)


def _split_policy(test_fraction: float, guard_steps: int, step_dt_s: float) -> str:
    """The manifest's ``split_policy`` sentence."""
    guard = (f"the {guard_steps} steps ({guard_steps * step_dt_s:g} s) before it are a guard gap that belongs to "
             f"neither train nor test" if guard_steps else "no guard gap between train and test")
    return (f"temporal: the last test_fraction ({test_fraction:g}) of every episode is held out as test, and {guard} "
            f"(row ranges are half-open [start, stop) into each file)")


# -- reading ---------------------------------------------------------------------------------------------
# Every byte of a dataset is hostile: readers check the manifest and each file's layout -- dtypes, shapes, sizes,
# link kinds -- against these bounds before they read or allocate anything a file declares.

#: largest manifest.json read (bytes)
MAX_MANIFEST_BYTES = 64 << 20
#: largest image side (pixels) a file may declare
MAX_IMAGE_SIDE_PX = 4096
#: largest audio channels and samples per step a file may declare (2**18 samples: 5.4 s at 48 kHz in one step)
MAX_AUDIO_CHANNELS, MAX_AUDIO_SAMPLES = 64, 1 << 18
#: largest one step's arrays together (bytes): what a reader holds for one row of every per-step dataset
MAX_STEP_BYTES = 128 << 20
#: largest chunk (bytes) of a dataset: reading one row decompresses its whole chunk
MAX_CHUNK_BYTES = 64 << 20
#: largest number of steps over all files of a manifest (a reader's index holds ~50 bytes a step)
MAX_DATASET_STEPS = 10_000_000
#: largest number of tasks, classes per task and characters of a name or text attribute
MAX_TASKS, MAX_CLASSES, MAX_NAME_CHARS = 64, 1024, 256

#: per-step dataset -> (dtype kinds, row shape); -1 = an image side, -2 audio channels, -3 audio samples
_LAYOUT: dict[str, tuple[str, tuple[int, ...]]] = {
    "rgb": ("u", (-1, -1, 3)), "depth_m": ("f", (-1, -1)), "segmentation": ("iu", (-1, -1)),
    "gaze": ("f", (8,)), "gaze_valid": ("b", ()), "audio": ("f", (-2, -3)), "pose": ("f", (7,)),
    "imu": ("f", (6,)), "hands": ("f", (2, 26, 3)), "hands_valid": ("b", (2,)), "lighting": ("f", (4,)),
    "step": ("iu", ()), "sim_time_s": ("f", ()), "wall_time_ns": ("iu", ()), "camera_fov_y_deg": ("f", ()),
}
_BOUND = {-1: MAX_IMAGE_SIDE_PX, -2: MAX_AUDIO_CHANNELS, -3: MAX_AUDIO_SAMPLES}
_READ_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError, IndexError)


def _short(value: object, limit: int = 60) -> str:
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in repr(value))
    return text if len(text) <= limit else text[:limit] + "..."


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _safe_rel_path(path: object) -> bool:
    """A relative POSIX path inside the dataset directory: no '..', no absolute path, no empty or odd parts."""
    if not isinstance(path, str) or not 1 <= len(path) <= 512 or "\\" in path or not path.endswith(".h5"):
        return False
    parts = path.split("/")
    return all(p and p not in (".", "..") and p.isprintable() for p in parts)


def _check_manifest(m: dict[str, Any], p: Path) -> None:
    """The manifest's structure: every field a reader uses, with its type and range (one-line errors)."""
    def bad(field: str, value: object, allowed: str) -> DatasetError:
        return DatasetError(f"{p}: {field} must be {allowed}, got {_short(value)}")

    def name(field: str, value: object) -> None:
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_CHARS or not value.isprintable():
            raise bad(field, value, f"a name of 1-{MAX_NAME_CHARS} printable characters")

    name("scenario", m.get("scenario"))
    dt = m.get("step_dt_s")
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not (math.isfinite(dt) and 0 < dt <= 3600):
        raise bad("step_dt_s", dt, "a number of seconds in (0, 3600]")
    guard = m.get("guard_steps", 0)
    if not _is_int(guard) or not 0 <= guard <= MAX_STEPS:
        raise bad("guard_steps", guard, f"a whole number in [0, {MAX_STEPS}]")
    tasks = m.get("tasks")
    if not isinstance(tasks, dict) or len(tasks) > MAX_TASKS:
        raise bad("tasks", tasks, f"an object of at most {MAX_TASKS} tasks")
    for t, classes in tasks.items():
        name("tasks key", t)
        if not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES:
            raise bad(f"tasks[{t!r}]", classes, f"a list of 1-{MAX_CLASSES} class names")
        for c in classes:
            name(f"tasks[{t!r}] class", c)
    episodes = m.get("episodes", [])
    if not isinstance(episodes, list) or len(episodes) > MAX_EPISODES or not all(
            isinstance(e, dict) and _is_int(e.get("episode")) and 0 <= e["episode"] for e in episodes):
        raise bad("episodes", episodes, f"a list of at most {MAX_EPISODES} {{'episode': int >= 0, ...}}")
    clients = m.get("clients")
    if not isinstance(clients, list) or not 1 <= len(clients) <= 10_000:
        raise bad("clients", clients, "a list of 1-10000 clients")
    seen: set[str] = set()
    total = 0
    for i, c in enumerate(clients):
        where = f"clients[{i}]"
        if not isinstance(c, dict):
            raise bad(where, c, "an object")
        for key in ("client_id", "device_id", "user_id", "profile"):
            name(f"{where}.{key}", c.get(key))
        if "/" in c["client_id"] or c["client_id"] in seen:
            raise bad(f"{where}.client_id", c["client_id"], "a unique id without '/'")
        seen.add(c["client_id"])
        mods = c.get("modalities")
        if not isinstance(mods, list) or not all(x in MODALITIES for x in mods):
            raise bad(f"{where}.modalities", mods, f"a list of {list(MODALITIES)}")
        files = c.get("files")
        if not isinstance(files, list) or len(files) > MAX_EPISODES:
            raise bad(f"{where}.files", files, f"a list of at most {MAX_EPISODES} files")
        for j, f in enumerate(files):
            fw = f"{where}.files[{j}]"
            if not isinstance(f, dict):
                raise bad(fw, f, "an object")
            if not _safe_rel_path(f.get("path")):
                raise bad(f"{fw}.path", f.get("path"), "a relative path inside the dataset ending in .h5 (no '..')")
            n = f.get("n_steps")
            if not _is_int(n) or not 1 <= n <= MAX_STEPS:
                raise bad(f"{fw}.n_steps", n, f"a whole number in [1, {MAX_STEPS}]")
            total += n
            if total > MAX_DATASET_STEPS:
                raise DatasetError(f"{p}: the files hold more than {MAX_DATASET_STEPS} steps in all")
            if not _is_int(f.get("episode")) or f["episode"] < 0:
                raise bad(f"{fw}.episode", f.get("episode"), "a whole number >= 0")
            split = f.get("split")
            if not isinstance(split, dict) or "train" not in split or "test" not in split:
                raise bad(f"{fw}.split", split, "an object with 'train' and 'test' row ranges")
            for part, rows in split.items():
                if part not in ("train", "guard", "test") or not (
                        isinstance(rows, list) and len(rows) == 2 and all(_is_int(r) for r in rows)
                        and 0 <= rows[0] <= rows[1] <= n):
                    raise bad(f"{fw}.split.{_short(part)[1:-1]}", rows, f"[start, stop] rows with "
                                                                          f"0 <= start <= stop <= n_steps ({n})")
            counts = f.get("label_counts", {})
            if not isinstance(counts, dict) or not all(
                    isinstance(v, dict) and all(isinstance(k, str) and _is_int(x) and 0 <= x <= n
                                                for k, x in v.items()) for v in counts.values()):
                raise bad(f"{fw}.label_counts", counts, "{task: {class: count in [0, n_steps]}}")


def load_manifest(dir_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a dataset directory (or the manifest file itself), its structure checked
    (:class:`DatasetError` naming the file, the field, the value and what is allowed)."""
    p = Path(dir_or_path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    if not p.exists():
        raise DatasetError(f"no dataset manifest at {p} (expected {MANIFEST_NAME} written by `xrfed record`)")
    if not p.is_file():
        raise DatasetError(f"{p}: not a regular file")
    try:
        size = p.stat().st_size
        data = p.read_bytes() if size <= MAX_MANIFEST_BYTES else b""
        m = json.loads(data) if size <= MAX_MANIFEST_BYTES else None
    except (OSError, ValueError, RecursionError) as exc:  # unreadable, bad JSON/UTF-8, huge ints, deep nesting
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else (
            getattr(exc, "strerror", None) or type(exc).__name__)
        raise DatasetError(f"cannot read manifest {p}: {reason}") from None
    if size > MAX_MANIFEST_BYTES:
        raise DatasetError(f"{p}: {size} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have")
    if not isinstance(m, dict) or m.get("format") != "xrfed-dataset":
        raise DatasetError(f"{p} is not an xrfed dataset manifest (missing format 'xrfed-dataset')")
    major = str(m.get("format_version", "")).split(".")[0]
    if major != FORMAT_VERSION.split(".")[0]:
        raise DatasetError(f"{p}: format version {_short(m.get('format_version'))} is not readable by this xrfed "
                           f"(reads {FORMAT_VERSION.split('.')[0]}.x)")
    _check_manifest(m, p)
    return m


def dataset_file(root: str | os.PathLike[str], rel: str) -> Path:
    """The path of a manifest's file entry under ``root``; refuses one that leaves the dataset directory (a
    '..' or a symbolic link pointing elsewhere)."""
    base = Path(root)
    if not _safe_rel_path(rel):
        raise DatasetError(f"{base}: file path {_short(rel)} is not a relative path inside the dataset")
    p = base / rel
    try:
        inside = p.resolve().is_relative_to(base.resolve())
    except (OSError, RuntimeError):  # a symbolic link loop
        inside = False
    if not inside:
        raise DatasetError(f"{p}: resolves outside the dataset directory {base}")
    return p


def manifest_clients(manifest: Mapping[str, Any]) -> list[ClientInfo]:
    """The manifest's clients as :class:`ClientInfo` records."""
    return [ClientInfo(c["client_id"], c["device_id"], c["user_id"], c["profile"], str(c.get("role", "device")))
            for c in manifest["clients"]]


def _decode(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


_MASK64 = (1 << 64) - 1
_GCOL = b"GCOL\x01\x00\x00\x00"  # a global heap collection: signature, version 1, three reserved zero bytes


def _check_global_heaps(p: Path) -> None:
    """Refuse a file whose global heap (where variable-length strings live) would send libhdf5 into an endless
    loop: its parser advances by each object's aligned size in 64-bit arithmetic, so an object of index 0 and size
    0, or of a size that wraps to 0 (a run of 0x00 or 0xFF bytes over a heap does either), makes it stop advancing
    (HDF5 2.0). Objects running past their collection's end are refused too. A linear scan for the collections'
    signature, before h5py opens the file."""
    import mmap

    with open(p, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < len(_GCOL):
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            start = mm.find(_GCOL)
            while start != -1 and start + 16 <= size:
                end = min(size, start + int.from_bytes(mm[start + 8:start + 16], "little"))
                at = start + 16
                while at + 16 <= end:
                    idx = int.from_bytes(mm[at:at + 2], "little")
                    n = int.from_bytes(mm[at + 8:at + 16], "little")
                    # the library's size_t arithmetic: 2**64 - 1 bytes "align" to 0, and a step of 0 never ends
                    need = (16 + (((n + 7) & _MASK64) & ~7)) & _MASK64 if idx else n
                    if need == 0 or need > end - at:
                        raise DatasetError(f"{p}: damaged HDF5 global heap at byte {at} (an object of "
                                           f"{n} bytes in a collection ending at byte {end})")
                    at += need
                start = mm.find(_GCOL, start + 1)


def _open_h5(path: str | os.PathLike[str]) -> Any:
    import h5py

    p = Path(path)
    if not p.exists():
        raise DatasetError(f"dataset file not found: {p}")
    if not p.is_file():
        raise DatasetError(f"{p}: not a regular file")
    try:
        _check_global_heaps(p)
    except OSError as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"cannot read {p}: {exc.strerror or type(exc).__name__}") from None
    try:
        return h5py.File(p, "r")
    except (OSError, ValueError, RuntimeError) as exc:
        raise DatasetError(f"cannot open {p} as HDF5: {' '.join(str(exc).split())[:160]}") from None


def _node(h5: Any, name: str, path: Any, *, group: bool = False, required: bool = True) -> Any:
    """``h5[name]`` if it is a hard-linked dataset (group) stored in this file, else None or a DatasetError: an
    external link, a virtual dataset or external storage would make a reader open other files."""
    import h5py

    try:
        link = h5.get(name, getlink=True)
    except _READ_ERRORS as exc:
        raise DatasetError(f"{path}: cannot read {name!r} ({' '.join(str(exc).split())[:120]})") from None
    if link is None:
        if required:
            raise DatasetError(f"{path}: {'group' if group else 'dataset'} {name!r} is missing")
        return None
    if not isinstance(link, h5py.HardLink):
        raise DatasetError(f"{path}: {name!r} is a {type(link).__name__}; datasets must be stored in the file")
    try:
        obj = h5[name]
    except _READ_ERRORS as exc:
        raise DatasetError(f"{path}: cannot read {name!r} ({' '.join(str(exc).split())[:120]})") from None
    if group:
        if not isinstance(obj, h5py.Group):
            raise DatasetError(f"{path}: {name!r} must be a group")
        return obj
    if not isinstance(obj, h5py.Dataset):
        raise DatasetError(f"{path}: {name!r} must be a dataset")
    if obj.is_virtual or obj.external:
        raise DatasetError(f"{path}: dataset {name!r} keeps its data outside the file")
    return obj


def _attr(h5obj: Any, key: str, path: Any, default: Any = None) -> Any:
    try:
        return h5obj.attrs.get(key, default)
    except _READ_ERRORS as exc:
        raise DatasetError(f"{path}: attribute {key!r} is unreadable ({type(exc).__name__})") from None


def _text_attr(h5obj: Any, key: str, path: Any, default: str | None = None) -> str:
    v = _attr(h5obj, key, path, default)
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v.item()
    if not isinstance(v, (str, bytes)) or not 0 < len(v) <= MAX_NAME_CHARS * 64:
        raise DatasetError(f"{path}: attribute {key!r} must be a text, got {_short(v)}")
    return _decode(v)


def _text_list_attr(h5obj: Any, key: str, path: Any, limit: int) -> list[str]:
    v = _attr(h5obj, key, path)
    if not isinstance(v, (np.ndarray, list, tuple)) or np.ndim(v) != 1 or not 1 <= len(v) <= limit or not all(
            isinstance(x, (str, bytes)) and len(x) <= MAX_NAME_CHARS for x in v):
        raise DatasetError(f"{path}: attribute {key!r} of {h5obj.name!r} must be 1-{limit} names, got {_short(v)}")
    return [_decode(x) for x in v]


def read_rows(ds: Any, sel: Any, path: Any) -> Any:
    """``ds[sel]`` with HDF5 read errors (a damaged chunk, a bad filter) as a DatasetError naming file and dataset."""
    try:
        return ds[sel]
    except _READ_ERRORS as exc:
        raise DatasetError(f"{path}: cannot read {ds.name!r} rows {_short(sel)} "
                           f"({' '.join(str(exc).split())[:120]})") from None


@dataclass(frozen=True)
class FileLayout:
    """What :func:`check_device_file` found: steps, the per-step datasets present, label classes per task."""

    n_steps: int
    columns: tuple[str, ...]
    classes: dict[str, list[str]]
    tasks: list[str]


def check_device_file(h5: Any, path: Any) -> FileLayout:
    """Check an open device file's layout before any array is read: every dataset stored in the file with the
    dtype and row shape of :mod:`bridge.arrays`, T rows each, images and audio within the size bounds, chunks
    within :data:`MAX_CHUNK_BYTES`, labels in range. Raises :class:`DatasetError` naming the file and the dataset."""
    import h5py

    step = _node(h5, "step", path)
    if step.ndim != 1 or not 1 <= step.shape[0] <= MAX_STEPS:
        raise DatasetError(f"{path}: dataset 'step' must have shape [T] with 1 <= T <= {MAX_STEPS}, "
                           f"got {step.shape}")
    n = int(step.shape[0])
    columns = []
    for name, (kinds, row) in _LAYOUT.items():
        ds = _node(h5, name, path, required=name in ("step", "sim_time_s"))
        if ds is None:
            continue
        _check_column(ds, name, kinds, row, n, path)
        columns.append(name)
    step_bytes = sum(int(np.prod(h5[k].shape[1:], dtype=np.int64)) * h5[k].dtype.itemsize for k in columns)
    if step_bytes > MAX_STEP_BYTES:
        shapes = ", ".join(f"{k} {list(h5[k].shape[1:])}" for k in columns if h5[k].ndim > 1)
        raise DatasetError(f"{path}: one step of its datasets holds {step_bytes} bytes, more than "
                           f"{MAX_STEP_BYTES} (row shapes: {shapes[:200]})")
    images = {tuple(h5[k].shape[1:3]) for k in ("rgb", "depth_m", "segmentation") if k in columns}
    if len(images) > 1:
        raise DatasetError(f"{path}: rgb, depth_m and segmentation have different image sizes {sorted(images)}")
    for name in ("room", "events"):
        ds = _node(h5, name, path, required=False)
        if ds is not None and (h5py.check_string_dtype(ds.dtype) is None or ds.shape != (n,)):
            raise DatasetError(f"{path}: dataset {name!r} must be [T={n}] strings, got {ds.dtype} {ds.shape}")
        if ds is not None and h5py.check_string_dtype(ds.dtype).length is None:
            _check_vlen_lengths(ds, name, path)
    at = _node(h5, "active_tasks", path, required=False)
    tasks: list[str] = []
    if at is not None:
        tasks = _text_list_attr(at, "tasks", path, MAX_TASKS)
        _check_column(at, "active_tasks", "b", (len(tasks),), n, path)
    pres = _node(h5, "present", path, group=True)
    for k in PRESENCE_KEYS:
        ds = _node(pres, k, path, required=False)
        if ds is None:
            if k in MODALITIES:
                raise DatasetError(f"{path}: dataset 'present/{k}' is missing")
            continue
        _check_column(ds, f"present/{k}", "b", (), n, path)
    labs = _node(h5, "labels", path, group=True)
    try:
        names = list(labs)
    except _READ_ERRORS:
        raise DatasetError(f"{path}: group 'labels' is unreadable") from None
    if len(names) > MAX_TASKS:
        raise DatasetError(f"{path}: group 'labels' has {len(names)} tasks, more than {MAX_TASKS}")
    classes = {}
    for t in names:
        ds = _node(labs, t, path)
        _check_column(ds, f"labels/{t}", "iu", (), n, path)
        classes[t] = _text_list_attr(ds, "classes", path, MAX_CLASSES)
        values = read_rows(ds, slice(None), path)
        if values.size and (int(values.min()) < -1 or int(values.max()) >= len(classes[t])):
            raise DatasetError(f"{path}: labels/{t} holds class index {int(values.min())}..{int(values.max())}; "
                               f"allowed -1 (no label) to {len(classes[t]) - 1}")
    return FileLayout(n, tuple(columns), classes, tasks)


#: longest variable-length string a reader accepts (bytes)
MAX_TEXT_BYTES = 64 << 10
_VLEN_DESC = 16  # a stored variable-length element: uint32 length, then a global heap ID (8-byte address, uint32)


def _check_vlen_lengths(ds: Any, name: str, path: Any) -> None:
    """Read the stored descriptors of a variable-length string dataset and refuse lengths over
    :data:`MAX_TEXT_BYTES` before libhdf5 reads the strings: the library allocates each element's stored length
    first (a run of 0xFF over the descriptors asked for 4 GiB). Chunks are read raw (``read_direct_chunk``); a
    deflate chunk is inflated only up to its descriptors' size; other filters are refused."""
    import h5py

    want = int(np.prod(ds.chunks, dtype=np.int64)) * _VLEN_DESC if ds.chunks else ds.shape[0] * _VLEN_DESC
    raws: list[bytes] = []
    try:
        if ds.chunks is None:
            offset = ds.id.get_offset()
            if offset is None:
                return  # nothing stored: fill values only
            with open(ds.file.filename, "rb") as fh:
                fh.seek(offset)
                raws.append(fh.read(want))
        else:
            for i in range(min(ds.id.get_num_chunks(), ds.shape[0] + 1)):
                info = ds.id.get_chunk_info(i)
                mask, data = ds.id.read_direct_chunk(info.chunk_offset)
                filters = [] if mask else [ds.id.get_create_plist().get_filter(k)[0]
                                           for k in range(ds.id.get_create_plist().get_nfilters())]
                if filters == [h5py.h5z.FILTER_DEFLATE]:
                    d = zlib.decompressobj()
                    data = d.decompress(data, want)
                elif filters:
                    raise DatasetError(f"{path}: dataset {name!r} is stored with filters {filters}; variable-length "
                                       f"strings are read only raw or deflated")
                raws.append(bytes(data[:want]))
    except DatasetError:
        raise
    except (*_READ_ERRORS, zlib.error) as exc:
        raise DatasetError(f"{path}: cannot read the stored strings of {name!r} "
                           f"({' '.join(str(exc).split())[:120]})") from None
    for raw in raws:
        lengths = np.frombuffer(raw[:len(raw) - len(raw) % _VLEN_DESC], dtype="<u4")[::_VLEN_DESC // 4]
        if lengths.size and int(lengths.max()) > MAX_TEXT_BYTES:
            raise DatasetError(f"{path}: dataset {name!r} stores a string of {int(lengths.max())} bytes, more than "
                               f"{MAX_TEXT_BYTES}")


def _check_column(ds: Any, name: str, kinds: str, row: tuple[int, ...], n: int, path: Any) -> None:
    dt = ds.dtype
    if dt.kind not in kinds or dt.fields is not None or dt.subdtype is not None or (
            name == "rgb" and dt != np.uint8):
        want = {"u": "uint8", "f": "floating point", "iu": "integer", "b": "bool"}[kinds]
        raise DatasetError(f"{path}: dataset {name!r} has dtype {dt}, expected {want}")
    shape = tuple(ds.shape)
    ok = len(shape) == 1 + len(row) and shape[0] == n and all(
        (1 <= got <= _BOUND[want]) if want < 0 else got == want for got, want in zip(shape[1:], row, strict=True))
    if not ok:
        dims = ", ".join(["T"] + [{-1: "H", -2: "C", -3: "N"}.get(w, str(w)) for w in row])
        raise DatasetError(f"{path}: dataset {name!r} has shape {shape}, expected [{dims}] with T = {n}")
    chunks = ds.chunks
    if chunks is not None and int(np.prod(chunks, dtype=np.int64)) * dt.itemsize > MAX_CHUNK_BYTES:
        raise DatasetError(f"{path}: dataset {name!r} has chunks {chunks} of more than {MAX_CHUNK_BYTES} bytes")


def check_row(name: str, row: np.ndarray, path: Any, index: int) -> np.ndarray:
    """A present row of a per-step dataset: finite where the frame contract wants finite values (depth may be
    inf -- no hit -- but not NaN or negative)."""
    if name == "depth_m":
        if np.isnan(row).any() or (row < 0).any():
            raise DatasetError(f"{path}: depth_m row {index} holds NaN or negative metres (present rows must hold "
                               f"depth >= 0, inf = no hit)")
    elif row.dtype.kind == "f" and not np.isfinite(row).all():
        raise DatasetError(f"{path}: {name} row {index} holds NaN or infinite values (its present flag is set)")
    return row


def read_device_file(path: str | os.PathLike[str]) -> Iterator[DeviceFrame]:
    """Yield the frames of one recorded file, in order; absent modalities come back as None.

    This is the exact inverse of the writer in the :mod:`bridge.arrays` layout (float32 where the layout is
    float32). ``active_tasks`` is stored as a per-task mask, so it comes back in :data:`bridge.tasks.TASKS` order.
    The file's layout is checked first (:func:`check_device_file`); a row that breaks the frame contract is a
    :class:`DatasetError` naming the file and the row.
    """
    from .errors import FrameValidationError

    with _open_h5(path) as h5:
        lay = check_device_file(h5, path)
        device_id, user_id = _text_attr(h5, "device_id", path), _text_attr(h5, "user_id", path)
        profile = _text_attr(h5, "profile", path)
        audio_hz = _attr(h5, "audio_hz", path, 0)
        if not isinstance(audio_hz, (int, np.integer)) or isinstance(audio_hz, (bool, np.bool_)) or not (
                0 <= int(audio_hz) <= 192_000):
            raise DatasetError(f"{path}: attribute 'audio_hz' must be a whole number in [0, 192000], "
                               f"got {_short(audio_hz)}")
        n = lay.n_steps

        def col(name: str) -> Any:
            ds = _node(h5, name, path, required=False)
            return None if ds is None else read_rows(ds, slice(None), path)

        steps, times, walls, fovs = col("step"), col("sim_time_s"), col("wall_time_ns"), col("camera_fov_y_deg")
        if walls is None or fovs is None:
            raise DatasetError(f"{path}: dataset {'wall_time_ns' if walls is None else 'camera_fov_y_deg'!r} "
                               f"is missing")
        active = col("active_tasks")
        rooms, events = col("room"), col("events")
        present = {k: read_rows(h5[f"present/{k}"], slice(None), path) for k in PRESENCE_KEYS
                   if f"present/{k}" in h5}
        labels = {t: read_rows(h5[f"labels/{t}"], slice(None), path) for t in lay.classes}
        columns = {name: h5[name] for name in _COLUMNS if name in lay.columns}
        for t in range(n):
            arr: dict[str, Any] = {}
            for name, (_, _, pkey, _) in _COLUMNS.items():
                if pkey in present and present[pkey][t]:
                    if name not in columns:
                        raise DatasetError(f"{path}: present/{pkey} is True at row {t} but dataset {name!r} "
                                           f"is missing")
                    arr[name] = check_row(name, read_rows(columns[name], t, path), path, t)
            if "audio" in arr:
                arr["audio_hz"] = int(audio_hz)
            arr["labels"] = {task: int(v[t]) for task, v in labels.items() if v[t] >= 0 and task in TASKS}
            fov = float(fovs[t])
            try:
                yield arrays_to_frame(
                    arr, device_id=device_id, user_id=user_id, profile=profile, step=int(steps[t]),
                    sim_time_s=float(times[t]), wall_time_ns=int(walls[t]),
                    camera_fov_y_deg=None if math.isnan(fov) else fov,
                    active_tasks=tuple(task for task, on in zip(lay.tasks, active[t], strict=True)
                                       if on and task in TASKS) if active is not None else (),
                    room=(_decode(rooms[t]) if rooms is not None else "") or None,
                    events=tuple(e for e in (_decode(events[t]) if events is not None else "").split(",") if e),
                )
            except (FrameValidationError, KeyError, ValueError, TypeError, OverflowError) as exc:
                msg = " ".join(str(exc).split())[:160]
                raise DatasetError(f"{path}: row {t} does not make a valid frame ({msg})") from None
