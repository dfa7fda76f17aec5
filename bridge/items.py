"""One item builder for recorded and live steps: the conversions between a step's arrays and a model's tensors.

:class:`bridge.dataset.XRDataset` (steps read back from a recording) and ``agents.batching.frame_to_item`` (live
:class:`~bridge.frame.DeviceFrame` objects) both build their items with :func:`build_item`, so the same step reaches
a model as the same tensors whichever way it arrived: one resize, one depth fill, one audio channel choice, one
window rule. The item layout is the one documented in :mod:`bridge.dataset`.

A *step* is a mapping in the flat layout of :mod:`bridge.arrays` -- what ``frame_to_arrays`` returns, or one row
of a recorded file: ``present`` {modality: bool} and, for the modalities present, their arrays under the layout
keys (``rgb``, ``depth_m``, ``audio``, ``gaze`` + ``gaze_valid``, ``pose``, ``imu``, ``hands`` + ``hands_valid``).
Images and audio are read from the last step only; time-series modalities from every step of the window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DatasetError
from .tasks import MODALITIES

__all__ = ["DEPTH_FAR_M", "SERIES_MODALITIES", "ARRAY_KEYS", "FLAG_KEYS", "ItemSpec", "rgb_tensor", "depth_tensor",
           "audio_tensor", "audio_window", "series_window", "flag_window", "build_item"]

#: Time-series modalities, delivered as windows of the last ``window`` steps.
SERIES_MODALITIES: tuple[str, ...] = ("gaze", "pose", "imu", "hands")
#: Depth (metres) that stands in for inf ("no hit within the far plane") unless an :class:`ItemSpec` says otherwise.
DEPTH_FAR_M = 20.0
#: modality -> key of its array in a step (the :mod:`bridge.arrays` layout)
ARRAY_KEYS: dict[str, str] = {"rgb": "rgb", "depth": "depth_m", "gaze": "gaze", "audio": "audio", "pose": "pose",
                              "imu": "imu", "hands": "hands"}
#: series modality -> key of the per-step validity flags that travel with its window
FLAG_KEYS: dict[str, str] = {"gaze": "gaze_valid", "hands": "hands_valid"}


@dataclass(frozen=True)
class ItemSpec:
    """How steps become tensors.

    ``window``: steps per time-series window (the current one and ``window - 1`` before it). ``audio_steps``: steps
    of audio in an item, concatenated in time and ending with the current step's (a spoken word lasts longer than
    one 100 ms step; steps before the episode start or without audio are silence). ``image_size``:
    (height, width) in pixels that images are resized to, None = as recorded. ``depth_far_m``: metres that replace
    inf (no hit) in depth. ``audio_channels``: None = every microphone, 1 = mono downmix (mean), k > 1 = k channels
    picked evenly across the array from left to right (repeated when a device has fewer).
    """

    window: int = 1
    image_size: tuple[int, int] | None = None
    depth_far_m: float = DEPTH_FAR_M
    audio_channels: int | None = None
    audio_steps: int = 1

    def __post_init__(self) -> None:
        for name in ("window", "audio_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise DatasetError(f"{name}: expected an integer >= 1, got {v!r}")
        k = self.audio_channels
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise DatasetError(f"audio_channels: expected an integer >= 1 or None, got {k!r}")
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in size):
                raise DatasetError(f"image_size: expected (height, width) >= 1, got {self.image_size!r}")
            object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        far = float(self.depth_far_m)
        if not far > 0 or far == float("inf"):
            raise DatasetError(f"depth_far_m: expected a positive finite number of metres, got {self.depth_far_m!r}")
        object.__setattr__(self, "depth_far_m", far)

    @property
    def history(self) -> int:
        """Steps an item looks at: the current one and those before it that a window or the audio reaches."""
        return max(self.window, self.audio_steps)


def rgb_tensor(rgb: np.ndarray, size: tuple[int, int] | None = None) -> torch.Tensor:
    """sRGB uint8 [H, W, 3] -> float32 [3, H', W'] in [0, 1]. Resized bilinearly with antialiasing (a downscale
    averages the pixels it drops), then clamped to [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).to(torch.float32).div_(255.0)  # [3, H, W]
    if size is not None and tuple(x.shape[1:]) != tuple(size):
        x = F.interpolate(x[None], size=tuple(size), mode="bilinear", align_corners=False,
                          antialias=True)[0].clamp_(0.0, 1.0)
    return x


def depth_tensor(depth_m: np.ndarray, size: tuple[int, int] | None = None,
                 far_m: float = DEPTH_FAR_M) -> torch.Tensor:
    """Depth [H, W] in metres -> float32 [1, H', W'], inf (no hit) -> ``far_m``. Resized by nearest neighbour,
    so no depth between an object and the wall behind it is invented at its edges."""
    x = torch.from_numpy(np.asarray(depth_m, dtype=np.float32))[None]  # [1, H, W]
    x = torch.where(torch.isinf(x), torch.tensor(float(far_m)), x)
    if size is not None and tuple(x.shape[1:]) != tuple(size):
        x = F.interpolate(x[None], size=tuple(size), mode="nearest")[0]
    return x


def audio_tensor(audio: np.ndarray | torch.Tensor, channels: int | None = None) -> torch.Tensor:
    """One step of audio [C, N] (full scale 1.0) -> float32 [k, N]: every channel (None), the mean (1), or k
    channels spread evenly over the array from left to right, repeated when the device has fewer than k."""
    if isinstance(audio, torch.Tensor):
        x = audio.to(torch.float32)
    else:
        x = torch.from_numpy(np.asarray(audio, dtype=np.float32))  # [C, N]
    if channels == 1:
        return x.mean(dim=0, keepdim=True)
    if channels is not None and channels != x.shape[0]:
        idx = torch.from_numpy(np.round(np.linspace(0, x.shape[0] - 1, channels)).astype(np.int64))
        x = x[idx]
    return x


def audio_window(rows: Sequence[np.ndarray | None], steps: int, channels: int | None = None) -> torch.Tensor:
    """The audio of the last ``steps`` steps [C, N] each (oldest first, the last one present; None = no audio at
    that step) -> float32 [k, steps * N], concatenated in time; steps before the first given one and absent steps
    are silence (zeros). Channels as :func:`audio_tensor`."""
    rows = list(rows)[-steps:]
    cur = rows[-1]
    if cur is None:
        raise DatasetError("audio_window: the current step has no audio")
    last = audio_tensor(cur, channels)
    if steps == 1:
        return last
    k, n = last.shape
    out = torch.zeros(k, steps * n, dtype=torch.float32)
    pad = steps - len(rows)
    for i, r in enumerate(rows):
        if r is None:
            continue
        x = last if i == len(rows) - 1 else audio_tensor(r, channels)
        if tuple(x.shape) != (k, n):
            raise DatasetError(f"audio_window: steps of different shapes {tuple(x.shape)} and {(k, n)}")
        out[:, (pad + i) * n:(pad + i + 1) * n] = x
    return out


def series_window(rows: Sequence[np.ndarray | None], window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of one time-series modality, oldest first and ending at the current step (None = absent at that
    step), -> (float32 [window, n] flattened rows, bool [window] valid). Rows before the first given one are
    padding; padding and absent rows are zeros with valid False."""
    rows = list(rows)[-window:]
    given = [r for r in rows if r is not None]
    if not given:
        raise DatasetError("series_window: expected at least one present row, got none")
    n = int(np.asarray(given[0]).size)
    out = np.zeros((window, n), dtype=np.float32)
    valid = np.zeros(window, dtype=bool)
    pad = window - len(rows)
    for i, r in enumerate(rows):
        if r is not None:
            out[pad + i] = np.asarray(r, dtype=np.float32).reshape(n)
            valid[pad + i] = True
    return torch.from_numpy(out), torch.from_numpy(valid)


def flag_window(flags: Sequence[Any], window: int, shape: tuple[int, ...] = ()) -> torch.Tensor:
    """Per-step validity flags (gaze_valid [], hands_valid [2]), oldest first, None = modality absent ->
    bool [window, *shape]; padding and absent steps are False."""
    flags = list(flags)[-window:]
    out = np.zeros((window, *shape), dtype=bool)
    pad = window - len(flags)
    for i, f in enumerate(flags):
        if f is not None:
            out[pad + i] = np.asarray(f, dtype=bool)
    return torch.from_numpy(out)


def build_item(steps: Sequence[Mapping[str, Any]], spec: ItemSpec, modalities: Sequence[str], *, client_id: str,
               step: int, episode: int, labels: Mapping[str, int]) -> dict[str, Any]:
    """The item of the last of ``steps`` (oldest first, at most ``spec.history`` used), in the layout of
    :mod:`bridge.dataset`.

    Every modality in ``modalities`` gets a ``present`` flag; only those present at the last step get a tensor.
    ``labels`` maps task -> class index (-1 = no label) and becomes int64 tensors.
    """
    if not steps:
        raise DatasetError("build_item: expected at least one step, got none")
    unknown = [m for m in modalities if m not in ARRAY_KEYS]
    if unknown:
        raise DatasetError(f"unknown modalities {unknown}; known: {list(MODALITIES)}")
    steps = list(steps)[-spec.history:]
    cur = steps[-1]
    item: dict[str, Any] = {"present": {}, "window_valid": {}, "labels": {}, "client_id": client_id,
                            "step": int(step), "episode": int(episode)}
    for m in modalities:
        here = bool(cur["present"].get(m, False))
        item["present"][m] = torch.tensor(here)
        if not here:
            continue
        key = ARRAY_KEYS[m]
        if m == "rgb":
            item[m] = rgb_tensor(cur[key], spec.image_size)
        elif m == "depth":
            item[m] = depth_tensor(cur[key], spec.image_size, spec.depth_far_m)
        elif m == "audio":
            item[m] = audio_window([s.get(key) if s["present"].get(m, False) else None
                                    for s in steps[-spec.audio_steps:]], spec.audio_steps, spec.audio_channels)
        else:
            steps_w = steps[-spec.window:]
            present = [bool(s["present"].get(m, False)) for s in steps_w]
            item[m], item["window_valid"][m] = series_window(
                [s[key] if p else None for s, p in zip(steps_w, present, strict=True)], spec.window)
            flag = FLAG_KEYS.get(m)
            if flag is not None and flag in cur:
                item[flag] = flag_window([s.get(flag, False) if p else None
                                          for s, p in zip(steps_w, present, strict=True)],
                                         spec.window, np.shape(cur[flag]))
    item["labels"] = {t: torch.tensor(int(v), dtype=torch.int64) for t, v in labels.items()}
    return item
