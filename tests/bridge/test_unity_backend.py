"""UnityBackend (real UnityEnvironment client) against the stand-in player: frames equal the served backend's."""

from __future__ import annotations

import inspect
import socket
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("mlagents_envs")
pytest.importorskip("grpc")

from bridge.arrays import frame_to_arrays  # noqa: E402
from bridge.backend import SetLighting, SetModality, ShowPrediction  # noqa: E402
from bridge.errors import BackendError, BridgeError  # noqa: E402
from bridge.registry import make_backend  # noqa: E402
from bridge.unity.backend import UnityBackend  # noqa: E402
from bridge.unity.errors import UnityConnectionError  # noqa: E402
from bridge.unity.launcher import write_launcher  # noqa: E402
from bridge.unity.observations import DEPTH_BOUND_M  # noqa: E402
from bridge.unity.player import PlayerConfig, StandInPlayer  # noqa: E402
from bridge.unity.synthetic import SyntheticBackend, SyntheticConfig  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CFG = SyntheticConfig(profiles=("meta_quest_pro", "ray_ban_meta"), render_size=(5, 4))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_same_frame(got, want):
    a, b = frame_to_arrays(got), frame_to_arrays(want)
    assert a.keys() == b.keys()
    assert a["present"] == b["present"] and a["labels"] == b["labels"]
    for key in sorted(a.keys() - {"present", "labels"}, key=lambda k: (k not in ("hands", "pose", "gaze", "imu"), k)):
        if key == "depth_m":  # millimetres on the wire (docs/unity.md): within half a millimetre, inf stays inf
            hit = np.isfinite(b[key])
            np.testing.assert_array_equal(np.isfinite(a[key]), hit, err_msg="no-hit pixels")
            np.testing.assert_allclose(a[key][hit], b[key][hit], rtol=0, atol=DEPTH_BOUND_M)
            continue
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)
    for name in ("device_id", "user_id", "profile", "step", "sim_time_s", "room", "events", "active_tasks",
                 "camera_fov_y_deg", "lighting", "labels"):
        assert getattr(got, name) == getattr(want, name), name


@pytest.fixture
def served():
    port = free_port()
    player = StandInPlayer(SyntheticBackend(CFG), PlayerConfig(port=port, connect_timeout_s=20)).start()
    backend = UnityBackend(base_port=port, timeout_wait_s=20, seed=3)
    yield backend, player
    backend.close()
    player.stop(2.0)


def test_frames_and_commands_match_the_served_backend(served):
    backend, player = served
    ref = SyntheticBackend(CFG)
    got, want = backend.reset(seed=3), ref.reset(seed=3)
    assert [d.device_id for d in backend.devices] == ["user0-meta_quest_pro", "user1-ray_ban_meta"]
    assert backend.step_dt_s == 0.1
    for k in want:
        assert_same_frame(got[k], want[k])
    steps = [[SetLighting(intensity=0.5, color_temperature_k=2700.0)],
             [SetModality("user0-meta_quest_pro", "gaze", False)], [SetModality("user0-meta_quest_pro", "gaze", True)]]
    for cmds in steps:
        got, want = backend.step(cmds), ref.step(cmds)
        for k in want:
            assert_same_frame(got[k], want[k])
    assert got["user0-meta_quest_pro"].lighting.color_temperature_k == 2700.0
    assert np.isinf(got["user0-meta_quest_pro"].depth_m[0, 0])  # the synthetic scene's no-hit pixel survived


def test_dropped_and_missing_modalities_are_none(served):
    backend, _ = served
    backend.reset()
    frames = backend.step([SetModality("user0-meta_quest_pro", "depth", False)])
    assert frames["user0-meta_quest_pro"].depth_m is None and frames["user0-meta_quest_pro"].rgb is not None
    assert frames["user1-ray_ban_meta"].gaze is None and frames["user1-ray_ban_meta"].head_pose is None


def test_prediction_overlay_round_trip_is_measured(served):
    backend, player = served
    frames = backend.reset()
    backend.step([ShowPrediction("user1-ray_ban_meta", "speech_command", "stop", 0.9)])
    backend.step()  # the scene's acknowledgement arrives with the next exchange at the latest
    assert player.backend.overlays["user1-ray_ban_meta"].label == "stop"
    assert len(backend.stats.prediction_rtt_ms) == 1 and backend.stats.prediction_rtt_ms[0] > 0
    assert len(backend.stats.frame_to_scene_ms) == 1  # frame_step filled in from the last delivered frame
    assert player.record.messages[-1]["frame_step"] == frames["user1-ray_ban_meta"].step


def test_nothing_answering_gives_a_clear_error():
    backend = UnityBackend(base_port=free_port(), timeout_wait_s=1)
    with pytest.raises(UnityConnectionError, match="nothing answered within 1 s from the Unity Editor on port"):
        backend.reset()
    backend.close()


def test_editor_is_worker_zero_only():
    with pytest.raises(BackendError, match="Editor is worker 0 only"):
        UnityBackend(worker_id=1)


def test_port_in_use_is_a_connection_error(served):
    backend, _ = served
    backend.reset()
    other = UnityBackend(base_port=backend.config.port, timeout_wait_s=1)
    with pytest.raises(UnityConnectionError, match="is in use"):
        other.reset()
    assert isinstance(UnityConnectionError("x"), BridgeError)


def test_registry_makes_the_unity_backend():
    b = make_backend("unity", base_port=free_port())
    assert isinstance(b, UnityBackend) and b.devices == () and b.config.port == b.config.base_port


def _reference_arrays(**backend_kw):
    """Four steps of the embedded scene the player serves, flattened (also run as a script in a fresh process)."""
    import numpy as np

    from bridge.arrays import frame_to_arrays
    from bridge.registry import make_backend

    out = {}
    with make_backend("embedded", "default", seed=5, render_size=(24, 24), max_avatars=2, **backend_kw) as ref:
        frames = [ref.reset(seed=5)] + [ref.step() for _ in range(3)]
    for i, fr in enumerate(frames):
        for dev, f in fr.items():
            for k, v in frame_to_arrays(f).items():
                if k not in ("present", "labels"):
                    out[f"{i}|{dev}|{k}"] = np.asarray(v)
    return out


_REFERENCE = inspect.getsource(_reference_arrays) + "\nimport sys\nimport numpy as np\n" \
                                                    "np.savez(sys.argv[1], **_reference_arrays())\n"


@pytest.mark.slow
def test_launched_player_serves_the_embedded_scene_frame_for_frame(tmp_path):
    pytest.importorskip("mujoco")
    ref_file = tmp_path / "reference.npz"
    subprocess.run([sys.executable, "-c", _REFERENCE, str(ref_file)], check=True, timeout=300)
    ref = np.load(ref_file)
    # The scene's frames do not depend on the history of the process that renders them: this long-lived test
    # process, after many other scenes and torch workloads, renders the same frames as a fresh one, in a render
    # child and in-process. (An earlier build lost 7 of 576 hand-capsule depth pixels here.)
    for render_process in (True, False):
        here = _reference_arrays(render_process=render_process)
        assert sorted(here) == sorted(ref.files)
        for k in ref.files:
            np.testing.assert_array_equal(here[k], ref[k], err_msg=f"render_process={render_process} {k}")
    exe = write_launcher(tmp_path, args=["default", "--size", "24", "--max-avatars", "2"], python=sys.executable)
    backend = UnityBackend(str(exe.with_suffix("")), base_port=free_port(), timeout_wait_s=60, seed=5,
                           log_folder=str(tmp_path))
    try:
        got = backend.reset(seed=5)
        for i in range(4):
            if i:
                got = backend.step()
            for dev, f in got.items():
                arrays = frame_to_arrays(f)
                keys = {k for k in arrays if k not in ("present", "labels")}
                assert keys == {k.split("|")[2] for k in ref.files if k.startswith(f"{i}|{dev}|")}
                for k in keys:
                    want = ref[f"{i}|{dev}|{k}"]
                    if k == "depth_m":  # millimetres on the wire: within half a millimetre, inf stays inf
                        hit = np.isfinite(want)
                        np.testing.assert_array_equal(np.isfinite(arrays[k]), hit, err_msg=f"{i} {dev} no-hit")
                        np.testing.assert_allclose(arrays[k][hit], want[hit], rtol=0, atol=DEPTH_BOUND_M)
                        continue
                    np.testing.assert_array_equal(np.asarray(arrays[k]), want, err_msg=f"{i} {dev} {k}")
        process = backend.env._process
    finally:
        backend.close()
    assert process.returncode == 0  # the player exited cleanly on the client's status 400
    assert (tmp_path / "Player-0.log").exists()  # -logFile was passed and honoured


def test_cli_writes_a_launcher_and_a_scene_export(tmp_path, capsys):
    from bridge.cli import main

    assert main(["player", "--synthetic", "meta_quest_3", "--size", "8", "--write-launcher", str(tmp_path)]) == 0
    script = (tmp_path / "XRFedPlayer.x86_64").read_text()
    assert "-m bridge.unity.launcher default" in script and "--size 8" in script and "--synthetic meta_quest_3" in script
    assert main(["player", "home", "--export-scenario", str(tmp_path / "home.json")]) == 0
    import json

    export = json.loads((tmp_path / "home.json").read_text())
    assert export["scenario"]["name"] == "home" and len(export["task_classes"]) == 6
    assert set(export["devices"]) == {a["device"] for a in export["scenario"]["avatars"]}


def test_launcher_without_port_refuses_like_an_inference_build():
    from bridge.unity.launcher import main

    assert main(["--synthetic", "meta_quest_3"]) == 2
