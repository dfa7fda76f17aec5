"""The live loop: scene -> frame -> agent prediction -> back to the scene, and ``xrfed live``'s local web viewer.

:class:`LiveSession` runs any :class:`~bridge.backend.SimBackend` (the embedded scene by default; the Unity path
is the same call with ``make_backend("unity", ...)``) with one :class:`~agents.agent.DeviceAgent` per device. Each
:meth:`LiveSession.step` sends the previous predictions back as :class:`~bridge.backend.ShowPrediction` commands
(with their latency), applies queued controls (:class:`~bridge.backend.SetLighting`,
:class:`~bridge.backend.SetModality`), advances the scene and predicts on every new frame.

The viewer is a local web page (standard-library ``http.server``, bound to 127.0.0.1): per device the RGB image
with the gaze point and the predicted label next to it, depth in false colour, the audio level, the prediction and
its latency, refreshed a few times per second, with controls for the lighting and for muting a modality.
"""

from __future__ import annotations

import copy
import io
import json
import math
import threading
import time
from typing import Any

import numpy as np

from bridge.backend import SceneCommand, SetLighting, SetModality, ShowPrediction, SimBackend
from bridge.frame import DeviceFrame

from .agent import AgentConfig, DeviceAgent, Prediction
from .model import M3TModel
from .personalize import PersonalizationConfig

__all__ = ["LiveSession", "render_tile", "serve", "SHOWN_TASK_ORDER"]

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
        self.muted: set[tuple[str, str]] = set()
        self._predict()

    def _predict(self) -> None:
        for dev, frame in self.frames.items():
            self.predictions[dev] = self.agents[dev].predict(frame, learn=self.learn)

    def control(self, *, intensity: float | None = None, lights_on: bool | None = None,
                mute: tuple[str, str] | None = None, unmute: tuple[str, str] | None = None) -> None:
        """Queue scene controls for the next step."""
        with self._lock:
            if intensity is not None or lights_on is not None:
                self._pending.append(SetLighting(intensity=intensity, lights_on=lights_on))
            if mute is not None:
                self._pending.append(SetModality(mute[0], mute[1], False))
                self.muted.add(mute)
            if unmute is not None:
                self._pending.append(SetModality(unmute[0], unmute[1], True))
                self.muted.discard(unmute)

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
        return self.predictions

    def state(self) -> dict[str, Any]:
        """JSON-ready view state: per device its modalities, prediction, latency and audio level."""
        out: dict[str, Any] = {"step_ms": self.step_ms, "devices": {}}
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
        canvas.paste(Image.fromarray(frame.rgb).resize((W, H), Image.NEAREST), (0, 0))
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
        canvas.paste(Image.fromarray(rgb).resize((W, H), Image.NEAREST), (W + 8, 0))
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


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>xrfed live</title>
<style>body{font-family:sans-serif;background:#111;color:#ddd}.dev{display:inline-block;margin:6px;
vertical-align:top}img{display:block}button,select{margin:2px}</style></head><body>
<h3>xrfed live <span id="ms"></span></h3>
<div>lighting <button onclick="ctl('intensity=0.1')">dim</button><button onclick="ctl('intensity=1.0')">
normal</button><button onclick="ctl('lights_on=0')">off</button><button onclick="ctl('lights_on=1')">on</button>
&nbsp; mute <select id="dev"></select><select id="mod"><option>audio</option><option>rgb</option>
<option>depth</option><option>gaze</option><option>hands</option><option>imu</option><option>pose</option></select>
<button onclick="m('mute')">mute</button><button onclick="m('unmute')">unmute</button>
&nbsp; keys: d = dim, n = normal, o = lights off, l = lights on</div><div id="grid"></div>
<script>
function ctl(q){fetch('/control?'+q)}
function m(k){ctl(k+'='+encodeURIComponent(document.getElementById('dev').value+':'+document.getElementById('mod').value))}
document.onkeydown=e=>{({d:'intensity=0.1',n:'intensity=1.0',o:'lights_on=0',l:'lights_on=1'})[e.key]&&ctl(({d:'intensity=0.1',n:'intensity=1.0',o:'lights_on=0',l:'lights_on=1'})[e.key])};
async function tick(){try{const s=await (await fetch('/state.json')).json();
document.getElementById('ms').textContent='step '+(s.step_ms||0).toFixed(0)+' ms';
const g=document.getElementById('grid'),sel=document.getElementById('dev');
for(const [id,d] of Object.entries(s.devices)){let e=document.getElementById('d_'+id);
if(!e){e=document.createElement('div');e.className='dev';e.id='d_'+id;e.innerHTML='<img><pre></pre>';g.appendChild(e);
const o=document.createElement('option');o.textContent=id;sel.appendChild(o)}
e.querySelector('img').src='/tile/'+id+'.png?'+Date.now();
e.querySelector('pre').textContent=d.profile+'  lux '+(d.lux||0).toFixed(0)+'  audio '+(d.audio_dbfs===null?'absent':d.audio_dbfs.toFixed(0)+' dBFS')+'\\n'+
Object.entries(d.prediction).map(([t,l])=>t+': '+l+' ('+(d.labels_true[t]||'?')+')').join('\\n')+'\\nlatency '+(d.latency_ms||0).toFixed(1)+' ms (device est. '+(d.device_latency_ms||0).toFixed(1)+' ms)'}}catch(e){}
setTimeout(tick,300)}tick();
</script></body></html>"""


def serve(session: LiveSession, *, host: str = "127.0.0.1", port: int = 8765, steps: int | None = None,
          step_hz: float = 5.0, on_ready: Any = None) -> None:
    """Step the scene on the calling thread and serve the viewer until interrupted (or ``steps`` are done)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlparse

    lock = threading.Lock()
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def _send(self, body: bytes, ctype: str, code: int = 200) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlparse(self.path)
            if url.path == "/":
                return self._send(_PAGE.encode(), "text/html; charset=utf-8")
            if url.path == "/state.json":
                with lock:
                    body = json.dumps(session.state()).encode()
                return self._send(body, "application/json")
            if url.path.startswith("/tile/") and url.path.endswith(".png"):
                dev = url.path[len("/tile/"):-4]
                with lock:
                    f, p = session.frames.get(dev), session.predictions.get(dev)
                    if f is None:
                        return self._send(b"unknown device", "text/plain", 404)
                    return self._send(render_tile(f, p), "image/png")
            if url.path == "/control":
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                try:
                    kw: dict[str, Any] = {}
                    if "intensity" in q:
                        kw["intensity"] = float(q["intensity"])
                    if "lights_on" in q:
                        kw["lights_on"] = q["lights_on"] not in ("0", "false")
                    for k in ("mute", "unmute"):
                        if k in q:
                            dev, _, mod = q[k].partition(":")
                            kw[k] = (dev, mod)
                    session.control(**kw)
                except ValueError as exc:
                    return self._send(str(exc).encode(), "text/plain", 400)
                return self._send(b"ok", "text/plain")
            return self._send(b"not found", "text/plain", 404)

    server = ThreadingHTTPServer((host, port), Handler)
    # The scene steps on THIS thread: an OpenGL context (EGL/OSMesa) is current on the thread that created the
    # renderer, so stepping it from another thread fails. The web server gets the background thread instead.
    web = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    web.start()
    if on_ready is not None:
        on_ready(server.server_address)
    try:
        n = 0
        while not stop.is_set() and (steps is None or n < steps):
            t0 = time.perf_counter()
            with lock:
                session.step()
            n += 1
            stop.wait(max(0.0, 1.0 / step_hz - (time.perf_counter() - t0)))
    finally:
        stop.set()
        server.shutdown()
        web.join(timeout=5)
        server.server_close()
