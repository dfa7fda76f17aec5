"""The ``xrfed`` command line: help everywhere, clear errors, and a real recording."""

import json
import subprocess
import sys

import h5py
import pytest
import yaml

from bridge.cli import build_parser, main


def test_every_subcommand_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"record", "scenarios", "devices", "preview", "bench"} <= set(sub.choices)
    for name in sub.choices:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0


def test_invalid_scenario_is_a_clear_error_with_exit_code_2(tmp_path, tiny_raw, capsys):
    tiny_raw["avatars"][0]["device"] = "quest9"
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(tiny_raw))
    assert main(["scenarios", str(p)]) == 2
    err = capsys.readouterr().err
    assert "avatars[0].device" in err and "quest9" in err and "meta_quest_3" in err


def test_record_writes_hdf5_per_device_and_manifest(tmp_path, tiny_raw):
    scen = tmp_path / "tiny.yaml"
    scen.write_text(yaml.safe_dump(tiny_raw))
    out = tmp_path / "data"
    r = subprocess.run([sys.executable, "-m", "bridge.cli", "record", str(scen), "--steps", "12", "--seed", "3",
                        "--out", str(out), "--preview", "--guard-s", "0.5"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert {c["client_id"] for c in manifest["clients"]} == {"u1-apple_vision_pro", "u2-ray_ban_meta"}
    assert manifest["guard_steps"] == 5  # 0.5 s at 10 Hz, between train rows 0..4 and test rows 10..11
    assert manifest["clients"][0]["files"][0]["split"] == {"train": [0, 5], "guard": [5, 10], "test": [10, 12]}
    with h5py.File(out / "episode_000" / "u2-ray_ban_meta.h5") as h5:
        assert h5["rgb"].shape == (12, 64, 64, 3)
        assert "depth_m" not in h5 or not h5["present/depth"][:].any()  # the glasses have no depth sensor
        assert h5.attrs["seed"] == 3
    assert any((out / "preview").glob("*.png"))


def test_record_default_guard_refuses_an_episode_too_short_for_it(tmp_path, tiny_raw, capsys):
    scen = tmp_path / "tiny.yaml"
    scen.write_text(yaml.safe_dump(tiny_raw))

    assert build_parser().parse_args(["record", str(scen), "--out", "x"]).guard_s == 5.0
    assert main(["record", str(scen), "--steps", "12", "--out", str(tmp_path / "data")]) == 2
    assert "a guard of 5 s is 50 steps at 10 Hz" in capsys.readouterr().err
