"""Recorded and live steps reach the model as the same tensors (both go through bridge.items.build_item)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from agents.batching import frame_to_item
from bridge.dataset import XRDataset
from bridge.record import DatasetWriter

WINDOW = 3


@pytest.fixture
def recorded_and_live(tiny_raw, tmp_path):
    """Five steps of the embedded tiny scene (both avatars, audio on), written to disk and kept as live frames.

    Two edits make the awkward cases happen on both paths: the first device has no pose at step 2 (a hole in the
    window) and no depth hit in its top image row at every step (inf -> the far value)."""
    from bridge.embedded.backend import EmbeddedBackend
    from bridge.scenario import parse_scenario

    def edit(f, step, first):
        if not first:
            return f
        depth = f.depth_m.copy()
        depth[0, :] = np.inf
        f = dataclasses.replace(f, depth_m=depth)
        return f.without("pose") if step == 2 else f

    live: dict[str, list] = {}
    with EmbeddedBackend(parse_scenario(tiny_raw), seed=0, audio=True) as env:
        first = env.devices[0].device_id
        frames = env.reset(seed=0)
        with DatasetWriter(tmp_path, scenario_name="tiny", scenario_yaml="", seed=0, step_dt_s=env.step_dt_s,
                           devices=env.devices) as writer:
            for s in range(5):
                if s:
                    frames = env.step()
                frames = {d: edit(f, s, d == first) for d, f in frames.items()}
                writer.write(frames)
                for d, f in frames.items():
                    live.setdefault(d, []).append(f)
    return tmp_path, live, first


@pytest.mark.parametrize(("size", "audio_steps"), [(None, 1), (40, 1), (None, 4)])
def test_recorded_step_and_live_frame_give_identical_items(recorded_and_live, size, audio_steps):
    root, live, first = recorded_and_live
    ds = XRDataset(root, split="all", window=WINDOW, image_size=None if size is None else (size, size),
                   audio_channels=2, audio_steps=audio_steps)
    assert set(ds.modalities) == {"rgb", "depth", "gaze", "audio", "pose", "imu", "hands"}
    checked = set()
    for i in range(len(ds)):
        # Execute: the recorded item, and the live item of the same device and step with the frames before it
        rec = ds[i]
        frames = live[rec["client_id"]]
        k = next(j for j, f in enumerate(frames) if f.step == rec["step"])
        got = frame_to_item(frames[k], previous=frames[:k], window=WINDOW, image_size=size, modalities=ds.modalities,
                            audio_steps=audio_steps)

        # Assert: every tensor bit for bit, every flag, every label the frame carries
        where = f"{rec['client_id']} step {rec['step']}"
        assert {m: bool(v) for m, v in got["present"].items()} == {m: bool(v) for m, v in rec["present"].items()}
        tensors = {k for k, v in rec.items() if isinstance(v, torch.Tensor)}
        assert tensors == {k for k, v in got.items() if isinstance(v, torch.Tensor)}, where
        for key in tensors:
            assert got[key].dtype == rec[key].dtype and torch.equal(got[key], rec[key]), f"{where} {key}"
            checked.add(key)
        assert rec["window_valid"].keys() == got["window_valid"].keys(), where
        for m, v in rec["window_valid"].items():
            assert torch.equal(got["window_valid"][m], v), f"{where} window_valid {m}"
        for t, v in rec["labels"].items():
            assert int(got["labels"].get(t, torch.tensor(-1))) == int(v), f"{where} label {t}"
    # the cases the fixture set up were really there
    assert checked == {"rgb", "depth", "audio", "gaze", "gaze_valid", "pose", "imu", "hands", "hands_valid"}
    edited = XRDataset(root, split="all", window=WINDOW, clients=[first], modalities=["pose", "depth"])
    assert edited[3]["window_valid"]["pose"].tolist() == [True, False, True]
    assert torch.all(edited[0]["depth"][0, 0] == 20.0)
