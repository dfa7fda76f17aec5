import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from bridge.backend import DeviceInfo
from bridge.dataset import XRDataset, client_ids, collate_frames
from bridge.errors import DatasetError
from bridge.record import DatasetWriter
from bridge.stream.synthetic import synthetic_frame
from bridge.tasks import COMMANDS, TASKS

DEVICES = (DeviceInfo("avp", "alice", "apple_vision_pro"), DeviceInfo("rb", "bob", "ray_ban_meta"))
N_STEPS = 10  # test_fraction 0.2 -> rows 0..7 train, 8..9 test


def make_frame(info: DeviceInfo, step: int):
    f = synthetic_frame(info.device_id, height_px=8, width_px=6, step=step, audio_channels=2)
    f = dataclasses.replace(f, user_id=info.user_id, profile=info.profile,
                            labels={"speech_command": COMMANDS[step % len(COMMANDS)]})
    if info.device_id == "rb":
        f = f.without("depth", "gaze", "pose", "imu", "hands", "segmentation")
    if info.device_id == "avp" and step == 4:
        f = f.without("pose")
    if info.device_id == "avp":  # pose x position encodes the step, so windows are checkable by hand
        f = dataclasses.replace(f, head_pose=None if f.head_pose is None else dataclasses.replace(
            f.head_pose, position_m=np.array([float(step), 0.0, 1.6])))
    return f


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    with DatasetWriter(out, scenario_name="unit", scenario_yaml="", seed=0, step_dt_s=0.1, devices=DEVICES) as w:
        for s in range(N_STEPS):
            w.write({d.device_id: make_frame(d, s) for d in DEVICES})
    return out


def test_client_ids_and_split_lengths(root):
    assert client_ids(root) == ["avp", "rb"]
    assert len(XRDataset(root, split="train")) == 2 * 8
    assert len(XRDataset(root, split="test")) == 2 * 2
    assert len(XRDataset(root, split="all", clients=["rb"])) == 10


def test_item_shapes_and_presence(root):
    ds = XRDataset(root, clients=["avp"], split="all", window=3)

    item = ds[5]

    assert item["client_id"] == "avp" and item["step"] == 5 and item["episode"] == 0
    assert item["rgb"].shape == (3, 8, 6) and item["rgb"].dtype == torch.float32
    assert 0.0 <= float(item["rgb"].min()) and float(item["rgb"].max()) <= 1.0
    assert item["depth"].shape == (1, 8, 6)
    assert float(item["depth"][0, 0, 0]) == 20.0  # inf (no hit) -> depth_far_m
    assert item["audio"].shape == (2, 160)
    assert item["gaze"].shape == (3, 8) and item["imu"].shape == (3, 6) and item["pose"].shape == (3, 7)
    assert item["hands"].shape == (3, 2 * 26 * 3) and item["hands_valid"].shape == (3, 2)
    assert all(bool(item["present"][m]) for m in ("rgb", "depth", "gaze", "audio", "pose", "imu", "hands"))
    assert item["labels"]["speech_command"].item() == TASKS["speech_command"].index(COMMANDS[5])
    assert set(item["labels"]) == set(TASKS) and item["labels"]["gesture_recognition"].item() == -1


def test_window_masks_absent_steps_and_episode_start(root):
    ds = XRDataset(root, clients=["avp"], split="all", window=3, modalities=["pose"])

    at5, at1, at4 = ds[5], ds[1], ds[4]

    # steps 3, 4, 5: pose absent at step 4 -> zero row flagged invalid
    assert at5["window_valid"]["pose"].tolist() == [True, False, True]
    assert at5["pose"][:, 0].tolist() == [3.0, 0.0, 5.0]
    # steps -1, 0, 1: the row before the episode start is padding
    assert at1["window_valid"]["pose"].tolist() == [False, True, True]
    assert at1["pose"][:, 0].tolist() == [0.0, 0.0, 1.0]
    # pose absent at the current step: no tensor, present False
    assert "pose" not in at4 and not bool(at4["present"]["pose"])
    assert set(at5) >= {"pose", "present", "labels"} and "rgb" not in at5


def test_absent_modalities_are_omitted_not_zeros(root):
    ds = XRDataset(root, clients=["rb"], split="all")

    item = ds[0]

    assert ds.modalities == ("rgb", "audio")
    assert set(item["present"]) == {"rgb", "audio"} and "depth" not in item


def test_dataloader_with_collate_builds_masks(root):
    ds = XRDataset(root, split="train", modalities=["rgb", "depth", "pose", "audio"], tasks=["speech_command"],
                   window=2)
    loader = DataLoader(ds, batch_size=16, shuffle=False, collate_fn=collate_frames)

    batch = next(iter(loader))

    assert batch["rgb"].shape == (16, 3, 8, 6) and batch["audio"].shape == (16, 2, 160)
    assert batch["depth"].shape == (16, 1, 8, 6) and batch["pose"].shape == (16, 2, 7)
    assert batch["present"]["depth"].tolist() == [True] * 8 + [False] * 8  # avp rows 0..7, then rb
    assert batch["present"]["pose"].tolist() == [True] * 4 + [False] + [True] * 3 + [False] * 8
    assert torch.count_nonzero(batch["depth"][8:]) == 0  # zeros only where the mask is False
    assert batch["window_valid"]["pose"].shape == (16, 2)
    assert batch["window_valid"]["pose"][5].tolist() == [False, True]
    assert list(batch["labels"]) == ["speech_command"] and batch["labels"]["speech_command"].dtype == torch.int64
    assert batch["client_id"][:2] == ["avp", "avp"] and batch["step"][:3].tolist() == [0, 1, 2]


def test_dataloader_with_workers_opens_handles_per_worker(root):
    ds = XRDataset(root, split="test", modalities=["rgb"])
    ds[0]  # the parent opens a handle; workers must not reuse it

    batches = list(DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_frames))

    assert [b["rgb"].shape[0] for b in batches] == [2, 2]
    ds.close()


def test_image_size_resizes(root):
    ds = XRDataset(root, clients=["avp"], split="all", modalities=["rgb", "depth"], image_size=(4, 3))

    item = ds[0]

    assert item["rgb"].shape == (3, 4, 3) and item["depth"].shape == (1, 4, 3)


def test_collate_rejects_mismatched_shapes():
    items = [{"present": {"audio": torch.tensor(True)}, "window_valid": {}, "labels": {}, "client_id": c,
              "step": 0, "episode": 0, "audio": torch.zeros(n, 4)} for c, n in (("a", 1), ("b", 2))]

    with pytest.raises(DatasetError, match="'audio' has different shapes in one batch"):
        collate_frames(items)


def test_bad_inputs_name_what_is_missing(root, tmp_path):
    with pytest.raises(DatasetError, match="no dataset manifest at .*manifest.json"):
        XRDataset(tmp_path)
    with pytest.raises(DatasetError, match="unknown clients \\['zz'\\]"):
        XRDataset(root, clients=["zz"])
    with pytest.raises(DatasetError, match="split: expected one of"):
        XRDataset(root, split="val")


def test_missing_file_is_named(root, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "episode_000" / "rb.h5").unlink()

    with pytest.raises(DatasetError, match="dataset file not found: .*episode_000/rb.h5"):
        XRDataset(copy)


def test_missing_dataset_is_named(root, tmp_path):
    import shutil

    import h5py

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    with h5py.File(copy / "episode_000" / "avp.h5", "a") as h5:
        del h5["imu"]

    with pytest.raises(DatasetError, match="avp.h5: present/imu is set but dataset 'imu' is missing"):
        XRDataset(copy)


def test_audio_channels_downmix_and_spread(root):
    raw = XRDataset(root, clients=["avp"], split="all", modalities=["audio"])[3]["audio"]  # [2, 160]

    mono = XRDataset(root, clients=["avp"], split="all", modalities=["audio"], audio_channels=1)[3]["audio"]
    three = XRDataset(root, clients=["avp"], split="all", modalities=["audio"], audio_channels=3)[3]["audio"]

    assert torch.allclose(mono[0], (raw[0] + raw[1]) / 2)
    assert three.shape == (3, 160) and torch.equal(three[0], raw[0]) and torch.equal(three[2], raw[1])
    with pytest.raises(DatasetError, match="audio_channels: expected an integer >= 1"):
        XRDataset(root, audio_channels=0)
