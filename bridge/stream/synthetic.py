"""Deterministic synthetic DeviceFrames: every modality filled, for protocol tests, golden messages and the bench.

The content is structured (gradients, a box in depth and segmentation) rather than white noise, so compression
ratios in the benchmark resemble rendered scenes rather than the worst case. The noise is integers times powers of two
and nothing comes from a transcendental function or a Gaussian draw (whose sampler calls ``exp``/``log``): the golden
messages built from these frames must be the same bytes on every CPU, whatever SIMD kernels numpy picks.
"""

from __future__ import annotations

import numpy as np

from ..frame import NUM_HAND_JOINTS, Audio, DeviceFrame, Gaze, Hands, Imu, LightingState, Pose

__all__ = ["synthetic_frame"]


def synthetic_frame(device_id: str = "quest_0", *, height_px: int = 8, width_px: int = 6, step: int = 0,
                    seed: int = 0, audio_samples: int = 160, audio_channels: int = 2, segmentation: bool = True,
                    sim_dt_s: float = 0.1) -> DeviceFrame:
    """A frame with rgb, depth, segmentation, gaze, audio, pose, imu, hands and lighting, reproducible by seed."""
    rng = np.random.default_rng(seed + 7919 * step)
    h, w = height_px, width_px
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                    np.full_like(xx, (37 * step + seed) % 256)], axis=-1).astype(np.uint8)
    depth = (1.0 + 0.01 * yy + 0.002 * xx).astype(np.float32)
    box = (slice(h // 4, max(h // 4 + 1, h // 2)), slice(w // 4, max(w // 4 + 1, w // 2)))
    depth[box] = 0.75
    depth[0, 0] = np.inf  # nothing hit within the far plane
    seg = np.full((h, w), -1, dtype=np.int32)
    seg[box] = 3
    gaze = Gaze(yaw_rad=float(_noise(rng, (), 2**-3)), pitch_rad=-0.05, origin_m=np.array([0.0, 0.0, 0.01]),
                vergence_depth_m=0.75, pupil_diameter_mm=3.5, valid=True, confidence=0.9)
    audio = Audio(_noise(rng, (audio_channels, audio_samples), 2**-5).astype(np.float32),
                  sample_rate_hz=16000)
    pose = Pose(np.array([1.0, 2.0, 1.58]), np.array([0.5, 0.5, 0.5, 0.5]))  # exactly unit: 120 deg about (1,1,1)
    imu = Imu(np.array([0.0, 9.81, 0.0]) + _noise(rng, 3, 2**-6), _noise(rng, 3, 2**-9))
    joints = (_noise(rng, (2, NUM_HAND_JOINTS, 3), 2**-6) + np.array([0.0, -0.3, -0.4])).astype(np.float32)
    hands = Hands(joints, np.array([True, False]))
    lighting = LightingState(intensity=0.8, illuminance_lux=240.0, color_temperature_k=3500.0)
    return DeviceFrame(
        device_id=device_id, user_id=f"user_{device_id}", profile="meta_quest_3", step=step,
        sim_time_s=round((step + 1) * sim_dt_s, 9), wall_time_ns=1_700_000_000_000_000_000 + step,
        rgb=rgb, depth_m=depth, segmentation=seg if segmentation else None, gaze=gaze, audio=audio,
        head_pose=pose, imu=imu, hands=hands, lighting=lighting, camera_fov_y_deg=96.0,
        labels={"scene_classification": "kitchen", "object_recognition": "mug"},
        active_tasks=("scene_classification", "object_recognition"), room="kitchen", events=("mic_muted",),
    )


def _noise(rng: np.random.Generator, shape: int | tuple[int, ...], bound: float) -> np.ndarray:
    """Uniform noise in [-bound, bound) for a power-of-two ``bound``: 20-bit integers times a power of two, exact in
    float64 and float32 (no rounding step that a fused multiply-add or another SIMD kernel could change)."""
    return rng.integers(-2**19, 2**19, shape) * (bound / 2**19)
