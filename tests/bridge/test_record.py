import dataclasses
import json

import h5py
import numpy as np
import pytest

from bridge.arrays import frame_to_arrays
from bridge.backend import DeviceInfo
from bridge.errors import DatasetError
from bridge.record import (
    FORMAT_VERSION,
    DatasetWriter,
    WriterState,
    load_manifest,
    manifest_clients,
    read_device_file,
    temporal_split,
)
from bridge.stream.synthetic import synthetic_frame
from bridge.tasks import COMMANDS, ROOM_TYPES, TASKS

DEVICES = (
    DeviceInfo("avp", "alice", "apple_vision_pro"),  # every modality
    DeviceInfo("rb", "bob", "ray_ban_meta"),  # rgb + audio
    DeviceInfo("xr", "carol", "my_custom_glasses"),  # a profile the registry does not know: rgb, pose, imu
)
KEEP = {"avp": None, "rb": ("rgb", "audio"), "xr": ("rgb", "pose", "imu")}
SIZE = {"avp": (8, 6), "rb": (6, 4), "xr": (4, 4)}
DROPS = {("avp", 3): ("gaze",), ("avp", 4): ("gaze",), ("avp", 7): ("audio",), ("rb", 5): ("rgb",)}


def make_frame(info: DeviceInfo, step: int):
    h, w = SIZE[info.device_id]
    f = synthetic_frame(info.device_id, height_px=h, width_px=w, step=step, seed=len(info.device_id),
                        audio_channels=2 if info.device_id == "avp" else 1, segmentation=info.device_id == "avp")
    labels = {"scene_classification": ROOM_TYPES[step % len(ROOM_TYPES)],
              "speech_command": COMMANDS[step % len(COMMANDS)]}
    if step % 3 == 0:
        labels["object_recognition"] = "mug"
    f = dataclasses.replace(f, user_id=info.user_id, profile=info.profile, labels=labels,
                            active_tasks=tuple(labels), events=("mic_muted",) if step == 7 else (),
                            room="kitchen" if step < 6 else None,
                            lighting=None if (info.device_id == "xr" and step == 2) else f.lighting)
    keep = KEEP[info.device_id]
    if keep is not None:
        f = f.without(*(m for m in ("rgb", "depth", "gaze", "audio", "pose", "imu", "hands", "segmentation")
                        if m not in keep))
    return f.without(*DROPS.get((info.device_id, step), ()))


def record(out, n_steps=12, episode=0, **kw):
    written = []
    with DatasetWriter(out, scenario_name="unit", scenario_yaml="name: unit\n", seed=5 + episode, step_dt_s=0.1,
                       devices=DEVICES, episode=episode, **kw) as w:
        for s in range(n_steps):
            frames = {d.device_id: make_frame(d, s) for d in DEVICES}
            w.write(frames)
            written.append(frames)
    return w, written


def assert_same_frame(a, b):
    fa, fb = frame_to_arrays(a), frame_to_arrays(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        if isinstance(fa[k], np.ndarray):
            np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
        else:
            assert fa[k] == fb[k], k
    assert (a.step, a.sim_time_s, a.wall_time_ns, a.room, a.events, a.camera_fov_y_deg) == \
           (b.step, b.sim_time_s, b.wall_time_ns, b.room, b.events, b.camera_fov_y_deg)
    assert set(a.active_tasks) == set(b.active_tasks)
    assert a.labels == b.labels


def test_round_trip_returns_equal_arrays_and_none_where_absent(tmp_path):
    w, written = record(tmp_path)

    back = {d.device_id: list(read_device_file(tmp_path / f"episode_000/{d.device_id}.h5")) for d in DEVICES}

    for d in DEVICES:
        assert len(back[d.device_id]) == 12
        for s in range(12):
            assert_same_frame(written[s][d.device_id], back[d.device_id][s])
    assert back["avp"][3].gaze is None and back["avp"][2].gaze is not None
    assert back["avp"][7].audio is None and back["avp"][7].events == ("mic_muted",)
    assert back["rb"][5].rgb is None and back["rb"][5].audio is not None
    assert back["rb"][0].depth_m is None and back["rb"][0].head_pose is None
    assert back["xr"][2].lighting is None and back["xr"][3].lighting is not None
    assert back["xr"][0].audio is None and back["xr"][0].imu is not None
    assert back["avp"][6].room is None and back["avp"][5].room == "kitchen"
    assert back["avp"][1].labels == {"scene_classification": "kitchen", "speech_command": "yes"}


def test_file_layout_and_attributes(tmp_path):
    record(tmp_path)

    with h5py.File(tmp_path / "episode_000/avp.h5", "r") as h5:
        a = h5.attrs
        assert (a["device_id"], a["user_id"], a["profile"], a["scenario"]) == \
               ("avp", "alice", "apple_vision_pro", "unit")
        assert a["scenario_yaml"] == "name: unit\n" and a["seed"] == 5 and a["step_dt_s"] == 0.1
        assert a["audio_hz"] == 16000 and a["xrfed_format_version"] == FORMAT_VERSION
        assert a["camera_fov_y_deg"] == 96.0 and a["complete"]
        assert json.loads(a["profile_json"])["name"] == "apple_vision_pro"
        assert json.loads(a["units"])["depth_m"].startswith("metres along the camera optical axis")
        assert h5["rgb"].shape == (12, 8, 6, 3) and h5["rgb"].dtype == np.uint8
        assert h5["rgb"].chunks == (1, 8, 6, 3) and h5["rgb"].compression == "gzip"
        assert h5["rgb"].maxshape[0] is None
        assert h5["depth_m"].shape == (12, 8, 6) and h5["segmentation"].dtype == np.int32
        assert h5["audio"].shape == (12, 2, 160) and h5["gaze"].shape == (12, 8)
        assert h5["hands"].shape == (12, 2, 26, 3) and h5["hands_valid"].shape == (12, 2)
        assert h5["pose"].shape == (12, 7) and h5["imu"].shape == (12, 6) and h5["lighting"].shape == (12, 4)
        assert h5["step"][:].tolist() == list(range(12)) and h5["step"].dtype == np.int64
        assert h5["present/gaze"][:].tolist() == [True] * 3 + [False] * 2 + [True] * 7
        assert np.isnan(h5["gaze"][3]).all()  # absent row left as fill
        labels = h5["labels/object_recognition"]
        assert labels.dtype == np.int16
        assert labels[:4].tolist() == [TASKS["object_recognition"].index("mug"), -1, -1, 5]
        assert list(labels.attrs["classes"]) == list(TASKS["object_recognition"].classes)
        assert list(h5["active_tasks"].attrs["tasks"]) == list(TASKS)
        assert h5["active_tasks"].shape == (12, len(TASKS))
        assert h5["events"][7].decode() == "mic_muted" and h5["room"][6].decode() == ""
    with h5py.File(tmp_path / "episode_000/xr.h5", "r") as h5:
        assert h5.attrs["profile_json"] == "{}"  # unknown profile tolerated
        assert "audio" not in h5 and "depth_m" not in h5
        assert not h5["present/audio"][:].any()
        assert "camera_fov_y_deg" in h5.attrs


def test_manifest_lists_clients_files_and_temporal_partitions(tmp_path):
    w, _ = record(tmp_path)

    m = load_manifest(tmp_path)

    assert w.manifest_path == tmp_path / "manifest.json"
    assert m["format_version"] == FORMAT_VERSION and m["scenario"] == "unit" and m["step_dt_s"] == 0.1
    assert m["tasks"]["speech_command"] == list(COMMANDS)
    assert [c.client_id for c in manifest_clients(m)] == ["avp", "rb", "xr"]
    clients = {c["client_id"]: c for c in m["clients"]}
    assert clients["rb"]["modalities"] == ["rgb", "audio"]  # from the profile
    assert clients["xr"]["modalities"] == ["rgb", "pose", "imu"]  # unknown profile: what was observed
    f = clients["avp"]["files"][0]
    assert f["path"] == "episode_000/avp.h5" and f["n_steps"] == 12
    assert f["split"] == {"train": [0, 10], "test": [10, 12]}  # round(12 * 0.2) = 2 last steps held out
    assert f["present_counts"]["gaze"] == 10
    assert f["label_counts"]["object_recognition"] == {"mug": 4}


def test_second_episode_merges_into_the_manifest(tmp_path):
    record(tmp_path, n_steps=12, episode=0)
    record(tmp_path, n_steps=5, episode=1, test_fraction=0.4)

    m = load_manifest(tmp_path)

    assert [e["episode"] for e in m["episodes"]] == [0, 1]
    files = m["clients"][0]["files"]
    assert [(f["path"], f["n_steps"]) for f in files] == [("episode_000/avp.h5", 12), ("episode_001/avp.h5", 5)]
    assert files[1]["split"] == {"train": [0, 3], "test": [3, 5]}


@pytest.mark.parametrize("n, frac, expected", [
    (12, 0.2, {"train": [0, 10], "test": [10, 12]}),
    (10, 0.25, {"train": [0, 7], "test": [7, 10]}),  # 2.5 rounds half up
    (2, 0.2, {"train": [0, 1], "test": [1, 2]}),  # never an empty side
    (1, 0.2, {"train": [0, 1], "test": [1, 1]}),
    (5, 0.0, {"train": [0, 5], "test": [5, 5]}),
])
def test_temporal_split(n, frac, expected):
    assert temporal_split(n, frac) == expected


def test_write_after_close_raises(tmp_path):
    w, _ = record(tmp_path, n_steps=2)

    assert w.state is WriterState.CLOSED
    with pytest.raises(DatasetError, match="write\\(\\) after close"):
        w.write({d.device_id: make_frame(d, 3) for d in DEVICES})


def test_existing_episode_is_not_overwritten_silently(tmp_path):
    record(tmp_path, n_steps=2)

    with pytest.raises(DatasetError, match="avp.h5 already exists"):
        record(tmp_path, n_steps=2)
    record(tmp_path, n_steps=3, overwrite=True)
    assert load_manifest(tmp_path)["clients"][0]["files"][0]["n_steps"] == 3


def test_write_rejects_missing_devices_and_bad_steps(tmp_path):
    with DatasetWriter(tmp_path, scenario_name="unit", scenario_yaml="", seed=0, step_dt_s=0.1,
                       devices=DEVICES) as w:
        with pytest.raises(DatasetError, match="missing \\['xr'\\]"):
            w.write({d.device_id: make_frame(d, 0) for d in DEVICES[:2]})
        w.write({d.device_id: make_frame(d, 1) for d in DEVICES})
        with pytest.raises(DatasetError, match="steps must increase"):
            w.write({d.device_id: make_frame(d, 1) for d in DEVICES})
        bigger = dataclasses.replace(make_frame(DEVICES[1], 2), rgb=np.zeros((9, 4, 3), np.uint8))
        with pytest.raises(DatasetError, match="rb step 2: dataset 'rgb' has rows of shape \\(6, 4, 3\\)"):
            w.write({"avp": make_frame(DEVICES[0], 2), "rb": bigger, "xr": make_frame(DEVICES[2], 2)})
        w.write({d.device_id: make_frame(d, 2) for d in DEVICES})  # a rejected step changed no file
    assert [len(list(read_device_file(tmp_path / f"episode_000/{d}.h5"))) for d in KEEP] == [2, 2, 2]


def test_lzf_compression_and_bad_compression(tmp_path):
    record(tmp_path, n_steps=2, compression="lzf")
    with h5py.File(tmp_path / "episode_000/rb.h5", "r") as h5:
        assert h5["rgb"].compression == "lzf"
    with pytest.raises(DatasetError, match="compression: expected 'gzip', 'lzf' or 'none', got 'zstd'"):
        record(tmp_path / "other", n_steps=1, compression="zstd")


def test_closing_without_steps_leaves_no_files(tmp_path):
    w = DatasetWriter(tmp_path, scenario_name="unit", scenario_yaml="", seed=0, step_dt_s=0.1, devices=DEVICES)

    with pytest.raises(DatasetError, match="no steps were written"):
        w.close()
    assert list(tmp_path.rglob("*.h5*")) == [] and not (tmp_path / "manifest.json").exists()


def test_missing_file_and_manifest_are_named(tmp_path):
    with pytest.raises(DatasetError, match="dataset file not found: .*nope.h5"):
        list(read_device_file(tmp_path / "nope.h5"))
    with pytest.raises(DatasetError, match="no dataset manifest at .*manifest.json"):
        load_manifest(tmp_path)


@pytest.mark.slow
def test_record_command_writes_a_readable_dataset(tmp_path, tiny_raw, write_scenario):
    from bridge.cli_sim import record as record_scenario

    manifest = record_scenario(str(write_scenario(tiny_raw)), out=tmp_path / "ds", steps=4, seed=2, episodes=2,
                               audio=False, progress=False)

    m = load_manifest(manifest)
    assert [e["seed"] for e in m["episodes"]] == [2, 3]
    assert [(c["profile"], [f["n_steps"] for f in c["files"]]) for c in m["clients"]] == \
           [("apple_vision_pro", [4, 4]), ("ray_ban_meta", [4, 4])]
    frames = list(read_device_file(tmp_path / "ds" / m["clients"][0]["files"][1]["path"]))
    assert [f.step for f in frames] == [0, 1, 2, 3] and frames[0].rgb.shape == (64, 64, 3)
    with h5py.File(tmp_path / "ds" / m["clients"][0]["files"][0]["path"], "r") as h5:
        assert h5.attrs["camera_fov_y_deg"] > 0 and h5.attrs["scenario"] == "tiny"
