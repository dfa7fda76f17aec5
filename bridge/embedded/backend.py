"""The embedded headless XR scene: MuJoCo renders, pyroomacoustics sounds, scripted users behave.

``EmbeddedBackend(scenario)`` implements :class:`bridge.backend.SimBackend`. Each step (``1 / scenario.step_hz`` s):

1. scene commands apply (lighting overrides, modality switches, prediction overlays);
2. every avatar's task script advances; its body walks, its head turns (motion.py) -> head pose and IMU;
3. the lighting schedule sets every MuJoCo light (intensity x colour temperature) and the ambient term;
4. the eye model (gaze.py) fixates the script's look targets; the hand model (hands.py) performs gestures;
5. ground truth comes from the physics model: ``mj_ray`` along the pointing ray gives the object under gaze;
6. MuJoCo renders each avatar's egocentric RGB (+ auto-exposure and sensor noise) and metric depth (and, if asked,
   segmentation);
7. each device's microphone array hears its own voice (direct path + room reverb), nearby users' voices and the
   room's machines/alarms through cached room impulse responses, streamed block by block;
8. each device keeps only the modalities its profile has and that no event has dropped -> :class:`DeviceFrame`.

Deterministic under a seed: every random stream derives from ``numpy.random.SeedSequence(seed)``.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backend import DeviceInfo, SceneCommand, SetLighting, SetModality, ShowPrediction, SimBackend
from ..devices import DeviceProfile, get_device
from ..errors import BackendError
from ..frame import Audio, DeviceFrame, Gaze, Hands, Imu, LightingState, Pose
from ..scenario import EVENT_KINDS, Scenario, load_scenario
from ..tasks import MODALITIES, TASKS
from .hands import VIEW_SEGMENTS
from .lighting import LightingSchedule, RoomLight, cct_to_rgb
from .motion import AvatarMotion, ScriptRunner, SegmentPlan, matrix_to_quat
from .views import FrustumCuller, RenderedView, no_images, render_view

if TYPE_CHECKING:
    import mujoco

__all__ = ["EmbeddedBackend", "EmbeddedStats"]

_FWD = np.array([1.0, 1.0, -1.0])  # OpenXR head frame (-z forward) <-> the sensing models' +z-forward frame
_SPEED_OF_SOUND = 343.0
_P_REF = 20e-6  # Pa, 0 dB SPL; audio full scale 1.0 == 1 Pa (94 dB SPL)
_SPEECH_DB_1M = 60.0
_MIC_NOISE_RMS = 6e-4  # ~30 dB SPL self-noise of MEMS microphones
_GESTURE_S = 1.4
_GESTURE_GAP_S = 0.4
_HEARING_RANGE_M = 6.0
_SMALL_VIEW_PX = 256 * 256  # up to this many pixels per image, render in the calling thread (see _build)


def _spl_gain(db: float) -> float:
    """Amplitude for a source so that it reaches ``db`` SPL at 1 m through a 1/(4 pi r) impulse response."""
    return _P_REF * 10 ** (db / 20) * 4 * math.pi


@dataclass
class EmbeddedStats:
    steps: int = 0
    frames: int = 0
    render_s: float = 0.0
    audio_s: float = 0.0
    wait_s: float = 0.0  # time the stepping thread waited for the render process or its worker threads
    other_s: float = 0.0
    ir_hits: int = 0
    ir_misses: int = 0
    overlays: dict[str, ShowPrediction] = field(default_factory=dict)


@dataclass
class _Avatar:
    index: int
    device_id: str
    profile: DeviceProfile
    runner: ScriptRunner
    motion: AvatarMotion
    gaze: Any
    hands: Any
    rng: np.random.Generator
    segment: SegmentPlan | None = None
    seg_t: float = 0.0
    disabled: set[str] = field(default_factory=set)
    speech: list[tuple[int, np.ndarray, str]] = field(default_factory=list)  # (start sample, waveform, word)
    voice: Any = None
    listener: Any = None
    ae_gain: float = 1.0
    gyro_bias: np.ndarray = field(default_factory=lambda: np.zeros(3))
    accel_bias: np.ndarray = field(default_factory=lambda: np.zeros(3))
    fixated: int = -1
    last_hands: tuple[np.ndarray, np.ndarray] | None = None
    noise_table: np.ndarray | None = None


class EmbeddedBackend(SimBackend):
    """xrfed's own headless scene (see the module docstring)."""

    name = "embedded"

    def __init__(self, scenario: str | Scenario = "default", *, seed: int = 0, render_size: tuple[int, int] | None = None,
                 gl: str | None = None, segmentation: bool | None = None, audio: bool = True,
                 max_avatars: int | None = None, render_process: bool | None = None):
        super().__init__()
        sc = load_scenario(scenario)
        kw: dict[str, Any] = {}
        if render_size is not None:
            kw.update(height_px=int(render_size[0]), width_px=int(render_size[1]))
        if gl is not None:
            kw["gl"] = gl
        if segmentation is not None:
            kw["segmentation"] = segmentation
        if render_process is not None:
            kw["process"] = "on" if render_process else "off"
        if kw:
            sc = sc.with_render(**kw)
        if max_avatars is not None:
            import dataclasses
            sc = dataclasses.replace(sc, avatars=sc.avatars[:max_avatars])
        self.scenario = sc
        self.seed = seed
        self.audio_enabled = audio
        self.stats = EmbeddedStats()
        self._devices = tuple(DeviceInfo(f"{a.name}-{a.device}", a.name, a.device) for a in sc.avatars)
        self._model: mujoco.MjModel | None = None
        self._data: mujoco.MjData | None = None
        self._renderer: mujoco.Renderer | None = None
        self._rproc: Any = None
        self._cull: FrustumCuller | None = None
        self._avatars: list[_Avatar] = []
        self._executor: ThreadPoolExecutor | None = None
        self.last_views: list[RenderedView] = []  # this step's renders, in avatar order (for ``xrfed bench sim``)
        self._prep_executor: ThreadPoolExecutor | None = None
        self._t = 0.0
        self._k = 0

    # -- SimBackend -------------------------------------------------------------------------------------
    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        return self._devices

    @property
    def step_dt_s(self) -> float:
        return self.scenario.step_dt_s

    @property
    def model(self) -> mujoco.MjModel | None:
        """The compiled ``mujoco.MjModel`` (None before the first reset)."""
        return self._model

    @property
    def data(self) -> mujoco.MjData | None:
        """The scene's ``mujoco.MjData`` (None before the first reset)."""
        return self._data

    def _sim(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        """The compiled model and its data; the scene is built by the first reset."""
        if self._model is None or self._data is None:
            raise BackendError("the embedded scene is not built yet: call reset() before stepping")
        return self._model, self._data

    def _build(self) -> None:
        from .gl import ensure_mujoco_context, select_gl

        self.gl_backend = select_gl(self.scenario.render.gl)
        r = self.scenario.render
        if r.width_px * r.height_px <= _SMALL_VIEW_PX and "LP_NUM_THREADS" not in os.environ:
            # Mesa's software rasterizer (llvmpipe) splits each image into 64x64 tiles across worker threads. For
            # headset-sized sensor images that hand-off costs more than it saves (a 128x128 RGB + depth render takes
            # 3.0 ms in the calling thread vs 3.7 ms with 2 threads, measured) and it would take the second core
            # from the audio and post-processing workers. Read once, when the first GL context is made; set
            # LP_NUM_THREADS yourself to override.
            os.environ["LP_NUM_THREADS"] = "0"
        import mujoco

        ensure_mujoco_context(self.gl_backend)

        from .mjcf import build_mjcf, index_model

        self._mj = mujoco
        xml = build_mjcf(self.scenario)
        self._model = mujoco.MjModel.from_xml_string(xml)
        self._data = mujoco.MjData(self._model)
        # Ray casts run on the prepare worker while the main thread renders; MuJoCo functions use MjData's scratch
        # stack, so the worker gets its own copy of the step's state.
        self._ray_data = mujoco.MjData(self._model)
        # ... and its own copy of the model: the renderer hides culled geoms by zeroing their alpha for the length of
        # one ``update_scene``, and ``mj_ray`` skips geoms with alpha 0.
        self._ray_model = copy.deepcopy(self._model)
        self._index = index_model(self._model, self.scenario)
        cull = r.cull and not (r.shadows or r.reflections)
        use_process = {"on": True, "off": False}.get(r.process, (os.cpu_count() or 1) >= 2)
        if use_process:
            from .render_proc import RenderProcess

            self._rproc = RenderProcess(xml, r.height_px, r.width_px, len(self.scenario.avatars), cull=cull)
        else:
            self._renderer = self._new_renderer()
        self._scene_opt = mujoco.MjvOption()
        self._base_light = np.array(self._model.light_diffuse).copy()
        self._obj_centres = np.array([self._object_centre(i) for i in range(len(self.scenario.objects))]).reshape(-1, 3)
        self._zfar = float(self._model.vis.map.zfar * self._model.stat.extent)
        self._cull = FrustumCuller(self._model, r.width_px / r.height_px) if cull else None

    def _new_renderer(self) -> Any:
        r = self.scenario.render
        try:
            return self._mj.Renderer(self._model, r.height_px, r.width_px)
        except Exception as exc:  # mujoco raises plain exceptions for GL failures
            raise BackendError(f"could not create a {self.gl_backend} renderer: {exc}") from exc

    def bare_renderer(self) -> Any:
        """A ``mujoco.Renderer`` of this scene in this process (the benchmark's bare loop uses it; the backend's own
        renders may happen in the render process)."""
        if self._renderer is None:
            self._renderer = self._new_renderer()
        return self._renderer

    @property
    def render_process(self) -> bool:
        """Whether this backend renders in a child process (``render.process``)."""
        return self._rproc is not None

    @property
    def cull_stats(self) -> tuple[int, int]:
        """(geoms culled, geoms kept), summed over every view rendered so far."""
        if self._rproc is not None:
            return self._rproc.culled, self._rproc.kept
        return (self._cull.culled, self._cull.kept) if self._cull is not None else (0, 0)

    def _object_centre(self, i: int) -> np.ndarray:
        from .mjcf import CATEGORY_PARTS

        o = self.scenario.objects[i]
        room = self.scenario.room(o.room)
        x, y = room.to_world(o.pos_m[:2])
        z0 = o.pos_m[2] if len(o.pos_m) == 3 else 0.0
        size = o.size_m or CATEGORY_PARTS[o.category][0]
        return np.array([x, y, z0 + 0.6 * size[2]])

    def _reset(self, *, seed: int | None, options: dict[str, Any]) -> dict[str, DeviceFrame]:
        if seed is not None:
            self.seed = int(seed)
        if self._model is None:
            self._build()
        from .gaze import GazeModel, GazeUserTraits
        from .hands import HandAnimator

        self._mj.mj_resetData(self._model, self._data)
        ss = np.random.SeedSequence(self.seed)
        self._rng = np.random.default_rng(ss.spawn(1)[0])
        children = ss.spawn(len(self.scenario.avatars) + 1)[1:]
        self._lighting = LightingSchedule(self.scenario)
        self._t, self._k = 0.0, 0
        self.stats = EmbeddedStats()
        self._avatars = []
        for i, (av, dev, child) in enumerate(zip(self.scenario.avatars, self._devices, children, strict=True)):
            streams = [np.random.default_rng(s) for s in child.spawn(5)]
            prof = get_device(av.device)
            room = self.scenario.room(av.start_room)
            et = prof.eye_tracker
            gaze = GazeModel(
                rng=streams[0],
                traits=GazeUserTraits(bias_yaw_deg=av.user.gaze_bias_deg[0], bias_pitch_deg=av.user.gaze_bias_deg[1],
                                      blink_rate_per_min=av.user.blink_rate_per_min),
                accuracy_deg=et.accuracy_deg if et else 2.0, precision_deg=et.precision_deg if et else 0.5,
                rate_hz=et.rate_hz if et else 60.0,
            )
            cam = prof.camera
            hands = HandAnimator(rng=streams[1], handedness=av.user.handedness, hand_scale=av.user.hand_scale,
                                 gesture_duration_s=_GESTURE_S,
                                 fov_deg=(cam.fov_h_deg, cam.fov_v_deg) if cam else (90.0, 90.0))
            a = _Avatar(index=i, device_id=dev.device_id, profile=prof,
                        runner=ScriptRunner(self.scenario, av, streams[2]),
                        motion=AvatarMotion(av, room.to_world(av.start_pos_m), streams[3]), gaze=gaze, hands=hands,
                        rng=streams[4])
            a.gyro_bias = a.rng.normal(0, math.radians(0.2), 3)
            a.accel_bias = a.rng.normal(0, 0.02, 3)
            self._avatars.append(a)
        self._audio = _AudioScene(self, self._rng) if self.audio_enabled else None
        return self._advance(())

    def _step(self, commands: tuple[SceneCommand, ...]) -> dict[str, DeviceFrame]:
        return self._advance(commands)

    def _close(self) -> None:
        for ex in (self._executor, self._prep_executor):
            if ex is not None:
                ex.shutdown(wait=True)
        self._executor = self._prep_executor = None
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self._rproc is not None:
            self._rproc.close()
            self._rproc = None

    # -- the step ---------------------------------------------------------------------------------------
    def _apply(self, commands: tuple[SceneCommand, ...]) -> None:
        by_id = {a.device_id: a for a in self._avatars}
        for c in commands:
            if isinstance(c, SetLighting):
                if c.room is not None:
                    self.scenario.room(c.room)  # validates the name
                self._lighting.set_override(c.room, intensity=c.intensity, color_temperature_k=c.color_temperature_k,
                                            lights_on=c.lights_on)
            elif isinstance(c, SetModality):
                if c.device_id not in by_id:
                    raise BackendError(f"SetModality: unknown device {c.device_id!r}; known: {', '.join(by_id)}")
                if c.modality not in MODALITIES:
                    raise BackendError(f"SetModality: unknown modality {c.modality!r}; allowed: {', '.join(MODALITIES)}")
                (by_id[c.device_id].disabled.discard if c.enabled else by_id[c.device_id].disabled.add)(c.modality)
            elif isinstance(c, ShowPrediction):
                self.stats.overlays[c.device_id] = c
            else:
                raise BackendError(f"unknown scene command {c!r}")

    def _advance(self, commands: tuple[SceneCommand, ...]) -> dict[str, DeviceFrame]:
        t0 = time.perf_counter()
        self._apply(commands)
        dt = self.step_dt_s
        first = self._k == 0 and self._t == 0.0
        t_end = self._t + (0.0 if first else dt)
        mj, (m, d) = self._mj, self._sim()
        # 2. scripts + motion
        for a in self._avatars:
            if a.segment is None or a.seg_t >= a.segment.duration_s:
                room = self._room_of(a)
                a.segment = a.runner.next_segment(tuple(a.motion.xy), room)
                a.seg_t = 0.0
                a.motion.set_segment(a.segment)
                self._schedule_speech(a)
            look = self._obj_centres[a.fixated] if a.fixated >= 0 else (
                self._obj_centres[a.segment.look_at[0]] if a.segment.look_at else None)
            pos, R, f_head, w_head = a.motion.step(dt if not first else 1e-3, look)
            a.seg_t += 0 if first else dt
            d.mocap_pos[self._index.head_mocap[a.index]] = pos
            d.mocap_quat[self._index.head_mocap[a.index]] = matrix_to_quat(R)
            # The torso hangs behind the eyes (the neck pivots ~10 cm behind them), so looking down does not fill
            # the view with one's own chest.
            yaw = a.motion.head_yaw
            d.mocap_pos[self._index.torso_mocap[a.index]] = [pos[0] - 0.28 * math.cos(yaw), pos[1] - 0.28 * math.sin(yaw),
                                                             max(0.0, pos[2] - 1.58)]
            d.mocap_quat[self._index.torso_mocap[a.index]] = [math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]
            a._imu = (f_head, w_head)  # type: ignore[attr-defined]
        mj.mj_forward(m, d)
        mj.mj_copyData(self._ray_data, m, d)
        self._t = t_end
        # 3. lighting per room
        room_light = {r.name: self._lighting.at(r.name, self._t) for r in self.scenario.rooms}
        for li, lid in enumerate(self._index.light):
            rl = room_light[self._index.light_room[li]]
            scale = self.scenario.lights[li].intensity * rl.intensity
            m.light_diffuse[lid] = self._base_light[lid] * scale * cct_to_rgb(rl.color_temperature_k)
        self.last_views = []
        if self._rproc is not None:
            frames, render_s, wait_s = self._images_in_child(room_light)
        else:
            frames, render_s, wait_s = self._images_in_process(room_light)
        self._k += 1
        self.stats.steps += 1
        self.stats.frames += len(frames)
        self.stats.render_s += render_s
        self.stats.wait_s += wait_s
        in_this_thread = render_s if self._rproc is None else 0.0
        self.stats.other_s += time.perf_counter() - t0 - in_this_thread - wait_s
        return frames

    def _images_in_child(self, room_light: Mapping[str, RoomLight]) -> tuple[dict[str, DeviceFrame], float, float]:
        """The step with a render process: this thread does all the Python work in one sequence while the child
        rasterizes. Each view goes out as soon as its hands are posed; audio and labels are computed while the child
        renders; frames are finished in avatar order as their images arrive."""
        rp = self._rproc
        assert rp is not None
        (m, d), avatars = self._sim(), self._avatars
        rp.begin_step(d.qpos, d.mocap_pos, d.mocap_quat, m.light_diffuse)
        render0 = rp.render_s
        prepared: list[tuple[dict[str, Any], RenderedView | None]] = []
        for i, a in enumerate(avatars):
            p = self._prepare_view(a, room_light)
            v = p["view"] = self._view(a, p)
            if v is not None:
                rp.submit(i, v)
                self.last_views.append(v)
            prepared.append((p, v))
        audio, audio_s = self._timed_audio(self._k) if self._audio is not None else ({}, 0.0)
        self.stats.audio_s += audio_s
        fields = []
        for a, (p, _v) in zip(avatars, prepared, strict=True):
            self._prepare_labels(a, p)
            fields.append(self._frame_fields(a, p, audio.get(a.device_id)))
        frames, wait_s = {}, 0.0
        for i, (a, (p, v)) in enumerate(zip(avatars, prepared, strict=True)):
            w0 = time.perf_counter()
            images = rp.wait(i, v) if v is not None else no_images()
            wait_s += time.perf_counter() - w0
            frames[a.device_id] = self._finish(a, p, images, fields[i])
        return frames, rp.render_s - render0, wait_s

    def _images_in_process(self, room_light: Mapping[str, RoomLight]) -> tuple[dict[str, DeviceFrame], float, float]:
        """The step without a render process: this thread does nothing but OpenGL (MuJoCo's renderer releases the GIL
        while it rasterizes) and two workers do the rest:
        * audio for every avatar (only touches audio state: its own random streams, caches, speech queues);
        * on one FIFO worker: first every avatar's hands + events (the render draws the hands), then per avatar gaze +
          ray-cast labels (while it renders) and, after its render, exposure, depth clean-up and the validated
          DeviceFrame (once the audio is in).
        Each avatar's state is touched by one job at a time and every avatar has its own random streams, so results do
        not depend on the interleaving."""
        pool, avatars = self._prep_pool(), self._avatars
        before = [pool.submit(self._prepare_view, a, room_light) for a in avatars]
        audio_job = self._pool().submit(self._timed_audio, self._k) if self._audio is not None else None
        finished = []
        render_s = 0.0
        for i, a in enumerate(avatars):
            p = before[i].result()
            pool.submit(self._prepare_labels, a, p)
            r0 = time.perf_counter()
            v = p["view"] = self._view(a, p)
            images = self._draw(v) if v is not None else no_images()
            if v is not None:
                self.last_views.append(v)
            render_s += time.perf_counter() - r0
            finished.append(pool.submit(self._finish_after_audio, a, p, images, audio_job))
        t2 = time.perf_counter()
        frames = {a.device_id: f.result() for a, f in zip(avatars, finished, strict=True)}
        self.stats.audio_s += audio_job.result()[1] if audio_job is not None else 0.0
        return frames, render_s, time.perf_counter() - t2

    def _timed_audio(self, k: int) -> tuple[dict[str, np.ndarray], float]:
        t = time.perf_counter()
        out = self._audio.step(k)  # type: ignore[union-attr]
        return out, time.perf_counter() - t

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xrfed-audio")
        return self._executor

    def _prep_pool(self) -> ThreadPoolExecutor:
        if self._prep_executor is None:
            self._prep_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xrfed-prep")
        return self._prep_executor

    def _room_of(self, a: _Avatar) -> str:
        r = self.scenario.room_at(*a.motion.xy)
        return r.name if r is not None else self.scenario.avatars[a.index].start_room

    def _schedule_speech(self, a: _Avatar) -> None:
        """Queue this segment's spoken commands (absolute sample times)."""
        if self._audio is None or a.segment is None:
            return
        hz = self.scenario.audio_hz
        base = int(round(self._t * hz))
        for off_s, word in a.segment.commands:
            wav = self._audio.voice(a).say(word)
            a.speech.append((base + int(off_s * hz), wav, word))

    def _prepare_view(self, a: _Avatar, room_light: Mapping[str, RoomLight]) -> dict[str, Any]:
        """What the render of one avatar needs: its room and light, the modality events in force, and the hands
        (drawn into the view). Worker thread."""
        seg = a.segment
        assert seg is not None
        room = self._room_of(a)
        events = {e.kind for e in self.scenario.modality_events
                  if e.avatar == self.scenario.avatars[a.index].name and e.start_s <= self._t < e.end_s}
        out: dict[str, Any] = {"room": room, "light": room_light[room], "pos": a.motion.position.copy(),
                               "R": a.motion.R.copy(), "events": events}
        # hands: the current gesture from the segment timeline (gesture, gap, gesture, ...)
        gesture = "none"
        if seg.gestures and not a.motion.walking:
            k = int(a.seg_t // (_GESTURE_S + _GESTURE_GAP_S))
            within = a.seg_t - k * (_GESTURE_S + _GESTURE_GAP_S)
            if k < len(seg.gestures) and within < _GESTURE_S:
                gesture = seg.gestures[k]
        joints, valid = a.hands.step(self.step_dt_s, gesture)
        a.last_hands = (np.asarray(joints, np.float32) * _FWD.astype(np.float32), np.asarray(valid, bool))
        out["gesture"] = gesture
        return out

    def _prepare_labels(self, a: _Avatar, out: dict[str, Any]) -> None:
        """Eye gaze and the ray-cast ground truth of one avatar, into ``out``. Worker thread, while the avatar
        renders: pure Python plus ``mj_ray`` on its own copy of the step's state (``_ray_data``)."""
        mj = self._mj
        seg = a.segment
        assert seg is not None
        pos, R, rl = out["pos"], out["R"], out["light"]
        # gaze targets: the script's look targets (the upcoming interaction weighted up), in the +z-forward head frame
        look = list(seg.look_at)
        weights = [3.0 if (seg.interact is not None and i == seg.interact) else 1.0 for i in look]
        if not look:
            look = [i for i, o in enumerate(self.scenario.objects) if o.room == out["room"]][:4]
            weights = [1.0] * len(look)
        pts_world = self._obj_centres[look] if look else np.zeros((0, 3))
        pts_head = ((pts_world - pos) @ R) * _FWD
        luminance = rl.illuminance_lux * 0.25 / math.pi
        g = a.gaze.step(self.step_dt_s, targets_head=pts_head, weights=np.array(weights) if look else None,
                        luminance_cd_m2=luminance)
        a.fixated = look[g.target_index] if 0 <= g.target_index < len(look) else -1
        out["gaze"] = g
        # ground truth: the pointing ray (eye gaze when tracked and valid, else head gaze = view centre)
        use_eye = a.profile.has_eye_tracking and g.valid and "gaze" not in self._dropped(a, out["events"])
        dir_head = g.true_dir_head * _FWD if use_eye else np.array([0.0, 0.0, -1.0])
        dir_world = R @ dir_head
        geomid = np.array([-1], dtype=np.int32)
        dist = mj.mj_ray(self._ray_model, self._ray_data, pos, dir_world, None, 1, self._index.head_body[a.index], geomid)
        obj = int(self._index.geom_object[geomid[0]]) if geomid[0] >= 0 else -1
        out["pointed_object"] = obj
        out["gaze_hit_m"] = float(dist) if dist >= 0 else None

    def _view(self, a: _Avatar, p: dict[str, Any]) -> RenderedView | None:
        """What to render for one avatar this step (None: no camera image at all)."""
        if not ("rgb" in a.profile.modalities or "depth" in a.profile.modalities or self.scenario.render.segmentation):
            return None
        has = set(a.profile.modalities) - self._dropped(a, p["events"])
        ambient = 0.04 + 0.10 * min(1.0, p["light"].intensity)
        return RenderedView(self._index.camera[a.index], ambient, "rgb" in has, "depth" in has,
                            self.scenario.render.segmentation, self._hand_capsules(a))

    def _draw(self, v: RenderedView) -> dict[str, np.ndarray | None]:
        """Render one view in this process (the GL context lives in this thread)."""
        return render_view(self._mj, self._renderer, self._data, v, self._scene_opt, culler=self._cull)

    def _finish_after_audio(self, a: _Avatar, p: dict[str, Any], images: dict[str, np.ndarray | None],
                            audio_job: Future[tuple[dict[str, np.ndarray], float]] | None) -> DeviceFrame:
        audio = audio_job.result()[0] if audio_job is not None else {}
        return self._finish(a, p, images, self._frame_fields(a, p, audio.get(a.device_id)))

    def _noise_offset(self, a: _Avatar, n: int) -> int:
        """Where this frame's sensor noise starts in the avatar's noise table (drawn before the image exists, so
        the random streams are consumed in the same order whether the image is rendered here or in the child)."""
        table = a.noise_table
        if table is None or table.size < 2 * n:
            # A per-device table of unit Gaussian noise read at a random offset each frame: the same statistics as
            # fresh draws at a fraction of the cost (drawing 50k normals per frame was a third of the overhead).
            table = a.noise_table = a.rng.standard_normal(8 * n, dtype=np.float32)
        return int(a.rng.integers(0, table.size - n))

    def _finish(self, a: _Avatar, p: dict[str, Any], images: dict[str, np.ndarray | None],
                fields: dict[str, Any]) -> DeviceFrame:
        """Exposure and sensor noise, depth clean-up, segmentation ids, then the validated frame."""
        noise_offset = fields.pop("_noise_offset")
        rgb = self._expose(a, images["rgb"], noise_offset) if images["rgb"] is not None else None
        depth = images["depth"]
        if depth is not None:
            depth[depth >= self._zfar * 0.999] = np.inf
        seg = None
        if images["seg"] is not None:
            seg_img = images["seg"]
            ids = seg_img[..., 0]
            is_geom = seg_img[..., 1] == int(self._mj.mjtObj.mjOBJ_GEOM)
            lut = self._index.geom_object
            seg = np.where(is_geom & (ids >= 0), lut[np.clip(ids, 0, len(lut) - 1)], -1).astype(np.int32)
        return DeviceFrame(rgb=rgb, depth_m=depth if fields.pop("_has_depth") else None, segmentation=seg, **fields)

    def _dropped(self, a: _Avatar, events: set[str]) -> set[str]:
        return {EVENT_KINDS[e] for e in events} | a.disabled

    def _hand_capsules(self, viewer: _Avatar) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """The wearer's raised hands as capsules in the world frame (:data:`~bridge.embedded.hands.VIEW_SEGMENTS`),
        each ``(radius_m, end_a, end_b)``. Only the wearer's own hands are drawn: other users' hands are rarely more
        than a few pixels at these resolutions."""
        if viewer.last_hands is None or not viewer.last_hands[1].any():
            return []
        joints, valid = viewer.last_hands  # [2, 26, 3] OpenXR head frame
        R, p = viewer.motion.R, viewer.motion.position
        # Elementwise rather than ``joints @ R.T``: BLAS may pick another kernel (threads, alignment) from one process
        # to the next, and a last-bit change of a capsule end flips silhouette pixels; this stays bit-reproducible.
        j = joints.astype(np.float64)
        world = j[..., 0:1] * R[:, 0] + j[..., 1:2] * R[:, 1] + j[..., 2:3] * R[:, 2] + p  # [2, 26, 3]
        return [(radius, world[h, i], world[h, k]) for h in range(2) if valid[h] for (i, k), radius in VIEW_SEGMENTS]

    def _expose(self, a: _Avatar, rgb: np.ndarray, off: int) -> np.ndarray:
        """Auto-exposure with lag and a gain cap, plus gain-dependent sensor noise: dark scenes come out darker
        *and* noisier, as on real headsets."""
        luma = float(rgb[::4, ::4].mean()) + 1.0
        target = min(4.0, max(0.7, (110.0 / luma) ** 0.5))
        a.ae_gain += (target - a.ae_gain) * 0.3
        noise_sd = 1.0 + 2.5 * a.ae_gain
        n = rgb.size
        table = a.noise_table
        assert table is not None
        img = rgb.astype(np.float32)
        img *= a.ae_gain
        img += table[off:off + n].reshape(rgb.shape) * np.float32(noise_sd)
        np.clip(img, 0, 255, out=img)
        return img.astype(np.uint8)

    def _frame_fields(self, a: _Avatar, p: dict[str, Any], audio_block: np.ndarray | None) -> dict[str, Any]:
        """Everything of the avatar's DeviceFrame but its images (computed while the images render)."""
        prof = a.profile
        dropped = self._dropped(a, p["events"])
        has = set(prof.modalities) - dropped
        v: RenderedView | None = p.get("view")
        noise_offset = None
        if v is not None and v.rgb:
            r = self.scenario.render
            noise_offset = self._noise_offset(a, r.height_px * r.width_px * 3)
        g = p["gaze"]
        gaze = None
        if "gaze" in has:
            depth = p["gaze_hit_m"] if p["gaze_hit_m"] is not None else g.vergence_depth_m
            gaze = Gaze(g.yaw_rad, g.pitch_rad, np.asarray(g.origin_m) * _FWD, min(depth, 1e4), g.pupil_diameter_mm,
                        g.valid, g.confidence)
        imu = None
        if "imu" in has:
            f_head, w_head = a._imu  # type: ignore[attr-defined]
            bw = math.sqrt(self.scenario.step_hz / 2)
            acc = f_head + a.accel_bias + a.rng.normal(0, 160e-6 * 9.81 * bw, 3)
            gyr = w_head + a.gyro_bias + a.rng.normal(0, math.radians(0.007) * bw, 3)
            imu = Imu(acc, gyr)
        pose = Pose(p["pos"], matrix_to_quat(p["R"])) if "pose" in has else None
        hands = None
        if "hands" in has and a.last_hands is not None:
            hands = Hands(a.last_hands[0], a.last_hands[1])
        audio = None
        if "audio" in has and audio_block is not None:
            audio = Audio(audio_block, self.scenario.audio_hz)
        rl: RoomLight = p["light"]
        seg = a.segment
        assert seg is not None
        obj = p["pointed_object"]
        labels = {
            "object_recognition": self.scenario.objects[obj].category if obj >= 0 else "background",
            "gesture_recognition": p["gesture"],
            "scene_classification": self.scenario.room(p["room"]).type,
            "speech_command": self._audio.word_at(a, self._k) if self._audio is not None else "none",
            "activity_recognition": a.motion.current_activity,
            "intent_prediction": self.scenario.objects[seg.interact].category if seg.interact is not None else "none",
        }
        return dict(
            device_id=a.device_id, user_id=self.scenario.avatars[a.index].name, profile=prof.name,
            step=self._k, sim_time_s=self._t, wall_time_ns=time.time_ns(), gaze=gaze,
            audio=audio, head_pose=pose, imu=imu, hands=hands,
            lighting=LightingState(rl.intensity, rl.illuminance_lux, rl.color_temperature_k, rl.lights_on),
            camera_fov_y_deg=float(self._sim()[0].cam_fovy[self._index.camera[a.index]]),
            labels=labels, active_tasks=seg.tasks or tuple(TASKS), room=p["room"], events=tuple(sorted(p["events"])),
            _noise_offset=noise_offset, _has_depth="depth" in has,
        )


class _AudioScene:
    """Per-step audio for every device: voices, machines, alarms, through cached room impulse responses."""

    def __init__(self, backend: EmbeddedBackend, rng: np.random.Generator):
        from .acoustics import ListenerStream, RoomAcoustics, rt60_for_room_type
        from .voice import AlarmSource, HumSource

        self.b = backend
        sc = backend.scenario
        self.hz = sc.audio_hz
        self.n = int(round(sc.audio_hz / sc.step_hz))
        self.rooms = {
            r.name: RoomAcoustics(size_m=r.size_m, rt60_s=r.rt60_s or rt60_for_room_type(r.type), sample_rate_hz=self.hz)
            for r in sc.rooms
        }
        self.sources: dict[str, tuple[str, np.ndarray, Any, float]] = {}  # id -> (room, pos room frame, source, gain)
        for i, o in enumerate(sc.objects):
            if o.sound is None:
                continue
            room = sc.room(o.room)
            c = backend._obj_centres[i]
            pos_room = np.array([c[0] - room.origin_m[0], c[1] - room.origin_m[1], c[2]])
            if o.sound.kind == "hum":
                src: Any = HumSource(mains_hz=o.sound.freq_hz or 50.0, level=1.0, rng=np.random.default_rng(rng.integers(2**31)),
                                      sample_rate_hz=self.hz)
            else:
                src = AlarmSource(freq_hz=o.sound.freq_hz or 2000.0, on_s=o.sound.on_s, off_s=o.sound.off_s, level=1.0,
                                  sample_rate_hz=self.hz)
            self.sources[f"obj{i}"] = (o.room, pos_room, src, _spl_gain(o.sound.level_db))
        self.listeners: dict[str, Any] = {}
        for a in backend._avatars:
            mic = a.profile.microphones
            if mic is None or "audio" not in a.profile.modalities:
                continue
            a.listener = ListenerStream(channels=mic.count, block_len=self.n, max_ir_len=int(0.5 * self.hz),
                                        sensor_noise_rms=_MIC_NOISE_RMS, rng=np.random.default_rng(rng.integers(2**31)))
            a._own_ir = self._own_voice_ir(a)  # type: ignore[attr-defined]
        self._voices: dict[int, Any] = {}

    def voice(self, a: _Avatar) -> Any:
        from .voice import Voice

        if a.index not in self._voices:
            u = self.b.scenario.avatars[a.index].user
            self._voices[a.index] = Voice(pitch_hz=u.voice_pitch_hz, rate_wpm=u.speech_rate_wpm, sample_rate_hz=self.hz,
                                          rng_seed=a.index)
        return self._voices[a.index]

    def _own_voice_ir(self, a: _Avatar) -> np.ndarray:
        """Direct path from the mouth (5 cm below, 8 cm in front of the eyes) to each microphone: delay + 1/(4 pi r)."""
        mics = a.profile.microphones.positions_head_m()  # type: ignore[union-attr]
        mouth = np.array([0.0, -0.09, -0.08])
        r = np.linalg.norm(mics - mouth, axis=1)
        taps = np.rint(r / _SPEED_OF_SOUND * self.hz).astype(int)
        ir = np.zeros((len(mics), int(taps.max()) + 2), dtype=np.float32)
        ir[np.arange(len(mics)), taps] = 1.0 / (4 * math.pi * r)
        return ir

    def speech_block(self, a: _Avatar, step: int) -> np.ndarray | None:
        s0, s1 = step * self.n, (step + 1) * self.n
        out = None
        keep = []
        for start, wav, word in a.speech:
            end = start + len(wav)
            if end <= s0:
                continue
            keep.append((start, wav, word))
            if start >= s1:
                continue
            if out is None:
                out = np.zeros(self.n, dtype=np.float32)
            lo, hi = max(s0, start), min(s1, end)
            out[lo - s0:hi - s0] += wav[lo - start:hi - start]
        a.speech = keep
        return None if out is None else out * np.float32(_spl_gain(_SPEECH_DB_1M) / 0.1)

    def word_at(self, a: _Avatar, step: int) -> str:
        """The command whose utterance covers at least a quarter of this step's audio interval."""
        s0, s1 = step * self.n, (step + 1) * self.n
        best, best_overlap = "none", 0
        for start, wav, word in a.speech:
            overlap = min(s1, start + len(wav)) - max(s0, start)
            if overlap > best_overlap:
                best, best_overlap = word, overlap
        return best if best_overlap >= self.n // 4 else "none"

    def step(self, step: int) -> dict[str, np.ndarray]:
        b = self.b
        speech = {a.index: self.speech_block(a, step) for a in b._avatars}
        blocks = {sid: src.next_block(self.n) * np.float32(gain) for sid, (room, pos, src, gain) in self.sources.items()}
        out: dict[str, np.ndarray] = {}
        for a in b._avatars:
            if a.listener is None:
                continue
            room_name = b._room_of(a)
            room = b.scenario.room(room_name)
            acoustics = self.rooms[room_name]
            head_room = np.array([a.motion.position[0] - room.origin_m[0], a.motion.position[1] - room.origin_m[1],
                                  a.motion.position[2]])
            yaw = math.atan2(-a.motion.R[1, 2], -a.motion.R[0, 2])  # facing direction = -z of the head
            mic_off = a.profile.microphones.positions_head_m() * _FWD  # type: ignore[union-attr]
            feed: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for sid, (sroom, spos, _, _) in self.sources.items():
                if sroom == room_name:
                    feed[sid] = (blocks[sid], acoustics.impulse_responses(spos, head_room, yaw, mic_off))
            for other in b._avatars:
                blk = speech[other.index]
                if blk is None:
                    continue
                if other is a:
                    feed["own_voice"] = (blk, a._own_ir)  # type: ignore[attr-defined]
                    continue
                if b._room_of(other) != room_name:
                    continue
                if np.linalg.norm(other.motion.position - a.motion.position) > _HEARING_RANGE_M:
                    continue
                mouth = np.array([other.motion.position[0] - room.origin_m[0], other.motion.position[1] - room.origin_m[1],
                                  other.motion.position[2] - 0.09])
                feed[f"voice{other.index}"] = (blk, acoustics.impulse_responses(mouth, head_room, yaw, mic_off))
            out[a.device_id] = a.listener.process(feed).astype(np.float32, copy=False)
        for r in self.rooms.values():
            st = r.cache_stats
            b.stats.ir_hits, b.stats.ir_misses = st["hits"], st["misses"]
        b.stats.ir_hits = sum(r.cache_stats["hits"] for r in self.rooms.values())
        b.stats.ir_misses = sum(r.cache_stats["misses"] for r in self.rooms.values())
        return out
