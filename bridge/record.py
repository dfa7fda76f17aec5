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
"""

from __future__ import annotations

import enum
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import arrays_to_frame, frame_to_arrays
from .backend import DeviceInfo
from .errors import DatasetError, UnknownNameError
from .frame import DeviceFrame
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
    "manifest_clients",
    "episode_file_name",
    "temporal_split",
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
        path = self.manifest_path
        if m.get("scenario") != self.scenario_name:
            raise DatasetError(f"{path} holds scenario {m.get('scenario')!r}; this writer records "
                               f"{self.scenario_name!r} -- use one output directory per scenario")
        if int(m.get("guard_steps", 0)) != self.guard_steps:
            raise DatasetError(f"{path} holds episodes with a guard of {int(m.get('guard_steps', 0))} steps; this "
                               f"writer's guard is {self.guard_steps} -- one guard per output directory")

    def _merge_manifest(self) -> None:
        path = self.manifest_path
        if path.exists():
            m = load_manifest(path)
            self._check_joins(m)
            m["format_version"] = FORMAT_VERSION  # this episode's entries carry the guard range
            m.setdefault("guard_steps", 0)  # a 1.0 manifest: no guard (_check_joins allowed only guard 0)
            m.setdefault("guard_s", 0.0)
        else:
            m = {
                "format": "xrfed-dataset",
                "format_version": FORMAT_VERSION,
                "scenario": self.scenario_name,
                "seed": self.seed,
                "step_dt_s": self.step_dt_s,
                "test_fraction": self.test_fraction,
                "guard_steps": self.guard_steps,
                "guard_s": round(self.guard_steps * self.step_dt_s, 9),
                "split_policy": _split_policy(self.test_fraction, self.guard_steps, self.step_dt_s),
                "tasks": {t: list(spec.classes) for t, spec in TASKS.items()},
                "modalities": list(MODALITIES),
                "episodes": [],
                "clients": [],
            }
        m["episodes"] = [e for e in m["episodes"] if e["episode"] != self.episode]
        m["episodes"].append({"episode": self.episode, "seed": self.seed, "n_steps": self.n_steps})
        m["episodes"].sort(key=lambda e: e["episode"])
        clients = {c["client_id"]: c for c in m["clients"]}
        for device_id, f in self._files.items():
            info = f.info
            observed = [k for k in MODALITIES if f.present_counts[k]]
            c = clients.setdefault(device_id, {
                **asdict(ClientInfo(device_id, device_id, info.user_id, info.profile)),
                "modalities": list(self._profiles[device_id] or observed),
                "files": [],
            })
            c["files"] = [e for e in c["files"] if e["episode"] != self.episode]
            c["files"].append(self._file_entry(f))
            c["files"].sort(key=lambda e: e["episode"])
        m["clients"] = sorted(clients.values(), key=lambda c: c["client_id"])
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
def load_manifest(dir_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a dataset directory (or the manifest file itself)."""
    p = Path(dir_or_path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    if not p.exists():
        raise DatasetError(f"no dataset manifest at {p} (expected {MANIFEST_NAME} written by `xrfed record`)")
    try:
        m = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read manifest {p}: {exc}") from exc
    if not isinstance(m, dict) or m.get("format") != "xrfed-dataset":
        raise DatasetError(f"{p} is not an xrfed dataset manifest (missing format 'xrfed-dataset')")
    major = str(m.get("format_version", "")).split(".")[0]
    if major != FORMAT_VERSION.split(".")[0]:
        raise DatasetError(f"{p}: format version {m.get('format_version')!r} is not readable by this xrfed "
                           f"(reads {FORMAT_VERSION.split('.')[0]}.x)")
    return m


def manifest_clients(manifest: Mapping[str, Any]) -> list[ClientInfo]:
    """The manifest's clients as :class:`ClientInfo` records."""
    return [ClientInfo(c["client_id"], c["device_id"], c["user_id"], c["profile"], c.get("role", "device"))
            for c in manifest["clients"]]


def _decode(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _open_h5(path: str | os.PathLike[str]) -> Any:
    import h5py

    p = Path(path)
    if not p.exists():
        raise DatasetError(f"dataset file not found: {p}")
    try:
        return h5py.File(p, "r")
    except OSError as exc:
        raise DatasetError(f"cannot open {p} as HDF5: {exc}") from exc


def read_device_file(path: str | os.PathLike[str]) -> Iterator[DeviceFrame]:
    """Yield the frames of one recorded file, in order; absent modalities come back as None.

    This is the exact inverse of the writer in the :mod:`bridge.arrays` layout (float32 where the layout is
    float32). ``active_tasks`` is stored as a per-task mask, so it comes back in :data:`bridge.tasks.TASKS` order.
    """
    with _open_h5(path) as h5:
        try:
            a = h5.attrs
            device_id, user_id, profile = _decode(a["device_id"]), _decode(a["user_id"]), _decode(a["profile"])
            audio_hz = int(a.get("audio_hz", 0))
            n = int(h5["step"].shape[0])
            steps, times, walls = h5["step"][:], h5["sim_time_s"][:], h5["wall_time_ns"][:]
            fovs = h5["camera_fov_y_deg"][:]
            tasks = [_decode(t) for t in h5["active_tasks"].attrs["tasks"]]
            active = h5["active_tasks"][:]
            rooms = [_decode(r) for r in h5["room"][:]]
            events = [_decode(e) for e in h5["events"][:]]
            present = {k: h5[f"present/{k}"][:] for k in PRESENCE_KEYS if f"present/{k}" in h5}
            labels = {t: h5[f"labels/{t}"][:] for t in h5["labels"]}
        except KeyError as exc:
            raise DatasetError(f"{path}: missing dataset or attribute {exc}") from exc
        columns = {name: h5[name] for name in _COLUMNS if name in h5}
        for t in range(n):
            arr: dict[str, Any] = {}
            for name, (_, _, pkey, _) in _COLUMNS.items():
                if pkey in present and present[pkey][t]:
                    if name not in columns:
                        raise DatasetError(f"{path}: present/{pkey} is True at row {t} but dataset {name!r} "
                                           f"is missing")
                    arr[name] = columns[name][t]
            if "audio" in arr:
                arr["audio_hz"] = audio_hz
            arr["labels"] = {task: int(v[t]) for task, v in labels.items() if v[t] >= 0}
            fov = float(fovs[t])
            yield arrays_to_frame(
                arr, device_id=device_id, user_id=user_id, profile=profile, step=int(steps[t]),
                sim_time_s=float(times[t]), wall_time_ns=int(walls[t]),
                camera_fov_y_deg=None if math.isnan(fov) else fov,
                active_tasks=tuple(task for task, on in zip(tasks, active[t], strict=True) if on),
                room=rooms[t] or None, events=tuple(e for e in events[t].split(",") if e),
            )
