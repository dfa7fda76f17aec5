"""A torch :class:`~torch.utils.data.Dataset` over recorded xrfed datasets (see :mod:`bridge.record`).

One item is one step of one client (device). Absent modalities are *absent* from the item -- never zeros posing as
data; :func:`collate_frames` batches items whose modalities differ by filling the gaps with zeros **together with**
a False presence mask, so a model can tell "dark image" from "no camera".

Item layout (keys are the modality names of :data:`bridge.tasks.MODALITIES`; units as in :mod:`bridge.frame`)::

    rgb       float32 [3, H, W] in [0, 1]
    depth     float32 [1, H, W] metres along the optical axis (no hit -> depth_far_m)
    audio     float32 [C, N * audio_steps]  the audio of the last ``audio_steps`` steps (default 1: the step's own),
                                concatenated in time, full scale 1.0
    gaze      float32 [window, 8]       (+ gaze_valid  bool [window])
    pose      float32 [window, 7]
    imu       float32 [window, 6]
    hands     float32 [window, 2*26*3]  (+ hands_valid bool [window, 2])
    present   {modality: bool tensor []}   every requested modality
    window_valid {modality: bool [window]}  time-series rows that hold data (False = before the episode start or
                                            absent at that step; such rows are zeros)
    labels    {task: int64 tensor []}    class index, -1 = no label
    client_id str,  step int,  episode int

Items are built by :func:`bridge.items.build_item`, the same function that turns live frames into items, so a
recorded step and the same step seen live give the same tensors. HDF5 handles are opened lazily in the process
that reads (h5py handles are not fork-safe), so the dataset works with ``DataLoader(num_workers>0)``.

Every file is hostile input: the manifest's structure and paths (:func:`bridge.record.load_manifest`,
:func:`bridge.record.dataset_file`) and each file's layout (:func:`bridge.record.check_device_file`: dtypes, shapes,
sizes, links, label ranges, its step count against the manifest) are checked before anything is read, and every
row read is checked against the frame contract (:func:`bridge.record.check_row`: no NaN depth, finite series and
audio). Anything wrong is a one-line :class:`~bridge.errors.DatasetError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DatasetError
from .items import ARRAY_KEYS, DEPTH_FAR_M, FLAG_KEYS, SERIES_MODALITIES, ItemSpec, build_item
from .record import (
    PRESENCE_KEYS,
    _open_h5,
    check_device_file,
    check_row,
    dataset_file,
    load_manifest,
    read_rows,
)
from .tasks import MODALITIES

__all__ = ["XRDataset", "collate_frames", "client_ids", "SERIES_MODALITIES", "SPLITS"]

SPLITS = ("train", "test", "all")


def client_ids(root: str | os.PathLike[str]) -> list[str]:
    """The client ids of a recorded dataset, in manifest order."""
    return [c["client_id"] for c in load_manifest(root)["clients"]]


class _FileIndex:
    """What the index needs from one file, read once at construction (small per-step arrays only), after its
    layout was checked (:func:`bridge.record.check_device_file`) and found to agree with the manifest."""

    def __init__(self, path: Path, client_id: str, episode: int, rows: range, n_steps: int,
                 tasks: Mapping[str, Sequence[str]]):
        self.path, self.client_id, self.episode, self.rows = path, client_id, episode, rows
        with _open_h5(path) as h5:
            lay = check_device_file(h5, path)
            if lay.n_steps != n_steps:
                raise DatasetError(f"{path}: {lay.n_steps} steps, the manifest says {n_steps}")
            self.steps = read_rows(h5["step"], slice(None), path)
            self.present = {k: read_rows(h5[f"present/{k}"], slice(None), path).astype(bool)
                            for k in PRESENCE_KEYS if f"present/{k}" in h5}
            self.labels = {t: read_rows(h5[f"labels/{t}"], slice(None), path).astype(np.int64) for t in lay.classes}
            for t, lab in self.labels.items():
                if t in tasks and lab.size and int(lab.max()) >= len(tasks[t]):
                    raise DatasetError(f"{path}: labels/{t} holds class index {int(lab.max())}; the manifest's task "
                                       f"has {len(tasks[t])} classes")
            for m in MODALITIES:
                if self.present[m].any() and ARRAY_KEYS[m] not in lay.columns:
                    raise DatasetError(f"{path}: present/{m} is set but dataset {ARRAY_KEYS[m]!r} is missing")
            self.shapes = {m: tuple(h5[ARRAY_KEYS[m]].shape[1:]) for m in MODALITIES if ARRAY_KEYS[m] in lay.columns}
            self.flags = {f for f in FLAG_KEYS.values() if f in lay.columns}
        if rows.stop > lay.n_steps:
            raise DatasetError(f"{path}: manifest split rows {rows.start}..{rows.stop} exceed the file's "
                               f"{lay.n_steps} steps")


class XRDataset(Dataset):
    """Steps of a recorded dataset as tensors, filtered by clients, split, modalities and tasks.

    ``split`` uses the manifest's temporal pre-partition (the last part of each episode is ``test``);
    ``window`` > 1 stacks the last ``window`` steps of the time-series modalities, never crossing an episode
    (each file is one episode). ``image_size`` = (H, W) resizes images (bilinear for RGB, nearest for depth so
    no metric value is invented at object edges). Devices differ in microphone count, so batches mixing
    clients need ``audio_channels``: 1 = mono downmix (mean), k > 1 = k channels picked evenly across the array
    from left to right (repeated when a device has fewer). ``depth_far_m`` replaces inf (no hit) in depth.
    ``audio_steps`` > 1 gives each item the audio of that many steps ending with its own (silence before the
    episode start or where a step has no audio).
    """

    def __init__(self, root: str | os.PathLike[str], *, clients: Sequence[str] | None = None, split: str = "train",
                 modalities: Sequence[str] | None = None, tasks: Sequence[str] | None = None, window: int = 1,
                 image_size: tuple[int, int] | None = None, depth_far_m: float = DEPTH_FAR_M,
                 audio_channels: int | None = None, audio_steps: int = 1):
        if split not in SPLITS:
            raise DatasetError(f"split: expected one of {SPLITS}, got {split!r}")
        self.spec = ItemSpec(window=window, image_size=image_size, depth_far_m=depth_far_m,
                             audio_channels=audio_channels, audio_steps=audio_steps)
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        known = {c["client_id"]: c for c in self.manifest["clients"]}
        wanted = list(known) if clients is None else list(clients)
        unknown = [c for c in wanted if c not in known]
        if unknown:
            raise DatasetError(f"unknown clients {unknown}; the dataset at {self.root} has {sorted(known)}")
        all_tasks = list(self.manifest["tasks"])
        self.tasks = tuple(all_tasks if tasks is None else tasks)
        bad = [t for t in self.tasks if t not in all_tasks]
        if bad:
            raise DatasetError(f"unknown tasks {bad}; the dataset has {all_tasks}")
        self.split, self.window, self.depth_far_m = split, window, self.spec.depth_far_m
        self.audio_channels, self.image_size = audio_channels, self.spec.image_size

        self._files: list[_FileIndex] = []
        index: list[tuple[int, int]] = []
        for cid in wanted:
            for entry in known[cid]["files"]:
                n = int(entry["n_steps"])
                lo, hi = (0, n) if split == "all" else entry["split"][split]
                fi = _FileIndex(dataset_file(self.root, entry["path"]), cid, int(entry["episode"]), range(lo, hi),
                                n, self.manifest["tasks"])
                index.extend((len(self._files), r) for r in fi.rows)
                self._files.append(fi)
        self._index = np.asarray(index, dtype=np.int64).reshape(-1, 2)

        observed = [m for m in MODALITIES if any(f.present[m][f.rows.start:f.rows.stop].any() for f in self._files)]
        self.modalities = tuple(observed if modalities is None else modalities)
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad:
            raise DatasetError(f"unknown modalities {bad}; known: {list(MODALITIES)}")
        for m in self.modalities:
            shapes = {f.shapes[m] for f in self._files if m in f.shapes}
            if m in ("rgb", "depth") and len(shapes) > 1 and self.image_size is None:
                raise DatasetError(f"{m}: the selected files have different image sizes {sorted(shapes)}; "
                                   f"pass image_size=(H, W) to batch them")
        self._pid = os.getpid()
        self._handles: dict[int, Any] = {}

    # -- torch Dataset -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        fi, r = (int(v) for v in self._index[i])
        f = self._files[fi]
        labels = {t: int(f.labels[t][r]) if t in f.labels else -1 for t in self.tasks}
        return build_item(self._steps(fi, r), self.spec, self.modalities, client_id=f.client_id,
                          step=int(f.steps[r]), episode=f.episode, labels=labels)

    def _steps(self, fi: int, r: int) -> list[dict[str, Any]]:
        """Rows ``r - history + 1 .. r`` of file ``fi`` (not before the episode start) as steps in the
        :mod:`bridge.arrays` layout: images of the current row, audio of the last ``audio_steps`` rows, series of
        every row."""
        f, h5 = self._files[fi], self._handle(fi)
        r0 = max(0, r - self.spec.history + 1)
        steps: list[dict[str, Any]] = [{"present": {m: bool(f.present[m][t]) for m in self.modalities}}
                                       for t in range(r0, r + 1)]
        for m in self.modalities:
            if not steps[-1]["present"][m]:
                continue
            key = ARRAY_KEYS[m]
            if m in SERIES_MODALITIES:  # absent rows hold the fill value; build_item reads present rows only
                for t, (s, row) in enumerate(zip(steps, read_rows(h5[key], slice(r0, r + 1), f.path),
                                                 strict=True), start=r0):
                    s[key] = check_row(key, row, f.path, t) if s["present"][m] else row
                flag = FLAG_KEYS.get(m)
                if flag is not None and flag in f.flags:
                    for s, row in zip(steps, read_rows(h5[flag], slice(r0, r + 1), f.path), strict=True):
                        s[flag] = row
            elif m == "audio" and self.spec.audio_steps > 1:
                a0 = max(r0, r - self.spec.audio_steps + 1)
                for t, (s, row) in enumerate(zip(steps[a0 - r0:], read_rows(h5[key], slice(a0, r + 1), f.path),
                                                 strict=True), start=a0):
                    if s["present"][m]:
                        s[key] = check_row(key, row, f.path, t)
            else:
                steps[-1][key] = check_row(key, read_rows(h5[key], r, f.path), f.path, r)
        return steps

    # -- handles ---------------------------------------------------------------------------------------
    def _handle(self, fi: int) -> Any:
        pid = os.getpid()
        if pid != self._pid:  # a forked worker: never reuse the parent's HDF5 handles
            self._handles, self._pid = {}, pid
        h = self._handles.get(fi)
        if h is None:
            h = self._handles[fi] = _open_h5(self._files[fi].path)
        return h

    def close(self) -> None:
        """Close the HDF5 handles this process opened."""
        if self._pid == os.getpid():
            for h in self._handles.values():
                h.close()
        self._handles = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def __repr__(self) -> str:
        return (f"XRDataset(root={str(self.root)!r}, split={self.split!r}, items={len(self)}, "
                f"clients={sorted({f.client_id for f in self._files})}, modalities={list(self.modalities)}, "
                f"window={self.window})")


def collate_frames(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items whose modalities differ: [B, ...] tensors plus [B] presence masks.

    A modality absent from an item gets zeros in the batch tensor *and* False in ``present[m]`` (and in
    ``window_valid[m]``); a modality absent from every item has no tensor at all, only its all-False mask.
    """
    if not items:
        raise DatasetError("collate_frames: expected at least one item, got an empty batch")
    b = len(items)
    mods = [m for m in MODALITIES if any(m in it["present"] for it in items)]
    batch: dict[str, Any] = {
        "present": {}, "window_valid": {}, "labels": {},
        "client_id": [it["client_id"] for it in items],
        "step": torch.tensor([it["step"] for it in items], dtype=torch.int64),
        "episode": torch.tensor([it["episode"] for it in items], dtype=torch.int64),
    }
    for m in mods:
        batch["present"][m] = torch.tensor([bool(it["present"].get(m, False)) for it in items])
        for key in (m, FLAG_KEYS.get(m)):
            if key is not None:
                _stack_into(batch, key, [it.get(key) for it in items], b)
        if any(m in it["window_valid"] for it in items):
            _stack_into(batch["window_valid"], m, [it["window_valid"].get(m) for it in items], b)
    for t in items[0]["labels"]:
        batch["labels"][t] = torch.stack([it["labels"][t] for it in items])
    return batch


def _stack_into(out: dict[str, Any], key: str, tensors: list[torch.Tensor | None], b: int) -> None:
    given = [x for x in tensors if x is not None]
    if not given:
        return
    shapes = {tuple(x.shape) for x in given}
    if len(shapes) > 1:
        raise DatasetError(f"collate_frames: {key!r} has different shapes in one batch {sorted(shapes)} "
                           f"(e.g. devices with different microphone counts or image sizes); batch per client, "
                           f"or set XRDataset(image_size=..., audio_channels=...)")
    res = torch.zeros((b, *given[0].shape), dtype=given[0].dtype)
    for i, x in enumerate(tensors):
        if x is not None:
            res[i] = x
    out[key] = res
