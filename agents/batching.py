"""Live frames -> model batches, in exactly the layout of :func:`bridge.dataset.collate_frames`.

A recorded step (from :class:`bridge.dataset.XRDataset`) and a live :class:`~bridge.frame.DeviceFrame` must reach
the model the same way, or a model trained on recordings would see different inputs live. So live frames go
through :func:`bridge.arrays.frame_to_arrays` (the one flat layout) and :func:`bridge.items.build_item` (the one
item builder, which XRDataset uses too), and items are batched by the dataset's own collate function. Two
normalisations make items of different devices batchable (``XRDataset(image_size=(S, S), audio_channels=2)``
gives the same):

* images are resized to the model's ``image_size_px`` (bilinear for RGB, nearest for depth);
* audio keeps the outermost two channels (left and right of the array; a mono device repeats its channel), which
  is all the model's channel-count-agnostic tokenizer uses (the mean of those two and their level difference).

:class:`FrameWindow` keeps the last frames of one device so time-series modalities arrive as windows (with
``window_valid`` rows False before the first frame and where a modality was absent) and audio as the last
``audio_steps`` steps of sound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from bridge.arrays import frame_to_arrays
from bridge.dataset import collate_frames
from bridge.frame import DeviceFrame
from bridge.items import DEPTH_FAR_M, SERIES_MODALITIES, ItemSpec, audio_tensor, build_item
from bridge.tasks import MODALITIES

from .errors import AgentError

__all__ = ["FrameWindow", "frame_to_item", "frames_to_batch", "items_to_batch", "SERIES", "edge_channels",
           "DEPTH_FAR_M", "AUDIO_CHANNELS"]

SERIES: tuple[str, ...] = SERIES_MODALITIES
#: microphones a live item keeps: the first and the last (``XRDataset(audio_channels=2)`` picks the same)
AUDIO_CHANNELS = 2


def edge_channels(audio: torch.Tensor) -> torch.Tensor:
    """[C, N] -> [2, N]: the first and last microphone (a mono device repeats its one channel)."""
    return audio_tensor(audio, AUDIO_CHANNELS)


def frame_to_item(frame: DeviceFrame, *, previous: Sequence[DeviceFrame] = (), window: int = 1,
                  image_size: int | None = None, modalities: Sequence[str] | None = None,
                  audio_steps: int = 1) -> dict[str, Any]:
    """One frame (plus previous frames of the same device, oldest first: up to ``max(window, audio_steps) - 1``
    are used) as a dataset item.

    ``modalities`` restricts the item to a device's modalities: a modality outside it is absent even if the
    frame carries it. Depth beyond the far plane becomes :data:`DEPTH_FAR_M`, XRDataset's default.
    """
    spec = ItemSpec(window=window, image_size=None if image_size is None else (image_size, image_size),
                    depth_far_m=DEPTH_FAR_M, audio_channels=AUDIO_CHANNELS, audio_steps=audio_steps)
    hist = list(previous)[-(spec.history - 1):] if spec.history > 1 else []
    steps = [frame_to_arrays(f) for f in (*hist, frame)]
    cur = steps[-1]
    item = build_item(steps, spec, tuple(MODALITIES if modalities is None else modalities),
                      client_id=frame.device_id, step=frame.step, episode=0, labels=cur["labels"])
    item["audio_hz"] = int(cur["audio_hz"]) if "audio_hz" in cur else None
    item["camera_fov_y_deg"] = float(frame.camera_fov_y_deg) if frame.camera_fov_y_deg else float("nan")
    return item


def items_to_batch(items: Sequence[Mapping[str, Any]], tasks: Sequence[str] = ()) -> dict[str, Any]:
    """Collate dataset-style items (from XRDataset or :func:`frame_to_item`) into one batch.

    Labels missing from an item become -1 for the ``tasks`` asked for (items of different tasks can mix), and
    ``audio_hz`` / ``camera_fov_y_deg`` are carried when the items have them.
    """
    if not items:
        raise AgentError("items_to_batch: expected at least one item, got none")
    label_tasks = list(dict.fromkeys([*tasks, *(t for it in items for t in it["labels"])]))
    fixed = []
    for it in items:
        labels = {t: it["labels"].get(t, torch.tensor(-1, dtype=torch.int64)) for t in label_tasks}
        fixed.append({**it, "labels": labels})
    batch = collate_frames(fixed)
    rates: set[int] = {it["audio_hz"] for it in items if it.get("audio_hz")}
    if len(rates) > 1:
        raise AgentError(f"one batch mixes audio rates {sorted(rates)}; resample or batch per device")
    if rates:
        batch["audio_hz"] = rates.pop()
    batch["camera_fov_y_deg"] = torch.tensor([float(it.get("camera_fov_y_deg", float("nan"))) for it in items])
    return batch


def frames_to_batch(frames: Sequence[DeviceFrame], *, window: int = 1, image_size: int | None = None,
                    histories: Sequence[Sequence[DeviceFrame]] | None = None,
                    modalities: Sequence[str] | None = None, audio_steps: int = 1) -> dict[str, Any]:
    """Batch live frames (one per sample; ``histories[i]`` = earlier frames of sample i's device)."""
    hs = histories if histories is not None else [()] * len(frames)
    if len(hs) != len(frames):
        raise AgentError(f"frames_to_batch: {len(frames)} frames but {len(hs)} histories")
    return items_to_batch([frame_to_item(f, previous=h, window=window, image_size=image_size, modalities=modalities,
                                         audio_steps=audio_steps) for f, h in zip(frames, hs, strict=True)])


class FrameWindow:
    """The last frames of one device: ``window`` for the time-series modalities, ``audio_steps`` for audio."""

    def __init__(self, window: int, audio_steps: int = 1):
        if window < 1 or audio_steps < 1:
            raise AgentError(f"FrameWindow: window and audio_steps must be >= 1, got {window}, {audio_steps}")
        self.window, self.audio_steps = window, audio_steps
        history = max(window, audio_steps)
        self._frames: deque[DeviceFrame] = deque(maxlen=max(1, history - 1))

    def item(self, frame: DeviceFrame, *, image_size: int | None = None,
             modalities: Sequence[str] | None = None) -> dict[str, Any]:
        """The item of ``frame`` with the stored history, then remember ``frame``."""
        history = max(self.window, self.audio_steps)
        it = frame_to_item(frame, previous=tuple(self._frames) if history > 1 else (), window=self.window,
                           image_size=image_size, modalities=modalities, audio_steps=self.audio_steps)
        self._frames.append(frame)
        return it

    def clear(self) -> None:
        self._frames.clear()
