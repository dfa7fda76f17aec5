"""Contact sheets, overviews and GIFs of recorded datasets: a quick look that the data is what it claims to be.

A contact sheet has one column per sampled step of one device file and these rows (a row the file has no data
for is left out): RGB with the gaze point, depth in false colour, the first audio channel's waveform with its RMS
level, and text (step and time, room, labels, illuminance, events). A modality absent at a step shows an
"absent" tile -- never a black image that could pass for a dark room.

Gaze is projected with a pinhole camera: the gaze angles are in the head frame, which is the camera frame, so
``u = W/2 + f tan(yaw)``, ``v = H/2 - f tan(pitch)`` with ``f = (H/2) / tan(fov_y/2)`` (square pixels). The
vertical field of view is the file attr ``camera_fov_y_deg`` (90 degrees when a recording lacks it).

Drawn with Pillow; matplotlib is used only for its colour maps.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatasetError
from .record import _decode, _open_h5, check_device_file, dataset_file, load_manifest
from .tasks import TASKS

__all__ = [
    "SheetLayout",
    "LAYOUT",
    "DEFAULT_FOV_Y_DEG",
    "project_gaze_px",
    "sample_rows",
    "contact_sheet_size",
    "write_contact_sheet",
    "write_overview",
    "write_gif",
    "write_preview",
]

DEFAULT_FOV_Y_DEG = 90.0
_TASK_ABBREV = {"object_recognition": "obj", "gesture_recognition": "gesture", "scene_classification": "scene",
                "speech_command": "speech", "activity_recognition": "activity", "intent_prediction": "intent"}


@dataclass(frozen=True)
class SheetLayout:
    """Pixel geometry of a contact sheet (fixed, so sheet sizes are predictable)."""

    tile_w_px: int = 192
    pad_px: int = 4
    audio_h_px: int = 48
    line_h_px: int = 12
    text_lines: int = 10
    caption_h_px: int = 14

    def __post_init__(self) -> None:
        for name in ("tile_w_px", "audio_h_px", "line_h_px", "text_lines", "caption_h_px"):
            if getattr(self, name) < 1:
                raise DatasetError(f"SheetLayout.{name} must be >= 1, got {getattr(self, name)}")
        if self.pad_px < 0:
            raise DatasetError(f"SheetLayout.pad_px must be >= 0, got {self.pad_px}")

    @property
    def text_h_px(self) -> int:
        return self.line_h_px * self.text_lines

    def tile_h_px(self, image_hw: tuple[int, int]) -> int:
        """The tile height for an image of ``image_hw``, at most 4 tile widths (a 4096 x 1 image stays drawable)."""
        h, w = image_hw
        return max(1, min(4 * self.tile_w_px, round(self.tile_w_px * h / w)))


LAYOUT = SheetLayout()
_BG, _FG, _ABSENT = (24, 24, 24), (235, 235, 235), (70, 70, 70)


def project_gaze_px(yaw_rad: float, pitch_rad: float, height_px: int, width_px: int,
                    fov_y_deg: float = DEFAULT_FOV_Y_DEG) -> tuple[float, float]:
    """Pixel (u = column, v = row) where a head-frame gaze direction lands in the device camera image."""
    f = (height_px / 2) / math.tan(math.radians(fov_y_deg) / 2)
    return width_px / 2 + f * math.tan(yaw_rad), height_px / 2 - f * math.tan(pitch_rad)


def sample_rows(n_rows: int, n: int) -> list[int]:
    """``n`` rows spread evenly over ``n_rows`` (first and last included), fewer when the file is shorter."""
    if n_rows < 1 or n < 1:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, n_rows - 1, min(n, n_rows))})


def contact_sheet_size(n_cols: int, image_hw: tuple[int, int] | None, *, has_rgb: bool, has_depth: bool,
                       has_audio: bool, layout: SheetLayout = LAYOUT) -> tuple[int, int]:
    """(width, height) in pixels of a contact sheet with these rows."""
    rows = [layout.text_h_px]
    if image_hw is not None:
        rows += [layout.tile_h_px(image_hw)] * (int(has_rgb) + int(has_depth))
    if has_audio:
        rows.append(layout.audio_h_px)
    width = n_cols * layout.tile_w_px + (n_cols + 1) * layout.pad_px
    height = sum(rows) + (len(rows) + 1) * layout.pad_px
    return width, height


# -- drawing helpers -----------------------------------------------------------------------------------------
def _font() -> Any:
    from PIL import ImageFont

    return ImageFont.load_default()


def _fit(draw: Any, text: str, width_px: int, font: Any) -> str:
    if draw.textlength(text, font=font) <= width_px:
        return text
    while text and draw.textlength(text + "...", font=font) > width_px:
        text = text[:-1]
    return text + "..."


def _absent_tile(size: tuple[int, int], what: str) -> Any:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, _ABSENT)
    d = ImageDraw.Draw(img)
    d.text((size[0] / 2, size[1] / 2), f"{what} absent", fill=_FG, font=_font(), anchor="mm")
    return img


def _rgb_tile(rgb: np.ndarray, size: tuple[int, int], gaze: np.ndarray | None, gaze_valid: bool,
              fov_y_deg: float, prediction: str | None) -> Any:
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    img = Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR)
    d = ImageDraw.Draw(img)
    sx, sy = size[0] / w, size[1] / h
    if gaze is not None:
        u, v = project_gaze_px(float(gaze[0]), float(gaze[1]), h, w, fov_y_deg)
        x, y = u * sx, v * sy
        colour = (40, 255, 80) if gaze_valid else (255, 150, 0)
        d.ellipse((x - 5, y - 5, x + 5, y + 5), outline=colour, width=2)
        d.line((x - 8, y, x + 8, y), fill=colour)
        d.line((x, y - 8, x, y + 8), fill=colour)
    else:
        x, y = size[0] / 2, size[1] / 2
    if prediction:
        font = _font()
        tx, ty = min(max(x + 8, 0), size[0] - 10), min(max(y - 14, 0), size[1] - 12)
        box = d.textbbox((tx, ty), prediction, font=font)
        d.rectangle(box, fill=(0, 0, 0))
        d.text((tx, ty), prediction, fill=(255, 255, 0), font=font)
    return img


def _depth_tile(depth_m: np.ndarray, size: tuple[int, int], lo: float, hi: float) -> Any:
    from matplotlib import colormaps
    from PIL import Image

    finite = np.isfinite(depth_m)
    x = np.clip((np.where(finite, depth_m, hi) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    lut = (colormaps["turbo"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    rgb = lut[(x * 255).astype(np.int64)]
    rgb[~finite] = 0  # no hit within the far plane: black
    return Image.fromarray(rgb).resize(size, Image.Resampling.NEAREST)


def _audio_tile(samples: np.ndarray, size: tuple[int, int], full_scale: float) -> Any:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, (10, 10, 30))
    d = ImageDraw.Draw(img)
    w, h = size
    mid = h / 2
    n_bins = min(w, samples.size)
    step_px = w / max(n_bins, 1)
    for i, b in enumerate(np.array_split(samples.astype(np.float64), n_bins) if n_bins else ()):
        x0 = i * step_px  # one vertical min..max stroke per pixel column (or per sample when audio is short)
        d.rectangle((x0, mid - b.max() / full_scale * (mid - 1), x0 + max(step_px - 1, 0),
                     mid - b.min() / full_scale * (mid - 1)), fill=(90, 200, 255))
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0
    dbfs = 20 * math.log10(rms) if rms > 0 else -math.inf
    label = f"rms {rms:.4f} ({dbfs:.1f} dBFS)"
    d.rectangle(d.textbbox((2, 1), label, font=_font()), fill=(10, 10, 30))  # legible over the waveform
    d.text((2, 1), label, fill=_FG, font=_font())
    return img


@contextlib.contextmanager
def _checked_file(path: str | os.PathLike[str]) -> Iterator[Any]:
    """A device file open for drawing, its layout checked first (:func:`bridge.record.check_device_file`); a damaged
    chunk or a value the drawing cannot use becomes a :class:`DatasetError` naming the file."""
    with _open_h5(path) as h5:
        check_device_file(h5, path)
        try:
            yield h5
        except DatasetError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, IndexError, OverflowError) as exc:
            msg = " ".join(str(exc).split())[:120]
            raise DatasetError(f"{path}: cannot draw this file ({type(exc).__name__}: {msg})") from None


class _FileView:
    """Sampled rows of one device file, read directly (no full-episode pass)."""

    def __init__(self, h5: Any):
        self.h5 = h5
        a = h5.attrs
        self.device_id = _decode(a.get("device_id", "?"))
        self.profile = _decode(a.get("profile", "?"))
        self.fov_y_deg = float(a.get("camera_fov_y_deg", DEFAULT_FOV_Y_DEG))
        self.step_dt_s = float(a.get("step_dt_s", 0.1))
        try:
            self.n = int(h5["step"].shape[0])
            self.present = {k: h5[f"present/{k}"][:] for k in ("rgb", "depth", "gaze", "audio", "lighting")}
        except KeyError as exc:
            raise DatasetError(f"{h5.filename}: missing dataset {exc.args[0] if exc.args else exc}") from None
        self.has = {m: m_ds in h5 and bool(self.present[m].any())
                    for m, m_ds in (("rgb", "rgb"), ("depth", "depth_m"), ("audio", "audio"))}
        ds = h5["rgb"] if "rgb" in h5 else h5["depth_m"] if "depth_m" in h5 else None
        self.image_hw: tuple[int, int] | None = tuple(ds.shape[1:3]) if ds is not None else None

    def gaze(self, r: int) -> tuple[np.ndarray | None, bool]:
        if "gaze" in self.h5 and self.present["gaze"][r]:
            valid = bool(self.h5["gaze_valid"][r]) if "gaze_valid" in self.h5 else True
            return self.h5["gaze"][r], valid
        return None, False

    def rgb_image(self, r: int, size: tuple[int, int], prediction: str | None = None) -> Any:
        if not (self.has["rgb"] and self.present["rgb"][r]):
            return _absent_tile(size, "rgb")
        g, valid = self.gaze(r)
        return _rgb_tile(self.h5["rgb"][r], size, g, valid, self.fov_y_deg, prediction)

    def text_lines(self, r: int) -> list[str]:
        h5 = self.h5
        lines = [f"step {int(h5['step'][r])}  t={float(h5['sim_time_s'][r]):.2f}s"]
        room = _decode(h5["room"][r]) if "room" in h5 else ""
        lines.append(f"room: {room or '-'}")
        stored = list(h5["labels"]) if "labels" in h5 else []
        for task in [t for t in TASKS if t in stored] + [t for t in stored if t not in TASKS]:
            idx = int(h5[f"labels/{task}"][r])
            if idx >= 0:
                classes = h5[f"labels/{task}"].attrs["classes"]
                lines.append(f"{_TASK_ABBREV.get(task, task)}: {_decode(classes[idx])}")
        if "lighting" in h5 and self.present["lighting"][r]:
            lines.append(f"light: {float(h5['lighting'][r][1]):.0f} lux")
        events = _decode(h5["events"][r]) if "events" in h5 else ""
        if events:
            lines.append(f"events: {events}")
        return lines


def write_contact_sheet(device_file: str | os.PathLike[str], out_png: str | os.PathLike[str], *, n: int = 8,
                        predictions: dict[int, str] | None = None, layout: SheetLayout = LAYOUT) -> Path:
    """Write a contact sheet of ``n`` evenly sampled steps of one device file; returns the PNG path.

    ``predictions`` maps a step number to a text (e.g. a model's label) drawn next to the gaze point of that
    step's column (next to the image centre without gaze); steps not sampled are not shown.
    """
    from PIL import Image, ImageDraw

    if n < 1:
        raise DatasetError(f"contact sheet: n must be >= 1, got {n}")
    out_png = Path(out_png)
    with _checked_file(device_file) as h5:
        v = _FileView(h5)
        rows = sample_rows(v.n, n)
        if not rows:
            raise DatasetError(f"{device_file}: no steps to preview")
        has_rgb, has_depth, has_audio = v.has["rgb"], v.has["depth"], v.has["audio"]
        width, height = contact_sheet_size(len(rows), v.image_hw, has_rgb=has_rgb, has_depth=has_depth,
                                           has_audio=has_audio, layout=layout)
        sheet = Image.new("RGB", (width, height), _BG)
        draw = ImageDraw.Draw(sheet)
        font = _font()
        tw, pad = layout.tile_w_px, layout.pad_px
        tile = (tw, layout.tile_h_px(v.image_hw)) if v.image_hw else (tw, 1)
        depth_lo, depth_hi = 0.0, 1.0
        if has_depth:
            vals = [h5["depth_m"][r] for r in rows if v.present["depth"][r]]
            finite = np.concatenate([d[np.isfinite(d)].ravel() for d in vals]) if vals else np.array([])
            if finite.size:
                depth_lo, depth_hi = float(finite.min()), float(finite.max())
        full_scale = 1e-3
        if has_audio:
            for r in rows:
                if v.present["audio"][r]:
                    full_scale = max(full_scale, float(np.abs(h5["audio"][r][0]).max()))
        steps = h5["step"][:]
        for c, r in enumerate(rows):
            x, y = pad + c * (tw + pad), pad
            if has_rgb:
                pred = (predictions or {}).get(int(steps[r]))
                sheet.paste(v.rgb_image(r, tile, pred), (x, y))
                y += tile[1] + pad
            if has_depth:
                img = (_depth_tile(h5["depth_m"][r], tile, depth_lo, depth_hi) if v.present["depth"][r]
                       else _absent_tile(tile, "depth"))
                sheet.paste(img, (x, y))
                y += tile[1] + pad
            if has_audio:
                size = (tw, layout.audio_h_px)
                img = (_audio_tile(h5["audio"][r][0], size, full_scale) if v.present["audio"][r]
                       else _absent_tile(size, "audio"))
                sheet.paste(img, (x, y))
                y += layout.audio_h_px + pad
            for i, line in enumerate(v.text_lines(r)[:layout.text_lines]):
                draw.text((x, y + i * layout.line_h_px), _fit(draw, line, tw, font), fill=_FG, font=font)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png


def write_overview(device_files: list[Path], out_png: str | os.PathLike[str], *, row: int | None = None,
                   layout: SheetLayout = LAYOUT) -> Path:
    """All devices side by side at one step (the middle of the episode unless ``row`` is given)."""
    from PIL import Image, ImageDraw

    if not device_files:
        raise DatasetError("overview: expected at least one device file, got none")
    tiles, captions = [], []
    tw, pad = layout.tile_w_px, layout.pad_px
    for path in device_files:
        with _checked_file(path) as h5:
            v = _FileView(h5)
            r = min(v.n - 1, v.n // 2 if row is None else row)
            size = (tw, layout.tile_h_px(v.image_hw)) if v.image_hw else (tw, tw * 3 // 4)
            if v.has["rgb"]:
                img = v.rgb_image(r, size)
            elif v.has["depth"] and v.present["depth"][r]:
                d = h5["depth_m"][r]
                fin = d[np.isfinite(d)]
                img = _depth_tile(d, size, float(fin.min()) if fin.size else 0.0,
                                  float(fin.max()) if fin.size else 1.0)
            else:
                img = _absent_tile(size, "camera")
            tiles.append(img)
            captions.append(f"{v.device_id} ({v.profile}) step {int(h5['step'][r])}")
    tile_h = max(t.size[1] for t in tiles)
    width = len(tiles) * tw + (len(tiles) + 1) * pad
    sheet = Image.new("RGB", (width, tile_h + layout.caption_h_px + 3 * pad), _BG)
    draw = ImageDraw.Draw(sheet)
    for i, (t, cap) in enumerate(zip(tiles, captions, strict=True)):
        x = pad + i * (tw + pad)
        sheet.paste(t, (x, pad))
        draw.text((x, 2 * pad + tile_h), _fit(draw, cap, tw, _font()), fill=_FG, font=_font())
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png


def write_gif(device_file: str | os.PathLike[str], out_gif: str | os.PathLike[str], *, max_frames: int = 200,
              layout: SheetLayout = LAYOUT) -> Path | None:
    """An animated GIF of RGB with the gaze point (``max_frames`` evenly sampled); None when the file has no RGB."""
    with _checked_file(device_file) as h5:
        v = _FileView(h5)
        if not v.has["rgb"] or v.image_hw is None:
            return None
        rows = sample_rows(v.n, max_frames)
        size = (layout.tile_w_px, layout.tile_h_px(v.image_hw))
        frames = [v.rgb_image(r, size) for r in rows]
        duration_ms = max(20, round(1000 * v.step_dt_s * v.n / max(len(rows), 1)))
    out_gif = Path(out_gif)
    out_gif.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out_gif, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return out_gif


def write_preview(dataset_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, n: int = 8,
                  gif: bool = False) -> list[Path]:
    """One contact sheet per device file, one overview per episode, and optionally one GIF per device file."""
    root, out = Path(dataset_dir), Path(out_dir)
    manifest = load_manifest(root)
    by_episode: dict[int, list[tuple[str, Path]]] = {}
    for c in manifest["clients"]:
        for f in c["files"]:
            by_episode.setdefault(int(f["episode"]), []).append((c["client_id"], dataset_file(root, f["path"])))
    written: list[Path] = []
    for ep, files in sorted(by_episode.items()):
        for client_id, path in files:
            written.append(write_contact_sheet(path, out / f"episode_{ep:03d}_{client_id}.png", n=n))
            if gif:
                g = write_gif(path, out / f"episode_{ep:03d}_{client_id}.gif")
                if g is not None:
                    written.append(g)
        written.append(write_overview([p for _, p in files], out / f"episode_{ep:03d}_overview.png"))
    return written
