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
    merge_manifest,
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
    assert f["split"] == {"train": [0, 10], "guard": [10, 10], "test": [10, 12]}  # round(12 * 0.2) = 2 held out
    assert m["guard_steps"] == 0 and "no guard gap" in m["split_policy"]
    assert f["present_counts"]["gaze"] == 10
    assert f["label_counts"]["object_recognition"] == {"mug": 4}


def test_second_episode_merges_into_the_manifest(tmp_path):
    record(tmp_path, n_steps=12, episode=0)
    record(tmp_path, n_steps=5, episode=1, test_fraction=0.4)

    m = load_manifest(tmp_path)

    assert [e["episode"] for e in m["episodes"]] == [0, 1]
    files = m["clients"][0]["files"]
    assert [(f["path"], f["n_steps"]) for f in files] == [("episode_000/avp.h5", 12), ("episode_001/avp.h5", 5)]
    assert files[1]["split"] == {"train": [0, 3], "guard": [3, 3], "test": [3, 5]}


def test_folding_one_episode_manifests_in_order_gives_the_directory_manifest(tmp_path):
    """What the distributed recorder relies on: its driver folds the workers' one-episode manifests."""
    w0, _ = record(tmp_path, n_steps=12, episode=0)
    w1, _ = record(tmp_path, n_steps=5, episode=1)
    path = tmp_path / "manifest.json"

    first = merge_manifest(None, w0.episode_manifest(), path)
    folded = merge_manifest(first, w1.episode_manifest(), path)

    assert folded == load_manifest(tmp_path)
    assert [e["episode"] for e in first["episodes"]] == [0]  # the base is not changed by the second fold
    other = dict(w1.episode_manifest(), scenario="other")
    with pytest.raises(DatasetError, match="holds scenario 'unit'; this writer records 'other'"):
        merge_manifest(folded, other, path)


@pytest.mark.parametrize("n, frac, guard, expected", [
    (12, 0.2, 0, {"train": [0, 10], "guard": [10, 10], "test": [10, 12]}),
    (10, 0.25, 0, {"train": [0, 7], "guard": [7, 7], "test": [7, 10]}),  # 2.5 rounds half up
    (2, 0.2, 0, {"train": [0, 1], "guard": [1, 1], "test": [1, 2]}),  # never an empty side
    (1, 0.2, 0, {"train": [0, 1], "guard": [1, 1], "test": [1, 1]}),
    (5, 0.0, 0, {"train": [0, 5], "guard": [5, 5], "test": [5, 5]}),
    (12, 0.2, 3, {"train": [0, 7], "guard": [7, 10], "test": [10, 12]}),  # the 3 rows before the test part
    (14, 0.2, 10, {"train": [0, 1], "guard": [1, 11], "test": [11, 14]}),  # round(2.8) = 3 test, 1 left to train
    (5, 0.0, 3, {"train": [0, 5], "guard": [5, 5], "test": [5, 5]}),  # no test part: nothing to guard
])
def test_temporal_split(n, frac, guard, expected):
    assert temporal_split(n, frac, guard) == expected
    assert temporal_split(n, frac, guard) == temporal_split(n, frac, guard_steps=guard)


def test_temporal_split_refuses_a_guard_that_leaves_nothing_to_train_on():
    # 13 steps: round(2.6) = 3 test + 10 guard = 13; 14 steps leave one training row (see above)
    with pytest.raises(DatasetError, match="13 steps hold 3 test steps .* guard of 10 steps, which leaves 0 to "
                                           "train on; an episode needs at least 14 steps"):
        temporal_split(13, 0.2, 10)
    with pytest.raises(DatasetError, match=r"test_fraction must be in \[0, 1\), got 1.0"):
        temporal_split(10, 1.0)
    with pytest.raises(DatasetError, match="guard_steps must be an integer >= 0, got -1"):
        temporal_split(10, 0.2, -1)


def test_guard_rows_are_in_neither_split_and_the_manifest_says_so(tmp_path):
    from bridge.dataset import XRDataset

    record(tmp_path, n_steps=12, guard_steps=3)

    m = load_manifest(tmp_path)
    ds = {split: XRDataset(tmp_path, clients=["avp"], split=split, modalities=["rgb"])
          for split in ("train", "test", "all")}

    assert m["format_version"] == FORMAT_VERSION == "1.1"
    assert (m["guard_steps"], m["guard_s"]) == (3, 0.3)
    assert "the 3 steps (0.3 s) before it are a guard gap that belongs to neither train nor test" in m["split_policy"]
    assert m["clients"][0]["files"][0]["split"] == {"train": [0, 7], "guard": [7, 10], "test": [10, 12]}
    assert [ds["train"][i]["step"] for i in range(len(ds["train"]))] == [0, 1, 2, 3, 4, 5, 6]
    assert [ds["test"][i]["step"] for i in range(len(ds["test"]))] == [10, 11]
    assert len(ds["all"]) == 12  # guard rows 7, 8, 9 are still data, just in neither split


def test_an_episode_too_short_for_its_guard_is_refused_and_discarded(tmp_path):
    with pytest.raises(DatasetError, match="episode 0 discarded: temporal_split: 6 steps hold 1 test step .* "
                                           "guard of 5 steps"):
        record(tmp_path, n_steps=6, guard_steps=5)

    assert not list(tmp_path.rglob("*.h5*")) and not (tmp_path / "manifest.json").exists()


def test_old_manifests_without_a_guard_still_load_and_take_guardless_episodes(tmp_path):
    from bridge.cli_data import format_info
    from bridge.dataset import XRDataset

    # Prepare: a 1.0 manifest as older xrfed wrote it (no guard_steps, no guard ranges)
    record(tmp_path, n_steps=12)
    path = tmp_path / "manifest.json"
    m = json.loads(path.read_text())
    del m["guard_steps"], m["guard_s"]
    m["format_version"] = "1.0"
    for c in m["clients"]:
        for f in c["files"]:
            del f["split"]["guard"]
    path.write_text(json.dumps(m))

    # Execute / Assert: it reads as before
    assert [len(XRDataset(tmp_path, clients=["avp"], split=s)) for s in ("train", "test", "all")] == [10, 2, 12]
    assert "12 steps (10 train, 2 test)" in format_info(load_manifest(tmp_path))
    # another episode without a guard joins it; one with a guard is refused before anything is recorded
    with pytest.raises(DatasetError, match="holds episodes with a guard of 0 steps; this writer's guard is 3"):
        record(tmp_path, n_steps=12, episode=1, guard_steps=3)
    record(tmp_path, n_steps=12, episode=1)
    m = load_manifest(tmp_path)
    assert m["format_version"] == FORMAT_VERSION and m["guard_steps"] == 0
    assert [len(f["split"]) for f in m["clients"][0]["files"]] == [2, 3]


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
    from bridge.recording import record as record_scenario

    manifest = record_scenario(str(write_scenario(tiny_raw)), out=tmp_path / "ds", steps=4, seed=2, episodes=2,
                               audio=False, progress=False, guard_s=0.1)

    m = load_manifest(manifest)
    assert [e["seed"] for e in m["episodes"]] == [2, 3]
    assert m["guard_steps"] == 1  # 0.1 s at the tiny scene's 10 Hz
    assert m["clients"][0]["files"][1]["split"] == {"train": [0, 2], "guard": [2, 3], "test": [3, 4]}
    assert [(c["profile"], [f["n_steps"] for f in c["files"]]) for c in m["clients"]] == \
           [("apple_vision_pro", [4, 4]), ("ray_ban_meta", [4, 4])]
    frames = list(read_device_file(tmp_path / "ds" / m["clients"][0]["files"][1]["path"]))
    assert [f.step for f in frames] == [0, 1, 2, 3] and frames[0].rgb.shape == (64, 64, 3)
    with h5py.File(tmp_path / "ds" / m["clients"][0]["files"][0]["path"], "r") as h5:
        assert h5.attrs["camera_fov_y_deg"] > 0 and h5.attrs["scenario"] == "tiny"


def test_record_command_refuses_a_guard_longer_than_the_episode_before_simulating(tmp_path, tiny_raw,
                                                                                   write_scenario):
    from bridge.recording import record as record_scenario

    with pytest.raises(DatasetError, match="a guard of 5 s is 50 steps at 10 Hz, not fewer than the episode.s 12 steps"):
        record_scenario(str(write_scenario(tiny_raw)), out=tmp_path / "ds", steps=12, progress=False)

    assert not (tmp_path / "ds").exists()
