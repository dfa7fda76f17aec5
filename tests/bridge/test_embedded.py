"""The embedded MuJoCo scene: determinism, lighting, depth geometry, gaze ground truth, modality handling."""

import math

import numpy as np
import pytest

from bridge import BackendError, SetLighting, SetModality, ShowPrediction
from bridge.embedded.backend import EmbeddedBackend
from bridge.scenario import parse_scenario


def _stand_still(raw):
    """Every avatar idles with no look targets: the head stays level and faces its start yaw."""
    raw["task_scripts"] = {"still": {"segments": [{"duration_s": 100, "activity": "idle"}]}}
    for a in raw["avatars"]:
        a["script"] = "still"


def _scene(raw, **kw):
    return EmbeddedBackend(parse_scenario(raw), seed=kw.pop("seed", 0), audio=kw.pop("audio", False), **kw)


def test_same_seed_same_frames_other_seed_differs(tiny_raw):
    tiny_raw["task_scripts"]["stare"]["segments"][0]["commands"] = ["stop", "next"]  # speech in the audio too

    def run(seed):
        with _scene(tiny_raw, seed=seed, audio=True) as env:
            env.reset()
            for _ in range(4):
                frames = env.step()
        return frames["u1-apple_vision_pro"]

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth_m, b.depth_m)
    np.testing.assert_array_equal(a.audio.samples, b.audio.samples)
    assert a.gaze.yaw_rad == b.gaze.yaw_rad and a.labels == b.labels
    assert not np.array_equal(a.rgb, c.rgb)  # sensor noise and gaze differ with the seed


def test_profile_modalities_only(tiny_raw):
    with _scene(tiny_raw) as env:
        frames = env.reset()
    avp, glasses = frames["u1-apple_vision_pro"], frames["u2-ray_ban_meta"]
    assert avp.depth_m is not None and avp.gaze is not None and avp.imu is not None
    assert glasses.depth_m is None and glasses.gaze is None and glasses.imu is None and glasses.hands is None
    assert glasses.rgb.shape == (64, 64, 3) and glasses.rgb.dtype == np.uint8


def test_lighting_visibly_changes_brightness(tiny_raw):
    def mean_luma(cmds):
        with _scene(tiny_raw) as env:
            env.reset()
            for _ in range(3):
                frames = env.step(cmds)
        return float(frames["u1-apple_vision_pro"].rgb.mean()), frames["u1-apple_vision_pro"].lighting

    bright, lb = mean_luma([SetLighting(intensity=1.0)])
    dim, ld = mean_luma([SetLighting(intensity=0.1)])
    dark, lo = mean_luma([SetLighting(lights_on=False)])
    assert lb.illuminance_lux > ld.illuminance_lux > lo.illuminance_lux
    assert dim < 0.8 * bright  # auto-exposure compensates part of it, not all
    assert dark < dim


def test_depth_matches_known_geometry(tiny_raw):
    # One avatar at x=1.5 facing +x; no look targets -> the head stays level; the east wall stands inside the room's
    # 6 m footprint, so its inner face is at x = 6 - 0.1.
    tiny_raw["objects"] = []
    _stand_still(tiny_raw)
    with _scene(tiny_raw) as env:
        env.reset()
        f = env.step()["u1-apple_vision_pro"]
    R = f.head_pose.rotation()
    fwd = -R[:, 2]  # the optical axis in the world
    expected = (5.9 - f.head_pose.position_m[0]) / fwd[0]  # ray to the wall plane along the axis
    h, w = f.depth_m.shape
    centre = float(f.depth_m[h // 2 - 1: h // 2 + 1, w // 2 - 1: w // 2 + 1].mean())
    assert centre == pytest.approx(expected, rel=0.02)


def test_gaze_lands_on_target_object(tiny_raw):
    tiny_raw["render"]["width_px"] = tiny_raw["render"]["height_px"] = 96
    with _scene(tiny_raw, segmentation=True) as env:
        env.reset()
        agree = total = 0
        for _ in range(30):
            f = env.step()["u1-apple_vision_pro"]
            if not f.gaze.valid:
                continue
            total += 1
            h, w = f.segmentation.shape
            fy = (h / 2) / math.tan(math.radians(f.camera_fov_y_deg) / 2)
            col = int(round(w / 2 + fy * math.tan(f.gaze.yaw_rad)))
            row = int(round(h / 2 - fy * math.tan(f.gaze.pitch_rad)))
            patch = f.segmentation[max(0, row - 2): row + 3, max(0, col - 2): col + 3]
            agree += int((patch == 0).any())  # object 0 is the box the script looks at
            assert f.labels["object_recognition"] in ("crate", "background")
    assert total >= 20
    assert agree / total > 0.8


def test_modality_events_and_commands_drop_modalities(tiny_raw):
    tiny_raw["modality_events"] = [{"avatar": "u1", "kind": "eye_tracking_lost", "start_s": 0.15, "end_s": 0.45}]
    with _scene(tiny_raw) as env:
        env.reset()
        f1 = env.step()["u1-apple_vision_pro"]  # t = 0.1
        f2 = env.step()["u1-apple_vision_pro"]  # t = 0.2, inside the event
        assert f1.gaze is not None and f2.gaze is None and "eye_tracking_lost" in f2.events
        f3 = env.step([SetModality("u1-apple_vision_pro", "depth", False)])["u1-apple_vision_pro"]
        assert f3.depth_m is None and f3.rgb is not None
        f4 = env.step([SetModality("u1-apple_vision_pro", "depth", True),
                       ShowPrediction("u1-apple_vision_pro", "object_recognition", "crate", latency_ms=3.0)])
        assert f4["u1-apple_vision_pro"].depth_m is not None
        assert env.stats.overlays["u1-apple_vision_pro"].label == "crate"
        with pytest.raises(BackendError, match="unknown modality"):
            env.step([SetModality("u1-apple_vision_pro", "smell", False)])


def test_lifecycle(tiny_raw):
    env = _scene(tiny_raw)
    with pytest.raises(BackendError, match="reset"):
        env.step()
    env.reset()
    env.close()
    with pytest.raises(BackendError, match="after close"):
        env.step()


def test_imu_sees_gravity_and_walking(tiny_raw):
    tiny_raw["task_scripts"] = {"walk": {"segments": [{"duration_s": 100, "room": "lab",
                                                       "waypoints": [[5.0, 2.5], [1.0, 2.5]]}]}}
    for a in tiny_raw["avatars"]:
        a["script"] = "walk"
    with _scene(tiny_raw) as env:
        env.reset()
        frames = [env.step()["u1-apple_vision_pro"] for _ in range(15)]
    acc = np.array([f.imu.linear_acceleration_mps2 for f in frames])
    # specific force at rest is +g along world up; the head's +y (up) axis carries most of it when level
    assert np.linalg.norm(acc, axis=1).mean() == pytest.approx(9.81, abs=0.6)
    assert acc[:, 1].mean() > 8.5
    assert all(f.labels["activity_recognition"] == "walking" for f in frames[2:])
    xs = [f.head_pose.position_m[0] for f in frames]
    assert xs[-1] - xs[0] > 1.0  # ~1.3 m/s for 1.4 s


def test_depth_is_exact_on_oblique_surfaces(tiny_raw):
    # Floor and ceiling are seen at grazing angles, where a colour pass's z-buffer drifts by 1-2 %: ray-plane
    # intersections give the exact depth along the optical axis for every pixel.
    tiny_raw["objects"] = []
    _stand_still(tiny_raw)
    with _scene(tiny_raw) as env:
        env.reset()
        f = env.step()["u1-apple_vision_pro"]
    R, p = f.head_pose.rotation(), f.head_pose.position_m
    h, w = f.depth_m.shape
    ty = math.tan(math.radians(f.camera_fov_y_deg) / 2)
    for i, j in [(0, w // 2), (h // 8, w // 2), (h - 4, w // 2), (0, 0)]:
        ray = R @ np.array([((j + 0.5) / (w / 2) - 1) * ty, (1 - (i + 0.5) / (h / 2)) * ty, -1.0])
        plane_z = 2.7 if ray[2] > 0 else 0.0  # ceiling underside or floor
        expected = (plane_z - p[2]) / ray[2]
        assert f.depth_m[i, j] == pytest.approx(expected, rel=2e-3), (i, j)


def test_audio_louder_at_the_microphone_facing_the_source(tiny_raw):
    # A 2 kHz alarm 0.6 m to the avatar's right (the avatar faces world +x, so its right is world -y): inside the
    # room's critical distance (~0.7 m here), where the direct sound and head shadow dominate the reverberation.
    tiny_raw["objects"].append({"name": "beeper", "category": "cabinet", "room": "lab", "pos_m": [1.5, 1.9],
                                "size_m": [0.3, 0.3, 1.6],
                                "sound": {"kind": "alarm", "level_db": 85, "freq_hz": 2000, "on_s": 10}})
    tiny_raw["objects"] = [o for o in tiny_raw["objects"] if o["name"] != "plant"]
    _stand_still(tiny_raw)
    with _scene(tiny_raw, audio=True) as env:
        env.reset()
        frames = [env.step()["u1-apple_vision_pro"] for _ in range(8)]
    rms = np.mean([f.audio.rms for f in frames[2:]], axis=0)  # [channels], channel 0 = leftmost mic
    assert frames[-1].audio.samples.shape == (6, 1600) and frames[-1].audio.sample_rate_hz == 16000
    # the right half of the array faces the source (per-mic levels of a pure tone also carry room-mode ripple)
    assert rms[3:].mean() > 1.15 * rms[:3].mean()
    assert rms[-1] > 1.15 * rms[0]
    # continuous across steps: no step boundary is a jump far above the signal's own sample-to-sample changes
    x = np.concatenate([f.audio.samples[0] for f in frames[2:]])
    d = np.abs(np.diff(x))
    assert d[1599::1600].max() < 6 * d.std() + 1e-6


def test_spoken_commands_are_labelled_and_audible(tiny_raw):
    tiny_raw["task_scripts"] = {"talk": {"segments": [{"duration_s": 3.0, "activity": "idle",
                                                        "commands": ["stop", "help", "select"]}]}}
    for a in tiny_raw["avatars"]:
        a["script"] = "talk"
    with _scene(tiny_raw, audio=True) as env:
        env.reset()
        frames = [env.step()["u1-apple_vision_pro"] for _ in range(30)]
    words = [f.labels["speech_command"] for f in frames]
    assert {"stop", "help", "select"} <= set(words)
    loud = np.mean([f.audio.rms.mean() for f in frames if f.labels["speech_command"] != "none"])
    quiet = np.mean([f.audio.rms.mean() for f in frames if f.labels["speech_command"] == "none"])
    assert loud > 5 * quiet  # the wearer's own voice dominates the microphones while a command is spoken
