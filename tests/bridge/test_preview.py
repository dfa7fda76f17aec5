import dataclasses
import math

import numpy as np
import pytest
from PIL import Image

from bridge.backend import DeviceInfo
from bridge.cli import main
from bridge.errors import DatasetError
from bridge.preview import (
    LAYOUT,
    contact_sheet_size,
    project_gaze_px,
    sample_rows,
    write_contact_sheet,
    write_preview,
)
from bridge.record import DatasetWriter
from bridge.stream.synthetic import synthetic_frame

DEVICES = (DeviceInfo("avp", "alice", "apple_vision_pro"), DeviceInfo("xr", "carol", "xreal_air"))


def make_frame(info: DeviceInfo, step: int, seed: int):
    f = synthetic_frame(info.device_id, height_px=24, width_px=32, step=step, seed=seed)
    f = dataclasses.replace(f, user_id=info.user_id, profile=info.profile)
    if info.device_id == "xr":
        f = f.without("depth", "gaze", "audio", "hands", "segmentation")
    return f.without("depth") if (info.device_id == "avp" and step == 2) else f


def record(out, seed=0, n_steps=6):
    with DatasetWriter(out, scenario_name="unit", scenario_yaml="", seed=seed, step_dt_s=0.1,
                       devices=DEVICES) as w:
        for s in range(n_steps):
            w.write({d.device_id: make_frame(d, s, seed) for d in DEVICES})
    return out


def test_project_gaze_px_hand_computed():
    # fov_y 90 deg, H = 100 -> f = 50 px; tan(pitch) = 0.5 -> 25 px above the centre row
    assert project_gaze_px(0.0, 0.0, 100, 80, 90.0) == pytest.approx((40.0, 50.0))
    assert project_gaze_px(0.0, math.atan(0.5), 100, 80, 90.0) == pytest.approx((40.0, 25.0))
    assert project_gaze_px(math.atan(-0.2), 0.0, 100, 80, 90.0) == pytest.approx((30.0, 50.0))


def test_sample_rows_spreads_evenly():
    assert sample_rows(10, 4) == [0, 3, 6, 9]
    assert sample_rows(3, 8) == [0, 1, 2]
    assert sample_rows(0, 8) == []


def test_contact_sheet_size_matches_the_grid(tmp_path):
    root = record(tmp_path / "a")

    png = write_contact_sheet(root / "episode_000/avp.h5", tmp_path / "avp.png", n=4)

    # 4 columns of 192 px + 5 pads of 4 px; rows: rgb 144 (192 * 24/32), depth 144, audio 48, text 120, 5 pads
    assert LAYOUT.tile_w_px == 192 and LAYOUT.pad_px == 4 and LAYOUT.text_h_px == 120
    assert Image.open(png).size == (4 * 192 + 5 * 4, 144 + 144 + 48 + 120 + 5 * 4)
    assert png.stat().st_size > 1000
    assert contact_sheet_size(4, (24, 32), has_rgb=True, has_depth=False, has_audio=False) == (788, 144 + 120 + 12)


def test_device_without_depth_or_audio_has_fewer_rows(tmp_path):
    root = record(tmp_path / "a")

    png = write_contact_sheet(root / "episode_000/xr.h5", tmp_path / "xr.png", n=3)

    assert Image.open(png).size == (3 * 192 + 4 * 4, 144 + 120 + 3 * 4)


def test_sheets_differ_between_different_frames(tmp_path):
    a = write_contact_sheet(record(tmp_path / "a", seed=0) / "episode_000/avp.h5", tmp_path / "a.png", n=2)
    b = write_contact_sheet(record(tmp_path / "b", seed=1) / "episode_000/avp.h5", tmp_path / "b.png", n=2)

    pa, pb = np.asarray(Image.open(a)), np.asarray(Image.open(b))

    assert pa.shape == pb.shape and np.any(pa != pb)


def test_prediction_changes_only_its_column(tmp_path):
    root = record(tmp_path / "a")
    plain = write_contact_sheet(root / "episode_000/avp.h5", tmp_path / "plain.png", n=2)
    marked = write_contact_sheet(root / "episode_000/avp.h5", tmp_path / "pred.png", n=2,
                                 predictions={5: "mug 0.93"})

    diff = np.any(np.asarray(Image.open(plain)) != np.asarray(Image.open(marked)), axis=(0, 2))

    columns = np.nonzero(diff)[0]
    assert columns.size and columns.min() >= 4 + 192 + 4  # only in the second column (step 5)


def test_write_preview_writes_sheets_overview_and_gifs(tmp_path):
    root = record(tmp_path / "a")

    paths = write_preview(root, tmp_path / "prev", n=3, gif=True)

    names = sorted(p.name for p in paths)
    assert names == ["episode_000_avp.gif", "episode_000_avp.png", "episode_000_overview.png",
                     "episode_000_xr.gif", "episode_000_xr.png"]
    assert Image.open(tmp_path / "prev/episode_000_overview.png").size == (2 * 192 + 3 * 4, 144 + 14 + 3 * 4)
    assert Image.open(tmp_path / "prev/episode_000_avp.gif").n_frames == 6


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match="dataset file not found: .*missing.h5"):
        write_contact_sheet(tmp_path / "missing.h5", tmp_path / "x.png")


def test_cli_preview_and_info(tmp_path, capsys):
    root = record(tmp_path / "a")

    assert main(["preview", str(root), "--n", "2", "--out", str(tmp_path / "p")]) == 0
    assert main(["dataset", "info", str(root)]) == 0

    out = capsys.readouterr().out
    assert "episode_000_overview.png" in out
    assert "avp: user alice, profile apple_vision_pro" in out and "6 steps (5 train, 1 test)" in out
    assert "scene_classification: kitchen=12" in out  # 6 steps x 2 devices
    with pytest.raises(SystemExit) as exc:  # a directory that does not exist is a parser error (exit 2)
        main(["dataset", "info", str(tmp_path / "nothing")])
    assert exc.value.code == 2
