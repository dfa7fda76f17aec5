"""Shared fixtures: tiny scenarios written on the fly, and one cached short run of the default scene."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import yaml  # noqa: E402

TINY = {
    "name": "tiny",
    "step_hz": 10,
    "audio_hz": 16000,
    "render": {"width_px": 64, "height_px": 64},
    "rooms": [{"name": "lab", "type": "office", "origin_m": [0, 0], "size_m": [6, 5, 2.7]}],
    "objects": [
        {"name": "box", "category": "crate", "room": "lab", "pos_m": [4.0, 2.5]},
        {"name": "plant", "category": "plant", "room": "lab", "pos_m": [4.0, 0.8]},
    ],
    "lights": [{"name": "l0", "room": "lab", "pos_m": [3, 2.5, 2.6]}],
    "lighting_schedule": [{"t_s": 0, "intensity": 1.0}],
    "task_scripts": {"stare": {"segments": [{"duration_s": 100, "activity": "idle", "look_at": ["box"]}]}},
    "avatars": [
        {"name": "u1", "device": "apple_vision_pro", "start_room": "lab", "start_pos_m": [1.5, 2.5],
         "start_yaw_deg": 0, "script": "stare"},
        {"name": "u2", "device": "ray_ban_meta", "start_room": "lab", "start_pos_m": [1.0, 1.0],
         "start_yaw_deg": 0, "script": "stare"},
    ],
}


@pytest.fixture
def tiny_raw() -> dict:
    import copy

    return copy.deepcopy(TINY)


@pytest.fixture
def write_scenario(tmp_path):
    def _write(raw: dict, name: str = "s.yaml"):
        p = tmp_path / name
        p.write_text(yaml.safe_dump(raw))
        return p

    return _write


# -- Ray ---------------------------------------------------------------------------------------------------------
# Ray (2.55) rewrites a loopback node address to the machine's network address and binds its ports to every
# interface; this switch, read when ray is imported and inherited by Ray's processes, keeps the test node on
# 127.0.0.1. Set here, before any test module can import ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray node for every test that runs devices as Ray actors: 2 CPUs, loopback, no dashboard.

    Started once (a start costs seconds) and shut down when the session ends. Ray is part of the default
    environment (scripts/setup.sh installs the ``ray`` extra): under CI a missing Ray fails, elsewhere it skips.
    """
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("Ray is not installed; scripts/setup.sh installs it (pip install -e '.[ray]')")
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
