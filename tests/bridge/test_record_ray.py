"""Distributed recording (issue 15, item 4): ``xrfed record --executor ray`` writes the serial recorder's dataset.

Run-specific fields, the only ones allowed to differ between two recordings of one seed: ``wall_time_ns`` (the host
clock when each frame was produced). Everything else -- every dataset's dtype, shape and bytes, every attribute of
every file and dataset, the file list and the manifest's bytes -- must be identical.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket

import h5py
import pytest

from bridge.cli import main
from bridge.errors import DatasetError
from bridge.record import load_manifest
from bridge.recording import check_recording
from bridge.recording import record as record_scenario

#: datasets whose values legitimately differ between two runs of one seed
RUN_SPECIFIC = {"wall_time_ns"}


def _contents(path):
    """Every dataset (dtype, shape, bytes, attributes) and the file's attributes, by name."""
    out = {}
    with h5py.File(path, "r") as h5:
        out["/"] = sorted((k, repr(v)) for k, v in h5.attrs.items())

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                out[name] = (obj.dtype.str, obj.shape, list(data) if obj.dtype.kind == "O" else data.tobytes(),
                             sorted((k, repr(v)) for k, v in obj.attrs.items()))

        h5.visititems(visit)
    return out


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _run(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
    return status, err.getvalue()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_recording_equals_the_serial_recording_bit_for_bit(tmp_path, tiny_raw, write_scenario, ray_local,
                                                                 capsys):
    """3 episodes on 2 workers of one machine: each worker renders (MuJoCo, headless) at least one episode, one of
    them two episodes in a row, so an episode's bytes cannot depend on the worker or on what it recorded before."""
    scenario = str(write_scenario(tiny_raw))
    kw = dict(steps=4, seed=11, episodes=3, size=32, guard_s=0.1)
    serial = tmp_path / "serial"
    record_scenario(scenario, out=serial, progress=False, **kw)
    capsys.readouterr()

    manifest = record_scenario(scenario, out=tmp_path / "ray", executor="ray", workers=2, progress=True, **kw)

    ray_dir = tmp_path / "ray"
    assert manifest == ray_dir / "manifest.json"
    assert _files(ray_dir) == _files(serial)  # same layout, no staging area left behind
    assert (ray_dir / "manifest.json").read_bytes() == (serial / "manifest.json").read_bytes()
    compared = skipped = 0
    for rel in _files(serial):
        if not rel.endswith(".h5"):
            continue
        a, b = _contents(serial / rel), _contents(ray_dir / rel)
        assert sorted(a) == sorted(b), rel
        for name in a:
            if name in RUN_SPECIFIC:
                skipped += 1
            else:
                assert a[name] == b[name], f"{rel}: {name} differs"
                compared += 1
    assert skipped == 6 and compared > 6 * 25  # 6 files (3 episodes x 2 devices), every dataset of each
    bars = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines() if "Ray workers" in ln]
    assert bars and "12/12" in bars[-1]  # one bar over all workers' steps (3 episodes x 4 steps)
    assert {ln.split(":")[0] for ln in bars} == {"record tiny on 2 Ray workers"}


@pytest.mark.skipif(bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")),
                    reason="needs a machine without a display, where a GLFW renderer cannot be created")
def test_a_failing_worker_fails_the_recording_in_one_line_and_writes_nothing(tmp_path, tiny_raw, write_scenario,
                                                                               ray_local):
    tiny_raw["render"].update(gl="glfw", process="off")  # checks pass; only a worker building the scene fails
    out = tmp_path / "ds"
    out.mkdir()

    with pytest.raises(DatasetError) as info:
        record_scenario(str(write_scenario(tiny_raw)), out=out, steps=4, episodes=2, guard_s=0.1, progress=False,
                        executor="ray", workers=2)

    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("record: episode ") and "failed on a Ray worker: BackendError: " in msg
    assert "glfw" in msg
    assert list(out.iterdir()) == []  # no manifest, no episode, no staging area


def test_more_workers_than_free_cpus_is_refused_before_anything_is_written(tmp_path, tiny_raw, write_scenario,
                                                                             ray_local):
    with pytest.raises(DatasetError, match=r"record: 3 Ray workers x 1 CPU do not fit the 2 CPUs free"):
        record_scenario(str(write_scenario(tiny_raw)), out=tmp_path / "ds", steps=4, episodes=3, guard_s=0.1,
                        progress=False, executor="ray", workers=3)
    assert not (tmp_path / "ds").exists()


def test_an_unreachable_ray_address_is_one_line_exit_2_and_nothing_written(tmp_path, tiny_raw, write_scenario):
    out = tmp_path / "ds"
    address = f"127.0.0.1:{_closed_port()}"

    status, err = _run(["record", str(write_scenario(tiny_raw)), "--out", str(out), "--steps", "4",
                        "--guard-s", "0.1", "--executor", "ray", "--ray-address", address])

    assert status == 2 and err.splitlines() == [f"xrfed: error: cannot reach a Ray cluster at {address!r}: "
                                                f"Connection refused"], err
    assert not out.exists()


@pytest.mark.parametrize(("flags", "expected"), [
    (["--executor", "dask"], "argument --executor: invalid choice: 'dask' (choose from 'local', 'ray')"),
    (["--executor", "ray", "--ray-address", "nohost"], "expected host:port, ray://host:port, 'auto' or 'local'"),
    (["--executor", "ray", "--ray-address", "h:99999"], "expected host:port"),
    (["--executor", "ray", "--workers", "0"], "argument --workers: must be between 1 and 1024, got 0"),
    (["--executor", "ray", "--workers", "1.5"], "argument --workers: expected a whole number"),
    (["--workers", "2"], "workers (--workers) needs executor 'ray' (--executor ray), got executor 'local'"),
    (["--ray-address", "127.0.0.1:6379"], "ray_address (--ray-address) needs executor 'ray'"),
])
def test_bad_executor_flags_are_one_line_exit_2(tmp_path, flags, expected):
    status, err = _run(["record", "default", "--out", str(tmp_path / "ds"), *flags])

    assert status == 2 and "Traceback" not in err
    errors = [x for x in err.splitlines() if ": error: " in x]
    assert len(errors) == 1 and expected in errors[0], err
    assert not (tmp_path / "ds").exists()


def test_check_recording_names_the_allowed_executors():
    with pytest.raises(DatasetError, match=r"record: executor must be one of local, ray, got 'spark'"):
        check_recording("default", steps=10, executor="spark")


def test_a_ray_recording_joins_an_existing_dataset_like_a_serial_one(tmp_path, tiny_raw, write_scenario):
    """An output directory of another scenario is refused before Ray starts (no Ray fixture: none is needed)."""
    out = tmp_path / "ds"
    record_scenario(str(write_scenario(tiny_raw)), out=out, steps=4, guard_s=0.1, progress=False, audio=False)
    before = (out / "manifest.json").read_bytes()
    other = dict(tiny_raw, name="other")

    with pytest.raises(DatasetError, match="holds scenario 'tiny'; this writer records 'other'"):
        record_scenario(str(write_scenario(other, "o.yaml")), out=out, steps=4, guard_s=0.1, progress=False,
                        executor="ray")
    with pytest.raises(DatasetError, match="episode_000/u1-apple_vision_pro.h5 already exists"):
        record_scenario(str(write_scenario(tiny_raw)), out=out, steps=4, guard_s=0.1, progress=False,
                        executor="ray")
    assert (out / "manifest.json").read_bytes() == before and load_manifest(out)["scenario"] == "tiny"
