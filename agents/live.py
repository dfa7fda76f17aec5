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

__all__ = ["LiveSession", "render_tile", "serve", "SHOWN_TASK_ORDER", "LiveServer", "LiveRequestError",
           "HttpLimits"]

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
        """JSON-ready view state: per device its modalities, prediction, latency and audio level."""
        out: dict[str, Any] = {"step_ms": self.step_ms, "steps": self.steps, "devices": {}}
        for dev, f in self.frames.items():
            p = self.predictions.get(dev)
            lvl = float(20 * math.log10(max(1e-6, float(f.audio.rms.mean())))) if f.audio is not None else None
            out["devices"][dev] = {
                "profile": self.agents[dev].profile.name, "step": f.step, "room": f.room,
                "present": list(f.present_modalities()), "modalities": list(self.agents[dev].modalities),
                "audio_dbfs": lvl, "labels_true": dict(f.labels),
                "prediction": p.labels if p else {}, "confidence": p.confidence if p else {},
                "latency_ms": p.latency_ms if p else None, "device_latency_ms": p.device_latency_ms if p else None,
                "skipped": p.skipped if p else False,
                "lux": f.lighting.illuminance_lux if f.lighting is not None else None,
            }
        return out


def render_tile(frame: DeviceFrame, pred: Prediction | None, *, scale: int = 3) -> bytes:
    """PNG: RGB with gaze point and predicted label | depth (false colour) | audio level bar + text lines."""
    from PIL import Image, ImageDraw

    from bridge.preview import DEFAULT_FOV_Y_DEG, project_gaze_px

    h, w = (frame.rgb.shape[:2] if frame.rgb is not None else
            frame.depth_m.shape if frame.depth_m is not None else (64, 64))
    H, W = h * scale, w * scale
    canvas = Image.new("RGB", (2 * W + 24, H + 40), (24, 24, 24))
    d = ImageDraw.Draw(canvas)
    if frame.rgb is not None:
        canvas.paste(Image.fromarray(frame.rgb).resize((W, H), Image.Resampling.NEAREST), (0, 0))
    else:
        d.text((8, H // 2), "rgb absent", fill=(200, 80, 80))
    u, v = W / 2, H / 2
    if frame.gaze is not None and frame.gaze.valid:
        u, v = project_gaze_px(frame.gaze.yaw_rad, frame.gaze.pitch_rad, H, W,
                               frame.camera_fov_y_deg or DEFAULT_FOV_Y_DEG)
    d.ellipse((u - 5, v - 5, u + 5, v + 5), outline=(255, 40, 40), width=2)
    if pred is not None and pred.labels:
        task = next(t for t in SHOWN_TASK_ORDER if t in pred.labels)
        d.text((min(u + 8, W - 80), max(0, v - 6)), f"{pred.labels[task]} {pred.confidence[task]:.2f}",
               fill=(255, 255, 0))
    if frame.depth_m is not None:
        from matplotlib import colormaps

        dm = np.nan_to_num(frame.depth_m, posinf=10.0).clip(0, 10) / 10.0
        rgb = (colormaps["viridis"](dm)[..., :3] * 255).astype(np.uint8)
        canvas.paste(Image.fromarray(rgb).resize((W, H), Image.Resampling.NEAREST), (W + 8, 0))
    else:
        d.text((W + 16, H // 2), "depth absent", fill=(200, 80, 80))
    if frame.audio is not None:
        db = 20 * math.log10(max(1e-6, float(frame.audio.rms.mean())))
        frac = min(1.0, max(0.0, (db + 80) / 80))
        d.rectangle((2 * W + 12, H - int(H * frac), 2 * W + 20, H), fill=(80, 200, 80))
    lat = f"{pred.latency_ms:.1f} ms" if pred is not None and not pred.skipped else "skipped"
    d.text((4, H + 4), f"{frame.device_id} step {frame.step}  {lat}", fill=(230, 230, 230))
    d.text((4, H + 20), "present: " + ",".join(frame.present_modalities()), fill=(160, 160, 160))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def serve(session: LiveSession, *, host: str = "127.0.0.1", port: int = 8765, steps: int | None = None,
          step_hz: float = 5.0, on_ready: Any = None, allowed_hosts: tuple[str, ...] | list[str] = (),
          limits: HttpLimits | None = None, stop: threading.Event | None = None) -> None:
    """Step the scene on the calling thread and serve the viewer until interrupted, ``stop`` is set or ``steps``
    are done. ``on_ready(server)`` gets the running :class:`~agents.live_http.LiveServer` (its ``url``).

    Requests never reach the scene unchecked (:mod:`agents.live_http`); a scene step that fails is not a request's
    doing and ends the loop with its error.
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
            stop.wait(max(0.0, 1.0 / step_hz - (time.perf_counter() - t0)))
