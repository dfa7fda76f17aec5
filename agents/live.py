"""The live loop: scene -> frame -> agent prediction -> back to the scene, and ``xrfed live``'s local web viewer.

:class:`LiveSession` runs any :class:`~bridge.backend.SimBackend` (the embedded scene by default; the Unity path
is the same call with ``make_backend("unity", ...)``) with one :class:`~agents.agent.DeviceAgent` per device. Each
:meth:`LiveSession.step` sends the previous predictions back as :class:`~bridge.backend.ShowPrediction` commands
(with their latency), applies queued controls (:class:`~bridge.backend.SetLighting`,
:class:`~bridge.backend.SetModality`), advances the scene and predicts on every new frame.

The viewer is a local web page (:mod:`agents.live_http`, bound to 127.0.0.1): per device the RGB image with the
gaze point and the predicted label next to it, depth in false colour, the audio level, the prediction and its
latency, refreshed a few times per second, with controls for the lighting and for muting a modality. Its server
treats every request as hostile: framing, sizes, Host and Origin are checked before anything is read whole, and a
control reaches the scene only after :meth:`LiveSession.control` has checked its values.
"""

from __future__ import annotations

import copy
import io
import math
import threading
import time
from typing import Any

import numpy as np

from bridge.backend import SceneCommand, SetLighting, SetModality, ShowPrediction, SimBackend
from bridge.frame import DeviceFrame
from bridge.tasks import MODALITIES

from .agent import AgentConfig, DeviceAgent, Prediction
from .errors import AgentError
from .live_http import MAX_INTENSITY, HttpLimits, LiveRequestError, LiveServer, show
from .model import M3TModel
from .personalize import PersonalizationConfig

__all__ = ["LiveSession", "render_tile", "render_view", "gaze_uv", "serve", "SHOWN_TASK_ORDER", "VIEWS",
           "DEPTH_VIEW_MAX_M", "LiveServer", "LiveRequestError", "HttpLimits"]

#: the task shown next to the gaze point (the first the device runs, in this order)
SHOWN_TASK_ORDER = ("object_recognition", "gesture_recognition", "speech_command", "activity_recognition",
                    "scene_classification", "intent_prediction")


class LiveSession:
    """A backend plus one agent per device; thread-safe controls for the viewer."""

    def __init__(self, backend: SimBackend, model: M3TModel, *, seed: int = 0, learn: bool = False):
        self.backend, self.learn = backend, learn
        self.agents: dict[str, DeviceAgent] = {}
        for d in backend.devices:
            self.agents[d.device_id] = DeviceAgent(copy.deepcopy(model), d.profile, device_id=d.device_id,
                                                   personalization=PersonalizationConfig(method="prompt"),
                                                   config=AgentConfig(seed=seed))
        self.frames: dict[str, DeviceFrame] = backend.reset(seed=seed)
        self.predictions: dict[str, Prediction] = {}
        self._pending: list[SceneCommand] = []
        self._lock = threading.Lock()
        self.step_ms = float("nan")
        self.steps = 0
        self.muted: set[tuple[str, str]] = set()
        self._predict()

    def _predict(self) -> None:
        for dev, frame in self.frames.items():
            self.predictions[dev] = self.agents[dev].predict(frame, learn=self.learn)

    def control(self, *, intensity: float | None = None, lights_on: bool | None = None,
                mute: tuple[str, str] | None = None, unmute: tuple[str, str] | None = None) -> None:
        """Queue scene controls for the next step; each is checked first (:class:`LiveRequestError` names the bad
        one and what is allowed), so a control can never make the scene's step fail."""
        if intensity is not None and (isinstance(intensity, bool) or not isinstance(intensity, (int, float))
                                      or not math.isfinite(intensity) or not 0.0 <= intensity <= MAX_INTENSITY):
            raise LiveRequestError(f"intensity: expected a finite number between 0 and {MAX_INTENSITY:g}, "
                                   f"got {show(intensity)}")
        if lights_on is not None and not isinstance(lights_on, bool):
            raise LiveRequestError(f"lights_on: expected true or false, got {show(lights_on)}")
        for name, pair in (("mute", mute), ("unmute", unmute)):
            if pair is None:
                continue
            if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise LiveRequestError(f"{name}: expected (device, modality), got {show(pair)}")
            if pair[0] not in self.agents:
                raise LiveRequestError(f"{name}: unknown device {show(pair[0])}; devices: {', '.join(self.agents)}")
            if pair[1] not in MODALITIES:
                raise LiveRequestError(f"{name}: unknown modality {show(pair[1])}; modalities: "
                                       f"{', '.join(MODALITIES)}")
        with self._lock:
            if intensity is not None or lights_on is not None:
                self._pending.append(SetLighting(intensity=intensity, lights_on=lights_on))
            if mute is not None:
                self._pending.append(SetModality(mute[0], mute[1], False))
                self.muted.add(mute)
            if unmute is not None:
                self._pending.append(SetModality(unmute[0], unmute[1], True))
                self.muted.discard(unmute)

    @property
    def pending_controls(self) -> int:
        """Controls queued for the next step."""
        with self._lock:
            return len(self._pending)

    def step(self) -> dict[str, Prediction]:
        """Predictions back to the scene, controls in, one scene step, predictions on the new frames."""
        t0 = time.perf_counter()
        cmds: list[SceneCommand] = []
        for dev, p in self.predictions.items():
            if not p.skipped and p.labels:
                task = next(t for t in SHOWN_TASK_ORDER if t in p.labels)
                cmds.append(ShowPrediction(dev, task, p.labels[task], p.confidence[task], p.latency_ms, p.step))
        with self._lock:
            cmds.extend(self._pending)
            self._pending = []
        self.frames = self.backend.step(cmds)
        self._predict()
        self.step_ms = (time.perf_counter() - t0) * 1000
        self.steps += 1
        return self.predictions

    def state(self) -> dict[str, Any]:
        """JSON-ready view state: per device its modalities (its own, present in this frame, muted), prediction,
        latency, audio level (dBFS), illuminance (lux) and where the gaze lands in the RGB image (``gaze_uv``:
        column and row as fractions of the image's width and height, top-left origin; None without valid gaze)."""
        out: dict[str, Any] = {"step_ms": self.step_ms, "steps": self.steps, "devices": {}}
        with self._lock:
            muted = sorted(self.muted)
        for dev, f in self.frames.items():
            p = self.predictions.get(dev)
            lvl = float(20 * math.log10(max(1e-6, float(f.audio.rms.mean())))) if f.audio is not None else None
            out["devices"][dev] = {
                "profile": self.agents[dev].profile.name, "step": f.step, "room": f.room,
                "present": list(f.present_modalities()), "modalities": list(self.agents[dev].modalities),
                "muted": [m for d, m in muted if d == dev],
                "audio_dbfs": lvl, "labels_true": dict(f.labels),
                "prediction": p.labels if p else {}, "confidence": p.confidence if p else {},
                "latency_ms": p.latency_ms if p else None, "device_latency_ms": p.device_latency_ms if p else None,
                "skipped": p.skipped if p else False,
                "lux": f.lighting.illuminance_lux if f.lighting is not None else None,
                "gaze_uv": gaze_uv(f),
                "shown_task": next((t for t in SHOWN_TASK_ORDER if p is not None and t in p.labels), None),
            }
        return out


def gaze_uv(frame: DeviceFrame) -> list[float] | None:
    """Where the frame's gaze lands in its RGB image: [column, row] as fractions of the image's width and height
    (top-left origin; outside [0, 1] when the gaze points off the image), or None without an image or valid gaze."""
    from bridge.preview import DEFAULT_FOV_Y_DEG, project_gaze_px

    if frame.gaze is None or not frame.gaze.valid or frame.rgb is None:
        return None
    h, w = frame.rgb.shape[:2]
    u, v = project_gaze_px(frame.gaze.yaw_rad, frame.gaze.pitch_rad, h, w,
                           frame.camera_fov_y_deg or DEFAULT_FOV_Y_DEG)
    return [u / w, v / h]


#: the images ``render_view`` draws, one per visual modality
VIEWS = ("rgb", "depth")
#: the depth shown as false colour spans 0 to this many metres (farther is drawn as this far)
DEPTH_VIEW_MAX_M = 10.0


def _depth_rgb(depth_m: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    dm = np.nan_to_num(depth_m, nan=DEPTH_VIEW_MAX_M, posinf=DEPTH_VIEW_MAX_M).clip(0, DEPTH_VIEW_MAX_M)
    return (colormaps["viridis"](dm / DEPTH_VIEW_MAX_M)[..., :3] * 255).astype(np.uint8)  # (H, W, 3)


def render_view(frame: DeviceFrame, view: str) -> bytes | None:
    """PNG of one modality's image at the frame's own resolution: ``rgb`` as rendered, ``depth`` in false colour
    (viridis, 0 to :data:`DEPTH_VIEW_MAX_M` m). None when the frame does not carry it (muted, or not on the
    device). The page draws the gaze marker, label and captions over these itself."""
    from PIL import Image

    if view not in VIEWS:
        raise AgentError(f"render_view: expected one of {', '.join(VIEWS)}, got {show(view)}")
    if view == "rgb":
        if frame.rgb is None:
            return None
        img = Image.fromarray(frame.rgb)
    else:
        if frame.depth_m is None:
            return None
        img = Image.fromarray(_depth_rgb(frame.depth_m))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def render_tile(frame: DeviceFrame, pred: Prediction | None, *, scale: int = 3,
                device_modalities: tuple[str, ...] | list[str] | None = None) -> bytes:
    """PNG of one device (a snapshot of what the page shows): RGB with the gaze point (only when the frame carries
    valid gaze) and the predicted label | depth (false colour) | audio level bar, and two caption lines below (device,
    step, latency; the modalities present). A modality the frame lacks is named in its place: "muted" when
    ``device_modalities`` (the device's own) include it, "no <modality> sensor" otherwise."""
    from PIL import Image, ImageDraw

    h, w = (frame.rgb.shape[:2] if frame.rgb is not None else
            frame.depth_m.shape if frame.depth_m is not None else (64, 64))
    H, W = h * scale, w * scale
    width = 2 * W + 24
    d = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    present = frame.present_modalities()
    # caption: fields drawn apart (the default font's space is 2 px wide: "ava-apple_vision_pro step 167" read as
    # one word), the modality list wrapped to the tile's width
    lat = f"latency {pred.latency_ms:.1f} ms" if pred is not None and not pred.skipped else "skipped"
    fields = [frame.device_id, f"step {frame.step}", lat]
    lines = ([(line, 12, (230, 230, 230)) for line in _wrap(d, fields, width - 8, gap=12)]
             + [(line, 5, (160, 160, 160)) for line in _wrap(d, ["present:", *present], width - 8, gap=5)])
    canvas = Image.new("RGB", (width, H + 8 + 14 * len(lines)), (24, 24, 24))
    d = ImageDraw.Draw(canvas)

    def missing(modality: str, x: int) -> None:
        own = device_modalities is None or modality in device_modalities
        d.text((x, H // 2), f"{modality} muted" if own else f"no {modality} sensor",
               fill=(200, 80, 80) if own else (140, 140, 140))

    u, v = W / 2, H / 2
    if frame.rgb is not None:
        canvas.paste(Image.fromarray(frame.rgb).resize((W, H), Image.Resampling.NEAREST), (0, 0))
        uv = gaze_uv(frame)
        if uv is not None:
            u, v = uv[0] * W, uv[1] * H
            d.ellipse((u - 5, v - 5, u + 5, v + 5), outline=(255, 40, 40), width=2)
    else:
        missing("rgb", 8)
    if pred is not None and pred.labels:
        task = next(t for t in SHOWN_TASK_ORDER if t in pred.labels)
        d.text((min(u + 8, W - 80), min(max(0, v - 6), H - 12)), f"{pred.labels[task]} {pred.confidence[task]:.2f}",
               fill=(255, 255, 0))
    if frame.depth_m is not None:
        canvas.paste(Image.fromarray(_depth_rgb(frame.depth_m)).resize((W, H), Image.Resampling.NEAREST), (W + 8, 0))
    else:
        missing("depth", W + 16)
    if frame.audio is not None:
        db = 20 * math.log10(max(1e-6, float(frame.audio.rms.mean())))
        frac = min(1.0, max(0.0, (db + 80) / 80))
        d.rectangle((2 * W + 12, H - int(H * frac), 2 * W + 20, H), fill=(80, 200, 80))
    for i, (line, gap, colour) in enumerate(lines):
        x = 4
        for text in line:
            d.text((x, H + 4 + 14 * i), text, fill=colour)
            x += int(d.textlength(text)) + gap
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def _wrap(d: Any, words: list[str], width_px: int, *, gap: int) -> list[list[str]]:
    """``words`` in lines no wider than ``width_px`` (a word wider than that gets a line of its own)."""
    lines: list[list[str]] = [[]]
    x = 0
    for word in words:
        n = int(d.textlength(word))
        if lines[-1] and x + gap + n > width_px:
            lines.append([])
            x = 0
        x += (gap if lines[-1] else 0) + n
        lines[-1].append(word)
    return lines


def serve(session: LiveSession, *, host: str = "127.0.0.1", port: int = 8765, steps: int | None = None,
          step_hz: float = 5.0, on_ready: Any = None, allowed_hosts: tuple[str, ...] | list[str] = (),
          limits: HttpLimits | None = None, stop: threading.Event | None = None) -> None:
    """Step the scene on the calling thread and serve the viewer until interrupted, ``stop`` is set or ``steps``
    are done. ``on_ready(server)`` gets the running :class:`~agents.live_http.LiveServer` (its ``url``).

    Requests never reach the scene unchecked (:mod:`agents.live_http`); a scene step that fails is not a request's
    doing and ends the loop with its error. Between steps the requests waiting to read the session go first
    (:meth:`~agents.live_http.LiveServer.yield_to_requests`), so the page keeps updating when a step takes longer
    than ``1 / step_hz``.
    """
    if not (isinstance(step_hz, (int, float)) and math.isfinite(step_hz) and step_hz > 0):
        raise AgentError(f"serve: step_hz must be a finite number > 0, got {step_hz!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise AgentError(f"serve: steps must be a whole number >= 0 or None, got {steps!r}")
    lock = threading.Lock()
    stop = stop or threading.Event()
    # The scene steps on THIS thread: an OpenGL context (EGL/OSMesa) is current on the thread that created the
    # renderer, so stepping it from another thread fails. The web server gets a background thread instead.
    with LiveServer(session, host=host, port=port, allowed_hosts=allowed_hosts, limits=limits, lock=lock) as server:
        if on_ready is not None:
            on_ready(server)
        n = 0
        while not stop.is_set() and (steps is None or n < steps):
            t0 = time.perf_counter()
            with lock:
                session.step()
            n += 1
            server.yield_to_requests()
            stop.wait(max(0.0, 1.0 / step_hz - (time.perf_counter() - t0)))
