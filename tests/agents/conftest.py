"""Synthetic batches for the agents tests: each task's label is learnable only from its carrying modality."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bridge.frame import Audio, DeviceFrame, Gaze, Hands, Imu, Pose

WINDOW = 4


def make_item(rng: np.random.Generator, *, modalities=("rgb", "depth", "gaze", "audio", "pose", "imu", "hands"),
              speech: int | None = None, scene: int | None = None, mics: int = 2) -> dict:
    """One dataset-layout item; ``speech`` is a tone of frequency 500*(k+1) Hz, ``scene`` a colour channel."""
    speech = int(rng.integers(0, 3)) if speech is None else speech
    scene = int(rng.integers(0, 3)) if scene is None else scene
    it = {"present": {}, "window_valid": {}, "labels": {}, "client_id": "c", "step": 0, "episode": 0,
          "audio_hz": 16000}
    for m in modalities:
        it["present"][m] = torch.tensor(True)
        if m == "rgb":
            img = torch.rand(3, 40, 40) * 0.3
            img[scene] += 0.6
            it[m] = img.clamp(0, 1)
        elif m == "depth":
            it[m] = torch.rand(1, 40, 40) * 3
        elif m == "audio":
            t = np.arange(1600) / 16000
            tone = 0.1 * np.sin(2 * math.pi * 500 * (speech + 1) * t + rng.uniform(0, 6))
            it[m] = torch.from_numpy(np.stack([tone] * mics).astype(np.float32) + 0.01 * rng.standard_normal(
                (mics, 1600)).astype(np.float32))
        else:
            n = {"gaze": 8, "pose": 7, "imu": 6, "hands": 156}[m]
            it[m] = torch.from_numpy(rng.standard_normal((WINDOW, n)).astype(np.float32) * 0.1)
            it["window_valid"][m] = torch.ones(WINDOW, dtype=torch.bool)
    it["labels"] = {"speech_command": torch.tensor(speech), "scene_classification": torch.tensor(scene)}
    return it


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def make_frame(step: int = 0, *, device_id: str = "dev", profile: str = "apple_vision_pro", rgb: bool = True,
               depth: bool = True, gaze: bool = True, audio: bool = True, pose: bool = True, imu: bool = True,
               hands: bool = True, mics: int = 3) -> DeviceFrame:
    r = np.random.default_rng(step)
    return DeviceFrame(
        device_id=device_id, user_id="u", profile=profile, step=step, sim_time_s=0.1 * (step + 1),
        rgb=r.integers(0, 255, (48, 64, 3), dtype=np.uint8) if rgb else None,
        depth_m=(r.random((48, 64)) * 4).astype(np.float32) if depth else None,
        gaze=Gaze(0.1, -0.05, np.zeros(3), 1.5, 4.0, True, 0.9) if gaze else None,
        audio=Audio((r.standard_normal((mics, 1600)) * 0.05).astype(np.float32), 16000) if audio else None,
        head_pose=Pose(np.array([1.0, 2.0, 1.6]), np.array([1.0, 0, 0, 0])) if pose else None,
        imu=Imu(np.array([0, 9.8, 0.0]), np.zeros(3)) if imu else None,
        hands=Hands(np.zeros((2, 26, 3), np.float32), np.array([True, False])) if hands else None,
        camera_fov_y_deg=90.0,
        labels={"scene_classification": "kitchen", "speech_command": "yes", "object_recognition": "mug"},
    )
